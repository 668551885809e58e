//! Kill injection: 4 sender and 4 receiver processes share one channel while the parent kills
//! one of them with SIGKILL, 200 times per mode (`DC_KILLS` overrides the count), restarting
//! it each time. Two modes, one test each (run one after the other, never at once):
//! - random: a random child at a random moment;
//! - mid-send: a random sender stops, at a send the parent picks at random, between claiming
//!   its slot and publishing it (the core's fault hook at `SendClaimed`, `SendAdvanced` or
//!   `SendWritten`, leaving its claim and position as a crash there would); once the others
//!   are stuck behind it (nothing received for [`QUIET`]), the parent kills it.
//!
//! What it shows, from a ledger of sends and receives kept in a second shared mapping:
//! - survivors never wedge: after every kill a message is received again within a bounded
//!   time. The time from each kill to the next message received by anyone (the receiver
//!   stamps it with the monotonic clock, shared by all processes) is printed per mode as
//!   count, p50, p99 and max: a benchmark figure that depends on the machine's load, not
//!   judged by the test;
//! - every message whose send returned success is received exactly once, intact, unless a
//!   receiver died holding it (those are counted apart, and there can be at most one per
//!   receiver kill); messages whose sender died inside `send` may or may not arrive (counted;
//!   at most one per sender kill, exactly one in mid-send mode);
//! - no send times out, no child fails, no message is received twice or damaged;
//! - after the run and a recovery pass, the pool's free space and live allocations are back
//!   at their baseline.
//!
//!
//! A third test kills processes that only allocate and free (`Message::create_alloc` + drop of
//! small sizes in a tight loop, so deaths land inside the pool's fast path, lazy frees and
//! all): after the kills and one recovery pass, the pool's free space, live allocations and
//! free blocks per size are exactly what they were before.
//!
//! The run prints its counts and figures:
//! `cargo test --release -p dragon-channels-tests --test kill_injection -- --nocapture`.
#![allow(clippy::std_instead_of_core, clippy::disallowed_types)] // a std test program

#[path = "support/mod.rs"]
mod support;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::time::Duration;
use std::process::Child;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use dragon_channels::dragon_channels_core::checksum;
use dragon_channels::dragon_channels_core::fault::{self, Step};
use dragon_channels::{Channel, ChannelAttrs, Error, MemoryPool, Message, Timeout};
use support::{Children, ShmGuard, hex, role, spawn_role, unhex, unique_name, watchdog};

const DESC: &str = "DC_KILL_DESC";
const LEDGER: &str = "DC_KILL_LEDGER";
const INDEX: &str = "DC_KILL_INDEX";
const ROLES: usize = 4;
/// Sequence numbers per sender (the ledger's bitmaps are this long; below 2^24, see
/// `HOLDING`).
const MAX_SEQ: u32 = 1 << 22;
const BITMAP_WORDS: usize = (MAX_SEQ / 32) as usize;
/// A wait on the channel that lasts this long is a wedge.
const WEDGE: Duration = Duration::from_secs(10);
/// Mid-send mode: how long nothing must be received before the stopped sender is killed
/// (by then the survivors are stuck behind its slot, so the next message needs recovery).
const QUIET: Duration = Duration::from_millis(5);
/// Mid-send mode: the steps a sender stops at, between claim and publish.
const DOOM_STEPS: [Step; 3] = [Step::SendClaimed, Step::SendAdvanced, Step::SendWritten];

