//! The pool and channel battery every firmware target runs: the core's API end to end on real
//! Cortex-M code generation (and, on thumbv6m, on portable-atomic's critical-section atomics).

use dragon_channels_core::pool::{SIZE_CLASSES, STRUCT_OWNER_BIT};
use dragon_channels_core::{
    Alloc, AllocKind, Channel, ChannelAttrs, ChannelError, Poll, Polled, Pool, PoolConfig,
    PoolError, Region, SemaphoreAttrs, SendMode,
};

use crate::{check, check_err, check_ok, read_alloc, write_alloc};

/// Pool uid of the battery's main pool.
pub const MAIN_UID: u64 = 0xD2A6_0000_0000_0001;
/// Pool uid of the second, small pool.
pub const OTHER_UID: u64 = 0xD2A6_0000_0000_0002;

/// Runs the whole battery: `main` is the big region, `other` a small one (at least 2 KiB)
/// for a second pool. Both are overwritten.
pub fn run(main: Region, other: Region) {
    let Some(pool) = pool_battery(main, other) else {
        return;
    };
    let Some(other_pool) = check_ok!(Pool::init(
        other,
        &PoolConfig {
            uid: OTHER_UID,
            ..PoolConfig::default()
        },
        9
    )) else {
        return;
    };
    channel_battery(&pool, &other_pool);
}

/// `(free bytes, live allocations)` and the free-block histogram, for "back to baseline".
fn snapshot(pool: &Pool) -> Option<(usize, u32, [u32; SIZE_CLASSES])> {
    let s = check_ok!(pool.stats())?;
    let mut fb = [0u32; SIZE_CLASSES];
    check_ok!(pool.free_blocks(&mut fb))?;
    Some((s.free, s.live, fb))
}

/// Whether the free-block histogram adds up to the free bytes the stats report.
fn histogram_matches(pool: &Pool) -> bool {
    let mut fb = [0u32; SIZE_CLASSES];
    let (Ok(classes), Ok(stats)) = (pool.free_blocks(&mut fb), pool.stats()) else {
        return false;
    };
    let sum: usize = fb
        .iter()
        .take(classes)
        .enumerate()
        .map(|(k, &n)| n as usize * (pool.min_block() << k))
        .sum();
    classes <= SIZE_CLASSES && fb[classes..].iter().all(|&n| n == 0) && sum == stats.free
}

