//! Single-process tests of the std adapter's API: pools, channels, messages, handles,
//! timeouts, attach errors and the CPU use of a blocked receiver.

#[path = "support/mod.rs"]
mod support;

use core::time::Duration;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use dragon_channels::{
    BytesOrMessage, Channel, ChannelAttrs, Error, MemoryPool, MemoryPoolError, Message, Poll,
    Polled, PoolAttrs, Reason, Reserve, Timeout, WaitMode,
};
use support::{ShmGuard, thread_cpu_time, unique_name, watchdog};

fn pool(tag: &str, size: usize) -> (MemoryPool, ShmGuard) {
    let name = unique_name(tag);
    let guard = ShmGuard::new(&name);
    (
        MemoryPool::create(size, &name, 42).expect("create pool"),
        guard,
    )
}

fn small() -> Option<ChannelAttrs> {
    Some(ChannelAttrs {
        capacity: 4,
        block_size: 64,
    })
}

#[test]
fn pool_create_attach_serialize_destroy() {
    let _watchdog = watchdog(60, "pool_create_attach_serialize_destroy");
    let (p, _g) = pool("pcad", 1 << 20);
    let path = format!("/dev/shm/{}", p.name());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "pool file mode");
    assert!(p.size() >= 1 << 20);
    assert_eq!(p.uid(), 42);
    assert!(p.party_id() & ((1 << 22) - 1) == std::process::id());
    assert!(p.is_alive(p.party_id()));
    assert_eq!(p.live_parties(), vec![p.party_id()]);

    // Attaching again in this process reuses the mapping and the party id.
    let a = MemoryPool::attach(p.name()).unwrap();
    assert!(a.same_pool(&p));
    let s = MemoryPool::attach_serialized(&p.serialize()).unwrap();
    assert!(s.same_pool(&p));
    assert_eq!(s.party_id(), p.party_id());

    // A second create of the same name fails and leaves the first intact.
    match MemoryPool::create(4096, p.name(), 1) {
        Err(e @ MemoryPoolError::AlreadyExists(_)) => {
            assert!(e.to_string().contains("already exists"), "{e}")
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    // Queries.
    let st = p.stats().unwrap();
    assert_eq!(st.live, 0);
    assert_eq!(st.free, st.total);
    assert_eq!(p.utilization().unwrap(), 0.0);
    let m = Message::create_alloc(&p, 1000).unwrap();
    assert_eq!(p.allocations().unwrap().len(), 1);
    assert_eq!(p.allocations().unwrap()[0].owner, p.party_id());
    assert!(p.utilization().unwrap() > 0.0);
    let fb = p.free_blocks().unwrap();
    assert_eq!(fb[0].0, 64);
    drop(m);
    assert_eq!(p.stats().unwrap(), st);

    let name = p.name().to_owned();
    let ser = p.serialize();
    drop((a, s));
    p.destroy().unwrap();
    assert!(std::fs::metadata(&path).is_err(), "destroy unlinks");
    match MemoryPool::attach(&name) {
        Err(e @ MemoryPoolError::NotFound(_)) => {
            assert!(e.to_string().contains("no pool named"), "{e}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        MemoryPool::attach_serialized(&ser),
        Err(MemoryPoolError::NotFound(_))
    ));
}

#[test]
fn pool_names_are_validated() {
    let _watchdog = watchdog(60, "pool_names_are_validated");
    for (name, frag) in [
        ("", "empty"),
        ("a/b", "'/'"),
        ("x".repeat(30).as_str(), "longer than 29"),
        ("bad name", "ASCII"),
        (".hidden", "start with '.'"),
    ] {
        match MemoryPool::create(4096, name, 0) {
            Err(e @ MemoryPoolError::BadName { .. }) => {
                assert!(e.to_string().contains(frag), "{name:?}: {e}")
            }
            other => panic!("{name:?}: expected BadName, got {other:?}"),
        }
        assert!(matches!(
            MemoryPool::attach(name),
            Err(MemoryPoolError::BadName { .. })
        ));
    }
    // 29 bytes is fine.
    let mut name = unique_name("");
    while name.len() < 29 {
        name.push('y');
    }
    let _g = ShmGuard::new(&name);
    MemoryPool::create(4096, &name, 0)
        .unwrap()
        .destroy()
        .unwrap();
}

#[test]
fn full_tmpfs_is_an_error_not_sigbus() {
    let _watchdog = watchdog(60, "full_tmpfs_is_an_error_not_sigbus");
    let st = rustix::fs::statvfs("/dev/shm").unwrap();
    let too_big = (st.f_blocks * st.f_frsize).saturating_mul(2) as usize;
    let name = unique_name("nospace");
    let _g = ShmGuard::new(&name);
    let up_front = PoolAttrs {
        reserve: Reserve::UpFront,
        ..PoolAttrs::default()
    };
    match MemoryPool::create_with_attrs(too_big, &name, 0, &up_front) {
        Err(e @ MemoryPoolError::NoSpace { .. }) => {
            assert!(e.to_string().contains("no room"), "{e}");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(
        std::fs::metadata(format!("/dev/shm/{name}")).is_err(),
        "nothing left behind"
    );
}

/// A sparse pool (the default) of half the machine's memory is created and destroyed at once
/// and takes almost no storage until allocations touch it.
#[test]
fn sparse_pool_of_half_the_memory_is_created_at_once() {
    let _watchdog = watchdog(60, "sparse_pool_of_half_the_memory_is_created_at_once");
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: usize = mem
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let half = total_kib * 1024 / 2;
    let name = unique_name("half");
    let _g = ShmGuard::new(&name);
    let t0 = Instant::now();
    let p = MemoryPool::create(half, &name, 0).unwrap();
    let created = t0.elapsed();
    let blocks = |name: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/dev/shm/{name}"))
            .unwrap()
            .blocks()
            * 512
    };
    let on_disk = blocks(&name);
    // Headers and the allocator's metadata (about 2.6 % of the data at 64-byte blocks, with
    // one record per 16 blocks) and a few chunks the first free blocks' links live in.
    assert!(
        (on_disk as usize) < half / 20,
        "{on_disk} bytes of storage for a {half}-byte pool"
    );
    // A message takes a chunk or so more, not the pool.
    let mut m = Message::create_alloc(&p, 4096).unwrap();
    m.bytes_memview().unwrap().fill(1);
    let with_one = blocks(&name);
    assert!(with_one - on_disk <= 32 << 20, "{on_disk} -> {with_one}");
    drop(m);
    p.destroy().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "created in {created:?}, all done in {:?}",
        t0.elapsed()
    );
}

#[test]
fn send_and_receive_forms_intermix() {
    let _watchdog = watchdog(60, "send_and_receive_forms_intermix");
    let (p, _g) = pool("forms", 1 << 20);
    let baseline = p.stats().unwrap();
    let ch = Channel::create(
        &p,
        9,
        Some(ChannelAttrs {
            capacity: 8,
            block_size: 128,
        }),
    )
    .unwrap();
    assert_eq!((ch.capacity(), ch.block_size(), ch.cuid()), (8, 128, 9));
    let with_channel = p.stats().unwrap();
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();

    // 1. copy send of an explicit message -> receive a new message.
    let mut m = Message::create_alloc(&p, 100).unwrap();
    m.bytes_memview().unwrap().fill(7);
    m.set_hints(11);
    m.set_clientid(12);
    s.send(&m, None, Timeout::Default).unwrap();
    assert_eq!(
        m.bytes().unwrap(),
        &[7u8; 100][..],
        "copy send keeps the message"
    );
    let got = r.recv(Timeout::Try).unwrap();
    assert_eq!(
        (got.bytes().unwrap(), got.hints(), got.clientid()),
        (&[7u8; 100][..], 11, 12)
    );

    // 2. send_bytes (padded to msg_len) -> receive into a destination with memory.
    s.send_bytes(b"Hello", 512, None, Timeout::Default).unwrap();
    let mut dest = Message::create_alloc(&p, 512).unwrap();
    r.recv_into(&mut dest, Timeout::Try).unwrap();
    assert_eq!(dest.len(), 512);
    assert_eq!(&dest.bytes().unwrap()[..5], b"Hello");
    assert!(dest.bytes().unwrap()[5..].iter().all(|&b| b == 0));

    // 3. transfer send (zero copy; side allocation) -> recv_bytes.
    let mut t = Message::create_alloc(&p, 3000).unwrap();
    t.bytes_memview().unwrap()[..4].copy_from_slice(b"xfer");
    let desc = t.descriptor().unwrap();
    s.send_transfer(t, Timeout::Default).unwrap();
    assert!(p.allocations().unwrap().iter().any(|a| a.alloc == desc));
    let b = r.recv_bytes(Timeout::Try).unwrap();
    assert_eq!((b.len(), &b[..4]), (3000, &b"xfer"[..]));

    // 4. the seed's destination form: send(s_msg, r_msg) then recv(r_msg).
    let mut s_msg = Message::create_alloc(&p, 512).unwrap();
    s_msg.bytes_memview().unwrap()[..5].copy_from_slice(b"world");
    let mut r_msg = Message::create_alloc(&p, 512).unwrap();
    s.send(&s_msg, Some(&mut r_msg), Timeout::Default).unwrap();
    assert!(!r_msg.has_memory(), "the destination's memory travels");
    r.recv_into(&mut r_msg, Timeout::Try).unwrap();
    assert_eq!(&r_msg.bytes().unwrap()[..5], b"world");
    // ... and without destination on send, receiving into r_msg copies into its memory.
    s.send(&s_msg, None, Timeout::Default).unwrap();
    r.recv_into(&mut r_msg, Timeout::Try).unwrap();
    assert_eq!(r_msg.len(), 512);

    // 5. large copy send (side allocation) -> receive into an empty message.
    let big = vec![0xABu8; 5000];
    s.send_bytes(&big, big.len(), None, Timeout::Default)
        .unwrap();
    let mut empty = Message::create_empty();
    r.recv_into(&mut empty, Timeout::Try).unwrap();
    assert_eq!(empty.bytes().unwrap(), &big[..]);

    // 6. a destination too small: the message stays queued.
    s.send_bytes(&big, big.len(), None, Timeout::Default)
        .unwrap();
    let mut tiny = Message::create_alloc(&p, 16).unwrap();
    match r.recv_into(&mut tiny, Timeout::Try) {
        Err(e @ Error::ChannelRecvError(Reason::DestinationTooSmall { .. })) => {
            assert!(e.to_string().contains("stays queued"), "{e}")
        }
        other => panic!("expected DestinationTooSmall, got {other:?}"),
    }
    assert_eq!(ch.num_msgs(), 1);
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), big);

    // Nothing leaks: back to the baseline once the messages are gone.
    drop((m, got, dest, s_msg, r_msg, empty, tiny));
    assert_eq!(p.stats().unwrap(), with_channel);
    drop((s, r));
    ch.destroy().unwrap();
    assert_eq!(p.stats().unwrap(), baseline);
}

