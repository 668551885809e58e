//! Resource exhaustion through the public std-adapter API: each exhausted resource gives a
//! specific error whose text says what to do, and everything works again once the resource
//! is freed.
//!
//! - a full pool (data blocks, then allocation records), also as seen through a channel;
//! - a full channel, and a channel of capacity 1 over many laps;
//! - zero-byte messages;
//! - messages larger than the whole pool;
//! - thousands of channels in one pool, and channels until the pool is full;
//! - a tmpfs too small for a second pool (root only: a private mount namespace puts a 1 MiB
//!   tmpfs over `/dev/shm` for a child process).

#[path = "support/mod.rs"]
mod support;

use core::time::Duration;
use std::process::{Command, Stdio};
use std::time::Instant;

use dragon_channels::dragon_channels_core::PoolError;
use dragon_channels::{
    Channel, ChannelRecvH, ChannelSendH, Error, MemoryPool, MemoryPoolError, Message, Poll, Polled,
    PoolAttrs, Reason, Reserve, Timeout, WaitMode,
};
use support::{ROLE, ShmGuard, attrs, role, unique_name, wait_child, watchdog};

fn pool(tag: &str, size: usize) -> (MemoryPool, ShmGuard) {
    pool_with(tag, size, &PoolAttrs::default())
}

fn pool_with(tag: &str, size: usize, attrs: &PoolAttrs) -> (MemoryPool, ShmGuard) {
    let name = unique_name(tag);
    let guard = ShmGuard::new(&name);
    let p = MemoryPool::create_with_attrs(size, &name, 7, attrs).expect("create pool");
    (p, guard)
}

fn open(ch: &Channel) -> (ChannelSendH, ChannelRecvH) {
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    (s, r)
}

/// Asserts that `e` is a `ChannelError` for a pool that has no free block now, and that its
/// text says what to do.
#[track_caller]
fn assert_out_of_space(e: &Error) {
    assert!(
        matches!(e, Error::ChannelError(Reason::Pool(PoolError::OutOfSpace))),
        "expected ChannelError(Pool(OutOfSpace)), got {e:?}"
    );
    assert!(e.to_string().contains("free memory or wait for it"), "{e}");
}

/// Holds every block of `p`: allocates the largest size that still fits until not even a
/// minimum block is left (a handful of allocations, so the record limit does not interfere).
fn fill(p: &MemoryPool) -> Vec<Message> {
    let mut held = Vec::new();
    let mut size = p.max_alloc();
    loop {
        match Message::create_alloc(p, size) {
            Ok(m) => held.push(m),
            Err(Error::ChannelError(Reason::Pool(PoolError::OutOfSpace))) if size > 64 => size /= 2,
            Err(e) => {
                assert_out_of_space(&e);
                break;
            }
        }
    }
    assert_eq!(p.free_space().unwrap(), 0, "the pool is full");
    held
}

// ----- a full pool -----

#[test]
fn full_pool_gives_out_of_space_then_recovers() {
    let _watchdog = watchdog(60, "full_pool_gives_out_of_space_then_recovers");
    let (p, _g) = pool("fullpool", 64 << 10);
    let base = p.stats().unwrap();
    assert_eq!(p.utilization().unwrap(), 0.0);

    // 4 KiB messages until the pool says no: exactly size / 4 KiB of them fit.
    const MSG: usize = 4096;
    let mut held = Vec::new();
    let err = loop {
        match Message::create_alloc(&p, MSG) {
            Ok(m) => held.push(m),
            Err(e) => break e,
        }
        assert!(held.len() <= p.size() / MSG, "more messages than fit");
    };
    assert_out_of_space(&err);
    assert_eq!(held.len(), p.size() / MSG);
    assert_eq!(p.free_space().unwrap(), 0);
    assert_eq!(p.utilization().unwrap(), 100.0);
    // Not even the smallest block is left.
    assert_out_of_space(&Message::create_alloc(&p, 1).unwrap_err());

    // A timed allocation waits at least its timeout, then times out.
    let t0 = Instant::now();
    let e = Message::create_alloc_blocking(&p, MSG, Timeout::After(Duration::from_millis(100)))
        .unwrap_err();
    assert!(matches!(e, Error::ChannelTimeout), "{e:?}");
    assert!(e.to_string().contains("give a longer timeout"), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(100));

    // Free one: the same allocation works again.
    held.pop();
    held.push(Message::create_alloc(&p, MSG).unwrap());
    assert_out_of_space(&Message::create_alloc(&p, MSG).unwrap_err());

    // A blocked allocation is woken by a free in another thread.
    let freed = held.pop().unwrap();
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(freed);
        });
        let m = Message::create_alloc_blocking(&p, MSG, Timeout::Block).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50));
        held.push(m);
    });

    drop(held);
    assert_eq!(p.stats().unwrap(), base, "back to the baseline");
    assert_eq!(p.utilization().unwrap(), 0.0);
    p.destroy().unwrap();
}