// Ledger word indices.
const STOP_SENDERS: usize = 0;
const STOP_RECEIVERS: usize = 1;
const TIMEOUTS: usize = 2;
const DAMAGED: usize = 3;
const DUPLICATES: usize = 4;
const CHILD_ERRORS: usize = 5;
const RECEIVED: usize = 6;
/// Per receiver: the message it holds between `recv` returning and recording it (key + 1).
const HOLDING: usize = 8;
/// Per sender: the next sequence number to attempt (a restarted sender skips the one its
/// predecessor may have been sending).
const NEXT_SEQ: usize = 16;
/// A 64-bit word (two ledger words, 8-byte aligned): the monotonic time in ns of the first
/// message received since the parent last set it to 0.
const FIRST_RECV: usize = 24;
/// Per sender, set by the parent in mid-send mode: stop at `DOOM_STEPS[v - 1]` in the next
/// send (0: no).
const DOOM: usize = 32;
/// Per sender: 1 once it stopped at its doom step (it then waits for the kill).
const STOPPED: usize = 40;
const SENT_BITS: usize = 64;
const RECV_BITS: usize = SENT_BITS + ROLES * BITMAP_WORDS;
const LEDGER_WORDS: usize = RECV_BITS + ROLES * BITMAP_WORDS;

/// The ledger: 32-bit atomics in a shared mapping of `/dev/shm/<name>`.
struct Ledger {
    map: memmap2::MmapMut,
}

impl Ledger {
    fn create(name: &str) -> Self {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap();
        f.set_len((LEDGER_WORDS * 4) as u64).unwrap();
        Self::map(&f)
    }

    fn open(name: &str) -> Self {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap();
        Self::map(&f)
    }

    fn map(f: &std::fs::File) -> Self {
        // SAFETY: the file is ours (this test's unique name); other processes change it only
        // through the atomics below, never by resizing it.
        let map = unsafe { memmap2::MmapMut::map_mut(f) }.unwrap();
        assert!(map.len() >= LEDGER_WORDS * 4);
        Self { map }
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < LEDGER_WORDS);
        // SAFETY: the mapping is page aligned and at least LEDGER_WORDS * 4 bytes long
        // (checked in `map`), `i` is in range, and every access to it is atomic.
        unsafe { &*self.map.as_ptr().cast::<AtomicU32>().add(i) }
    }

    /// The 64-bit word at ledger words `i` and `i + 1` (`i` even).
    fn word64(&self, i: usize) -> &AtomicU64 {
        assert!(i.is_multiple_of(2) && i + 1 < LEDGER_WORDS);
        // SAFETY: the mapping is page aligned and long enough (checked in `map`), so words
        // `i` and `i + 1` with `i` even form an 8-byte aligned u64 in range; every access to
        // it is atomic.
        unsafe { &*self.map.as_ptr().add(i * 4).cast::<AtomicU64>() }
    }

    fn get(&self, i: usize) -> u32 {
        // SYNC: Acquire <-> the Release/AcqRel writes of other processes.
        self.word(i).load(Ordering::Acquire)
    }

    fn add(&self, i: usize) {
        self.word(i).fetch_add(1, Ordering::AcqRel);
    }

    /// Sets the bit of (`sender`, `seq`) in the bitmap at `base`; returns whether it was set
    /// already.
    fn set_bit(&self, base: usize, sender: u32, seq: u32) -> bool {
        let w = base + sender as usize * BITMAP_WORDS + (seq / 32) as usize;
        let bit = 1 << (seq % 32);
        self.word(w).fetch_or(bit, Ordering::AcqRel) & bit != 0
    }

    fn bit(&self, base: usize, sender: u32, seq: u32) -> bool {
        let w = base + sender as usize * BITMAP_WORDS + (seq / 32) as usize;
        self.get(w) & (1 << (seq % 32)) != 0
    }
}

/// Payload length of a sender's message: mostly 64 B (inline), every 8th 3000 B (a side
/// allocation of the channel's pool).
fn len_of(seq: u32) -> usize {
    if seq % 8 == 7 { 3000 } else { 64 }
}