#[test]
fn uid_in_use_and_destroyed_channel() {
    let _watchdog = watchdog(60, "uid_in_use_and_destroyed_channel");
    let (p, _g) = pool("uid", 1 << 20);
    let ch = Channel::create(&p, 5, small()).unwrap();
    match Channel::create(&p, 5, small()) {
        Err(e @ Error::ChannelError(Reason::UidInUse(5))) => {
            assert!(e.to_string().contains("uid 5 already exists"), "{e}")
        }
        other => panic!("expected UidInUse, got {other:?}"),
    }
    let ser = ch.serialize();
    let other = Channel::attach(&ser).unwrap();
    let mut s = other.sendh().unwrap();
    s.open().unwrap();
    ch.destroy().unwrap();
    assert!(matches!(
        s.send_bytes(b"x", 1, None, Timeout::Try),
        Err(Error::ChannelDestroyed)
    ));
    assert!(matches!(other.sendh(), Err(Error::ChannelDestroyed)));
    match Channel::attach(&ser) {
        Err(e @ Error::ChannelDestroyed) => assert!(e.to_string().contains("destroyed"), "{e}"),
        other => panic!("expected ChannelDestroyed, got {other:?}"),
    }
    // The uid is free again.
    Channel::create(&p, 5, small()).unwrap().destroy().unwrap();
}

