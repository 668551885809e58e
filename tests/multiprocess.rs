//! Multi-process tests: the test binary re-runs itself as child roles (one test each, stdout
//! discarded) that attach to the parent's channel through its serialized descriptor.
//!
//! - the seed's example split over two processes;
//! - 4 sender processes x 4 receiver processes, 1,000,000 messages of mixed sizes (inline and
//!   side allocations, copy and transfer sends, all receive forms), each delivered exactly once
//!   with a checksum (`DC_STRESS_MESSAGES` overrides the count);
//! - 10 receiver processes blocked on an empty channel, released by 10 sends.

#[path = "support/mod.rs"]
mod support;

use core::time::Duration;
use std::time::Instant;

use dragon_channels::{Channel, ChannelAttrs, MemoryPool, Message, Timeout};
use support::{
    Children, ShmGuard, hex, role, spawn_role, unhex, unique_name, wait_child, watchdog,
};

const DESC: &str = "DC_TEST_DESC";

fn channel_from_env() -> Channel {
    let desc = unhex(&std::env::var(DESC).expect("descriptor in the environment"));
    Channel::attach(&desc).expect("child attaches to the channel")
}

// ----- the seed's example over two processes -----

#[test]
fn seed_example_across_two_processes() {
    if let Some(r) = role() {
        if r == "seed-sender" {
            let _watchdog = watchdog(60, "seed-sender child");
            let ch = channel_from_env();
            let mut sendh = ch.sendh().unwrap();
            sendh.open().unwrap();
            let mut msg = Message::create_alloc(ch.pool(), 512).unwrap();
            msg.bytes_memview().unwrap()[0..5].copy_from_slice(b"Hello");
            sendh.send(&msg, None, Timeout::Default).unwrap();
        }
        return;
    }
    let _watchdog = watchdog(120, "seed_example_across_two_processes");
    let name = unique_name("seed");
    let _g = ShmGuard::new(&name);
    let mpool = MemoryPool::create(1 << 20, &name, 0).unwrap();
    let ch = Channel::create(&mpool, 1, None).unwrap();
    let baseline = mpool.stats().unwrap();
    let mut recvh = ch.recvh().unwrap();
    recvh.open().unwrap();

    let mut child = Children(vec![spawn_role(
        "seed_example_across_two_processes",
        "seed-sender",
        &[(DESC, hex(&ch.serialize()))],
    )]);
    let recv_msg = recvh.recv(Timeout::Block).unwrap();
    let view = recv_msg.bytes().unwrap();
    let line = format!(
        "{} -- {}",
        String::from_utf8_lossy(b"Hello"),
        String::from_utf8_lossy(&view[0..5])
    );
    println!("{line}");
    assert_eq!(line, "Hello -- Hello");
    assert_eq!(view.len(), 512);
    assert!(wait_child(&mut child.0[0], Duration::from_secs(60)).success());
    drop(recv_msg);
    // The child's message was freed when it exited normally.
    assert_eq!(mpool.stats().unwrap(), baseline);
    drop(recvh);
    ch.destroy().unwrap();
    mpool.destroy().unwrap();
}

// ----- 4 x 4 processes, exactly once -----

const SENDERS: u32 = 4;
const RECEIVERS: u32 = 4;
const HDR: usize = 16;
const STOP: u32 = u32::MAX;
/// Largest payload (inline up to the block size, 1024; side allocations above).
const MAX_LEN: usize = 4096;