/// `[sender][seq][len][checksum of the rest][pattern...]`.
fn compose(sender: u32, seq: u32, out: &mut [u8]) {
    for (i, b) in out[16..].iter_mut().enumerate() {
        *b = (i as u32 ^ seq ^ (sender << 5)) as u8;
    }
    out[0..4].copy_from_slice(&sender.to_le_bytes());
    out[4..8].copy_from_slice(&seq.to_le_bytes());
    let len = out.len() as u32;
    out[8..12].copy_from_slice(&len.to_le_bytes());
    let sum = checksum(&out[16..]);
    out[12..16].copy_from_slice(&sum.to_le_bytes());
}

/// `(sender, seq)` of an intact message, or `None`.
fn check(m: &[u8]) -> Option<(u32, u32)> {
    let word = |i: usize| u32::from_le_bytes(m[i..i + 4].try_into().unwrap());
    if m.len() < 16 || word(8) as usize != m.len() || word(12) != checksum(&m[16..]) {
        return None;
    }
    let (s, q) = (word(0), word(4));
    (s < ROLES as u32 && q < MAX_SEQ).then_some((s, q))
}

/// CLOCK_MONOTONIC in ns: the same clock in every process.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The doom step of this (sender) process: `DOOM_STEPS[v - 1]`, 0 while none.
static DIE_AT: AtomicU32 = AtomicU32::new(0);
/// Whether the fault hook stopped this process.
static DIED: AtomicBool = AtomicBool::new(false);

fn hook(_owner: u32, step: Step) -> bool {
    let at = DIE_AT.load(Ordering::Relaxed) as usize;
    let dies = at != 0 && DOOM_STEPS[at - 1] == step;
    if dies {
        DIED.store(true, Ordering::Relaxed);
    }
    dies
}