#[test]
fn closed_handles_refuse_use() {
    let _watchdog = watchdog(60, "closed_handles_refuse_use");
    let (p, _g) = pool("closed", 1 << 20);
    let ch = Channel::create(&p, 1, small()).unwrap();
    let mut s = ch.sendh().unwrap();
    let mut r = ch.recvh().unwrap();
    let m = Message::create_alloc(&p, 8).unwrap();
    assert!(matches!(
        s.send(&m, None, Timeout::Try),
        Err(Error::ChannelHandleNotOpen)
    ));
    assert!(matches!(
        r.recv(Timeout::Try),
        Err(Error::ChannelHandleNotOpen)
    ));
    assert!(matches!(s.close(), Err(Error::ChannelHandleNotOpen)));
    s.open().unwrap();
    assert!(matches!(
        s.open(),
        Err(Error::ChannelError(Reason::AlreadyOpen))
    ));
    r.open().unwrap();
    s.send(&m, None, Timeout::Try).unwrap();
    s.close().unwrap();
    r.close().unwrap();
    let e = s.send_bytes(b"x", 1, None, Timeout::Try).unwrap_err();
    assert!(matches!(e, Error::ChannelHandleNotOpen));
    assert!(e.to_string().contains("call open()"), "{e}");
    let e = s.send_transfer(m, Timeout::Try).unwrap_err();
    assert!(matches!(e.error, Error::ChannelHandleNotOpen));
    assert_eq!(e.message.len(), 8, "the message comes back");
    assert!(matches!(
        r.recv_bytes(Timeout::Try),
        Err(Error::ChannelHandleNotOpen)
    ));
    r.open().unwrap();
    assert_eq!(r.recv_bytes(Timeout::Try).unwrap().len(), 8);
}

