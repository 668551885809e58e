//! Remote channels end to end: several "nodes" on one machine, each a `dragon-gateway`
//! process with its own host id (`DRAGON_CHANNELS_HOST_ID`) and pool-name prefix, joined by
//! the TCP transport; each gateway starts this test binary again as its node's client
//! (`DC_TEST_ROLE=client`), which runs the named scenario for its rank. Clients swap
//! channel descriptors through files in a per-run directory.
//!
//! `std-adapter/gateway/run-mpi-tests.sh` runs the same client scenarios with the MPI transport, each
//! rank in its own mount namespace with a private `/dev/shm`.

use core::time::Duration;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use dragon_channels::remote::{Outcome, from_hex, to_hex};
use dragon_channels::{
    Channel, ChannelAttrs, ChannelSet, Error, MemoryPool, Message, Poll, Polled, Reason,
    RemoteError, ReturnMode, Timeout, WaitMode,
};

const ROLE: &str = "DC_TEST_ROLE";
const DIR: &str = "DC_DIR";
const MSGS: &str = "DC_MSGS";
/// Set by the TCP runs: a killed gateway must show as NodeLost to the other node (under
/// MPI the launcher may take the whole job down, and GatewayDown is as right).
const STRICT: &str = "DC_STRICT";
const LIMIT: Duration = Duration::from_secs(120);

// ---- the orchestrator (plain `cargo test`) ----