fn pool_battery(main: Region, other: Region) -> Option<Pool> {
    // Nothing there yet: attach refuses a region without a pool.
    check_err!(Pool::attach(other, 1), PoolError::BadMagic);
    check_err!(
        Pool::init(main, &PoolConfig::default(), 0),
        PoolError::BadOwner
    );
    check_err!(
        Pool::init(
            main,
            &PoolConfig {
                min_block: 48,
                ..PoolConfig::default()
            },
            1
        ),
        PoolError::BadConfig(_)
    );
    let cfg = PoolConfig {
        min_block: 64,
        max_allocations: None,
        uid: MAIN_UID,
    };
    let pool = check_ok!(Pool::init(main, &cfg, 1))?;
    check!(pool.uid() == MAIN_UID && pool.owner() == 1 && pool.min_block() == 64);
    check!(pool.metadata_size() + pool.total_size() <= main.len());
    check!(pool.metadata_size() % 64 == 0);

    // A second party attaches to the same bytes and sees the same pool.
    let peer = check_ok!(Pool::attach(main, 2))?;
    check!(peer.uid() == MAIN_UID && peer.owner() == 2);
    check!(peer.total_size() == pool.total_size() && peer.max_alloc() == pool.max_alloc());
    check_err!(Pool::attach(main, 0), PoolError::BadOwner);
    // The pool records its size: a shorter mapping is refused.
    // SAFETY: a prefix of a valid region is valid under the same contract.
    if let Some(short) = check_ok!(unsafe { Region::new(main.base(), main.len() - 64) }) {
        check_err!(
            Pool::attach(short, 2),
            PoolError::SizeMismatch { found, expected }
                if found == main.len() as u64 && expected == (main.len() - 64) as u64
        );
    }

    let (free0, live0, fb0) = snapshot(&pool)?;
    check!(free0 == pool.total_size() && live0 == 0);
    check!(histogram_matches(&pool));

    // alloc / free, sizes round up to powers of two of the minimum block.
    let a = check_ok!(pool.alloc(100, AllocKind::Data))?;
    let b = check_ok!(peer.alloc(0, AllocKind::Data))?;
    let c = check_ok!(pool.alloc(1000, AllocKind::Data))?;
    check!(check_ok!(pool.resolve(&a)).is_some_and(|(_, size)| size == 128));
    check!(check_ok!(pool.resolve(&b)).is_some_and(|(_, size)| size == 64));
    check!(check_ok!(pool.resolve(&c)).is_some_and(|(_, size)| size == 1024));
    check!(pool.owner_of(&b) == Ok(2) && pool.owner_of(&a) == Ok(1));
    check!(
        pool.stats()
            .is_ok_and(|s| s.live == 3 && s.free == free0 - 128 - 64 - 1024)
    );
    check!(histogram_matches(&pool));
    check!(pool.allocations().filter(|i| i.is_ok()).count() == 3);

    // Bytes written through one party's allocation are read back through the other handle.
    let pattern: [u8; 100] = core::array::from_fn(|i| (i * 3 + 1) as u8);
    write_alloc(&pool, &a, &pattern);
    let mut back = [0u8; 100];
    read_alloc(&peer, &a, &mut back);
    check!(back == pattern);

    // Free, double free, stale free after reuse, forged descriptors.
    check_ok!(pool.free(a));
    check_err!(pool.free(a), PoolError::Stale);
    check_ok!(peer.free(c));
    let d = check_ok!(pool.alloc(64, AllocKind::Data))?;
    check_err!(pool.free(c), PoolError::Stale);
    let mut forged = b.to_bytes();
    forged[12] ^= 0xFF; // pool tag of another pool
    match Alloc::from_bytes(&forged) {
        Some(f) => check_err!(pool.free(f), PoolError::BadDescriptor),
        None => {
            check!(false);
        }
    }
    check!(Alloc::from_bytes(&forged[..15]).is_none());
    check_ok!(pool.free(d));
    check_ok!(pool.free(b));
    check!(snapshot(&pool) == Some((free0, live0, fb0)));

    // Too large now and forever.
    check_err!(
        pool.alloc(pool.total_size() * 2, AllocKind::Data),
        PoolError::TooLarge { .. }
    );
    // Exhaustion: one maximal block, then minimum blocks until space or records run out.
    let mut held: [Option<Alloc>; 64] = [None; 64];
    let mut n = 0;
    if let Some(big) = check_ok!(pool.alloc(pool.max_alloc(), AllocKind::Data)) {
        held[0] = Some(big);
        n = 1;
    }
    let exhausted = loop {
        if n == held.len() {
            break None;
        }
        match pool.alloc(1, AllocKind::Data) {
            Ok(x) => {
                held[n] = Some(x);
                n += 1;
            }
            Err(e) => break Some(e),
        }
    };
    check!(exhausted == Some(PoolError::OutOfSpace));
    check!(pool.stats().is_ok_and(|s| s.live == n as u32));
    check!(histogram_matches(&pool));
    // Free in an interleaved order so buddies merge out of order.
    for i in (0..n).step_by(2).chain((1..n).step_by(2)) {
        if let Some(x) = held[i].take() {
            check_ok!(pool.free(x));
        }
    }
    check!(snapshot(&pool) == Some((free0, live0, fb0)));
    check!(histogram_matches(&pool));
    Some(pool)
}

fn channel_battery(pool: &Pool, other_pool: &Pool) {
    let Some((free0, live0, fb0)) = snapshot(pool) else {
        return;
    };
    let attrs = ChannelAttrs {
        capacity: 4,
        block_size: 64,
    };
    check_err!(
        Channel::create(
            pool,
            1,
            &ChannelAttrs {
                capacity: 0,
                block_size: 64
            }
        ),
        ChannelError::BadAttr(_)
    );
    let Some(ch) = check_ok!(Channel::create(pool, 7, &attrs)) else {
        return;
    };
    check_err!(Channel::create(pool, 7, &attrs), ChannelError::UidInUse(7));
    check!(ch.uid() == 7 && ch.capacity() == 4 && ch.block_size() == 64);
    check!(ch.is_empty() && !ch.is_full());
    check!(
        pool.owner_of(&channel_alloc(pool))
            .is_ok_and(|o| o & STRUCT_OWNER_BIT != 0)
    );

    fifo(&ch);
    capacity_one(pool);
    side_and_transfer(pool, &ch);
    barrier_and_semaphore(pool);
    attach_and_destroy(pool, other_pool, ch);

    // Everything the channels used is back.
    check!(snapshot(pool) == Some((free0, live0, fb0)));
}