#[test]
fn timeouts_wait_at_least_their_duration() {
    let _watchdog = watchdog(60, "timeouts_wait_at_least_their_duration");
    let (p, _g) = pool("timeouts", 1 << 20);
    let ch = Channel::create(&p, 1, small()).unwrap();
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();

    // Try once on an empty channel: ChannelEmpty, not a timeout (also Duration::ZERO).
    assert!(matches!(r.recv(Timeout::Try), Err(Error::ChannelEmpty)));
    assert!(matches!(
        r.recv_bytes(Timeout::After(Duration::ZERO)),
        Err(Error::ChannelEmpty)
    ));
    // A duration: ChannelTimeout after at least that long.
    let t0 = Instant::now();
    assert!(matches!(
        r.recv_bytes(Duration::from_millis(200).into()),
        Err(Error::ChannelTimeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(200));

    // Fill it: try once gives ChannelFull; a duration gives ChannelTimeout.
    for i in 0..4u8 {
        s.send_bytes(&[i], 1, None, Timeout::Try).unwrap();
    }
    assert_eq!(
        ch.poll(Poll::Full, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Ready
    );
    let e = s.send_bytes(b"x", 1, None, Timeout::Try).unwrap_err();
    assert!(matches!(e, Error::ChannelFull), "{e}");
    let t0 = Instant::now();
    assert!(matches!(
        s.send_bytes(b"x", 1, None, Timeout::After(Duration::from_millis(150))),
        Err(Error::ChannelTimeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(150));
    let m = Message::create_alloc(&p, 8).unwrap();
    let e = s.send_transfer(m, Timeout::Try).unwrap_err();
    assert!(matches!(e.error, Error::ChannelFull));
    assert_eq!(e.message.len(), 8);

    // Handle defaults, set when the handle is made, apply to Timeout::Default.
    let mut sd = ch
        .sendh_with(Timeout::After(Duration::from_millis(100)))
        .unwrap();
    sd.open().unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        sd.send_bytes(b"x", 1, None, Timeout::Default),
        Err(Error::ChannelTimeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    let mut st = ch.sendh_with(Timeout::Try).unwrap();
    st.open().unwrap();
    assert!(matches!(
        st.send_bytes(b"x", 1, None, Timeout::Default),
        Err(Error::ChannelFull)
    ));
    for i in 0..4u8 {
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), [i]);
    }
    let mut rd = ch
        .recvh_with(Timeout::After(Duration::from_millis(120)))
        .unwrap();
    rd.open().unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        rd.recv(Timeout::Default),
        Err(Error::ChannelTimeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(120));

    // An explicit override beats the default: block until a sender comes.
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            s.send_bytes(b"late", 4, None, Timeout::Block).unwrap();
        });
        assert_eq!(rd.recv_bytes(Timeout::from(None)).unwrap(), b"late");
        assert!(t0.elapsed() >= Duration::from_millis(50));
    });
}

