//! The channel's battery (crossbeam-queue / rtrb style): smoke, capacity, minimum capacity,
//! len/empty/full, spsc, mpmc exactly-once with checksums, FIFO per sender; plus payload modes,
//! descriptors, destroy, deadlines and corruption.
#![allow(clippy::std_instead_of_core, clippy::disallowed_types)] // a std test program

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Failed, Mem, pool, watchdog};
use dragon_channels_core::{
    Alloc, AllocKind, Channel, ChannelAttrs, ChannelError, Poll, Pool, PoolConfig, SendMode,
    Waiter, Wake, checksum,
};

/// Region size of most tests (smaller under Miri, which runs every instruction slowly).
const POOL_BYTES: usize = if cfg!(miri) { 256 * 1024 } else { 1 << 20 };

fn scaled(n: usize) -> usize {
    if cfg!(miri) { (n / 500).max(8) } else { n }
}

fn attrs(capacity: u32, block_size: u32) -> ChannelAttrs {
    ChannelAttrs {
        capacity,
        block_size,
    }
}

#[test]
fn smoke() {
    let mut m = Mem::new(POOL_BYTES);
    let p = pool(&mut m, 64);
    let ch = Channel::create(&p, 1, &ChannelAttrs::default()).unwrap();
    assert_eq!((ch.capacity(), ch.block_size()), (100, 1024));
    ch.try_send(b"Hello", 11, 22).unwrap();
    let mut buf = [0u8; 16];
    let got = ch.try_recv_into(&mut buf).unwrap();
    assert_eq!(
        (&buf[..got.len], got.hints, got.clientid),
        (&b"Hello"[..], 11, 22)
    );
    assert_eq!(ch.try_recv_into(&mut buf), Err(ChannelError::Empty));
}

#[test]
fn capacity_full_and_empty() {
    let mut m = Mem::new(POOL_BYTES);
    let p = pool(&mut m, 64);
    for cap in [1u32, 2, 3, 7, 8, 100] {
        let ch = Channel::create(&p, u64::from(cap), &attrs(cap, 16)).unwrap();
        for lap in 0..5u32 {
            assert!(ch.is_empty());
            // The waiting hints agree with what a try would say, in every lap.
            assert!(!ch.may_recv() && ch.may_send());
            for i in 0..cap {
                assert_eq!(ch.len(), i as usize);
                ch.try_send(&(lap * 1000 + i).to_le_bytes(), 0, 0).unwrap();
                assert!(ch.may_recv());
                assert_eq!(ch.may_send(), i + 1 < cap);
            }
            assert!(ch.is_full());
            assert_eq!(ch.try_send(b"x", 0, 0), Err(ChannelError::Full));
            assert_eq!(ch.poll(Poll::Full).unwrap(), 1);
            assert_eq!(ch.poll(Poll::Out).unwrap(), 0);
            for i in 0..cap {
                let mut b = [0u8; 4];
                ch.try_recv_into(&mut b).unwrap();
                assert_eq!(u32::from_le_bytes(b), lap * 1000 + i);
                assert!(ch.may_send());
                assert_eq!(ch.may_recv(), i + 1 < cap);
            }
            assert_eq!(ch.poll(Poll::Empty).unwrap(), 1);
            assert_eq!(ch.poll(Poll::In).unwrap(), 0);
        }
        ch.destroy().unwrap();
    }
}

#[test]
fn minimum_capacity_wraps_many_laps() {
    let mut m = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let ch = Channel::create(&p, 1, &attrs(1, 8)).unwrap();
    for i in 0..scaled(10_000) as u64 {
        ch.try_send(&i.to_le_bytes(), i, 0).unwrap();
        assert_eq!(ch.try_send(b"", 0, 0), Err(ChannelError::Full));
        let mut b = [0u8; 8];
        let g = ch.try_recv_into(&mut b).unwrap();
        assert_eq!((u64::from_le_bytes(b), g.hints), (i, i));
    }
    assert_eq!(ch.poll(Poll::Capacity).unwrap(), 1);
}