/// A channel used as a barrier of three parties (one round, an abort, a reset) and a bounded
/// semaphore: the poll operations' shared words on the target's atomics.
fn barrier_and_semaphore(pool: &Pool) {
    let attrs = ChannelAttrs {
        capacity: 3,
        block_size: 64,
    };
    let Some(bar) = check_ok!(Channel::create(pool, 8, &attrs)) else {
        return;
    };
    check!(bar.try_poll(Poll::BarrierWait) == Ok(Polled::Ready));
    check!(bar.try_poll(Poll::BarrierWait) == Ok(Polled::Ready));
    check!(bar.try_poll(Poll::BarrierWait) == Ok(Polled::ReadyToRelease));
    check!(bar.try_poll(Poll::BarrierRelease) == Ok(Polled::Value(3)));
    let mut seen = 0u32;
    let mut b = [0u8; 8];
    for _ in 0..3 {
        if check_ok!(bar.try_recv_into(&mut b)).is_some() {
            seen |= 1 << i64::from_le_bytes(b);
        }
    }
    check!(seen == 0b111);
    check!(bar.try_poll(Poll::BarrierWait) == Ok(Polled::Ready));
    check!(bar.try_poll(Poll::BarrierAbort) == Ok(Polled::Ready));
    check_err!(bar.try_poll(Poll::BarrierWait), ChannelError::BarrierBroken);
    check!(check_ok!(bar.try_recv_into(&mut b)).is_some() && i64::from_le_bytes(b) == -1);
    check!(bar.try_poll(Poll::Reset) == Ok(Polled::Ready) && !bar.barrier_broken());
    check_ok!(bar.destroy());

    let sem_attrs = SemaphoreAttrs {
        initial: 1,
        bounded: true,
    };
    let Some(sem) = check_ok!(Channel::create_semaphore(pool, 9, sem_attrs)) else {
        return;
    };
    check_err!(
        sem.try_poll(Poll::SemaphoreV),
        ChannelError::SemaphoreBound { bound: 1 }
    );
    check!(sem.try_poll(Poll::SemaphoreP) == Ok(Polled::Value(1)));
    check_err!(sem.try_poll(Poll::SemaphoreP), ChannelError::NotReady(_));
    check!(sem.try_poll(Poll::SemaphoreZ) == Ok(Polled::Ready));
    check!(sem.try_poll(Poll::SemaphoreV) == Ok(Polled::Value(0)));
    check_err!(sem.try_poll(Poll::In), ChannelError::BadOperation(_));
    check_ok!(sem.destroy());
}

/// The allocation of the (only) live channel of `pool`.
fn channel_alloc(pool: &Pool) -> Alloc {
    pool.allocations()
        .filter_map(Result::ok)
        .find(|i| i.kind == AllocKind::Channel)
        .map(|i| i.alloc)
        .expect("a live channel allocation")
}