/// A wait never ends before its deadline as the caller measures it: `Instant` around the
/// call, a 20 ms timeout on an empty channel (both receives) and on a full one (both sends).
/// The adapter computes its deadline after the first failed try, later than the caller's
/// clock read, so the caller's measure is never shorter.
#[test]
fn short_timeouts_never_end_before_their_deadline() {
    let _watchdog = watchdog(60, "short_timeouts_never_end_before_their_deadline");
    const T: Duration = Duration::from_millis(20);
    let (p, _g) = pool("deadline", 1 << 20);
    let ch = Channel::create(&p, 1, small()).unwrap();
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    let waited = |what: &str, op: &mut dyn FnMut() -> Error| {
        let t0 = Instant::now();
        let e = op();
        let elapsed = t0.elapsed();
        assert!(matches!(e, Error::ChannelTimeout), "{what}: {e}");
        assert!(
            elapsed >= T,
            "{what} ended after {elapsed:?}, before its {T:?} timeout"
        );
    };
    for _ in 0..3 {
        waited("recv on an empty channel", &mut || {
            r.recv(Timeout::After(T)).unwrap_err()
        });
        waited("recv_bytes on an empty channel", &mut || {
            r.recv_bytes(Timeout::After(T)).unwrap_err()
        });
        for i in 0..4u8 {
            s.send_bytes(&[i], 1, None, Timeout::Try).unwrap();
        }
        waited("send_bytes on a full channel", &mut || {
            s.send_bytes(b"x", 1, None, Timeout::After(T)).unwrap_err()
        });
        waited("send_transfer on a full channel", &mut || {
            s.send_transfer(Message::create_alloc(&p, 8).unwrap(), Timeout::After(T))
                .unwrap_err()
                .error
        });
        for i in 0..4u8 {
            assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), [i]);
        }
    }
}

#[test]
fn blocked_receiver_uses_almost_no_cpu() {
    let _watchdog = watchdog(60, "blocked_receiver_uses_almost_no_cpu");
    let (p, _g) = pool("cpu", 1 << 20);
    let ch = Channel::create(&p, 1, small()).unwrap();
    let mut r = ch.recvh().unwrap();
    r.open().unwrap();
    let waiter = std::thread::spawn(move || {
        let cpu0 = thread_cpu_time();
        let t0 = Instant::now();
        let res = r.recv(Timeout::After(Duration::from_secs(2)));
        (t0.elapsed(), thread_cpu_time() - cpu0, res.is_err())
    });
    // While it waits, the channel reports one blocked receiver.
    let t0 = Instant::now();
    while ch.blocked_receivers() == 0 && t0.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        ch.poll(Poll::BlockedReceivers, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Value(1)
    );
    let (wall, cpu, timed_out) = waiter.join().unwrap();
    assert!(timed_out);
    assert!(wall >= Duration::from_secs(2));
    println!("blocked 2 s receive: {cpu:?} CPU");
    assert!(
        cpu < Duration::from_millis(20),
        "blocked receiver used {cpu:?} CPU"
    );
    assert_eq!(ch.blocked_receivers(), 0);
}