fn total_messages() -> u32 {
    std::env::var("DC_STRESS_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Payload length of message `seq` of `sender`: 60 % small inline, 25 % large inline, 15 %
/// side allocations.
fn len_of(sender: u32, seq: u32) -> usize {
    let h = (seq.wrapping_mul(2_654_435_761) ^ sender.wrapping_mul(40_503)) % 100;
    let r = (seq.wrapping_mul(7919) ^ sender) as usize;
    match h {
        0..60 => HDR + r % 241,
        60..85 => 257 + r % 768,
        _ => 1025 + r % (MAX_LEN - 1024),
    }
}

/// Deterministic payload bytes after the header.
fn fill_pattern(sender: u32, seq: u32, body: &mut [u8]) {
    let mut x = sender.wrapping_mul(0x9E37_79B9) ^ seq.wrapping_mul(0x85EB_CA6B) | 1;
    for b in body {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
}

/// Word-wise checksum of the body.
fn checksum(body: &[u8]) -> u32 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    let mut chunks = body.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(23);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    (h ^ (h >> 32)) as u32
}

/// Writes message `seq` of `sender` (header + pattern + checksum) into `buf[..len]`.
fn compose(sender: u32, seq: u32, buf: &mut [u8]) {
    let len = buf.len();
    fill_pattern(sender, seq, &mut buf[HDR..]);
    let sum = checksum(&buf[HDR..]);
    buf[0..4].copy_from_slice(&sender.to_le_bytes());
    buf[4..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    buf[12..16].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a received payload; returns (sender, seq) or why it is wrong.
fn verify(p: &[u8]) -> Result<(u32, u32), String> {
    if p.len() < HDR {
        return Err(format!("payload of {} bytes", p.len()));
    }
    let u = |i: usize| u32::from_le_bytes(p[i..i + 4].try_into().unwrap());
    let (sender, seq, len, sum) = (u(0), u(4), u(8) as usize, u(12));
    if sender == STOP {
        return Ok((STOP, 0));
    }
    if len != p.len() || len != len_of(sender, seq) {
        return Err(format!(
            "sender {sender} seq {seq}: length {} not {len}",
            p.len()
        ));
    }
    if checksum(&p[HDR..]) != sum {
        return Err(format!("sender {sender} seq {seq}: checksum mismatch"));
    }
    let mut expect = vec![0u8; len - HDR];
    fill_pattern(sender, seq, &mut expect);
    if expect != p[HDR..] {
        return Err(format!("sender {sender} seq {seq}: payload differs"));
    }
    Ok((sender, seq))
}

/// The exactly-once bitmap: one bit per message, in a pool allocation the parent made.
/// Raw atomics on purpose (the test checks the library, so it does not use it for this).
#[allow(clippy::disallowed_types)]
mod bitmap {
    use core::sync::atomic::{AtomicU32, Ordering};

    use dragon_channels::MemoryPool;

    pub struct Bits<'a> {
        pub pool: &'a MemoryPool,
        pub off: usize,
        pub words: usize,
    }

    impl Bits<'_> {
        fn word(&self, i: usize) -> &AtomicU32 {
            assert!(i < self.words);
            let region = self.pool.core_pool().region();
            assert!(self.off + 4 * self.words <= region.len());
            // SAFETY: the parent allocated `4 * words` bytes at `off` (64-aligned) from the
            // pool and keeps them for the whole test; the pool maps them in this process;
            // they were zeroed by the parent before any child started.
            unsafe { &*region.base().add(self.off + 4 * i).cast::<AtomicU32>() }
        }

        /// Sets bit `n`; returns whether it was already set.
        pub fn set(&self, n: usize) -> bool {
            // SYNC: none beyond the RMW itself: each bit is set once, and the parent reads
            // after the children exited (waitpid orders it).
            self.word(n / 32).fetch_or(1 << (n % 32), Ordering::Relaxed) & (1 << (n % 32)) != 0
        }

        pub fn count(&self) -> u64 {
            (0..self.words)
                .map(|i| u64::from(self.word(i).load(Ordering::Relaxed).count_ones()))
                .sum()
        }
    }
}

fn stress_sender(ch: &Channel, me: u32, per: u32) {
    let pool = ch.pool();
    let mut sendh = ch.sendh().unwrap();
    sendh.open().unwrap();
    let mut reused = Message::create_alloc(pool, MAX_LEN).unwrap();
    let mut scratch = vec![0u8; MAX_LEN];
    for seq in 0..per {
        let len = len_of(me, seq);
        match seq % 4 {
            0 => {
                compose(me, seq, &mut scratch[..len]);
                sendh
                    .send_bytes(&scratch[..len], len, None, Timeout::Block)
                    .unwrap();
            }
            1 => {
                let mut m = Message::create_alloc_blocking(pool, len, Timeout::Block).unwrap();
                compose(me, seq, m.bytes_memview().unwrap());
                sendh.send(&m, None, Timeout::Block).unwrap();
            }
            2 => {
                let mut m = Message::create_alloc_blocking(pool, len, Timeout::Block).unwrap();
                compose(me, seq, m.bytes_memview().unwrap());
                sendh.send_transfer(m, Timeout::Block).unwrap();
            }
            _ => {
                reused.set_len(len).unwrap();
                compose(me, seq, reused.bytes_memview().unwrap());
                reused.set_hints(u64::from(seq));
                sendh.send(&reused, None, Timeout::Block).unwrap();
            }
        }
    }
}

fn stress_receiver(ch: &Channel, bits: &bitmap::Bits<'_>, per: u32) {
    let pool = ch.pool();
    let mut recvh = ch.recvh().unwrap();
    recvh.open().unwrap();
    let mut dest = Message::create_alloc(pool, MAX_LEN).unwrap();
    let mut i = 0u64;
    loop {
        let got = match i % 3 {
            0 => {
                let m = recvh.recv(Timeout::Block).unwrap();
                verify(m.bytes().unwrap())
            }
            1 => verify(&recvh.recv_bytes(Timeout::Block).unwrap()),
            _ => {
                recvh.recv_into(&mut dest, Timeout::Block).unwrap();
                verify(dest.bytes().unwrap())
            }
        };
        i += 1;
        match got {
            Ok((STOP, _)) => return,
            Ok((sender, seq)) => {
                assert!(sender < SENDERS && seq < per, "sender {sender} seq {seq}");
                let n = (sender * per + seq) as usize;
                assert!(!bits.set(n), "sender {sender} seq {seq} delivered twice");
            }
            Err(why) => panic!("corrupt message: {why}"),
        }
    }
}

#[test]
fn four_senders_four_receivers_exactly_once() {
    let total = total_messages();
    let per = total / SENDERS;
    if let Some(r) = role() {
        let _watchdog = watchdog(900, "stress child");
        let ch = channel_from_env();
        let me: u32 = std::env::var("DC_TEST_INDEX").unwrap().parse().unwrap();
        if r == "stress-sender" {
            stress_sender(&ch, me, per);
        } else if r == "stress-receiver" {
            let off = std::env::var("DC_TEST_BITS").unwrap().parse().unwrap();
            let bits = bitmap::Bits {
                pool: ch.pool(),
                off,
                words: (per * SENDERS).div_ceil(32) as usize,
            };
            stress_receiver(&ch, &bits, per);
        }
        return;
    }
    let _watchdog = watchdog(900, "four_senders_four_receivers_exactly_once");
    let name = unique_name("stress");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(16 << 20, &name, 4).unwrap();
    let ch = Channel::create(
        &pool,
        44,
        Some(ChannelAttrs {
            capacity: 100,
            block_size: 1024,
        }),
    )
    .unwrap();
    let words = (per * SENDERS).div_ceil(32) as usize;
    let mut bitmem = Message::create_alloc(&pool, 4 * words).unwrap();
    bitmem.bytes_memview().unwrap().fill(0);
    let (off, _) = pool
        .core_pool()
        .span_unchecked(&bitmem.descriptor().unwrap())
        .unwrap();
    let baseline = pool.stats().unwrap();
    let desc = hex(&ch.serialize());

    let t0 = Instant::now();
    let mut receivers = Children(
        (0..RECEIVERS)
            .map(|i| {
                spawn_role(
                    "four_senders_four_receivers_exactly_once",
                    "stress-receiver",
                    &[
                        (DESC, desc.clone()),
                        ("DC_TEST_INDEX", i.to_string()),
                        ("DC_TEST_BITS", off.to_string()),
                    ],
                )
            })
            .collect(),
    );
    let mut senders = Children(
        (0..SENDERS)
            .map(|i| {
                spawn_role(
                    "four_senders_four_receivers_exactly_once",
                    "stress-sender",
                    &[(DESC, desc.clone()), ("DC_TEST_INDEX", i.to_string())],
                )
            })
            .collect(),
    );
    for c in &mut senders.0 {
        assert!(
            wait_child(c, Duration::from_secs(800)).success(),
            "a sender failed"
        );
    }
    // All data is queued before the stop messages: FIFO delivers them last, one per receiver.
    let mut sendh = ch.sendh().unwrap();
    sendh.open().unwrap();
    let mut stop = [0u8; HDR];
    stop[..4].copy_from_slice(&STOP.to_le_bytes());
    for _ in 0..RECEIVERS {
        sendh.send_bytes(&stop, HDR, None, Timeout::Block).unwrap();
    }
    for c in &mut receivers.0 {
        assert!(
            wait_child(c, Duration::from_secs(800)).success(),
            "a receiver failed"
        );
    }
    let elapsed = t0.elapsed();
    let bits = bitmap::Bits {
        pool: &pool,
        off,
        words,
    };
    assert_eq!(
        bits.count(),
        u64::from(per * SENDERS),
        "every message exactly once"
    );
    println!(
        "{} messages, {SENDERS} x {RECEIVERS} processes: {:.2} s ({:.0} messages/s)",
        per * SENDERS,
        elapsed.as_secs_f64(),
        f64::from(per * SENDERS) / elapsed.as_secs_f64()
    );
    assert_eq!(ch.num_msgs(), 0);
    // Every message's memory came back.
    assert_eq!(pool.stats().unwrap(), baseline);
    drop((bitmem, sendh));
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

// ----- 10 blocked receivers -----

#[test]
fn ten_blocked_receivers_released_by_ten_sends() {
    const N: u32 = 10;
    if let Some(r) = role() {
        if r == "blocked-receiver" {
            let _watchdog = watchdog(120, "blocked-receiver child");
            let ch = channel_from_env();
            let mut recvh = ch.recvh().unwrap();
            recvh.open().unwrap();
            let got = recvh.recv_bytes(Timeout::Block).unwrap();
            assert_eq!(got, b"release");
        }
        return;
    }
    let _watchdog = watchdog(180, "ten_blocked_receivers_released_by_ten_sends");
    let name = unique_name("blocked");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(1 << 20, &name, 10).unwrap();
    let ch = Channel::create(&pool, 1, None).unwrap();
    let desc = hex(&ch.serialize());
    let mut kids = Children(
        (0..N)
            .map(|_| {
                spawn_role(
                    "ten_blocked_receivers_released_by_ten_sends",
                    "blocked-receiver",
                    &[(DESC, desc.clone())],
                )
            })
            .collect(),
    );
    // Wait until all ten sleep on the channel.
    let t0 = Instant::now();
    while ch.blocked_receivers() < N {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {} receivers blocked",
            ch.blocked_receivers()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(kids.0.iter_mut().all(|c| matches!(c.try_wait(), Ok(None))));
    let mut sendh = ch.sendh().unwrap();
    sendh.open().unwrap();
    let t1 = Instant::now();
    for _ in 0..N {
        sendh
            .send_bytes(b"release", 7, None, Timeout::Block)
            .unwrap();
    }
    for c in &mut kids.0 {
        assert!(wait_child(c, Duration::from_secs(60)).success());
    }
    println!("10 blocked receivers released in {:?}", t1.elapsed());
    assert_eq!(ch.num_msgs(), 0);
    assert_eq!(ch.blocked_receivers(), 0);
    drop(sendh);
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}