fn fifo(ch: &Channel) {
    let mut buf = [0u8; 64];
    for i in 0..4u8 {
        let msg = [i; 10];
        check_ok!(ch.try_send(
            &msg[..usize::from(i) + 1],
            u64::from(i) << 40,
            100 + u64::from(i)
        ));
    }
    check!(ch.is_full() && ch.len() == 4);
    check!(ch.poll(Poll::Full) == Ok(1) && ch.poll(Poll::Size) == Ok(4));
    check!(ch.poll(Poll::Out) == Ok(0) && ch.poll(Poll::Capacity) == Ok(4));
    check_err!(ch.try_send(b"x", 0, 0), ChannelError::Full);
    // Too small a destination leaves the message queued.
    let mut tiny = [0u8; 2];
    check_err!(
        ch.try_recv_into(&mut tiny[..0]),
        ChannelError::DestinationTooSmall {
            needed: 1,
            capacity: 0
        }
    );
    check!(ch.len() == 4);
    for i in 0..4u8 {
        match check_ok!(ch.try_recv_into(&mut buf)) {
            Some(got) => check!(
                got.len == usize::from(i) + 1
                    && buf[..got.len].iter().all(|&x| x == i)
                    && got.hints == u64::from(i) << 40
                    && got.clientid == 100 + u64::from(i)
            ),
            None => false,
        };
    }
    check_err!(ch.try_recv_into(&mut buf), ChannelError::Empty);
    check!(ch.poll(Poll::Empty) == Ok(1) && ch.poll(Poll::In) == Ok(0));
    // Interleaved traffic wraps the slot index around many times.
    let mut next_send = 0u32;
    let mut next_recv = 0u32;
    let mut ok = true;
    for round in 0..200u32 {
        for _ in 0..(round % 4) + 1 {
            if ch.try_send(&next_send.to_le_bytes(), 0, 0).is_ok() {
                next_send += 1;
            } else {
                ok &= ch.is_full();
                break;
            }
        }
        for _ in 0..(round % 3) + 1 {
            match ch.try_recv_into(&mut buf) {
                Ok(got) => {
                    ok &= got.len == 4 && buf[..4] == next_recv.to_le_bytes();
                    next_recv += 1;
                }
                Err(e) => {
                    ok &= e == ChannelError::Empty && next_recv == next_send;
                    break;
                }
            }
        }
    }
    while let Ok(got) = ch.try_recv_into(&mut buf) {
        ok &= got.len == 4 && buf[..4] == next_recv.to_le_bytes();
        next_recv += 1;
    }
    check!(ok && next_recv == next_send && next_send > 300 && ch.is_empty());
}

fn capacity_one(pool: &Pool) {
    let Some(one) = check_ok!(Channel::create(
        pool,
        8,
        &ChannelAttrs {
            capacity: 1,
            block_size: 16,
        }
    )) else {
        return;
    };
    let mut buf = [0u8; 16];
    check!(one.is_empty() && !one.is_full() && one.capacity() == 1);
    check_err!(one.try_recv_into(&mut buf), ChannelError::Empty);
    // Full and empty edges on every lap: the one slot is reused 500 times.
    let mut ok = true;
    for lap in 0..500u32 {
        ok &= one.try_send(&lap.to_le_bytes(), u64::from(lap), 0).is_ok();
        ok &= one.is_full() && one.len() == 1;
        ok &= one.try_send(b"no", 0, 0) == Err(ChannelError::Full);
        ok &= one.try_recv_into(&mut buf).is_ok_and(|g| {
            g.len == 4 && buf[..4] == lap.to_le_bytes() && g.hints == u64::from(lap)
        });
        ok &= one.is_empty();
        ok &= one.try_recv_into(&mut buf) == Err(ChannelError::Empty);
    }
    check!(ok);
    check_ok!(one.destroy());
}