#[test]
fn bad_attributes_and_uid_reuse() {
    let mut m = Mem::new(POOL_BYTES);
    let p = pool(&mut m, 64);
    assert!(matches!(
        Channel::create(&p, 1, &attrs(0, 16)),
        Err(ChannelError::BadAttr(_))
    ));
    assert!(matches!(
        Channel::create(&p, 1, &attrs(1 << 25, 16)),
        Err(ChannelError::BadAttr(_))
    ));
    let ch = Channel::create(&p, 5, &attrs(4, 16)).unwrap();
    assert_eq!(
        Channel::create(&p, 5, &attrs(4, 16)).unwrap_err(),
        ChannelError::UidInUse(5)
    );
    let big = Channel::create(&p, 6, &attrs(100_000, 1024));
    assert!(
        matches!(big, Err(ChannelError::Pool(_))),
        "too large for the pool: {big:?}"
    );
    ch.destroy().unwrap();
    // The uid is free again after destroy.
    Channel::create(&p, 5, &attrs(4, 16))
        .unwrap()
        .destroy()
        .unwrap();
}

#[test]
fn large_payloads_use_side_allocations_and_destroy_frees_them() {
    let mut m = Mem::new(POOL_BYTES);
    let p = pool(&mut m, 64);
    let base = p.stats().unwrap();
    let ch = Channel::create(&p, 1, &attrs(8, 64)).unwrap();
    let with_channel = p.stats().unwrap();
    let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    ch.try_send(&payload, 1, 2).unwrap();
    ch.try_send(&payload[..64], 0, 0).unwrap();
    assert_eq!(p.stats().unwrap().live, with_channel.live + 1);
    let mut small = [0u8; 100];
    assert_eq!(
        ch.try_recv_into(&mut small),
        Err(ChannelError::DestinationTooSmall {
            needed: 5000,
            capacity: 100
        })
    );
    assert_eq!(ch.len(), 2, "a refused receive leaves the message queued");
    let mut big = vec![0u8; 8192];
    let g = ch.try_recv_into(&mut big).unwrap();
    assert_eq!(&big[..g.len], &payload[..]);
    assert_eq!(p.stats().unwrap(), with_channel);
    // Queued side allocations are freed by destroy.
    ch.try_send(&payload, 0, 0).unwrap();
    ch.try_send(&payload, 0, 0).unwrap();
    ch.destroy().unwrap();
    assert_eq!(p.stats().unwrap(), base);
}

#[test]
fn transfer_of_ownership_is_zero_copy() {
    let mut m = Mem::new(POOL_BYTES);
    let p = pool(&mut m, 64);
    let base = p.stats().unwrap();
    let ch = Channel::create(&p, 1, &attrs(4, 64)).unwrap();
    let a = p.alloc(3000, AllocKind::Data).unwrap();
    let (off, _) = p.resolve(&a).unwrap();
    // SAFETY: `a` is ours alone until sent.
    unsafe { core::ptr::write_bytes(p.region().base().add(off), 0xAB, 3000) };
    ch.try_send_mode(
        SendMode::Transfer {
            alloc: a,
            len: 3000,
        },
        5,
        6,
    )
    .unwrap();
    let (b, g) = ch.try_recv_alloc().unwrap();
    assert_eq!(b, a, "the same allocation arrives");
    assert_eq!((g.len, g.hints, g.clientid), (3000, 5, 6));
    assert_eq!(
        p.owner_of(&b).unwrap(),
        p.owner(),
        "the receiver owns it now"
    );
    // A stale descriptor cannot be transferred.
    p.free(b).unwrap();
    let r = ch.try_send_mode(SendMode::Transfer { alloc: b, len: 1 }, 0, 0);
    assert_eq!(r, Err(ChannelError::BadMessage));
    // An inline message received as an allocation is copied into a new one.
    ch.try_send(b"inline", 0, 0).unwrap();
    let (c, g) = ch.try_recv_alloc().unwrap();
    let (off, _) = p.resolve(&c).unwrap();
    // SAFETY: `c` is ours.
    let got = unsafe { core::slice::from_raw_parts(p.region().base().add(off), g.len) };
    assert_eq!(got, b"inline");
    p.free(c).unwrap();
    ch.destroy().unwrap();
    assert_eq!(p.stats().unwrap(), base);
}