fn sender(ch: &Channel, ledger: &Ledger, me: u32) {
    let mut sendh = ch.sendh().unwrap();
    sendh.open().unwrap();
    let mut scratch = vec![0u8; 4096];
    let t = Timeout::After(WEDGE);
    while ledger.get(STOP_SENDERS) == 0 {
        let doom = ledger.get(DOOM + me as usize);
        if doom != 0 && DIE_AT.load(Ordering::Relaxed) == 0 {
            assert!(doom as usize <= DOOM_STEPS.len(), "doom step {doom}");
            DIE_AT.store(doom, Ordering::Relaxed);
            fault::set_hook(Some(hook));
        }
        // Claim the sequence number before sending: a successor skips it if we die.
        let seq = ledger
            .word(NEXT_SEQ + me as usize)
            .fetch_add(1, Ordering::AcqRel);
        if seq >= MAX_SEQ {
            // No room left in the ledger (the parent stops killing before this): idle.
            while ledger.get(STOP_SENDERS) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            break;
        }
        let len = len_of(seq);
        let r = if seq.is_multiple_of(3) {
            // Transfer of ownership: the allocation moves to the receiver.
            match Message::create_alloc_blocking(ch.pool(), len, t) {
                Ok(mut m) => {
                    compose(me, seq, m.bytes_memview().unwrap());
                    sendh.send_transfer(m, t).map_err(|e| {
                        if DIED.load(Ordering::Relaxed) {
                            // A dead party frees nothing: the slot may hold this memory.
                            core::mem::forget(e.message);
                        }
                        e.error
                    })
                }
                Err(e) => Err(e),
            }
        } else {
            compose(me, seq, &mut scratch[..len]);
            sendh.send_bytes(&scratch[..len], len, None, t)
        };
        if DIED.load(Ordering::Relaxed) {
            // Stopped mid-send as if dead there, holding what it holds: tell the parent and
            // wait for the kill.
            // SYNC: Release <-> the parent's Acquire poll of `STOPPED`.
            ledger
                .word(STOPPED + me as usize)
                .store(1, Ordering::Release);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        match r {
            Ok(()) => {
                ledger.set_bit(SENT_BITS, me, seq);
            }
            Err(Error::ChannelTimeout) => ledger.add(TIMEOUTS),
            Err(e) => {
                eprintln!("kill_injection sender {me}: {e}");
                ledger.add(CHILD_ERRORS);
            }
        }
    }
}

fn receiver(ch: &Channel, ledger: &Ledger, me: u32) {
    let mut recvh = ch.recvh().unwrap();
    recvh.open().unwrap();
    let t = Timeout::After(Duration::from_millis(200));
    let mut n = 0u32;
    loop {
        n += 1;
        let got = if n.is_multiple_of(2) {
            recvh.recv(t).and_then(|m| m.bytes().map(<[u8]>::to_vec))
        } else {
            recvh.recv_bytes(t)
        };
        if got.is_ok() {
            let first = ledger.word64(FIRST_RECV);
            // SYNC: Acquire/AcqRel <-> the parent's Release reset and Acquire poll.
            if first.load(Ordering::Acquire) == 0 {
                let _ = first.compare_exchange(0, mono_ns(), Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        match got {
            Ok(m) => match check(&m) {
                Some((s, q)) => {
                    let holding = ledger.word(HOLDING + me as usize);
                    // SYNC: Release <-> the parent's Acquire read after killing us.
                    holding.store((s << 24 | q) + 1, Ordering::Release);
                    if ledger.set_bit(RECV_BITS, s, q) {
                        ledger.add(DUPLICATES);
                    }
                    holding.store(0, Ordering::Release);
                    ledger.add(RECEIVED);
                }
                None => ledger.add(DAMAGED),
            },
            Err(Error::ChannelTimeout) => {
                if ledger.get(STOP_RECEIVERS) != 0 {
                    return;
                }
            }
            Err(e) => {
                eprintln!("kill_injection receiver {me}: {e}");
                ledger.add(CHILD_ERRORS);
            }
        }
    }
}

/// p-th percentile (0..=100) of sorted `v`.
fn pct(v: &[Duration], p: usize) -> Duration {
    v[(v.len() - 1) * p / 100]
}

/// Who is killed, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A random child at a random moment.
    Random,
    /// A random sender, stopped between claiming its slot and publishing it.
    MidSend,
}

/// The modes run one at a time: each keeps 8 busy children, and its figures mean more alone.
static SERIAL: Mutex<()> = Mutex::new(());

/// A re-executed child: plays its role until told to stop.
fn child(r: &str) {
    let _watchdog = watchdog(600, "kill_injection child");
    let ch = Channel::attach(&unhex(&std::env::var(DESC).unwrap())).unwrap();
    let ledger = Ledger::open(&std::env::var(LEDGER).unwrap());
    let me: u32 = std::env::var(INDEX).unwrap().parse().unwrap();
    match r {
        "sender" => sender(&ch, &ledger, me),
        "receiver" => receiver(&ch, &ledger, me),
        _ => unreachable!("{r}"),
    }
}

/// An allocator child: allocates and frees small messages until killed, sometimes holding a
/// few at once (so a death also leaves live allocations for recovery).
fn allocator() {
    let _watchdog = watchdog(600, "kill_injection allocator");
    let pool = MemoryPool::attach(&std::env::var(DESC).unwrap()).unwrap();
    let mut rng = u64::from(std::process::id()) | 1;
    let mut held = Vec::new();
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let size = 1 + (rng % 4096) as usize;
        match Message::create_alloc(&pool, size) {
            Ok(m) if rng % 8 == 0 && held.len() < 16 => held.push(m),
            Ok(m) => drop(m),
            Err(e) => {
                eprintln!("allocator: {e}");
                std::process::exit(3);
            }
        }
        if rng % 64 == 0 {
            held.clear();
        }
    }
}

#[test]
fn allocators_killed_in_the_fast_path_leave_the_pool_at_baseline() {
    const TEST: &str = "allocators_killed_in_the_fast_path_leave_the_pool_at_baseline";
    if role().is_some() {
        return allocator();
    }
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let kills: usize = std::env::var("DC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let _watchdog = watchdog(600, TEST);
    let name = unique_name("kill-a");
    let _g = ShmGuard::new(&name);
    let pool = MemoryPool::create(4 << 20, &name, 7).unwrap();
    let baseline = pool.stats().unwrap();
    let fresh = pool.free_blocks().unwrap();
    let envs = [(DESC, name.clone())];
    let spawn = || spawn_role(TEST, "allocator", &envs);
    let mut kids = Children((0..ROLES).map(|_| spawn()).collect());
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    for _ in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(500 + rng % 5000));
        let k = (rng >> 32) as usize % ROLES;
        let c = &mut kids.0[k];
        if let Ok(Some(st)) = c.try_wait() {
            panic!("allocator {k} exited on its own: {st}");
        }
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        kids.0[k] = spawn();
    }
    for c in &mut kids.0 {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let rec = pool.recover().unwrap();
    let after = pool.stats().unwrap();
    println!(
        "kill_injection allocators: {kills} kills (+{ROLES} at the end); recovery {rec:?}; \
         pool live {} free {} (baseline live {} free {})",
        after.live, after.free, baseline.live, baseline.free
    );
    assert_eq!(
        (after.live, after.free),
        (baseline.live, baseline.free),
        "pool back to its baseline after recovery; allocations: {:?}",
        pool.allocations().unwrap()
    );
    assert_eq!(
        pool.free_blocks().unwrap(),
        fresh,
        "every block merged back"
    );
    pool.destroy().unwrap();
}

#[test]
fn senders_and_receivers_killed_at_random_carry_on() {
    match role() {
        Some(r) => child(&r),
        None => run(
            "senders_and_receivers_killed_at_random_carry_on",
            Mode::Random,
        ),
    }
}

#[test]
fn senders_killed_between_claim_and_publish_carry_on() {
    match role() {
        Some(r) => child(&r),
        None => run(
            "senders_killed_between_claim_and_publish_carry_on",
            Mode::MidSend,
        ),
    }
}

/// Polls `done` every 200 us until it holds; panics with `what` after [`WEDGE`].
fn wait_until(what: &dyn Fn() -> String, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < WEDGE, "{}", what());
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn run(test: &'static str, mode: Mode) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let kills: usize = std::env::var("DC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let _watchdog = watchdog(900, test);
    let tag = if mode == Mode::Random { "r" } else { "m" };
    let name = unique_name(&format!("kill-{tag}"));
    let ledger_name = unique_name(&format!("kill-ledger-{tag}"));
    let _g = (ShmGuard::new(&name), ShmGuard::new(&ledger_name));
    let pool = MemoryPool::create(8 << 20, &name, 7).unwrap();
    let attrs = ChannelAttrs {
        capacity: 16,
        block_size: 256,
    };
    let ch = Channel::create(&pool, 1, Some(attrs)).unwrap();
    let baseline = pool.stats().unwrap();
    let ledger = Ledger::create(&ledger_name);
    let envs = |i: usize| {
        vec![
            (DESC, hex(&ch.serialize())),
            (LEDGER, ledger_name.clone()),
            (INDEX, i.to_string()),
        ]
    };
    let spawn = |k: usize| -> Child {
        let (role, i) = if k < ROLES {
            ("sender", k)
        } else {
            ("receiver", k - ROLES)
        };
        spawn_role(test, role, &envs(i))
    };
    let mut kids = Children((0..2 * ROLES).map(spawn).collect());

    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t0 = Instant::now();
    let (mut sender_kills, mut receiver_kills, mut held_by_dead) = (0, 0, Vec::new());
    let mut to_progress = Vec::with_capacity(kills);
    let mut control = Vec::with_capacity(kills);
    let mut per_step = [0usize; DOOM_STEPS.len()];
    for _ in 0..kills {
        if (0..ROLES).any(|s| ledger.get(NEXT_SEQ + s) > MAX_SEQ / 4 * 3) {
            println!("kill_injection {mode:?}: ledger 3/4 full, stopping early");
            break;
        }
        std::thread::sleep(Duration::from_micros(2000 + next() % 30_000));
        let k = match mode {
            Mode::Random => {
                // The control: the same wait from a moment without a kill (the machine's own
                // gaps between messages, by load and scheduling).
                // SYNC: Release <-> the receivers' Acquire load before they stamp it.
                ledger.word64(FIRST_RECV).store(0, Ordering::Release);
                let at = mono_ns();
                let mut first = 0;
                wait_until(&|| "no message received: wedged".to_owned(), || {
                    first = ledger.word64(FIRST_RECV).load(Ordering::Acquire);
                    first != 0
                });
                control.push(Duration::from_nanos(first.saturating_sub(at)));
                (next() % (2 * ROLES as u64)) as usize
            }
            Mode::MidSend => {
                let k = (next() % ROLES as u64) as usize;
                let step = (next() % DOOM_STEPS.len() as u64) as usize;
                per_step[step] += 1;
                // SYNC: Release <-> the sender's Acquire read of `DOOM`.
                ledger
                    .word(DOOM + k)
                    .store(step as u32 + 1, Ordering::Release);
                let what = || format!("sender {k} did not stop at {:?}", DOOM_STEPS[step]);
                wait_until(&what, || ledger.get(STOPPED + k) != 0);
                // Once nothing moves, the survivors are stuck behind its slot.
                let (mut seen, mut since) = (ledger.get(RECEIVED), Instant::now());
                wait_until(&|| "messages kept coming".to_owned(), || {
                    let now = ledger.get(RECEIVED);
                    if now != seen {
                        (seen, since) = (now, Instant::now());
                    }
                    since.elapsed() >= QUIET
                });
                k
            }
        };
        let c = &mut kids.0[k];
        if let Ok(Some(st)) = c.try_wait() {
            panic!("child {k} exited on its own: {st}");
        }
        // SYNC: Release <-> the receivers' Acquire load before they stamp it.
        ledger.word64(FIRST_RECV).store(0, Ordering::Release);
        let killed_ns = mono_ns();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        if k < ROLES {
            sender_kills += 1;
            ledger.word(DOOM + k).store(0, Ordering::Release);
            ledger.word(STOPPED + k).store(0, Ordering::Release);
        } else {
            receiver_kills += 1;
            let h = ledger.word(HOLDING + k - ROLES).swap(0, Ordering::AcqRel);
            if h != 0 {
                held_by_dead.push(((h - 1) >> 24, (h - 1) & 0xFF_FFFF));
            }
        }
        kids.0[k] = spawn(k);
        // Survivors (and the replacement) make progress again within a bounded time.
        let mut first = 0;
        let what = || format!("no message received for {WEDGE:?} after killing child {k}: wedged");
        wait_until(&what, || {
            first = ledger.word64(FIRST_RECV).load(Ordering::Acquire);
            first != 0
        });
        to_progress.push(Duration::from_nanos(first.saturating_sub(killed_ns)));
    }
    let run = t0.elapsed();
    let kills = to_progress.len();

    // Stop: senders first, then receivers once the channel is drained.
    ledger.word(STOP_SENDERS).store(1, Ordering::Release);
    for c in &mut kids.0[..ROLES] {
        let st = support::wait_child(c, 2 * WEDGE);
        assert!(st.success(), "a sender failed: {st}");
    }
    ledger.word(STOP_RECEIVERS).store(1, Ordering::Release);
    for c in &mut kids.0[ROLES..] {
        let st = support::wait_child(c, 2 * WEDGE);
        assert!(st.success(), "a receiver failed: {st}");
    }
    let pool_rec = pool.recover().unwrap();
    let ch_rec = ch.recover().unwrap();
    assert_eq!(ch.num_msgs(), 0, "drained");

    // The accounts.
    let (mut sent_ok, mut in_doubt, mut in_doubt_delivered, mut missing) = (0u64, 0u64, 0u64, 0);
    let mut unexplained = Vec::new();
    for s in 0..ROLES as u32 {
        let attempted = ledger.get(NEXT_SEQ + s as usize);
        for q in 0..attempted.min(MAX_SEQ) {
            let (sent, got) = (ledger.bit(SENT_BITS, s, q), ledger.bit(RECV_BITS, s, q));
            match (sent, got) {
                (true, true) => sent_ok += 1,
                (true, false) => {
                    sent_ok += 1;
                    missing += 1;
                    if !held_by_dead.contains(&(s, q)) {
                        unexplained.push((s, q));
                    }
                }
                (false, got) => {
                    in_doubt += 1;
                    in_doubt_delivered += u64::from(got);
                }
            }
        }
        for q in attempted..MAX_SEQ {
            assert!(!ledger.bit(RECV_BITS, s, q), "{s}/{q} received, never sent");
        }
    }
    let after = pool.stats().unwrap();
    let steps = match mode {
        Mode::Random => String::new(),
        Mode::MidSend => format!(
            " (stopped at {})",
            DOOM_STEPS
                .iter()
                .zip(per_step)
                .map(|(s, n)| format!("{s:?} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    println!(
        "kill_injection {mode:?}: {kills} kills ({sender_kills} senders{steps}, \
         {receiver_kills} receivers) in {run:.1?}; {sent_ok} sends returned success, {} \
         received; {missing} lost with a receiver that died holding them ({} seen in its \
         hands, {} inside recv or before recording); {in_doubt} sends interrupted by their \
         sender's death ({in_doubt_delivered} of them delivered); duplicates {}, damaged {}, \
         send timeouts {}, child errors {}; final recovery: {pool_rec:?} {ch_rec:?}; pool \
         live {} free {} (baseline live {} free {})",
        ledger.get(RECEIVED),
        held_by_dead.len(),
        unexplained.len(),
        ledger.get(DUPLICATES),
        ledger.get(DAMAGED),
        ledger.get(TIMEOUTS),
        ledger.get(CHILD_ERRORS),
        after.live,
        after.free,
        baseline.live,
        baseline.free,
    );
    let figures = |what: &str, v: &mut Vec<Duration>| {
        v.sort_unstable();
        if let Some(max) = v.last() {
            println!(
                "kill_injection {mode:?}: time from {what} to the next message received by \
                 anyone: count {}, p50 {:.2?}, p99 {:.2?}, max {max:.2?}",
                v.len(),
                pct(v, 50),
                pct(v, 99),
            );
        }
    };
    figures("a kill", &mut to_progress);
    figures("a moment without a kill (control)", &mut control);
    assert_eq!(ledger.get(DUPLICATES), 0, "a message was received twice");
    assert_eq!(ledger.get(DAMAGED), 0, "a message arrived damaged");
    assert_eq!(ledger.get(TIMEOUTS), 0, "a send waited {WEDGE:?}: wedged");
    assert_eq!(
        ledger.get(CHILD_ERRORS),
        0,
        "a child got an error (see stderr)"
    );
    assert!(
        missing <= receiver_kills,
        "{missing} messages lost but only {receiver_kills} receivers died: {unexplained:?}"
    );
    // A sender dies inside at most one send; a stopped one inside exactly one.
    assert!(in_doubt <= sender_kills, "{in_doubt} sends in doubt");
    if mode == Mode::MidSend {
        assert_eq!(in_doubt, sender_kills, "every stopped send is in doubt");
    }
    assert!(
        sent_ok > kills as u64,
        "the run moved too few messages to mean much"
    );
    assert_eq!(
        (after.live, after.free),
        (baseline.live, baseline.free),
        "pool back to its baseline after recovery; allocations: {:?}; live parties {:?}",
        pool.allocations().unwrap(),
        pool.live_parties()
    );
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}