#[test]
fn attach_with_bad_bytes_gives_clear_errors() {
    let _watchdog = watchdog(60, "attach_with_bad_bytes_gives_clear_errors");
    let (p, _g) = pool("badattach", 1 << 20);
    let ch = Channel::create(&p, 3, small()).unwrap();
    let ser = ch.serialize();

    let bad_desc = |r: Result<Channel, Error>, frag: &str| match r {
        Err(e @ Error::ChannelError(Reason::BadDescriptor(_))) => {
            assert!(e.to_string().contains(frag), "{e}")
        }
        other => panic!("expected BadDescriptor({frag}), got {other:?}"),
    };
    bad_desc(Channel::attach(b"definitely not a descriptor"), "bad magic");
    bad_desc(Channel::attach(&[]), "truncated");
    bad_desc(Channel::attach(&ser[..ser.len() / 2]), "truncated");
    bad_desc(Channel::attach(&ser[..ser.len() - 1]), "truncated");
    let mut flipped = ser.clone();
    flipped[20] ^= 0x40;
    bad_desc(Channel::attach(&flipped), "checksum");
    let mut garbage = vec![0u8; ser.len()];
    garbage[..4].copy_from_slice(&ser[..4]);
    bad_desc(Channel::attach(&garbage), "");

    // Pool bytes: garbage, truncated, and a pool that does not exist.
    for bytes in [&b"junk"[..], &p.serialize()[..10]] {
        match MemoryPool::attach_serialized(bytes) {
            Err(e @ MemoryPoolError::BadDescriptor(_)) => {
                assert!(
                    e.to_string().contains("bad serialized pool descriptor"),
                    "{e}"
                )
            }
            other => panic!("expected BadDescriptor, got {other:?}"),
        }
    }
    // A file that is not a pool.
    let other = unique_name("notapool");
    let _go = ShmGuard::new(&other);
    std::fs::write(format!("/dev/shm/{other}"), b"some other program's bytes").unwrap();
    match MemoryPool::attach(&other) {
        Err(e @ MemoryPoolError::NotAPool { .. }) => {
            assert!(e.to_string().contains("not a dragon-channels pool"), "{e}")
        }
        other => panic!("expected NotAPool, got {other:?}"),
    }
    match MemoryPool::attach(&unique_name("nosuchpool")) {
        Err(e @ MemoryPoolError::NotFound(_)) => {
            assert!(e.to_string().contains("create it first"), "{e}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    // Stale: the channel's pool was destroyed (NotFound), then a new pool took its name
    // (Stale: the creation nonce differs).
    let name = p.name().to_owned();
    drop(ch);
    p.destroy().unwrap();
    match Channel::attach(&ser) {
        Err(Error::MemoryPool(e @ MemoryPoolError::NotFound(_))) => {
            assert!(e.to_string().contains("no pool named"), "{e}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let again = MemoryPool::create(1 << 20, &name, 42).unwrap();
    let _same_uid = Channel::create(&again, 3, small()).unwrap();
    match Channel::attach(&ser) {
        Err(Error::MemoryPool(e @ MemoryPoolError::Stale(_))) => {
            assert!(e.to_string().contains("fresh descriptor"), "{e}")
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    again.destroy().unwrap();
}

#[test]
fn messages_and_pool_memory() {
    let _watchdog = watchdog(60, "messages_and_pool_memory");
    let (p, _g) = pool("msgs", 1 << 20);
    let (q, _gq) = pool("msgs2", 1 << 20);
    let base = p.stats().unwrap();
    let mut e = Message::create_empty();
    assert!(!e.has_memory());
    assert_eq!((e.len(), e.capacity()), (0, 0));
    match e.bytes_memview() {
        Err(err @ Error::ChannelError(Reason::EmptyMessage)) => {
            assert!(err.to_string().contains("create_alloc"), "{err}")
        }
        other => panic!("expected EmptyMessage, got {other:?}"),
    }
    let m = Message::create_alloc(&p, 100).unwrap();
    assert_eq!((m.len(), m.capacity()), (100, 128));
    // destroy without freeing hands the descriptor back.
    let d = m.destroy(false).unwrap().unwrap();
    assert_eq!(p.stats().unwrap().live, 1);
    p.free(d).unwrap();
    assert!(matches!(
        p.free(d),
        Err(MemoryPoolError::Pool(
            dragon_channels::dragon_channels_core::PoolError::Stale
        ))
    ));
    let m = Message::create_alloc(&p, 10).unwrap();
    assert_eq!(m.destroy(true).unwrap(), None);
    assert_eq!(p.stats().unwrap(), base);

    // Too large now / ever.
    assert!(matches!(
        Message::create_alloc(&p, 1 << 30),
        Err(Error::ChannelError(Reason::Pool(_)))
    ));
    let hog = Message::create_alloc(&p, p.max_alloc()).unwrap();
    assert!(matches!(
        Message::create_alloc(&p, 64),
        Err(Error::ChannelError(Reason::Pool(_)))
    ));
    // A blocking allocation waits for a free.
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(hog);
        });
        let m =
            Message::create_alloc_blocking(&p, 64, Timeout::After(Duration::from_secs(5))).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50));
        drop(m);
    });

    // Memory of another pool cannot be transferred into this pool's channel.
    let ch = Channel::create(&p, 1, small()).unwrap();
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let foreign = Message::create_alloc(&q, 8).unwrap();
    let err = s.send_transfer(foreign, Timeout::Try).unwrap_err();
    assert!(matches!(
        err.error,
        Error::ChannelSendError(Reason::ForeignMemory)
    ));
    assert!(err.to_string().contains("send it by copy"), "{err}");
    // ... but it can be sent by copy.
    s.send(&err.message, None, Timeout::Try).unwrap();
    // send_bytes refuses a msg_len shorter than the bytes.
    assert!(matches!(
        s.send_bytes(b"abcdef", 3, None, Timeout::Try),
        Err(Error::ChannelSendError(Reason::MsgLenTooShort { .. }))
    ));
    drop(s);
    ch.destroy().unwrap();
    assert_eq!(p.stats().unwrap(), base);
}

/// `Message::create_from_mem` takes a live data allocation over (destroying the message frees
/// it, and this process owns it), and refuses a payload longer than the block, a channel's
/// own memory and a freed allocation, each with its own error.
#[test]
fn a_message_takes_over_an_existing_allocation() {
    let (pool, _g) = pool("frommem", 1 << 20);
    let core = pool.core_pool();
    let a = core
        .alloc(100, dragon_channels::AllocKind::Data)
        .expect("allocate");
    let mut m = Message::create_from_mem(&pool, a, 100).unwrap();
    assert_eq!((m.len(), m.capacity()), (100, 128));
    assert_eq!(core.owner_of(&a).unwrap(), core.owner());
    m.bytes_memview().unwrap()[..3].copy_from_slice(b"abc");
    // Handed back without freeing, then taken over again with a shorter payload.
    let back = m
        .destroy(false)
        .unwrap()
        .expect("the allocation comes back");
    assert_eq!(back, a);
    let m = Message::create_from_mem(&pool, a, 3).unwrap();
    assert_eq!(m.bytes().unwrap(), b"abc");
    let live = pool.allocations().unwrap().len();
    m.destroy(true).unwrap();
    assert_eq!(
        pool.allocations().unwrap().len(),
        live - 1,
        "destroy freed it"
    );
    assert!(matches!(
        Message::create_from_mem(&pool, a, 3),
        Err(Error::MemoryPool(_))
    ));
    let b = core.alloc(64, dragon_channels::AllocKind::Data).unwrap();
    assert!(matches!(
        Message::create_from_mem(&pool, b, 65),
        Err(Error::ChannelError(Reason::DestinationTooSmall {
            needed: 65,
            capacity: 64
        }))
    ));
    core.free(b).unwrap();
    let ch = Channel::create(&pool, 1, small()).unwrap();
    let own = pool
        .allocations()
        .unwrap()
        .into_iter()
        .find(|i| i.kind == dragon_channels::AllocKind::Channel)
        .expect("the channel's allocation");
    let e = Message::create_from_mem(&pool, own.alloc, 8).unwrap_err();
    assert!(e.to_string().contains("channel's own memory"), "{e}");
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

#[test]
fn recv_bytes_or_message_copies_small_payloads_and_hands_over_large_ones() {
    let _watchdog = watchdog(60, "recv_bytes_or_message");
    let (pool, _g) = pool("bom", 1 << 20);
    let ch = Channel::create(&pool, 1, small()).unwrap();
    let (mut s, mut r) = (ch.sendh().unwrap(), ch.recvh().unwrap());
    s.open().unwrap();
    r.open().unwrap();
    // Inline (10 B), side allocation under the limit (100 B), side over it (300 B), and a
    // transferred allocation over it.
    s.send_bytes(&[1u8; 10], 10, None, Timeout::Try).unwrap();
    s.send_bytes(&[2u8; 100], 100, None, Timeout::Try).unwrap();
    s.send_bytes(&[3u8; 300], 300, None, Timeout::Try).unwrap();
    let mut m = Message::create_alloc(&pool, 500).unwrap();
    m.bytes_memview().unwrap().fill(4);
    m.set_hints(9);
    let a = m.descriptor().unwrap();
    s.send_transfer(m, Timeout::Try).ok().unwrap();
    let live = pool.allocations().unwrap().len();
    for (want, n) in [(1u8, 10usize), (2, 100)] {
        match r.recv_bytes_or_message(200, Timeout::Try).unwrap() {
            BytesOrMessage::Bytes(b) => assert_eq!(b, vec![want; n]),
            BytesOrMessage::Message(_) => panic!("{n} bytes came as a message"),
        }
    }
    // The 100-byte side allocation was freed by the copy.
    assert_eq!(pool.allocations().unwrap().len(), live - 1);
    for (want, n) in [(3u8, 300usize), (4, 500)] {
        match r.recv_bytes_or_message(200, Timeout::Try).unwrap() {
            BytesOrMessage::Message(m) => {
                assert_eq!(m.bytes().unwrap(), &vec![want; n][..]);
                if want == 4 {
                    assert_eq!(
                        (m.descriptor(), m.hints()),
                        (Some(a), 9),
                        "the same allocation"
                    );
                }
            }
            BytesOrMessage::Bytes(_) => panic!("{n} bytes came as bytes"),
        }
    }
    assert!(matches!(
        r.recv_bytes_or_message(200, Timeout::Try),
        Err(Error::ChannelEmpty)
    ));
    let t0 = Instant::now();
    assert!(matches!(
        r.recv_bytes_or_message(200, Timeout::After(Duration::from_millis(20))),
        Err(Error::ChannelTimeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(20));
    drop((s, r));
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

/// Whether this process maps `/dev/shm/<name>` (from /proc/self/maps).
fn mapped(name: &str) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let path = format!("/dev/shm/{name}");
    maps.lines().any(|l| l.contains(&path))
}

/// A thread that allocates messages keeps one spare reference to the pool it last used (so
/// that a message costs no reference-count atomics): destroying or detaching the pool on
/// that thread lets the mapping go with its last handle, as without the spare; on another
/// thread, the spare goes when its thread ends or allocates from another pool.
#[test]
fn a_threads_spare_pool_reference_does_not_keep_a_dropped_pool_mapped() {
    let _watchdog = watchdog(
        60,
        "a_threads_spare_pool_reference_does_not_keep_a_dropped_pool_mapped",
    );
    // Destroyed on the thread that allocated.
    let (p, _g) = pool("spare-d", 1 << 20);
    let name = p.name().to_owned();
    drop(Message::create_alloc(&p, 64).unwrap());
    assert!(mapped(&name));
    p.destroy().unwrap();
    assert!(!mapped(&name), "destroy dropped this thread's spare");
    // Detached on the thread that allocated.
    let (p, _g2) = pool("spare-x", 1 << 20);
    let name = p.name().to_owned();
    drop(Message::create_alloc(&p, 64).unwrap());
    p.detach();
    assert!(!mapped(&name), "detach dropped this thread's spare");
    // Allocated on another thread that then moves on to another pool, and one that ends.
    let (p, _g3) = pool("spare-t", 1 << 20);
    let (q, _g4) = pool("spare-u", 1 << 20);
    let name = p.name().to_owned();
    // Joined (not scoped) threads: their thread-local destructors have run when `join`
    // returns.
    let (p1, q1) = (p.clone(), q.clone());
    std::thread::spawn(move || {
        drop(Message::create_alloc(&p1, 64).unwrap());
        drop(Message::create_alloc(&q1, 64).unwrap());
    })
    .join()
    .unwrap();
    let p2 = p.clone();
    std::thread::spawn(move || drop(Message::create_alloc(&p2, 64).unwrap()))
        .join()
        .unwrap();
    p.destroy().unwrap();
    assert!(
        !mapped(&name),
        "the spares went with their threads or the next pool"
    );
    q.destroy().unwrap();
}

/// The references a thread banks for the pool it last made or dropped messages of (any
/// number of them: one per message dropped there) and its cache stay exact across batches,
/// alternating pools and messages dropped on another thread: every pool is back at its free
/// space when its messages are gone, and lets its mapping go on destroy once the threads that
/// banked references to it have moved on or ended.
#[test]
fn banked_pool_references_and_thread_caches_stay_exact() {
    let _watchdog = watchdog(60, "banked_pool_references_and_thread_caches_stay_exact");
    let (p, _g) = pool("bank-p", 1 << 20);
    let (q, _g2) = pool("bank-q", 1 << 20);
    let (p_free, q_free) = (p.free_space().unwrap(), q.free_space().unwrap());
    // A batch: more messages than a magazine has slots, then all dropped (a bank of many).
    for round in 0..3 {
        let batch: Vec<Message> = (0..40)
            .map(|i| Message::create_alloc(&p, 64 << (i % 4)).unwrap())
            .collect();
        assert!(p.free_space().unwrap() < p_free, "round {round}");
        drop(batch);
        assert_eq!(p.free_space().unwrap(), p_free, "round {round}");
    }
    // Alternating pools: each message's drop may make its pool the hot one.
    for i in 0..50 {
        let a = Message::create_alloc(&p, 64).unwrap();
        let b = Message::create_alloc(&q, 100 + i).unwrap();
        let c = Message::create_alloc(&p, 64).unwrap();
        if i % 2 == 0 {
            drop((a, b, c));
        } else {
            drop((b, c, a));
        }
    }
    assert_eq!(p.free_space().unwrap(), p_free);
    assert_eq!(q.free_space().unwrap(), q_free);
    // Made here, dropped by another thread, which banks the references until it ends.
    let made: Vec<Message> = (0..30)
        .map(|_| Message::create_alloc(&q, 64).unwrap())
        .collect();
    std::thread::spawn(move || drop(made)).join().unwrap();
    assert_eq!(q.free_space().unwrap(), q_free);
    assert!(p.allocations().unwrap().is_empty());
    assert!(q.allocations().unwrap().is_empty());
    let (p_name, q_name) = (p.name().to_owned(), q.name().to_owned());
    // This thread's hot pool is `q` now: `p`'s references went when `q` became hot.
    p.destroy().unwrap();
    assert!(
        !mapped(&p_name),
        "p's banked references went with the switch"
    );
    q.destroy().unwrap();
    assert!(!mapped(&q_name), "destroy let go of q's banked references");
}