#[test]
fn separate_buffer_pool() {
    let mut m = Mem::new(256 * 1024);
    let mut mb = Mem::new(256 * 1024);
    let p = pool(&mut m, 64);
    let cfg = PoolConfig {
        uid: 77,
        ..Default::default()
    };
    let bp = Pool::init(mb.region(), &cfg, 1).unwrap();
    let ch = Channel::create_with_buffer_pool(&p, 1, &attrs(4, 32), Some(&bp)).unwrap();
    ch.try_send(&[9u8; 4000], 0, 0).unwrap();
    assert_eq!(bp.stats().unwrap().live, 1);
    let d = ch.serialize();
    assert!(matches!(
        Channel::attach(&p, &d, None),
        Err(ChannelError::BadDescriptor(_))
    ));
    let ch2 = Channel::attach(&p, &d, Some(&bp)).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(ch2.try_recv_into(&mut buf).unwrap().len, 4000);
    assert_eq!(bp.stats().unwrap().live, 0);
}

#[test]
fn descriptors_attach_and_refuse_bad_bytes() {
    let mut m = Mem::new(POOL_BYTES);
    let mut other = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let q = Pool::init(
        other.region(),
        &PoolConfig {
            uid: 5,
            ..Default::default()
        },
        1,
    )
    .unwrap();
    let ch = Channel::create(&p, 42, &attrs(4, 64)).unwrap();
    let d = ch.serialize();
    assert_eq!(Channel::peek_descriptor(&d).unwrap(), (42, 0));
    let ch2 = Channel::attach(&p, &d, None).unwrap();
    ch2.try_send(b"via attach", 0, 0).unwrap();
    assert_eq!(ch.len(), 1);
    for cut in [0, 1, 20, 47] {
        assert!(matches!(
            Channel::attach(&p, &d[..cut], None),
            Err(ChannelError::BadDescriptor(_))
        ));
    }
    let mut bad = d;
    bad[20] ^= 1;
    assert!(matches!(
        Channel::attach(&p, &bad, None),
        Err(ChannelError::BadDescriptor(_))
    ));
    assert!(matches!(
        Channel::attach(&q, &d, None),
        Err(ChannelError::BadDescriptor(_))
    ));
    ch.destroy().unwrap();
    assert_eq!(
        Channel::attach(&p, &d, None).unwrap_err(),
        ChannelError::Destroyed
    );
    assert_eq!(ch2.try_send(b"x", 0, 0), Err(ChannelError::Destroyed));
    assert_eq!(ch2.poll(Poll::Size), Err(ChannelError::Destroyed));
    assert_eq!(ch2.destroy(), Err(ChannelError::Destroyed));
    // Random bytes never attach.
    let mut seed = 99u64;
    for _ in 0..scaled(2000) {
        let mut junk = [0u8; Channel::DESCRIPTOR_LEN];
        for b in &mut junk {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (seed >> 33) as u8;
        }
        assert!(Channel::attach(&p, &junk, None).is_err());
    }
}