#[test]
fn allocation_records_run_out_then_recover() {
    let _watchdog = watchdog(60, "allocation_records_run_out_then_recover");
    let (p, _g) = pool_with(
        "records",
        64 << 10,
        &PoolAttrs {
            min_block: 64,
            max_allocations: Some(4),
            ..PoolAttrs::default()
        },
    );
    let base = p.stats().unwrap();
    assert_eq!(base.max_allocations, 4);
    let mut held: Vec<Message> = (0..4)
        .map(|_| Message::create_alloc(&p, 8).unwrap())
        .collect();
    // The data area is almost empty, but every allocation record is in use.
    assert!(p.free_space().unwrap() > p.size() / 2);
    assert_out_of_space(&Message::create_alloc(&p, 8).unwrap_err());
    held.pop();
    held.push(Message::create_alloc(&p, 8).unwrap());
    drop(held);
    assert_eq!(p.stats().unwrap(), base);
    p.destroy().unwrap();
}

#[test]
fn full_pool_seen_through_a_channel() {
    let _watchdog = watchdog(60, "full_pool_seen_through_a_channel");
    let (p, _g) = pool("fullchpool", 64 << 10);
    let ch = Channel::create(&p, 1, attrs(4, 64)).unwrap();
    let with_channel = p.stats().unwrap();
    let (s, r) = open(&ch);
    let mut hog = fill(&p);

    // A payload above the block size needs a side allocation: the send says the pool is full.
    let big = [0x5Au8; 100];
    let e = s
        .send_bytes(&big, big.len(), None, Timeout::Try)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ChannelSendError(Reason::Pool(PoolError::OutOfSpace))
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("free memory or wait for it"), "{e}");
    let t0 = Instant::now();
    let e = s
        .send_bytes(
            &big,
            big.len(),
            None,
            Timeout::After(Duration::from_millis(80)),
        )
        .unwrap_err();
    assert!(matches!(e, Error::ChannelTimeout), "{e:?}");
    assert!(t0.elapsed() >= Duration::from_millis(80));
    // Nothing was queued (a failed send takes no slot: see `failed_sends_take_no_slot`).
    assert!(matches!(
        r.recv_bytes(Timeout::Try),
        Err(Error::ChannelEmpty)
    ));

    // Inline payloads need no pool memory to send, but `recv` needs some for the new message:
    // it fails and the message stays queued.
    s.send_bytes(b"inline", 6, None, Timeout::Try).unwrap();
    let e = r.recv(Timeout::Try).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ChannelRecvError(Reason::Pool(PoolError::OutOfSpace))
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("stays queued"), "{e}");
    assert_eq!(ch.num_msgs(), 1);

    // A blocked receive waiting for pool memory is woken by a free in another thread.
    let freed = hog.pop().unwrap();
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(freed);
        });
        let m = r.recv(Timeout::Block).unwrap();
        assert_eq!(m.bytes().unwrap(), b"inline");
        assert!(t0.elapsed() >= Duration::from_millis(50));
    });

    // With memory freed the side-allocation send works as well.
    drop(hog);
    s.send_bytes(&big, big.len(), None, Timeout::Try).unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), big);
    assert_eq!(p.stats().unwrap(), with_channel, "no leak");
    drop((s, r));
    ch.destroy().unwrap();
    p.destroy().unwrap();
}

// ----- full channels -----