/// Free localhost ports for `n` gateways.
fn ports(n: usize) -> Vec<String> {
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// Kills what is still running and removes the run's files when dropped.
struct Run {
    children: Vec<Child>,
    dir: PathBuf,
    prefix: String,
}

impl Drop for Run {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Ok(rd) = std::fs::read_dir("/dev/shm") {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Runs `scenario` on `n` nodes; every node's client must succeed.
fn nodes(scenario: &str, n: usize, envs: &[(&str, String)]) {
    // Unique per scenario: the tests of this binary run at once in one process.
    let code = scenario
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 10_000;
    let prefix = format!("g{}x{code}-", std::process::id());
    let dir = std::env::temp_dir().join(format!("dcgw-{}-{scenario}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let peers = ports(n).join(",");
    let mut run = Run {
        children: Vec::new(),
        dir: dir.clone(),
        prefix: prefix.clone(),
    };
    for r in 0..n {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dragon-gateway"));
        cmd.args([
            "--transport",
            "tcp",
            "--rank",
            &r.to_string(),
            "--peers",
            &peers,
        ])
        .args([
            "--pool",
            &format!("{prefix}gw{r}"),
            "--pool-size",
            &(1u64 << 30).to_string(),
        ])
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([scenario, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, "client")
        .env(DIR, &dir)
        .env("DC_PREFIX", &prefix)
        .env(STRICT, "1")
        .env(dragon_channels::host::HOST_ID_ENV, (0x1000 + r).to_string())
        .stdout(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        run.children.push(cmd.spawn().unwrap());
    }
    let t0 = Instant::now();
    let mut codes = vec![None; n];
    while codes.iter().any(Option::is_none) {
        for (r, c) in run.children.iter_mut().enumerate() {
            if codes[r].is_none() {
                codes[r] = c.try_wait().unwrap().map(|s| s.code());
            }
        }
        assert!(
            t0.elapsed() < LIMIT,
            "{scenario}: nodes still running after {LIMIT:?}: {codes:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let want = envs
        .iter()
        .find(|(k, _)| *k == "DC_EXPECT_CODES")
        .map(|(_, v)| v.clone());
    let got: Vec<String> = codes
        .iter()
        .map(|c| c.flatten().map_or("signal".into(), |c| c.to_string()))
        .collect();
    match want {
        Some(w) => assert_eq!(got.join(","), w, "{scenario}: exit codes"),
        None => assert!(
            got.iter().all(|c| c == "0"),
            "{scenario}: exit codes {got:?}"
        ),
    }
    // Clients of a killed gateway are not its children any more: wait for their result.
    let t0 = Instant::now();
    while envs.iter().any(|(k, _)| *k == "DC_WAIT_FILE") {
        let f = dir.join("client-done");
        if f.exists() {
            assert_eq!(
                std::fs::read_to_string(&f).unwrap(),
                "ok",
                "{scenario}: orphaned client"
            );
            break;
        }
        assert!(
            t0.elapsed() < LIMIT,
            "{scenario}: orphaned client did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- the client side ----

fn rank() -> usize {
    std::env::var("DRAGON_GW_RANK").unwrap().parse().unwrap()
}

fn size() -> usize {
    std::env::var("DRAGON_GW_SIZE").unwrap().parse().unwrap()
}

fn dir() -> PathBuf {
    PathBuf::from(std::env::var(DIR).unwrap())
}

/// This node's pool, named with the run's prefix.
fn node_pool(tag: &str, size: usize) -> MemoryPool {
    let prefix = std::env::var("DC_PREFIX").unwrap_or_else(|_| "dc".into());
    MemoryPool::create(size, &format!("{prefix}{tag}{}", rank()), 0).unwrap()
}

/// Publishes a channel's descriptor under `name` (atomically).
fn publish(name: &str, ch: &Channel) {
    let tmp = dir().join(format!(".{name}.tmp"));
    std::fs::write(&tmp, to_hex(&ch.serialize())).unwrap();
    std::fs::rename(tmp, dir().join(name)).unwrap();
}

/// Waits for the descriptor published under `name` and attaches it.
fn fetch(name: &str) -> Channel {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(dir().join(name)) {
            return Channel::attach(&from_hex(&s).unwrap())
                .unwrap_or_else(|e| panic!("attaching {name} on node {}: {e}", rank()));
        }
        assert!(t0.elapsed() < LIMIT, "{name} never published");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn is_client() -> bool {
    std::env::var(ROLE).as_deref() == Ok("client")
}

fn secs(s: u64) -> Timeout {
    Timeout::After(Duration::from_secs(s))
}

/// Nodes in pairs (0 and 1, 2 and 3, ...): every send form from the even node into the odd
/// node's channel, every receive form of the even node from it, and the odd node sending
/// into the even node's channel.
fn client_send_recv_both_ways() {
    let pool = node_pool("p", 1 << 24);
    let mine = Channel::create(&pool, 7, None).unwrap();
    publish(&format!("ch{}", rank()), &mine);
    let other = fetch(&format!("ch{}", rank() ^ 1));
    assert!(other.is_remote() && !mine.is_remote());
    assert_eq!(other.capacity(), 100);
    assert_eq!(other.block_size(), 1024);
    let mut rs = other.sendh().unwrap();
    rs.open().unwrap();
    let mut rr = other.recvh().unwrap();
    rr.open().unwrap();
    let mut ls = mine.sendh().unwrap();
    ls.open().unwrap();
    let mut lr = mine.recvh().unwrap();
    lr.open().unwrap();
    if rank().is_multiple_of(2) {
        // Copy (the sender keeps its message), with attributes.
        let mut m = Message::create_alloc(&pool, 5).unwrap();
        m.bytes_memview().unwrap().copy_from_slice(b"copy!");
        m.set_hints(11);
        m.set_clientid(12);
        rs.send(&m, None, secs(10)).unwrap();
        assert_eq!(m.bytes().unwrap(), b"copy!");
        // Transfer (the memory leaves the sender; any local pool will do).
        let mut t = Message::create_alloc(&pool, 3000).unwrap();
        t.bytes_memview().unwrap().fill(7);
        t.set_hints(21);
        let live = pool.stats().unwrap().live;
        rs.send_transfer(t, secs(10)).unwrap();
        assert_eq!(
            pool.stats().unwrap().live,
            live - 1,
            "the transferred memory was freed"
        );
        // A destination message: filled, sent, left without memory.
        let mut d = Message::create_alloc(&pool, 64).unwrap();
        rs.send(&m, Some(&mut d), secs(10)).unwrap();
        assert!(!d.has_memory());
        rs.send_bytes(b"bytes", 8, None, secs(10)).unwrap();
        // Node 1 checks them and answers with four messages for node 0 to receive.
        let got = lr.recv_bytes(secs(30)).unwrap();
        assert_eq!(got, b"node 1 checked");
        let m = rr.recv(secs(10)).unwrap();
        assert_eq!(
            (m.bytes().unwrap(), m.hints(), m.clientid()),
            (&b"r1"[..], 31, 32)
        );
        let mut into = Message::create_alloc(&pool, 16).unwrap();
        rr.recv_into(&mut into, secs(10)).unwrap();
        assert_eq!(into.bytes().unwrap(), b"r2");
        let mut empty = Message::create_empty();
        rr.recv_into(&mut empty, secs(10)).unwrap();
        assert_eq!(empty.bytes().unwrap(), b"r3");
        assert_eq!(rr.recv_bytes(secs(10)).unwrap(), vec![9u8; 5000]);
    } else {
        let m = lr.recv(secs(30)).unwrap();
        assert_eq!(
            (m.bytes().unwrap(), m.hints(), m.clientid()),
            (&b"copy!"[..], 11, 12)
        );
        let t = lr.recv(secs(10)).unwrap();
        assert_eq!((t.len(), t.hints()), (3000, 21));
        assert!(t.bytes().unwrap().iter().all(|&b| b == 7));
        assert_eq!(lr.recv_bytes(secs(10)).unwrap(), b"copy!");
        assert_eq!(lr.recv_bytes(secs(10)).unwrap(), b"bytes\0\0\0");
        for (i, p) in [&b"r1"[..], b"r2", b"r3"].iter().enumerate() {
            let mut m = Message::create_alloc(&pool, p.len()).unwrap();
            m.bytes_memview().unwrap().copy_from_slice(p);
            if i == 0 {
                m.set_hints(31);
                m.set_clientid(32);
            }
            ls.send(&m, None, secs(10)).unwrap();
        }
        ls.send_bytes(&[9u8; 5000], 5000, None, secs(10)).unwrap();
        rs.send_bytes(b"node 1 checked", 14, None, secs(10))
            .unwrap();
    }
    drop((rs, rr, ls, lr, other));
    // Both nodes are done with each other's channel before either pool goes.
    barrier("sr");
    mine.destroy().unwrap();
    pool.destroy().unwrap();
}

/// Waits until every node's client reached `name`.
fn barrier(name: &str) {
    std::fs::write(dir().join(format!("{name}-{}", rank())), "").unwrap();
    let t0 = Instant::now();
    while (0..size()).any(|r| !dir().join(format!("{name}-{r}")).exists()) {
        assert!(t0.elapsed() < LIMIT, "barrier {name}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Timeouts and try-once against a full and an empty remote channel, polls, a destination
/// too small (the message is kept for the next receive), FIFO.
fn client_timeouts_and_poll() {
    let pool = node_pool("p", 1 << 22);
    if rank() == 1 {
        let attrs = ChannelAttrs {
            capacity: 2,
            ..ChannelAttrs::default()
        };
        let ch = Channel::create(&pool, 3, Some(attrs)).unwrap();
        publish("small", &ch);
        barrier("tp");
        ch.destroy().unwrap();
        pool.destroy().unwrap();
        return;
    }
    let ch = fetch("small");
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut r = ch.recvh_with(Timeout::Try).unwrap();
    r.open().unwrap();
    // Sets and futures watch local memory: refused, clearly.
    let e = ChannelSet::new(core::slice::from_ref(&ch), Poll::In).unwrap_err();
    assert!(
        matches!(e, Error::Remote(RemoteError::LocalOnly(_))) && e.to_string().contains("set"),
        "{e}"
    );
    {
        let mut fut = core::pin::pin!(r.recv_bytes_async());
        let polled = fut.as_mut().poll(&mut core::task::Context::from_waker(
            core::task::Waker::noop(),
        ));
        assert!(
            matches!(
                polled,
                core::task::Poll::Ready(Err(Error::Remote(RemoteError::LocalOnly(_))))
            ),
            "{polled:?}"
        );
    }
    assert!(matches!(
        r.recv_bytes(Timeout::Try),
        Err(Error::ChannelEmpty)
    ));
    assert!(matches!(
        r.recv_bytes(Timeout::Default),
        Err(Error::ChannelEmpty)
    ));
    let t0 = Instant::now();
    assert!(matches!(
        r.recv_bytes(Timeout::After(Duration::from_millis(60))),
        Err(Error::ChannelTimeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(60));
    assert!(matches!(
        ch.poll(Poll::In, Timeout::Try, WaitMode::Adaptive),
        Err(Error::ChannelTimeout)
    ));
    assert_eq!(
        ch.poll(Poll::Size, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Value(0)
    );
    assert_eq!(
        ch.poll(Poll::Empty, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Ready
    );
    assert_eq!(
        ch.poll(Poll::Capacity, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Value(2)
    );
    let tiny_cap = Message::create_alloc(&pool, 2).unwrap().capacity();
    let first = vec![1u8; tiny_cap + 1];
    s.send_bytes(&first, first.len(), None, Timeout::Try)
        .unwrap();
    s.send_bytes(b"second", 6, None, Timeout::Try).unwrap();
    assert!(matches!(
        s.send_bytes(b"x", 1, None, Timeout::Try),
        Err(Error::ChannelFull)
    ));
    let t0 = Instant::now();
    assert!(matches!(
        s.send_bytes(b"x", 1, None, Timeout::After(Duration::from_millis(60))),
        Err(Error::ChannelTimeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(60));
    assert_eq!(
        ch.poll(Poll::Full, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Ready
    );
    assert_eq!(ch.num_msgs(), 2);
    assert_eq!(
        ch.poll(Poll::In, secs(5), WaitMode::Adaptive).unwrap(),
        Polled::Ready
    );
    // Too small a destination: refused, and the message is the next receive's.
    let mut tiny = Message::create_alloc(&pool, 2).unwrap();
    let e = r.recv_into(&mut tiny, secs(5)).unwrap_err();
    assert!(
        matches!(e, Error::ChannelRecvError(Reason::DestinationTooSmall { needed, .. }) if needed == first.len()),
        "{e}"
    );
    assert_eq!(r.recv_bytes(secs(5)).unwrap(), first);
    assert_eq!(r.recv_bytes(secs(5)).unwrap(), b"second");
    // A blocked remote receive completes when a message arrives.
    let ch2 = ch.clone();
    let t = std::thread::spawn(move || {
        let mut s = ch2.sendh().unwrap();
        s.open().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.send_bytes(b"late", 4, None, secs(5)).unwrap();
    });
    assert_eq!(r.recv_bytes(Timeout::Block).unwrap(), b"late");
    t.join().unwrap();
    // Return modes: queued-only sends still arrive, in order.
    s.set_return_mode(ReturnMode::Immediately);
    assert_eq!(s.return_mode(), ReturnMode::Immediately);
    // A large one between small ones does not overtake them (the gateway batches the small).
    let big = vec![4u8; 40_000];
    s.send_bytes(b"i1", 2, None, secs(5)).unwrap();
    s.send_bytes(&big, big.len(), None, secs(5)).unwrap();
    s.send_bytes(b"i2", 2, None, secs(5)).unwrap();
    assert_eq!(r.recv_bytes(secs(5)).unwrap(), b"i1");
    assert_eq!(r.recv_bytes(secs(5)).unwrap(), big);
    assert_eq!(r.recv_bytes(secs(5)).unwrap(), b"i2");
    // Local-only operations say so.
    assert!(matches!(
        ch.clone().destroy(),
        Err(Error::Remote(RemoteError::LocalOnly(_)))
    ));
    assert!(matches!(
        dragon_channels::ChannelSet::new(core::slice::from_ref(&ch), Poll::In),
        Err(Error::Remote(RemoteError::LocalOnly(_)))
    ));
    drop((s, r, ch));
    barrier("tp");
    pool.destroy().unwrap();
}

/// Senders on nodes `0..n-1` into one channel on the last node, which has 4 receivers:
/// every message exactly once, in order per sender at each receiver.
fn client_many_to_one() {
    let n = size();
    let last = n - 1;
    let per: u64 = std::env::var(MSGS).map_or(500, |v| v.parse().unwrap());
    let pool = node_pool("p", 1 << 26);
    if rank() != last {
        let ch = fetch("sink");
        let mut s = ch.sendh().unwrap();
        s.open().unwrap();
        // Half the senders wait for each deposit, half only queue.
        if rank().is_multiple_of(2) {
            s.set_return_mode(ReturnMode::Immediately);
        }
        let mut b = [0u8; 64];
        for i in 0..per {
            b[..8].copy_from_slice(&(rank() as u64).to_le_bytes());
            b[8..16].copy_from_slice(&i.to_le_bytes());
            s.send_bytes(&b, 64, None, secs(60)).unwrap();
        }
        drop((s, ch));
        barrier("m1");
        pool.destroy().unwrap();
        return;
    }
    let attrs = ChannelAttrs {
        capacity: 256,
        ..ChannelAttrs::default()
    };
    let ch = Channel::create(&pool, 5, Some(attrs)).unwrap();
    publish("sink", &ch);
    let total = per * last as u64;
    let taken = Arc::new(std::sync::Mutex::new(0u64));
    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let (ch, taken) = (ch.clone(), taken.clone());
            std::thread::spawn(move || {
                let mut r = ch.recvh().unwrap();
                r.open().unwrap();
                let mut got = Vec::new();
                while *taken.lock().unwrap() < total {
                    match r.recv_bytes(Timeout::After(Duration::from_millis(20))) {
                        Ok(b) => {
                            *taken.lock().unwrap() += 1;
                            let s = u64::from_le_bytes(b[..8].try_into().unwrap());
                            let i = u64::from_le_bytes(b[8..16].try_into().unwrap());
                            got.push((s, i));
                        }
                        Err(Error::ChannelTimeout) => {}
                        Err(e) => panic!("receiver: {e}"),
                    }
                }
                got
            })
        })
        .collect();
    let mut seen = vec![vec![false; per as usize]; last];
    for t in receivers {
        let got = t.join().unwrap();
        let mut prev = vec![None::<u64>; last];
        for (s, i) in got {
            let s = s as usize;
            assert!(
                !seen[s][i as usize],
                "sender {s} message {i} delivered twice"
            );
            seen[s][i as usize] = true;
            assert!(
                prev[s].is_none_or(|p| p < i),
                "sender {s}: {i} after {prev:?}"
            );
            prev[s] = Some(i);
        }
    }
    assert!(seen.iter().flatten().all(|&b| b), "a message was lost");
    assert_eq!(ch.num_msgs(), 0, "no extra message");
    barrier("m1");
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

/// A 64 MiB payload each way: one send, one remote receive.
fn client_large_payload() {
    const BIG: usize = 64 << 20;
    let pool = node_pool("p", 3 << 27);
    let pattern = |i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    if rank() == 1 {
        let ch = Channel::create(&pool, 9, None).unwrap();
        publish("big", &ch);
        let back = Channel::create(&pool, 10, None).unwrap();
        publish("back", &back);
        let mut r = ch.recvh().unwrap();
        r.open().unwrap();
        let m = r.recv(secs(60)).unwrap();
        assert_eq!(m.len(), BIG);
        assert!(
            m.bytes()
                .unwrap()
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(i))
        );
        drop(m);
        // Back: two queued here for node 0's remote receives.
        let mut s = back.sendh().unwrap();
        s.open().unwrap();
        for k in 1..=2u8 {
            let mut m = Message::create_alloc(&pool, BIG).unwrap();
            for (i, b) in m.bytes_memview().unwrap().iter_mut().enumerate() {
                *b = pattern(i).wrapping_add(k);
            }
            m.set_hints(u64::from(k));
            s.send_transfer(m, secs(60)).unwrap();
        }
        drop((r, s));
        barrier("big");
        ch.destroy().unwrap();
        back.destroy().unwrap();
        pool.destroy().unwrap();
        return;
    }
    let ch = fetch("big");
    let mut s = ch.sendh().unwrap();
    s.open().unwrap();
    let mut m = Message::create_alloc(&pool, BIG).unwrap();
    for (i, b) in m.bytes_memview().unwrap().iter_mut().enumerate() {
        *b = pattern(i);
    }
    s.send(&m, None, secs(60)).unwrap();
    let back_ch = fetch("back");
    let mut r = back_ch.recvh().unwrap();
    r.open().unwrap();
    // A destination too small: refused, and the message stays for the next receive.
    let mut small = Message::create_alloc(&pool, 4096).unwrap();
    match r.recv_into(&mut small, secs(60)) {
        Err(Error::ChannelRecvError(Reason::DestinationTooSmall { needed, .. })) => {
            assert_eq!(needed, BIG)
        }
        other => panic!("a 4 KiB destination took a 64 MiB message: {other:?}"),
    }
    // As a message (in the gateway's pool, the remote channel's local pool).
    let got = r.recv(secs(60)).unwrap();
    assert_eq!((got.len(), got.hints()), (BIG, 1));
    assert_eq!(got.pool().unwrap().name(), back_ch.pool().name());
    assert!(
        got.bytes()
            .unwrap()
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(i).wrapping_add(1))
    );
    drop(got);
    let back = r.recv_bytes(secs(60)).unwrap();
    assert_eq!(back.len(), BIG);
    assert!(
        back.iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(i).wrapping_add(2))
    );
    drop((s, r, ch, m, back_ch));
    barrier("big");
    pool.destroy().unwrap();
}

/// Node 1's gateway dies in the middle: node 0's remote operations on node 1 fail with a
/// clear error (a receive in flight took nothing), its local channel still works, and node
/// 1's client sees its own gateway down.
fn client_gateway_killed() {
    let pool = node_pool("p", 1 << 22);
    let mine = Channel::create(&pool, 4, None).unwrap();
    publish(&format!("k{}", rank()), &mine);
    let other = fetch(&format!("k{}", 1 - rank()));
    let mut rs = other.sendh().unwrap();
    rs.open().unwrap();
    rs.send_bytes(b"before", 6, None, secs(10)).unwrap();
    barrier("k-sent");
    if rank() == 1 {
        let mut lr = mine.recvh().unwrap();
        lr.open().unwrap();
        assert_eq!(lr.recv_bytes(secs(10)).unwrap(), b"before");
        barrier("k-ready");
        // Kill this node's gateway (the parent), as a crash would.
        let gw = std::env::var("DRAGON_GW_PID").unwrap();
        let pid = gw.split(':').next().unwrap().to_owned();
        let st = Command::new("kill").args(["-9", &pid]).status().unwrap();
        assert!(st.success());
        let t0 = Instant::now();
        let e = loop {
            match rs.send_bytes(b"after", 5, None, secs(2)) {
                Err(e) => break e,
                Ok(()) => assert!(
                    t0.elapsed() < secs_d(10),
                    "sends keep working after the kill"
                ),
            }
        };
        assert!(
            matches!(e, Error::Remote(RemoteError::GatewayDown { .. })),
            "node 1 after its gateway died: {e}"
        );
        assert!(e.to_string().contains("gateway is down"), "{e}");
        // Local channels keep working.
        let mut ls = mine.sendh().unwrap();
        ls.open().unwrap();
        ls.send_bytes(b"local", 5, None, Timeout::Try).unwrap();
        assert_eq!(lr.recv_bytes(Timeout::Try).unwrap(), b"local");
        drop((rs, lr, ls, other));
        mine.destroy().unwrap();
        pool.destroy().unwrap();
        std::fs::write(dir().join("client-done"), "ok").unwrap();
        return;
    }
    let mut rr = other.recvh().unwrap();
    rr.open().unwrap();
    barrier("k-ready");
    // A blocking remote receive in flight when node 1's gateway dies.
    let t0 = Instant::now();
    let e = rr.recv_bytes(Timeout::Block).unwrap_err();
    assert!(t0.elapsed() < secs_d(30));
    let strict = std::env::var(STRICT).is_ok();
    match &e {
        Error::Remote(RemoteError::NodeLost { outcome, .. }) => {
            assert_eq!(*outcome, Outcome::NotDone)
        }
        Error::Remote(RemoteError::GatewayDown { .. }) if !strict => {}
        e => panic!("a receive from a dead node: {e}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("died") || msg.contains("down"), "{msg}");
    if strict {
        // Later requests fail at once, and a send says its outcome.
        let e = rs.send_bytes(b"x", 1, None, secs(5)).unwrap_err();
        assert!(
            matches!(e, Error::Remote(RemoteError::NodeLost { .. })),
            "{e}"
        );
    }
    let mut ls = mine.sendh().unwrap();
    ls.open().unwrap();
    let mut lr = mine.recvh().unwrap();
    lr.open().unwrap();
    assert_eq!(lr.recv_bytes(Timeout::Try).unwrap(), b"before");
    ls.send_bytes(b"still", 5, None, Timeout::Try).unwrap();
    assert_eq!(lr.recv_bytes(Timeout::Try).unwrap(), b"still");
    drop((rs, rr, ls, lr, other));
    mine.destroy().unwrap();
    pool.destroy().unwrap();
}

fn secs_d(s: u64) -> Duration {
    Duration::from_secs(s)
}

macro_rules! scenario {
    ($name:ident, $client:ident, $n:expr $(, $k:expr => $v:expr)*) => {
        #[test]
        fn $name() {
            if is_client() {
                return $client();
            }
            nodes(stringify!($name), $n, &[$(($k, $v.to_string())),*]);
        }
    };
}

scenario!(send_recv_both_ways, client_send_recv_both_ways, 2);
scenario!(send_recv_four_nodes, client_send_recv_both_ways, 4);
scenario!(timeouts_try_once_and_poll, client_timeouts_and_poll, 2);
scenario!(four_senders_one_sink, client_many_to_one, 5);
scenario!(large_payload_64mib, client_large_payload, 2);
scenario!(gateway_killed, client_gateway_killed, 2,
    "DC_EXPECT_CODES" => "0,signal", "DC_WAIT_FILE" => "1");