fn side_and_transfer(pool: &Pool, ch: &Channel) {
    let live = |p: &Pool| p.stats().map(|s| s.live).unwrap_or(u32::MAX);
    let base_live = live(pool);
    // A payload above the block size goes to a side allocation owned by the channel.
    let big: [u8; 300] = core::array::from_fn(|i| (i as u8).wrapping_mul(13));
    check_ok!(ch.try_send(&big, 5, 6));
    check!(live(pool) == base_live + 1);
    check!(
        pool.allocations()
            .filter_map(Result::ok)
            .filter(|i| i.kind == AllocKind::ChannelBuffer && i.owner & STRUCT_OWNER_BIT != 0)
            .count()
            == 1
    );
    let mut buf = [0u8; 300];
    check_err!(
        ch.try_recv_into(&mut buf[..299]),
        ChannelError::DestinationTooSmall {
            needed: 300,
            capacity: 299
        }
    );
    if let Some(got) = check_ok!(ch.try_recv_into(&mut buf)) {
        check!(got.len == 300 && buf == big && got.hints == 5 && got.clientid == 6);
    }
    check!(live(pool) == base_live);

    // Transfer: the sender's allocation moves through the channel to the receiver.
    let Some(a) = check_ok!(pool.alloc(200, AllocKind::Data)) else {
        return;
    };
    let payload: [u8; 200] = core::array::from_fn(|i| 255 - i as u8);
    write_alloc(pool, &a, &payload);
    check_ok!(ch.try_send_mode(SendMode::Transfer { alloc: a, len: 200 }, 7, 8));
    check!(pool.owner_of(&a).is_ok_and(|o| o & STRUCT_OWNER_BIT != 0));
    if let Some((got_a, got)) = check_ok!(ch.try_recv_alloc()) {
        check!(got_a == a && got.len == 200 && got.hints == 7 && got.clientid == 8);
        check!(pool.owner_of(&got_a) == Ok(pool.owner()));
        let mut back = [0u8; 200];
        read_alloc(pool, &got_a, &mut back);
        check!(back == payload);
        check_ok!(pool.free(got_a));
    }
    // A transfer of a freed allocation is refused and sends nothing.
    check_err!(
        ch.try_send_mode(SendMode::Transfer { alloc: a, len: 1 }, 0, 0),
        ChannelError::BadMessage
    );
    check!(ch.is_empty());
    // try_recv_alloc of an inline message copies it into a fresh allocation.
    check_ok!(ch.try_send(b"inline", 0, 0));
    if let Some((got_a, got)) = check_ok!(ch.try_recv_alloc()) {
        let mut back = [0u8; 6];
        read_alloc(pool, &got_a, &mut back);
        check!(got.len == 6 && &back == b"inline");
        check_ok!(pool.free(got_a));
    }
    check!(live(pool) == base_live);
}

fn attach_and_destroy(pool: &Pool, other_pool: &Pool, ch: Channel) {
    let desc = ch.serialize();
    check!(desc.len() == Channel::DESCRIPTOR_LEN);
    check!(Channel::peek_descriptor(&desc) == Ok((7, MAIN_UID)));
    let Some(peer_pool) = check_ok!(Pool::attach(pool.region(), 3)) else {
        return;
    };
    let Some(peer) = check_ok!(Channel::attach(&peer_pool, &desc, None)) else {
        return;
    };
    let mut buf = [0u8; 300];
    check_ok!(ch.try_send(b"to the peer", 1, 2));
    check!(
        peer.try_recv_into(&mut buf)
            .is_ok_and(|g| &buf[..g.len] == b"to the peer")
    );
    check_ok!(peer.try_send(b"and back", 3, 4));
    check!(
        ch.try_recv_into(&mut buf)
            .is_ok_and(|g| &buf[..g.len] == b"and back")
    );

    // Garbage, truncated, corrupted and foreign descriptors are refused.
    check_err!(
        Channel::attach(pool, &[0xAB; Channel::DESCRIPTOR_LEN], None),
        ChannelError::BadDescriptor(_)
    );
    check_err!(
        Channel::attach(pool, &desc[..40], None),
        ChannelError::BadDescriptor(_)
    );
    let mut flipped = [0u8; Channel::DESCRIPTOR_LEN];
    flipped.copy_from_slice(&desc);
    flipped[20] ^= 1;
    check_err!(
        Channel::attach(pool, &flipped, None),
        ChannelError::BadDescriptor(_)
    );
    check_err!(
        Channel::attach(other_pool, &desc, None),
        ChannelError::BadDescriptor(_)
    );

    // Destroy with messages (one in a side allocation) still queued: all of it is freed.
    check_ok!(ch.try_send(b"left behind", 0, 0));
    check_ok!(ch.try_send(&[9u8; 200], 0, 0));
    check_ok!(peer.destroy());
    check_err!(ch.try_send(b"x", 0, 0), ChannelError::Destroyed);
    check_err!(ch.try_recv_into(&mut buf), ChannelError::Destroyed);
    check_err!(ch.poll(Poll::Size), ChannelError::Destroyed);
    check_err!(Channel::attach(pool, &desc, None), ChannelError::Destroyed);
    check_err!(ch.destroy(), ChannelError::Destroyed);
    // The uid is free again.
    let attrs = ChannelAttrs {
        capacity: 2,
        block_size: 32,
    };
    if let Some(again) = check_ok!(Channel::create(pool, 7, &attrs)) {
        check_ok!(again.destroy());
    }
}