#[test]
fn full_channel_gives_channel_full_then_recovers() {
    let _watchdog = watchdog(60, "full_channel_gives_channel_full_then_recovers");
    let (p, _g) = pool("fullch", 1 << 20);
    let base = p.stats().unwrap();
    let ch = Channel::create(&p, 3, attrs(8, 64)).unwrap();
    let with_channel = p.stats().unwrap();
    let (s, r) = open(&ch);

    let mut sent = 0u32;
    let e = loop {
        match s.send_bytes(&sent.to_le_bytes(), 4, None, Timeout::Try) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= 8, "more messages than the capacity");
    };
    assert!(matches!(e, Error::ChannelFull), "{e:?}");
    assert!(e.to_string().contains("send with a timeout"), "{e}");
    assert_eq!((sent, ch.num_msgs()), (8, 8));

    // A timed send waits at least its timeout; a transfer send hands the message back.
    let t0 = Instant::now();
    let e = s
        .send_bytes(b"late", 4, None, Timeout::After(Duration::from_millis(120)))
        .unwrap_err();
    assert!(matches!(e, Error::ChannelTimeout), "{e:?}");
    assert!(e.to_string().contains("give a longer timeout"), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(120));
    let m = Message::create_alloc(&p, 16).unwrap();
    let e = s.send_transfer(m, Timeout::Try).unwrap_err();
    assert!(matches!(e.error, Error::ChannelFull), "{e:?}");
    assert_eq!(e.message.len(), 16, "the message comes back");
    drop(e);
    assert_eq!(ch.num_msgs(), 8, "failed sends queue nothing");

    // Receive one: a send fits again, and order is kept.
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), 0u32.to_le_bytes());
    s.send_bytes(&8u32.to_le_bytes(), 4, None, Timeout::Try)
        .unwrap();
    assert!(matches!(
        s.send_bytes(b"x", 1, None, Timeout::Try),
        Err(Error::ChannelFull)
    ));

    // A blocked sender is released by a receive in another thread.
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), 1u32.to_le_bytes());
        });
        s.send_bytes(&9u32.to_le_bytes(), 4, None, Timeout::Block)
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50));
    });
    for i in 2..10u32 {
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), i.to_le_bytes());
    }
    let e = r.recv_bytes(Timeout::Try).unwrap_err();
    assert!(matches!(e, Error::ChannelEmpty), "{e:?}");
    assert!(e.to_string().contains("receive with a timeout"), "{e}");
    assert_eq!(p.stats().unwrap(), with_channel);
    drop((s, r));
    ch.destroy().unwrap();
    assert_eq!(p.stats().unwrap(), base);
    p.destroy().unwrap();
}

#[test]
fn capacity_one_channel_over_many_laps() {
    let _watchdog = watchdog(60, "capacity_one_channel_over_many_laps");
    let (p, _g) = pool("cap1", 1 << 20);
    let ch = Channel::create(&p, 1, attrs(1, 16)).unwrap();
    assert_eq!(ch.capacity(), 1);
    let with_channel = p.stats().unwrap();
    let (s, r) = open(&ch);

    // Single thread: both edges on every lap (the position counters wrap many times).
    let laps = if cfg!(debug_assertions) {
        5_000
    } else {
        50_000
    };
    for i in 0..laps as u32 {
        assert!(matches!(
            r.recv_bytes(Timeout::Try),
            Err(Error::ChannelEmpty)
        ));
        s.send_bytes(&i.to_le_bytes(), 4, None, Timeout::Try)
            .unwrap();
        assert_eq!(ch.num_msgs(), 1);
        assert!(matches!(
            s.send_bytes(b"y", 1, None, Timeout::Try),
            Err(Error::ChannelFull)
        ));
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), i.to_le_bytes());
    }
    // Alternate send forms and receive forms on the single slot (inline and side payloads).
    for i in 0..200u32 {
        let len = if i.is_multiple_of(2) { 4 } else { 100 };
        let mut m = Message::create_alloc(&p, len).unwrap();
        m.bytes_memview().unwrap()[..4].copy_from_slice(&i.to_le_bytes());
        if i.is_multiple_of(3) {
            s.send_transfer(m, Timeout::Try).unwrap();
        } else {
            s.send(&m, None, Timeout::Try).unwrap();
        }
        let got = r.recv(Timeout::Try).unwrap();
        assert_eq!(
            (got.len(), &got.bytes().unwrap()[..4]),
            (len, &i.to_le_bytes()[..])
        );
    }

    // Two threads: a blocking ping-pong through the single slot keeps FIFO and exactly once.
    let n = laps as u32;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for i in 0..n {
                s.send_bytes(&i.to_le_bytes(), 4, None, Timeout::Block)
                    .unwrap();
            }
        });
        for i in 0..n {
            assert_eq!(r.recv_bytes(Timeout::Block).unwrap(), i.to_le_bytes());
        }
    });
    assert_eq!(ch.num_msgs(), 0);
    assert_eq!(p.stats().unwrap(), with_channel);
    drop((s, r));
    ch.destroy().unwrap();
    p.destroy().unwrap();
}