#[test]
fn attach_from_an_allocation() {
    let mut m = Mem::new(POOL_BYTES);
    let mut mb = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let bp = Pool::init(
        mb.region(),
        &PoolConfig {
            uid: 77,
            ..Default::default()
        },
        1,
    )
    .unwrap();
    let a = Channel::create(&p, 7, &attrs(4, 64)).unwrap();
    let b = Channel::create_with_buffer_pool(&p, 8, &attrs(2, 16), Some(&bp)).unwrap();
    a.try_send(b"queued", 0, 0).unwrap();
    let data = p.alloc(1000, AllocKind::Data).unwrap();
    let found = |kind| -> Vec<Alloc> {
        p.allocations()
            .map(Result::unwrap)
            .filter(|i| i.kind == kind)
            .map(|i| i.alloc)
            .collect()
    };
    let chans = found(AllocKind::Channel);
    assert_eq!(chans, [a.alloc(), b.alloc()]);
    // The channel in the allocation, uid read from its header, the same queue.
    let a2 = Channel::attach_alloc(&p, &chans[0], None).unwrap();
    assert_eq!((a2.uid(), a2.len(), a2.capacity()), (7, 1, 4));
    let mut buf = [0u8; 16];
    assert_eq!(a2.try_recv_into(&mut buf).unwrap().len, 6);
    // A channel with a buffer pool needs it, as with a descriptor.
    assert!(matches!(
        Channel::attach_alloc(&p, &chans[1], None),
        Err(ChannelError::BadDescriptor(_))
    ));
    assert_eq!(
        Channel::attach_alloc(&p, &chans[1], Some(&bp))
            .unwrap()
            .uid(),
        8
    );
    // Not a channel: a data allocation, and an allocation of another pool.
    assert_eq!(
        Channel::attach_alloc(&p, &data, None).unwrap_err(),
        ChannelError::Destroyed
    );
    let foreign = bp.alloc(64, AllocKind::Data).unwrap();
    assert!(Channel::attach_alloc(&p, &foreign, None).is_err());
    // Destroyed: its allocation is gone.
    a.destroy().unwrap();
    assert!(Channel::attach_alloc(&p, &chans[0], None).is_err());
    assert_eq!(found(AllocKind::Channel), [chans[1]]);
}

/// Sends `bytes`, retrying while the channel is Full or Stalled (a receiver was preempted
/// mid-receive); any other error fails the test, as does another thread's failure.
fn send_retrying(ch: &Channel, bytes: &[u8], failed: &Failed) {
    while let Err(e) = ch.try_send(bytes, 0, 0) {
        assert!(
            matches!(e, ChannelError::Full | ChannelError::Stalled { .. }),
            "{e}"
        );
        failed.check();
        std::thread::yield_now();
    }
}

#[test]
fn spsc_fifo() {
    let mut m = Mem::new(POOL_BYTES);
    let p = pool(&mut m, 64);
    let ch = Channel::create(&p, 1, &attrs(4, 16)).unwrap();
    let n = scaled(100_000) as u64;
    let _watchdog = watchdog(300, "spsc_fifo");
    let failed = &Failed::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _g = failed.guard();
            for i in 0..n {
                send_retrying(&ch, &i.to_le_bytes(), failed);
            }
        });
        s.spawn(|| {
            let _g = failed.guard();
            let mut b = [0u8; 8];
            for i in 0..n {
                loop {
                    match ch.try_recv_into(&mut b) {
                        Ok(_) => break,
                        Err(ChannelError::Empty | ChannelError::Stalled { .. }) => {
                            failed.check();
                            std::thread::yield_now()
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(u64::from_le_bytes(b), i);
            }
        });
    });
}