// ----- zero-byte and oversized messages -----

#[test]
fn zero_byte_messages_travel() {
    let _watchdog = watchdog(60, "zero_byte_messages_travel");
    let (p, _g) = pool("zero", 1 << 20);
    let base = p.stats().unwrap();
    let ch = Channel::create(&p, 1, attrs(4, 64)).unwrap();
    let with_channel = p.stats().unwrap();
    let (s, r) = open(&ch);

    // A zero-byte message has memory (one minimum block) and an empty payload.
    let mut m = Message::create_alloc(&p, 0).unwrap();
    assert!(m.has_memory());
    assert_eq!((m.len(), m.is_empty()), (0, true));
    assert!(m.capacity() > 0);
    assert_eq!(m.bytes_memview().unwrap().len(), 0);
    m.set_hints(3);
    m.set_clientid(4);

    // Every send form and every receive form carries it.
    s.send(&m, None, Timeout::Try).unwrap();
    let got = r.recv(Timeout::Try).unwrap();
    assert_eq!((got.len(), got.hints(), got.clientid()), (0, 3, 4));
    assert!(got.bytes().unwrap().is_empty());

    s.send_bytes(&[], 0, None, Timeout::Try).unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), Vec::<u8>::new());

    s.send_transfer(m, Timeout::Try).unwrap();
    let mut dest = Message::create_alloc(&p, 32).unwrap();
    r.recv_into(&mut dest, Timeout::Try).unwrap();
    assert_eq!((dest.len(), dest.hints(), dest.clientid()), (0, 3, 4));

    s.send_bytes(&[], 0, None, Timeout::Try).unwrap();
    let mut empty = Message::create_empty();
    r.recv_into(&mut empty, Timeout::Try).unwrap();
    assert!(empty.has_memory());
    assert_eq!(empty.len(), 0);

    // With a destination message: zero bytes go into its memory.
    let mut via = Message::create_alloc(&p, 16).unwrap();
    s.send_bytes(&[], 0, Some(&mut via), Timeout::Try).unwrap();
    assert!(!via.has_memory());
    assert!(r.recv_bytes(Timeout::Try).unwrap().is_empty());

    // Zero bytes padded to a length are that many zeros.
    s.send_bytes(&[], 10, None, Timeout::Try).unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), vec![0u8; 10]);

    // A channel full of zero-byte messages is full like any other.
    for _ in 0..4 {
        s.send_bytes(&[], 0, None, Timeout::Try).unwrap();
    }
    assert!(matches!(
        s.send_bytes(&[], 0, None, Timeout::Try),
        Err(Error::ChannelFull)
    ));
    for _ in 0..4 {
        assert!(r.recv_bytes(Timeout::Try).unwrap().is_empty());
    }

    drop((got, dest, empty, via));
    assert_eq!(
        p.stats().unwrap(),
        with_channel,
        "zero-byte messages leak nothing"
    );
    drop((s, r));
    ch.destroy().unwrap();
    assert_eq!(p.stats().unwrap(), base);
    p.destroy().unwrap();
}

#[test]
fn larger_than_pool_is_a_clear_error_and_the_channel_still_works() {
    let _watchdog = watchdog(60, "larger_than_pool_is_a_clear_error");
    let (p, _g) = pool("huge", 64 << 10);
    let base = p.stats().unwrap();
    let max = p.max_alloc();
    let too_large = |e: &Error| {
        matches!(
            e,
            Error::ChannelError(Reason::Pool(PoolError::TooLarge { requested, max: m }))
                if *requested > *m && *m == max
        )
    };

    // Messages: the largest possible fits; one byte more, or twice the pool, never does. A
    // blocking allocation says so at once instead of waiting forever.
    drop(Message::create_alloc(&p, max).unwrap());
    for n in [max + 1, 2 * p.size(), usize::MAX / 2] {
        let e = Message::create_alloc(&p, n).unwrap_err();
        assert!(too_large(&e), "{n}: {e:?}");
        assert!(e.to_string().contains("can never fit"), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("largest possible is {max} bytes")),
            "{e}"
        );
        let e = Message::create_alloc_blocking(&p, n, Timeout::Block).unwrap_err();
        assert!(too_large(&e), "{n}: {e:?}");
    }

    // A channel too big for the pool.
    let e = Channel::create(&p, 2, attrs(4096, 1024)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ChannelError(Reason::Pool(PoolError::TooLarge { .. }))
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("can never fit"), "{e}");

    // Sends bigger than the pool fail at once, with any timeout, and queue nothing.
    let ch = Channel::create(&p, 1, attrs(4, 64)).unwrap();
    let with_channel = p.stats().unwrap();
    let (s, r) = open(&ch);
    let huge = vec![1u8; 2 * p.size()];
    for t in [
        Timeout::Try,
        Timeout::Block,
        Timeout::After(Duration::from_secs(30)),
    ] {
        let e = s.send_bytes(&huge, huge.len(), None, t).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ChannelSendError(Reason::Pool(PoolError::TooLarge { .. }))
            ),
            "{t:?}: {e:?}"
        );
        assert!(e.to_string().contains("can never fit"), "{e}");
    }
    // A small payload padded past the pool size, too.
    let e = s.send_bytes(b"abc", 2 * p.size(), None, Timeout::Block);
    assert!(
        matches!(
            e,
            Err(Error::ChannelSendError(Reason::Pool(
                PoolError::TooLarge { .. }
            )))
        ),
        "{e:?}"
    );
    // Nothing was queued (a failed send takes no slot: see `failed_sends_take_no_slot`).
    assert!(matches!(
        r.recv_bytes(Timeout::Try),
        Err(Error::ChannelEmpty)
    ));

    // All 4 slots are usable, in order.
    for i in 0..4u8 {
        s.send_bytes(&[i; 10], 10, None, Timeout::Try).unwrap();
    }
    assert!(matches!(
        s.send_bytes(b"x", 1, None, Timeout::Try),
        Err(Error::ChannelFull)
    ));
    for i in 0..4u8 {
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), [i; 10]);
    }
    // A large payload that does fit still goes through.
    let fits = vec![9u8; max / 2];
    s.send_bytes(&fits, fits.len(), None, Timeout::Try).unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), fits);

    assert_eq!(p.stats().unwrap(), with_channel);
    drop((s, r));
    ch.destroy().unwrap();
    assert_eq!(p.stats().unwrap(), base);
    p.destroy().unwrap();
}

/// A send that fails for pool memory (the payload can never fit, or the pool is full now)
/// leaves the channel as it was: no slot is taken, an empty channel never reports
/// `ChannelFull` because of failed sends, and a timed send waiting for pool memory succeeds
/// once memory is freed. (Before the fix the core claimed a slot before making the side
/// allocation and left a tombstone in it when the allocation failed.)
#[test]
fn failed_sends_take_no_slot() {
    let _watchdog = watchdog(30, "failed_sends_take_no_slot");
    let (p, _g) = pool("tombs", 64 << 10);
    let ch = Channel::create(&p, 1, attrs(4, 64)).unwrap();
    let with_channel = p.stats().unwrap();
    let (s, r) = open(&ch);

    // Payloads that can never fit: no slot is used, and all 4 stay free for real messages.
    let huge = vec![1u8; 2 * p.size()];
    for _ in 0..4 {
        let e = s
            .send_bytes(&huge, huge.len(), None, Timeout::Try)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::ChannelSendError(Reason::Pool(PoolError::TooLarge { .. }))
            ),
            "{e:?}"
        );
    }
    assert_eq!(ch.num_msgs(), 0, "failed sends queue nothing");
    assert_eq!(
        ch.poll(Poll::Empty, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Ready
    );
    for i in 0..4u8 {
        s.send_bytes(&[i], 1, None, Timeout::Try)
            .unwrap_or_else(|e| panic!("send {i} into an empty channel: {e}"));
    }
    for i in 0..4u8 {
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), [i]);
    }

    // A full pool: a timed send waits for pool memory and completes once some is freed,
    // without a receive in between.
    let mut hog = fill(&p);
    let freed = hog.pop().unwrap();
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(freed);
        });
        s.send_bytes(
            &[2u8; 100],
            100,
            None,
            Timeout::After(Duration::from_secs(5)),
        )
        .expect("the send completes once pool memory is freed");
        assert!(t0.elapsed() >= Duration::from_millis(50));
    });
    assert_eq!(ch.num_msgs(), 1);
    drop(hog);
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), [2u8; 100]);
    assert_eq!(p.stats().unwrap(), with_channel);
    drop((s, r));
    ch.destroy().unwrap();
    p.destroy().unwrap();
}