/// 4 senders x 4 receivers, mixed inline and side payloads: every message arrives exactly
/// once with its checksum intact, and each sender's messages arrive in order at any one
/// receiver.
#[test]
fn mpmc_exactly_once_with_checksums() {
    let mut m = Mem::new(4 * POOL_BYTES);
    let p = pool(&mut m, 64);
    let base = p.stats().unwrap();
    let ch = Channel::create(&p, 1, &attrs(16, 64)).unwrap();
    let per_sender = scaled(20_000);
    let _watchdog = watchdog(300, "mpmc_exactly_once_with_checksums");
    let failed = &Failed::default();
    let finished = &AtomicUsize::new(0);
    let received: Vec<Vec<(u32, u32)>> = std::thread::scope(|s| {
        for t in 0..4u32 {
            let p2 = p.with_owner(10 + t).unwrap();
            let d = ch.serialize();
            s.spawn(move || {
                let _g = failed.guard();
                let ch = Channel::attach(&p2, &d, None).unwrap();
                for i in 0..per_sender as u32 {
                    let len = if i % 7 == 0 {
                        200 + (i % 300) as usize
                    } else {
                        12 + (i % 40) as usize
                    };
                    let mut msg = vec![0u8; len];
                    msg[0..4].copy_from_slice(&t.to_le_bytes());
                    msg[4..8].copy_from_slice(&i.to_le_bytes());
                    for (j, b) in msg[12..].iter_mut().enumerate() {
                        *b = (j as u32 ^ i ^ t) as u8;
                    }
                    let c = checksum(&msg[12..]);
                    msg[8..12].copy_from_slice(&c.to_le_bytes());
                    loop {
                        match ch.try_send(&msg, u64::from(t), u64::from(i)) {
                            Ok(()) => break,
                            Err(ChannelError::Full)
                            | Err(ChannelError::Pool(_))
                            | Err(ChannelError::Stalled { .. }) => {
                                failed.check();
                                std::thread::yield_now()
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                finished.fetch_add(1, Ordering::AcqRel);
            });
        }
        let receivers: Vec<_> = (0..4u32)
            .map(|r| {
                let p2 = p.with_owner(20 + r).unwrap();
                let d = ch.serialize();
                s.spawn(move || {
                    let _g = failed.guard();
                    let ch = Channel::attach(&p2, &d, None).unwrap();
                    let mut got = Vec::new();
                    let mut last = [None::<u32>; 4];
                    let mut buf = vec![0u8; 1024];
                    loop {
                        // Read before trying: Empty after all senders finished is final.
                        let all_sent = finished.load(Ordering::Acquire) == 4;
                        match ch.try_recv_into(&mut buf) {
                            Ok(g) => {
                                let m = &buf[..g.len];
                                let t = u32::from_le_bytes(m[0..4].try_into().unwrap());
                                let i = u32::from_le_bytes(m[4..8].try_into().unwrap());
                                let c = u32::from_le_bytes(m[8..12].try_into().unwrap());
                                assert_eq!(checksum(&m[12..]), c, "payload damaged");
                                assert_eq!((g.hints, g.clientid), (u64::from(t), u64::from(i)));
                                assert!(last[t as usize].is_none_or(|l| l < i), "FIFO per sender");
                                last[t as usize] = Some(i);
                                got.push((t, i));
                            }
                            Err(ChannelError::Empty) if all_sent => return got,
                            Err(ChannelError::Empty | ChannelError::Stalled { .. }) => {
                                failed.check();
                                std::thread::yield_now()
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        receivers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = HashSet::new();
    for (t, i) in received.into_iter().flatten() {
        assert!(all.insert((t, i)), "duplicate {t}/{i}");
    }
    assert_eq!(all.len(), 4 * per_sender, "every message exactly once");
    ch.destroy().unwrap();
    assert_eq!(p.stats().unwrap(), base);
}

#[test]
fn one_sender_overall_order_with_many_receivers() {
    let mut m = Mem::new(POOL_BYTES);
    let p = pool(&mut m, 64);
    let ch = Channel::create(&p, 1, &attrs(8, 16)).unwrap();
    let n = scaled(40_000) as u64;
    let _watchdog = watchdog(300, "one_sender_overall_order_with_many_receivers");
    let failed = &Failed::default();
    let stop = AtomicBool::new(false);
    let per: Vec<Vec<u64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let _g = failed.guard();
                    let mut v = Vec::new();
                    let mut b = [0u8; 8];
                    while !(stop.load(Ordering::Acquire) && ch.is_empty()) {
                        match ch.try_recv_into(&mut b) {
                            Ok(_) => v.push(u64::from_le_bytes(b)),
                            Err(ChannelError::Empty | ChannelError::Stalled { .. }) => {
                                failed.check();
                                std::thread::yield_now()
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    v
                })
            })
            .collect();
        let _g = failed.guard();
        for i in 0..n {
            send_retrying(&ch, &i.to_le_bytes(), failed);
        }
        stop.store(true, Ordering::Release);
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = 0;
    for v in &per {
        assert!(
            v.windows(2).all(|w| w[0] < w[1]),
            "each receiver sees increasing order"
        );
        total += v.len();
    }
    assert_eq!(total as u64, n);
}

#[test]
fn events_register_and_notify() {
    let mut m = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let ch = Channel::create(&p, 1, &attrs(2, 16)).unwrap();
    let ev = ch.recv_event();
    assert_eq!(ev.notify(), Wake::None, "no waiter: no wake-up needed");
    let v = ev.register(Waiter::One);
    assert_eq!(ch.poll(Poll::BlockedReceivers).unwrap(), 1);
    assert_eq!(ev.notify(), Wake::One, "only one-waiters: wake one");
    let a = ev.register(Waiter::All);
    assert_eq!(
        ch.poll(Poll::BlockedReceivers).unwrap(),
        1,
        "a poller is no receiver"
    );
    assert_eq!(ev.notify(), Wake::All, "a poller registered: wake all");
    assert_ne!(ev.word().load(Ordering::Relaxed), a);
    ev.unregister(Waiter::All);
    assert_eq!(ev.waiters(Waiter::All), 0);
    assert_eq!(ev.notify(), Wake::One);
    assert_ne!(
        ev.word().load(Ordering::Relaxed),
        v,
        "the word moved, so a sleeper cannot miss it"
    );
    ev.unregister(Waiter::One);
    // Unregistering what is not registered never underflows into the other kind.
    ev.unregister(Waiter::One);
    assert_eq!((ev.waiters(Waiter::One), ev.waiters(Waiter::All)), (0, 0));
    assert_eq!(ev.notify(), Wake::None);
}

#[test]
fn random_channel_corruption_gives_errors_only() {
    let iterations = scaled(400);
    let mut rnd = common::xorshift(0xDEAD_BEEF_u64);
    for _ in 0..iterations {
        let mut m = Mem::new(128 * 1024);
        let p = pool(&mut m, 64);
        let ch = Channel::create(&p, 3, &attrs(4, 32)).unwrap();
        ch.try_send(b"short", 0, 0).unwrap();
        ch.try_send(&[1u8; 100], 0, 0).unwrap();
        let d = ch.serialize();
        let (start, len) = {
            let a: Alloc = Alloc::from_bytes(&d[16..32]).unwrap();
            p.resolve(&a).unwrap()
        };
        for _ in 0..(1 + rnd() % 6) {
            let i = start + (rnd() as usize) % len.min(64 * 6 + 4 * 128);
            m.bytes_mut()[i] ^= 1 << (rnd() % 8);
        }
        let p = Pool::attach(m.region(), 1).unwrap();
        let Ok(ch) = Channel::attach(&p, &d, None) else {
            continue;
        };
        let mut buf = [0u8; 256];
        for j in 0..12 {
            let _ = match j % 3 {
                0 => ch.try_send(&[7u8; 70], 0, 0).map(|_| ()),
                1 => ch.try_recv_into(&mut buf).map(|_| ()),
                _ => ch.try_recv_alloc().map(|(a, _)| {
                    let _ = p.free(a);
                }),
            };
            let _ = ch.len();
            let _ = ch.poll(Poll::InOut);
        }
        let _ = ch.destroy();
    }
}