// ----- many channels -----

#[test]
fn thousands_of_channels_in_one_pool() {
    let _watchdog = watchdog(120, "thousands_of_channels_in_one_pool");
    const N: u64 = 2000;
    let (p, _g) = pool_with(
        "manych",
        4 << 20,
        &PoolAttrs {
            min_block: 64,
            max_allocations: Some(4096),
            ..PoolAttrs::default()
        },
    );
    let base = p.stats().unwrap();
    let channels: Vec<Channel> = (1..=N)
        .map(|uid| {
            Channel::create(&p, uid, attrs(2, 16)).unwrap_or_else(|e| panic!("channel {uid}: {e}"))
        })
        .collect();
    assert_eq!(p.stats().unwrap().live, N as u32);

    // A uid in use, anywhere in the table, is refused with the uid in the text.
    for uid in [1, N / 2, N] {
        let e = Channel::create(&p, uid, attrs(2, 16)).unwrap_err();
        assert!(
            matches!(e, Error::ChannelError(Reason::UidInUse(u)) if u == uid),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(&format!("uid {uid} already exists")),
            "{e}"
        );
    }

    // A sample: attach through the descriptor, send the uid, receive it on the original.
    let sample: Vec<&Channel> = channels.iter().step_by(97).collect();
    for ch in &sample {
        let other = Channel::attach(&ch.serialize()).unwrap();
        assert_eq!(other.cuid(), ch.cuid());
        let (s, _) = open(&other);
        s.send_bytes(&ch.cuid().to_le_bytes(), 8, None, Timeout::Try)
            .unwrap();
    }
    for ch in &channels {
        let sampled = (ch.cuid() - 1) % 97 == 0;
        assert_eq!(ch.num_msgs(), usize::from(sampled), "channel {}", ch.cuid());
    }
    for ch in &sample {
        let (_, r) = open(ch);
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), ch.cuid().to_le_bytes());
        assert!(matches!(
            r.recv_bytes(Timeout::Try),
            Err(Error::ChannelEmpty)
        ));
    }
    drop(sample);

    for ch in channels {
        ch.destroy().unwrap();
    }
    assert_eq!(p.stats().unwrap(), base, "back to the baseline");
    // The uids are free again.
    Channel::create(&p, N / 2, attrs(2, 16))
        .unwrap()
        .destroy()
        .unwrap();
    p.destroy().unwrap();
}

#[test]
fn channels_until_the_pool_is_full() {
    let _watchdog = watchdog(60, "channels_until_the_pool_is_full");
    let (p, _g) = pool("chfull", 64 << 10);
    let base = p.stats().unwrap();
    let mut channels = Vec::new();
    let e = loop {
        match Channel::create(&p, channels.len() as u64 + 1, attrs(2, 16)) {
            Ok(ch) => channels.push(ch),
            Err(e) => break e,
        }
        assert!(channels.len() <= 1000, "more channels than the pool holds");
    };
    assert_out_of_space(&e);
    assert!(channels.len() >= 8, "only {} channels fit", channels.len());
    // The channels made so far all work.
    for ch in &channels {
        let (s, r) = open(ch);
        s.send_bytes(b"ok", 2, None, Timeout::Try).unwrap();
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), b"ok");
    }
    // Destroy one: a new channel fits again.
    channels.swap_remove(3).destroy().unwrap();
    channels.push(Channel::create(&p, 100_000, attrs(2, 16)).unwrap());
    assert_out_of_space(&Channel::create(&p, 100_001, attrs(2, 16)).unwrap_err());
    for ch in channels {
        ch.destroy().unwrap();
    }
    assert_eq!(p.stats().unwrap(), base);
    p.destroy().unwrap();
}

// ----- a tmpfs too small for the pool -----

/// Size of the tmpfs the child mounts over `/dev/shm` in its own mount namespace.
const TINY_TMPFS: &str = "size=1m,mode=1777";
/// A pool data size of which one fits the tiny tmpfs and two do not.
const HALF_POOL: usize = 512 << 10;

/// Pools whose storage is all reserved at creation (what the first part of the tiny-tmpfs
/// child is about).
fn up_front(size: usize, name: &str, uid: u64) -> Result<MemoryPool, MemoryPoolError> {
    let attrs = PoolAttrs {
        reserve: Reserve::UpFront,
        ..PoolAttrs::default()
    };
    MemoryPool::create_with_attrs(size, name, uid, &attrs)
}

/// Unmounts the child's tiny tmpfs when dropped. The mount lives in the child's private
/// mount namespace, which the kernel tears down with the child anyway; this also covers a
/// child that outlives its test.
struct Unmount;

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("/dev/shm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Free bytes of `/dev/shm`.
fn shm_free() -> u64 {
    let st = rustix::fs::statvfs("/dev/shm").unwrap();
    st.f_bavail * st.f_frsize
}

/// The child's part: `/dev/shm` is a 1 MiB tmpfs of its own.
fn tiny_tmpfs_child() {
    let _watchdog = watchdog(60, "tiny_tmpfs child");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", TINY_TMPFS, "tmpfs", "/dev/shm"])
        .stdout(Stdio::null())
        .status()
        .expect("run mount");
    assert!(st.success(), "mount a tiny tmpfs on /dev/shm: {st}");
    let _unmount = Unmount;
    let empty = shm_free();
    assert!(
        empty <= 1 << 20,
        "the tiny tmpfs is in place ({empty} bytes free)"
    );

    // One pool fits.
    let a_name = unique_name("tiny-a");
    let _ga = ShmGuard::new(&a_name);
    let a = up_front(HALF_POOL, &a_name, 1).expect("the first pool fits");
    let with_a = shm_free();

    // A second one does not fit the space left (though it would fit the empty tmpfs): a
    // clear error, nothing left behind, no space kept reserved.
    let b_name = unique_name("tiny-b");
    let _gb = ShmGuard::new(&b_name);
    let e = up_front(HALF_POOL, &b_name, 2).unwrap_err();
    match &e {
        MemoryPoolError::NoSpace { name, bytes } => {
            assert_eq!(name, &b_name);
            assert!(*bytes > HALF_POOL as u64 && *bytes < 1 << 20, "{bytes}");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("no room in /dev/shm"), "{text}");
    assert!(
        text.contains("free space there or ask for a smaller pool"),
        "{text}"
    );
    assert!(
        std::fs::metadata(format!("/dev/shm/{b_name}")).is_err(),
        "nothing left behind"
    );
    assert_eq!(
        shm_free(),
        with_a,
        "the failed pool keeps no space reserved"
    );

    // The first pool is untouched and every byte of it is usable: its space was reserved
    // when it was made, so touching it cannot SIGBUS.
    let ch = Channel::create(&a, 1, attrs(4, 64)).unwrap();
    let (s, r) = open(&ch);
    let mut hog = fill(&a);
    for m in &mut hog {
        m.bytes_memview().unwrap().fill(0xA5);
    }
    assert!(
        hog.iter()
            .all(|m| m.bytes().unwrap().iter().all(|&b| b == 0xA5))
    );
    drop(hog);
    let payload = vec![7u8; 100_000];
    s.send_bytes(&payload, payload.len(), None, Timeout::Try)
        .unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), payload);
    drop((s, r));
    ch.destroy().unwrap();

    // A small pool still fits beside it.
    let c_name = unique_name("tiny-c");
    let _gc = ShmGuard::new(&c_name);
    up_front(64 << 10, &c_name, 3)
        .expect("a small pool fits the space left")
        .destroy()
        .unwrap();

    // Once the first pool is destroyed and unmapped its space comes back, and the second
    // pool can be made (and filled).
    a.destroy().unwrap();
    assert_eq!(shm_free(), empty, "the destroyed pool's space is back");
    let b = up_front(HALF_POOL, &b_name, 2).expect("fits once space is freed");
    let mut hog = fill(&b);
    for m in &mut hog {
        m.bytes_memview().unwrap().fill(0x3C);
    }
    drop(hog);
    b.destroy().unwrap();
    assert_eq!(shm_free(), empty);

    // A sparse pool eight times the tmpfs: created at once, it takes storage chunk by chunk
    // as allocations need it; when the tmpfs is full the allocation that needs a new chunk
    // fails with a clear error, and every byte handed out before is writable (no SIGBUS).
    let s_name = unique_name("tiny-s");
    let _gs = ShmGuard::new(&s_name);
    let sparse = MemoryPool::create(8 << 20, &s_name, 4).expect("a sparse pool is created");
    assert!(
        shm_free() > empty / 2,
        "creation reserved only metadata: {} of {empty} bytes left",
        shm_free()
    );
    let mut held = Vec::new();
    let err = loop {
        match Message::create_alloc(&sparse, 64 << 10) {
            Ok(mut m) => {
                m.bytes_memview().unwrap().fill(0x5A);
                held.push(m);
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, Error::ChannelError(Reason::Pool(PoolError::NoBacking))),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("file system is full"), "{text}");
    assert!(
        !held.is_empty(),
        "some chunks fitted before the tmpfs filled"
    );
    assert!(
        held.iter()
            .all(|m| m.bytes().unwrap().iter().all(|&b| b == 0x5A))
    );
    // Freed memory in backed chunks is allocatable again.
    held.pop();
    let again = Message::create_alloc(&sparse, 64 << 10).expect("a backed block again");
    drop((again, held));
    sparse.destroy().unwrap();
    assert_eq!(shm_free(), empty, "the sparse pool's storage is back");
}

/// `full_tmpfs_is_an_error_not_sigbus` (in `adapter_api.rs`) asks the real `/dev/shm` for
/// more than its whole size. This test covers what that one cannot do safely on a shared
/// `/dev/shm`: a pool that fits the file system but not the space other pools left, that
/// the failure keeps nothing reserved, that the existing pool is fully usable (no SIGBUS),
/// and that the same creation succeeds once space is freed. The adapter always uses
/// `/dev/shm`, so the child runs in a private mount namespace (`unshare --mount`) where a
/// 1 MiB tmpfs covers `/dev/shm`; nothing is visible outside it and the kernel removes the
/// mount when the child exits. Needs root; prints "skipped: ..." otherwise.
#[test]
fn tmpfs_too_small_for_another_pool() {
    const TEST: &str = "tmpfs_too_small_for_another_pool";
    if role().is_some() {
        return tiny_tmpfs_child();
    }
    let _watchdog = watchdog(90, TEST);
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: {TEST} needs root to mount a tmpfs in a private mount namespace");
        return;
    }
    // Probe: can this machine make a private mount namespace and mount a tmpfs in it? (A
    // container without CAP_SYS_ADMIN cannot.) The probe's mount dies with its namespace.
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .args([
            "mount", "-t", "tmpfs", "-o", TINY_TMPFS, "tmpfs", "/dev/shm",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(st) if st.success() => {}
        other => {
            eprintln!(
                "skipped: {TEST} cannot mount a tmpfs in a private mount namespace \
                 (unshare --mount ... mount -t tmpfs: {other:?})"
            );
            return;
        }
    }
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = support::Children(vec![
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(exe)
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, "tiny-tmpfs")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the child in a private mount namespace"),
    ]);
    let st = wait_child(&mut child.0[0], Duration::from_secs(60));
    assert!(st.success(), "tiny-tmpfs child failed: {st}");
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        mounts_before,
        "no mount left behind"
    );
}
