//! Waiting: Dragon's poll operations with their timeouts and wait modes, the channel as a
//! barrier, semaphore channels and channel sets, in one process and across processes (the
//! test binary re-runs itself as child roles, stdout discarded).
//!
//! - every poll value, with try-once, expiring and blocking timeouts and each wait mode;
//!   a try-once send into a full channel handed over to the receivers asleep on it;
//!   refusals (semaphore polls on a message channel and the other way round, handles on a
//!   semaphore, V past a bound);
//! - a child blocked in `poll(In)` until the parent sends, `poll(Empty)` / `poll(Out)` while
//!   another process drains, `poll(Full)` while another fills, `SemaphoreZ` waiting for
//!   another process's P;
//! - a barrier of 8 processes used 1,000 times (`DC_BARRIER_ROUNDS` overrides), every ordinal
//!   given once per round; abort and reset in the middle of a round; a party SIGKILLed before
//!   arriving, while waiting in its receive, and after the release;
//! - a semaphore guarding a plain (non-atomic) counter in pool memory, 8 processes x 10,000
//!   increments (`DC_SEM_ITERS` overrides);
//! - a channel set over 64 channels fed by 8 sender processes (every message reported and
//!   received exactly once, also those sent while nobody polled; senders only try once and
//!   never find a channel with room refused), a destroyed channel reported, a set over more
//!   than 128 words (its helper threads), a sender dying between claim and publish.
//!
//! Timing: only lower bounds are asserted (a wait that expires took at least its timeout, read
//! on `Instant`, the clock the library computes deadlines with); figures are printed.

#[path = "support/mod.rs"]
mod support;

use core::time::Duration;
use std::collections::BTreeSet;
use std::time::Instant;

use dragon_channels::dragon_channels_core::fault::Step;
use dragon_channels::dragon_channels_core::{ChannelError as CoreError, Side, Waiter};
use dragon_channels::{
    Channel, ChannelRecvH, ChannelSendH, ChannelSet, Error, MemoryPool, Poll, Polled, Reason,
    SemaphoreAttrs, SetEvent, SetEventKind, Timeout, WaitMode,
};
use support::{
    Children, HANG, Rng, ShmGuard, attach_env, attrs, die_at, env, hex, new_pool, receiver, role,
    sender, spawn_role, unhex, wait_child, wait_until, watchdog,
};

const DESC: &str = "DC_TEST_DESC";
const CTRL: &str = "DC_TEST_CTRL";
const GO: &str = "DC_TEST_GO";
const IDLE_CH: &str = "DC_TEST_IDLE";
const INDEX: &str = "DC_TEST_INDEX";
const OFF: &str = "DC_TEST_OFF";
const MODE: &str = "DC_TEST_MODE";
const SET: &str = "DC_TEST_SET";
const PHASE: &str = "DC_TEST_PHASE";

/// The three wait modes, each exercised by the tests that loop over them.
const MODES: [WaitMode; 3] = [WaitMode::Spin, WaitMode::Idle, WaitMode::Adaptive];

// ----- helpers -----

fn index() -> u32 {
    env(INDEX).parse().unwrap()
}

fn mode_name(m: WaitMode) -> &'static str {
    match m {
        WaitMode::Spin => "spin",
        WaitMode::Idle => "idle",
        WaitMode::Adaptive => "adaptive",
    }
}

fn mode_env() -> WaitMode {
    match env(MODE).as_str() {
        "spin" => WaitMode::Spin,
        "idle" => WaitMode::Idle,
        "adaptive" => WaitMode::Adaptive,
        m => panic!("unknown wait mode {m}"),
    }
}

fn send_i64(s: &ChannelSendH, v: i64) {
    s.send_bytes(&v.to_le_bytes(), 8, None, Timeout::After(HANG))
        .expect("send");
}

fn recv_i64(r: &ChannelRecvH, t: Timeout) -> Result<i64, Error> {
    let b = r.recv_bytes(t)?;
    Ok(i64::from_le_bytes(b.try_into().expect("an 8-byte message")))
}

/// Whether `r` is the error of a poll that did not complete in time.
fn timed_out<T: core::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::ChannelTimeout))
}

/// Asserts that `r` is a refusal of the operation (`ChannelError` with the core's
/// `BadOperation`) whose message contains `words`.
fn assert_refused<T: core::fmt::Debug>(r: Result<T, Error>, words: &str, what: &str) {
    match r {
        Err(e @ Error::ChannelError(Reason::Core(CoreError::BadOperation(_)))) => {
            let msg = e.to_string();
            assert!(
                msg.contains(words),
                "{what}: message {msg:?} lacks {words:?}"
            );
        }
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

/// Dragon's barrier round as one party: arrive, release when told to, receive the outcome
/// (the ordinal `0..parties`, or `-1` when the round was aborted).
fn barrier_round(
    b: &Channel,
    r: &ChannelRecvH,
    mode: WaitMode,
    recv: Timeout,
) -> Result<i64, Error> {
    match b.poll(Poll::BarrierWait, Timeout::Block, mode)? {
        Polled::ReadyToRelease => {
            let n = b.poll(Poll::BarrierRelease, Timeout::Try, mode)?;
            assert_eq!(
                n,
                Polled::Value(b.capacity() as u64),
                "a full round released"
            );
        }
        Polled::Ready => {}
        p => panic!("an arrival answered {p:?}"),
    }
    recv_i64(r, recv)
}

/// Words in a pool allocation that every process of a test maps: the parent allocates and
/// zeroes them, children find them by offset. Raw atomics and a raw counter on purpose: the
/// test checks the library, so it keeps its own books without it.
#[allow(clippy::disallowed_types)]
mod shared {
    use core::sync::atomic::AtomicU32;

    use dragon_channels::{MemoryPool, Message};

    pub struct Words<'a> {
        pool: &'a MemoryPool,
        off: usize,
        words: usize,
    }

    /// Allocates `words` zeroed 32-bit words in `pool`; returns the allocation (keep it) and
    /// its offset in the pool's region.
    pub fn alloc(pool: &MemoryPool, words: usize) -> (Message, usize) {
        let mut m = Message::create_alloc(pool, 4 * words).unwrap();
        m.bytes_memview().unwrap().fill(0);
        let (off, _) = pool
            .core_pool()
            .span_unchecked(&m.descriptor().unwrap())
            .unwrap();
        (m, off)
    }

    impl<'a> Words<'a> {
        pub fn new(pool: &'a MemoryPool, off: usize, words: usize) -> Self {
            let region = pool.core_pool().region();
            assert!(off.is_multiple_of(8) && off + 4 * words <= region.len());
            Self { pool, off, words }
        }

        fn ptr(&self, i: usize) -> *mut u32 {
            assert!(i < self.words);
            // SAFETY: in bounds of the allocation (checked in `new` and above), which the
            // parent keeps for the whole test; the pool maps it in this process.
            unsafe { self.pool.core_pool().region().base().add(self.off + 4 * i) }.cast()
        }

        pub fn word(&self, i: usize) -> &AtomicU32 {
            // SAFETY: an aligned word of the allocation (see `ptr`), only ever accessed
            // atomically by the test that uses it as words.
            unsafe { &*self.ptr(i).cast::<AtomicU32>() }
        }

        /// The first two words as one plain `u64`, read and written without atomics.
        pub fn counter(&self) -> *mut u64 {
            assert!(self.words >= 2);
            self.ptr(0).cast()
        }
    }
}

// ----- every poll value, one process -----

#[test]
fn poll_values_are_dragons() {
    use Poll::*;
    let dragon = [
        (In, 1),
        (Out, 2),
        (InOut, 3),
        (Empty, 4),
        (Full, 5),
        (Size, 6),
        (Reset, 7),
        (Capacity, 8),
        (BarrierWait, 9),
        (BarrierAbort, 10),
        (BarrierRelease, 11),
        (BarrierIsBroken, 12),
        (BarrierWaiters, 13),
        (BlockedReceivers, 14),
        (SemaphoreP, 15),
        (SemaphoreV, 16),
        (SemaphoreZ, 17),
        (SemaphorePeek, 18),
    ];
    assert_eq!(Poll::ALL.len(), dragon.len());
    for (op, v) in dragon {
        assert_eq!(op.value(), v, "{op:?}");
        assert_eq!(Poll::from_value(v), Some(op));
    }
    assert_eq!(Poll::from_value(0), None);
    assert_eq!(Poll::from_value(19), None);
    assert_eq!(Polled::Ready.result(), 1);
    assert_eq!(Polled::ReadyToRelease.result(), 1);
    assert_eq!(Polled::Value(17).result(), 17);
}

/// In, Out, InOut, Empty, Full on an empty, a half-full and a full channel, with each
/// timeout (try once, a duration that expires, block when the condition holds) in each wait
/// mode; Size and Capacity answer at once; a poll consumes nothing.
#[test]
fn conditions_with_every_timeout_and_wait_mode() {
    let _watchdog = watchdog(120, "conditions_with_every_timeout_and_wait_mode");
    let (pool, _g) = new_pool("cond", 1 << 20);
    let ch = Channel::create(&pool, 1, attrs(2, 64)).unwrap();
    let s = sender(&ch);
    let r = receiver(&ch);
    let wait = Duration::from_millis(15);
    for mode in MODES {
        let holds = |op: Poll| {
            for t in [Timeout::Try, Timeout::After(wait), Timeout::Block] {
                assert_eq!(
                    ch.poll(op, t, mode).unwrap(),
                    Polled::Ready,
                    "{op:?} {t:?} {mode:?} with {} queued",
                    ch.num_msgs()
                );
            }
        };
        let fails = |op: Poll| {
            let r = ch.poll(op, Timeout::Try, mode);
            assert!(timed_out(&r), "{op:?} try {mode:?}: {r:?}");
            let t0 = Instant::now();
            let r = ch.poll(op, Timeout::After(wait), mode);
            assert!(timed_out(&r), "{op:?} after {wait:?} {mode:?}: {r:?}");
            assert!(t0.elapsed() >= wait, "{op:?} {mode:?} gave up early");
        };
        let counts = |len: u64| {
            for t in [Timeout::Try, Timeout::Block] {
                assert_eq!(ch.poll(Poll::Size, t, mode).unwrap(), Polled::Value(len));
                assert_eq!(ch.poll(Poll::Capacity, t, mode).unwrap(), Polled::Value(2));
            }
        };

        // Empty.
        holds(Poll::Out);
        holds(Poll::InOut);
        holds(Poll::Empty);
        fails(Poll::In);
        fails(Poll::Full);
        counts(0);

        // One of two.
        s.send_bytes(b"a", 1, None, Timeout::Try).unwrap();
        holds(Poll::In);
        holds(Poll::Out);
        holds(Poll::InOut);
        fails(Poll::Empty);
        fails(Poll::Full);
        counts(1);

        // Full.
        s.send_bytes(b"b", 1, None, Timeout::Try).unwrap();
        holds(Poll::In);
        holds(Poll::InOut);
        holds(Poll::Full);
        fails(Poll::Out);
        fails(Poll::Empty);
        counts(2);

        // Polls took nothing.
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), b"a");
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), b"b");
        assert!(matches!(
            r.recv_bytes(Timeout::Try),
            Err(Error::ChannelEmpty)
        ));
    }
    drop((s, r));
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

/// BlockedReceivers counts receivers sleeping on the channel, not pollers sleeping there;
/// a send wakes both the receiver and the poller that sleep on the same word.
#[test]
fn blocked_receivers_counts_receivers_not_pollers() {
    let _watchdog = watchdog(120, "blocked_receivers_counts_receivers_not_pollers");
    let (pool, _g) = new_pool("blkrecv", 1 << 20);
    let ch = Channel::create(&pool, 1, attrs(4, 64)).unwrap();
    let words = ch.core_channel().recv_event();
    let blocked = || ch.poll(Poll::BlockedReceivers, Timeout::Try, WaitMode::Idle);
    assert_eq!(blocked().unwrap(), Polled::Value(0));
    std::thread::scope(|sc| {
        let rx = sc.spawn(|| receiver(&ch).recv_bytes(Timeout::After(HANG)).unwrap());
        wait_until("a sleeping receiver", || {
            blocked().unwrap() == Polled::Value(1)
        });
        let poller = sc.spawn(|| ch.poll(Poll::In, Timeout::After(HANG), WaitMode::Idle));
        wait_until("a sleeping poller", || words.waiters(Waiter::All) == 1);
        assert_eq!(
            blocked().unwrap(),
            Polled::Value(1),
            "a poller is no receiver"
        );
        assert_eq!(ch.blocked_receivers(), 1);
        let s = sender(&ch);
        s.send_bytes(b"one", 3, None, Timeout::Try).unwrap();
        assert_eq!(rx.join().unwrap(), b"one");
        // The receiver may have taken the message before the poller looked: a second one
        // makes IN hold for it in any case.
        s.send_bytes(b"two", 3, None, Timeout::Try).unwrap();
        assert_eq!(poller.join().unwrap().unwrap(), Polled::Ready);
    });
    assert_eq!(receiver(&ch).recv_bytes(Timeout::Try).unwrap(), b"two");
    assert_eq!(blocked().unwrap(), Polled::Value(0));
    assert_eq!(words.waiters(Waiter::All), 0);
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

/// A try-once send into a full channel on which receivers sleep hands its message over: it
/// waits for a woken receiver to make room (the sends that filled the channel woke them) and
/// succeeds; with nobody asleep there it fails with `ChannelFull`. Without the hand-over the
/// third send below fails whenever it runs before the first woken receiver (a futex wake-up
/// takes tens of microseconds, a send well under one).
#[test]
fn try_once_send_hands_over_to_sleeping_receivers() {
    const RECEIVERS: usize = 3;
    const CAPACITY: u32 = 2;
    let _watchdog = watchdog(120, "try_once_send_hands_over_to_sleeping_receivers");
    let (pool, _g) = new_pool("handover", 1 << 20);
    let ch = Channel::create(&pool, 1, attrs(CAPACITY, 64)).unwrap();
    let mut got: Vec<u8> = std::thread::scope(|sc| {
        let rx: Vec<_> = (0..RECEIVERS)
            .map(|_| {
                sc.spawn(|| {
                    let mut r = receiver(&ch);
                    r.set_wait_mode(WaitMode::Idle);
                    r.recv_bytes(Timeout::After(Duration::from_secs(10)))
                        .unwrap()[0]
                })
            })
            .collect();
        wait_until("every receiver asleep", || {
            ch.blocked_receivers() == RECEIVERS as u32
        });
        let s = sender(&ch);
        for i in 0..RECEIVERS as u8 + CAPACITY as u8 {
            s.send_bytes(&[i], 1, None, Timeout::Try)
                .unwrap_or_else(|e| panic!("try-once send {i} with receivers asleep: {e}"));
        }
        rx.into_iter().map(|t| t.join().unwrap()).collect()
    });
    // Nobody sleeps on the channel now: a try-once send into it, full, is refused.
    assert_eq!(ch.blocked_receivers(), 0);
    assert!(matches!(
        sender(&ch).send_bytes(&[9], 1, None, Timeout::Try),
        Err(Error::ChannelFull)
    ));
    let r = receiver(&ch);
    for _ in 0..CAPACITY {
        got.push(r.recv_bytes(Timeout::Try).unwrap()[0]);
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..RECEIVERS as u8 + CAPACITY as u8).collect::<Vec<_>>()
    );
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

/// The barrier in one process (an arrival is not tied to a party, so one thread can play
/// several): ordinals, BarrierWaiters, a try-once arrival while the last round's outcome is
/// queued (try again, not broken), an expiring arrival that breaks the barrier, later
/// arrivals refused until Reset (which discards the leftover), abort, a release with fewer
/// than all parties, Reset in the middle of a round.
#[test]
fn barrier_in_one_process() {
    let _watchdog = watchdog(120, "barrier_in_one_process");
    let (pool, _g) = new_pool("barrier1", 1 << 20);

    // One party: it arrives last.
    let one = Channel::create(&pool, 1, attrs(1, 8)).unwrap();
    let r1 = receiver(&one);
    for mode in MODES {
        let got = barrier_round(&one, &r1, mode, Timeout::Try).unwrap();
        assert_eq!(got, 0);
    }
    drop(r1);
    one.destroy().unwrap();

    let b = Channel::create(&pool, 2, attrs(2, 8)).unwrap();
    let r = receiver(&b);
    let q = |op: Poll| b.poll(op, Timeout::Try, WaitMode::Adaptive);
    let value = |op: Poll| match q(op).unwrap() {
        Polled::Value(v) => v,
        p => panic!("{op:?} answered {p:?}"),
    };
    let recv = || recv_i64(&r, Timeout::Try).unwrap();

    // A round of two, both arrivals made here.
    assert_eq!(
        (value(Poll::BarrierWaiters), value(Poll::BarrierIsBroken)),
        (0, 0)
    );
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::Ready);
    assert_eq!(value(Poll::BarrierWaiters), 1);
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::ReadyToRelease);
    assert_eq!(value(Poll::BarrierWaiters), 2);
    assert_eq!(q(Poll::BarrierRelease).unwrap(), Polled::Value(2));
    assert_eq!(value(Poll::BarrierWaiters), 0);
    // A second release finds nothing to release.
    assert_eq!(q(Poll::BarrierRelease).unwrap(), Polled::Value(0));
    assert_eq!(value(Poll::Size), 2);
    let mut got = [recv(), -9];

    // One outcome still queued: a try-once arrival is told to try again, without breaking.
    assert!(timed_out(&q(Poll::BarrierWait)));
    assert_eq!(value(Poll::BarrierIsBroken), 0);
    got[1] = recv();
    got.sort_unstable();
    assert_eq!(got, [0, 1]);

    // Next round; the outcome of a party that never takes it is left queued. An arrival
    // whose timeout passes breaks the barrier (Dragon's rule), in every mode.
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::Ready);
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::ReadyToRelease);
    assert_eq!(q(Poll::BarrierRelease).unwrap(), Polled::Value(2));
    recv();
    for mode in MODES {
        let wait = Duration::from_millis(20);
        let t0 = Instant::now();
        let res = b.poll(Poll::BarrierWait, Timeout::After(wait), mode);
        assert!(
            matches!(res, Err(Error::ChannelBarrierBroken)),
            "{mode:?}: {res:?}"
        );
        assert!(t0.elapsed() >= wait, "{mode:?}: broke before the timeout");
        assert_eq!(value(Poll::BarrierIsBroken), 1);
        // Later arrivals are refused at once, whatever their timeout.
        for t in [Timeout::Try, Timeout::After(wait), Timeout::Block] {
            let res = b.poll(Poll::BarrierWait, t, mode);
            assert!(
                matches!(res, Err(Error::ChannelBarrierBroken)),
                "{t:?}: {res:?}"
            );
        }
        assert_eq!(value(Poll::Size), 1, "the leftover outcome is still queued");
        // Reset discards it and mends the barrier; the next round is clean (its leftover
        // breaks the barrier on the next pass of this loop).
        assert_eq!(q(Poll::Reset).unwrap(), Polled::Ready);
        assert_eq!((value(Poll::Size), value(Poll::BarrierIsBroken)), (0, 0));
        assert_eq!(
            b.poll(Poll::BarrierWait, Timeout::Block, mode).unwrap(),
            Polled::Ready
        );
        assert_eq!(
            b.poll(Poll::BarrierWait, Timeout::After(wait), mode)
                .unwrap(),
            Polled::ReadyToRelease
        );
        assert_eq!(q(Poll::BarrierRelease).unwrap(), Polled::Value(2));
        let first = recv();
        assert!(first == 0 || first == 1);
    }
    assert_eq!(q(Poll::Reset).unwrap(), Polled::Ready);
    assert_eq!(value(Poll::Size), 0);

    // Abort with one party arrived: it gets -1, the barrier stays broken until Reset.
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::Ready);
    assert_eq!(q(Poll::BarrierAbort).unwrap(), Polled::Ready);
    assert_eq!(
        (value(Poll::BarrierWaiters), value(Poll::BarrierIsBroken)),
        (0, 1)
    );
    assert_eq!(recv(), -1);
    assert!(matches!(
        q(Poll::BarrierWait),
        Err(Error::ChannelBarrierBroken)
    ));
    assert_eq!(q(Poll::Reset).unwrap(), Polled::Ready);
    assert_eq!(value(Poll::BarrierIsBroken), 0);

    // A release with fewer than all parties arrived gives -1 without breaking the barrier.
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::Ready);
    assert_eq!(q(Poll::BarrierRelease).unwrap(), Polled::Value(1));
    assert_eq!(value(Poll::BarrierIsBroken), 0);
    assert_eq!(recv(), -1);

    // Reset in the middle of a round: the arrived party gets -1, the barrier is not broken.
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::Ready);
    assert_eq!(q(Poll::Reset).unwrap(), Polled::Ready);
    assert_eq!(
        (value(Poll::BarrierWaiters), value(Poll::BarrierIsBroken)),
        (0, 0)
    );
    assert_eq!(recv(), -1);

    // Clean again.
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::Ready);
    assert_eq!(q(Poll::BarrierWait).unwrap(), Polled::ReadyToRelease);
    assert_eq!(q(Poll::BarrierRelease).unwrap(), Polled::Value(2));
    let mut got = [recv(), recv()];
    got.sort_unstable();
    assert_eq!(got, [0, 1]);
    drop(r);
    b.destroy().unwrap();
    pool.destroy().unwrap();
}

/// Semaphore polls in one process: P answers the value before and waits at 0 (try once, a
/// timeout that expires), V gives back and a bounded semaphore refuses to pass its bound, Z
/// holds at 0, Peek reads; an unbounded one takes many V.
#[test]
fn semaphore_in_one_process() {
    let _watchdog = watchdog(120, "semaphore_in_one_process");
    let (pool, _g) = new_pool("sem1", 1 << 20);
    let sem = Channel::create_semaphore(
        &pool,
        1,
        SemaphoreAttrs {
            initial: 2,
            bounded: true,
        },
    )
    .unwrap();
    assert!(sem.is_semaphore());
    assert_eq!(sem.core_channel().semaphore_bound(), Some(2));
    let wait = Duration::from_millis(15);
    for mode in MODES {
        let q = |op: Poll, t: Timeout| sem.poll(op, t, mode);
        assert_eq!(q(Poll::Capacity, Timeout::Try).unwrap(), Polled::Value(1));
        assert_eq!(
            q(Poll::SemaphorePeek, Timeout::Try).unwrap(),
            Polled::Value(2)
        );
        assert!(timed_out(&q(Poll::SemaphoreZ, Timeout::Try)));
        assert_eq!(
            q(Poll::SemaphoreP, Timeout::Block).unwrap(),
            Polled::Value(2)
        );
        assert_eq!(q(Poll::SemaphoreP, Timeout::Try).unwrap(), Polled::Value(1));
        assert_eq!(
            q(Poll::SemaphorePeek, Timeout::Block).unwrap(),
            Polled::Value(0)
        );
        // At 0: P waits, Z holds.
        assert!(timed_out(&q(Poll::SemaphoreP, Timeout::Try)));
        let t0 = Instant::now();
        assert!(timed_out(&q(Poll::SemaphoreP, Timeout::After(wait))));
        assert!(t0.elapsed() >= wait, "{mode:?}: P gave up early");
        for t in [Timeout::Try, Timeout::After(wait), Timeout::Block] {
            assert_eq!(q(Poll::SemaphoreZ, t).unwrap(), Polled::Ready);
        }
        assert_eq!(q(Poll::SemaphoreV, Timeout::Try).unwrap(), Polled::Value(0));
        let t0 = Instant::now();
        assert!(timed_out(&q(Poll::SemaphoreZ, Timeout::After(wait))));
        assert!(t0.elapsed() >= wait, "{mode:?}: Z gave up early");
        assert_eq!(
            q(Poll::SemaphoreV, Timeout::Block).unwrap(),
            Polled::Value(1)
        );
        // Past the bound: refused, with the bound in the error, whatever the timeout.
        for t in [Timeout::Try, Timeout::Block] {
            match q(Poll::SemaphoreV, t) {
                Err(
                    e @ Error::ChannelError(Reason::Core(CoreError::SemaphoreBound { bound: 2 })),
                ) => assert!(e.to_string().contains("bound of 2"), "{e}"),
                other => panic!("V past the bound: {other:?}"),
            }
        }
        assert_eq!(
            q(Poll::SemaphorePeek, Timeout::Try).unwrap(),
            Polled::Value(2)
        );
    }
    sem.destroy().unwrap();

    let free = Channel::create_semaphore(&pool, 2, SemaphoreAttrs::default()).unwrap();
    assert_eq!(free.core_channel().semaphore_bound(), None);
    for i in 0..1000 {
        let v = free.poll(Poll::SemaphoreV, Timeout::Try, WaitMode::Adaptive);
        assert_eq!(v.unwrap(), Polled::Value(i));
    }
    assert_eq!(
        free.poll(Poll::SemaphoreP, Timeout::Block, WaitMode::Idle)
            .unwrap(),
        Polled::Value(1000)
    );
    free.destroy().unwrap();
    pool.destroy().unwrap();
}

/// What does not apply is refused at once with an error that says so, whatever the timeout:
/// semaphore polls on a message channel, message and barrier polls on a semaphore channel,
/// send and receive handles on a semaphore channel, a semaphore in a channel set.
#[test]
fn refusals_are_clear() {
    let _watchdog = watchdog(60, "refusals_are_clear");
    let (pool, _g) = new_pool("refuse", 1 << 20);
    let ch = Channel::create(&pool, 1, attrs(2, 64)).unwrap();
    let sem = Channel::create_semaphore(&pool, 2, SemaphoreAttrs::default()).unwrap();
    for t in [Timeout::Try, Timeout::After(HANG), Timeout::Block] {
        for op in Poll::ALL {
            if op.is_semaphore_op() {
                assert_refused(
                    ch.poll(op, t, WaitMode::Adaptive),
                    "only to a semaphore channel",
                    &format!("{op:?} on a message channel"),
                );
            } else if op != Poll::Capacity {
                assert_refused(
                    sem.poll(op, t, WaitMode::Adaptive),
                    "only the semaphore polls",
                    &format!("{op:?} on a semaphore channel"),
                );
            }
        }
    }
    assert_eq!(
        sem.poll(Poll::Capacity, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Value(1)
    );
    assert_refused(sem.sendh(), "no send or receive handles", "sendh");
    assert_refused(sem.recvh(), "no send or receive handles", "recvh");
    assert_refused(
        sem.sendh_with(Timeout::Try),
        "no send or receive handles",
        "sendh_with",
    );
    assert_refused(
        sem.recvh_with(Timeout::Try),
        "no send or receive handles",
        "recvh_with",
    );
    assert_refused(
        ChannelSet::new(&[ch.clone(), sem.clone()], Poll::In),
        "semaphore channel cannot be in a channel set",
        "a semaphore in a set",
    );
    for mask in Poll::ALL {
        let r = ChannelSet::new(core::slice::from_ref(&ch), mask);
        if matches!(
            mask,
            Poll::In | Poll::Out | Poll::InOut | Poll::Empty | Poll::Full
        ) {
            assert!(r.is_ok(), "{mask:?}");
        } else {
            assert_refused(r, "event mask", &format!("set mask {mask:?}"));
        }
    }
    let mut set = ChannelSet::new(&[], Poll::In).unwrap();
    assert_refused(
        set.poll(Timeout::Block, WaitMode::Idle),
        "empty",
        "empty set",
    );
    // Nothing changed.
    assert_eq!(ch.num_msgs(), 0);
    assert_eq!(
        sem.poll(Poll::SemaphorePeek, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Value(0)
    );
    sem.destroy().unwrap();
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

// ----- poll across processes -----

/// Three children, one per wait mode, block in `poll(In)` on the same channel until the
/// parent sends one message: a poll consumes nothing, so it releases all three.
#[test]
fn children_block_in_poll_in_until_the_parent_sends() {
    const TEST: &str = "children_block_in_poll_in_until_the_parent_sends";
    if let Some(r) = role() {
        if r == "poller" {
            let _watchdog = watchdog(120, "poll-in child");
            let ch = attach_env(DESC);
            let got = ch.poll(Poll::In, Timeout::Block, mode_env()).unwrap();
            assert_eq!(got, Polled::Ready);
            assert_eq!(ch.num_msgs(), 1);
        }
        return;
    }
    let _watchdog = watchdog(180, TEST);
    let (pool, _g) = new_pool("pollin", 1 << 20);
    let ch = Channel::create(&pool, 1, attrs(4, 64)).unwrap();
    let desc = hex(&ch.serialize());
    let mut kids = Children(
        MODES
            .iter()
            .map(|&m| {
                spawn_role(
                    TEST,
                    "poller",
                    &[(DESC, desc.clone()), (MODE, mode_name(m).to_owned())],
                )
            })
            .collect(),
    );
    // The idle and adaptive pollers sleep on the receive event; the spinning one never does.
    let words = ch.core_channel().recv_event();
    wait_until("two sleeping pollers", || words.waiters(Waiter::All) == 2);
    std::thread::sleep(Duration::from_millis(50));
    for k in &mut kids.0 {
        assert!(matches!(k.try_wait(), Ok(None)), "a poller returned early");
    }
    assert_eq!(ch.blocked_receivers(), 0, "pollers are not receivers");
    sender(&ch)
        .send_bytes(b"wake", 4, None, Timeout::Try)
        .unwrap();
    for k in &mut kids.0 {
        assert!(wait_child(k, HANG).success(), "a poller failed");
    }
    assert_eq!(receiver(&ch).recv_bytes(Timeout::Try).unwrap(), b"wake");
    assert_eq!(words.waiters(Waiter::All), 0);
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

/// OUT then EMPTY in this process while a child drains a full channel; FULL while a child
/// fills an empty one.
#[test]
fn poll_out_empty_and_full_while_another_process_drains_or_fills() {
    const TEST: &str = "poll_out_empty_and_full_while_another_process_drains_or_fills";
    const CAP: u32 = 8;
    if let Some(r) = role() {
        let _watchdog = watchdog(120, "drainer/filler child");
        let ch = attach_env(DESC);
        for i in 0..CAP {
            // Slowly, so that the parent's polls wait.
            std::thread::sleep(Duration::from_millis(2));
            match r.as_str() {
                "drainer" => {
                    let b = receiver(&ch).recv_bytes(Timeout::After(HANG)).unwrap();
                    assert_eq!(b, [i as u8]);
                }
                "filler" => sender(&ch)
                    .send_bytes(&[i as u8], 1, None, Timeout::Try)
                    .unwrap(),
                _ => {}
            }
        }
        return;
    }
    let _watchdog = watchdog(180, TEST);
    let (pool, _g) = new_pool("outempty", 1 << 20);
    let ch = Channel::create(&pool, 1, attrs(CAP, 64)).unwrap();
    let desc = hex(&ch.serialize());
    let s = sender(&ch);
    for i in 0..CAP {
        s.send_bytes(&[i as u8], 1, None, Timeout::Try).unwrap();
    }
    assert!(timed_out(&ch.poll(Poll::Out, Timeout::Try, WaitMode::Spin)));
    let mut kid = Children(vec![spawn_role(TEST, "drainer", &[(DESC, desc.clone())])]);
    assert_eq!(
        ch.poll(Poll::Out, Timeout::Block, WaitMode::Spin).unwrap(),
        Polled::Ready
    );
    assert!(ch.num_msgs() < CAP as usize);
    assert_eq!(
        ch.poll(Poll::Empty, Timeout::After(HANG), WaitMode::Idle)
            .unwrap(),
        Polled::Ready
    );
    assert_eq!(ch.num_msgs(), 0);
    assert!(
        wait_child(&mut kid.0[0], HANG).success(),
        "the drainer failed"
    );

    let mut kid = Children(vec![spawn_role(TEST, "filler", &[(DESC, desc)])]);
    assert_eq!(
        ch.poll(Poll::Full, Timeout::Block, WaitMode::Adaptive)
            .unwrap(),
        Polled::Ready
    );
    assert_eq!(
        ch.poll(Poll::Size, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Value(u64::from(CAP))
    );
    assert!(
        wait_child(&mut kid.0[0], HANG).success(),
        "the filler failed"
    );
    let r = receiver(&ch);
    for i in 0..CAP {
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), [i as u8]);
    }
    drop((s, r));
    ch.destroy().unwrap();
    pool.destroy().unwrap();
}

/// A child waits for the semaphore to reach 0 (SemaphoreZ) until this process's P, then
/// waits in P until this process's V.
#[test]
fn semaphore_z_and_p_wait_for_another_process() {
    const TEST: &str = "semaphore_z_and_p_wait_for_another_process";
    if let Some(r) = role() {
        if r == "waiter" {
            let _watchdog = watchdog(120, "semaphore child");
            let sem = attach_env(DESC);
            let z = sem.poll(Poll::SemaphoreZ, Timeout::Block, WaitMode::Idle);
            assert_eq!(z.unwrap(), Polled::Ready);
            let p = sem.poll(Poll::SemaphoreP, Timeout::After(HANG), WaitMode::Adaptive);
            assert_eq!(p.unwrap(), Polled::Value(1));
        }
        return;
    }
    let _watchdog = watchdog(180, TEST);
    let (pool, _g) = new_pool("semzp", 1 << 20);
    let sem = Channel::create_semaphore(
        &pool,
        1,
        SemaphoreAttrs {
            initial: 1,
            bounded: true,
        },
    )
    .unwrap();
    let mut kid = Children(vec![spawn_role(
        TEST,
        "waiter",
        &[(DESC, hex(&sem.serialize()))],
    )]);
    let core = sem.core_channel();
    // Z sleeps on the send event ("all" waiters), P on the receive event ("one").
    wait_until("the child asleep in Z", || {
        core.send_event().waiters(Waiter::All) == 1
    });
    assert!(matches!(kid.0[0].try_wait(), Ok(None)));
    let q = |op: Poll| sem.poll(op, Timeout::Try, WaitMode::Adaptive);
    assert_eq!(q(Poll::SemaphoreP).unwrap(), Polled::Value(1));
    wait_until("the child asleep in P", || {
        core.recv_event().waiters(Waiter::One) == 1
    });
    assert!(matches!(kid.0[0].try_wait(), Ok(None)));
    assert_eq!(core.send_event().waiters(Waiter::All), 0);
    assert_eq!(q(Poll::SemaphoreV).unwrap(), Polled::Value(0));
    assert!(
        wait_child(&mut kid.0[0], HANG).success(),
        "the child failed"
    );
    assert_eq!(q(Poll::SemaphorePeek).unwrap(), Polled::Value(0));
    assert_eq!(q(Poll::SemaphoreZ).unwrap(), Polled::Ready);
    sem.destroy().unwrap();
    pool.destroy().unwrap();
}

// ----- barriers across processes -----

const PARTIES: u32 = 8;

fn barrier_rounds() -> u32 {
    std::env::var("DC_BARRIER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// 8 processes use one barrier 1,000 times in a row. Each round every party gets a distinct
/// ordinal `0..8`: each child checks its own and sets its bit in the round's word (in pool
/// memory), and finds it clear; the parent finds every round's word full.
#[test]
fn barrier_of_eight_processes_used_a_thousand_times() {
    const TEST: &str = "barrier_of_eight_processes_used_a_thousand_times";
    let rounds = barrier_rounds();
    if let Some(r) = role() {
        if r == "party" {
            let _watchdog = watchdog(600, "barrier party");
            let b = attach_env(DESC);
            let rx = receiver(&b);
            let mode = mode_env();
            let bits = shared::Words::new(b.pool(), env(OFF).parse().unwrap(), rounds as usize);
            for round in 0..rounds as usize {
                let ord = barrier_round(&b, &rx, mode, Timeout::After(HANG))
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert!(
                    (0..i64::from(PARTIES)).contains(&ord),
                    "round {round}: {ord}"
                );
                let bit = 1u32 << ord;
                let before = bits
                    .word(round)
                    .fetch_or(bit, core::sync::atomic::Ordering::Relaxed);
                assert_eq!(before & bit, 0, "round {round}: ordinal {ord} given twice");
            }
        }
        return;
    }
    let _watchdog = watchdog(900, TEST);
    let (pool, _g) = new_pool("barrier8", 4 << 20);
    let b = Channel::create(&pool, 1, attrs(PARTIES, 8)).unwrap();
    let (mem, off) = shared::alloc(&pool, rounds as usize);
    let desc = hex(&b.serialize());
    let t0 = Instant::now();
    let mut kids = Children(
        (0..PARTIES as usize)
            .map(|i| {
                spawn_role(
                    TEST,
                    "party",
                    &[
                        (DESC, desc.clone()),
                        (OFF, off.to_string()),
                        (MODE, mode_name(MODES[i % 3]).to_owned()),
                    ],
                )
            })
            .collect(),
    );
    for k in &mut kids.0 {
        assert!(
            wait_child(k, Duration::from_secs(800)).success(),
            "a party failed"
        );
    }
    let took = t0.elapsed();
    let bits = shared::Words::new(&pool, off, rounds as usize);
    for round in 0..rounds as usize {
        let w = bits.word(round).load(core::sync::atomic::Ordering::Relaxed);
        assert_eq!(w, (1 << PARTIES) - 1, "round {round}: ordinals {w:#b}");
    }
    println!(
        "{rounds} rounds of {PARTIES} processes: {:.2} s, {:.0} us per round (with process start)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / f64::from(rounds)
    );
    let q = |op: Poll| b.poll(op, Timeout::Try, WaitMode::Adaptive).unwrap();
    assert_eq!(q(Poll::BarrierWaiters), Polled::Value(0));
    assert_eq!(q(Poll::BarrierIsBroken), Polled::Value(0));
    assert_eq!(q(Poll::Size), Polled::Value(0));
    drop(mem);
    b.destroy().unwrap();
    pool.destroy().unwrap();
}

/// Abort and reset in the middle of a round, with 3 child parties and this process as the
/// fourth: the parties waiting in their receives get -1; after the abort, arrivals are
/// refused (ChannelBarrierBroken) until Reset; after a Reset mid-round the barrier is not
/// broken; a clean round follows each.
#[test]
fn barrier_abort_and_reset_mid_round() {
    const TEST: &str = "barrier_abort_and_reset_mid_round";
    const KIDS: u32 = 3;
    if let Some(r) = role() {
        if r == "party" {
            let _watchdog = watchdog(120, "abort/reset party");
            let b = attach_env(DESC);
            let rx = receiver(&b);
            let report = sender(&attach_env(CTRL));
            let go = receiver(&attach_env(GO));
            let mode = mode_env();
            let round = || barrier_round(&b, &rx, mode, Timeout::After(HANG)).unwrap();
            // 1: aborted while waiting; a later arrival is refused.
            assert_eq!(round(), -1, "aborted round");
            let late = b.poll(Poll::BarrierWait, Timeout::Block, mode);
            assert!(matches!(late, Err(Error::ChannelBarrierBroken)), "{late:?}");
            send_i64(&report, -1);
            // 2: clean.
            recv_i64(&go, Timeout::After(HANG)).unwrap();
            send_i64(&report, round());
            // 3: reset while waiting.
            recv_i64(&go, Timeout::After(HANG)).unwrap();
            assert_eq!(round(), -1, "reset round");
            assert!(!b.broken_barrier());
            send_i64(&report, -1);
            // 4: clean.
            recv_i64(&go, Timeout::After(HANG)).unwrap();
            send_i64(&report, round());
        }
        return;
    }
    let _watchdog = watchdog(240, TEST);
    let (pool, _g) = new_pool("abortreset", 1 << 20);
    let b = Channel::create(&pool, 1, attrs(KIDS + 1, 8)).unwrap();
    let ctrl = Channel::create(&pool, 2, attrs(16, 8)).unwrap();
    let go = Channel::create(&pool, 3, attrs(16, 8)).unwrap();
    let envs = |i: usize| {
        vec![
            (DESC, hex(&b.serialize())),
            (CTRL, hex(&ctrl.serialize())),
            (GO, hex(&go.serialize())),
            (MODE, mode_name(MODES[i % 3]).to_owned()),
        ]
    };
    let mut kids = Children(
        (0..KIDS as usize)
            .map(|i| spawn_role(TEST, "party", &envs(i)))
            .collect(),
    );
    let rx = receiver(&b);
    let reports = receiver(&ctrl);
    let go_s = sender(&go);
    let q = |op: Poll| b.poll(op, Timeout::Try, WaitMode::Adaptive);
    let all_asleep = |what: &str| {
        wait_until(what, || {
            b.barrier_count() == KIDS && b.blocked_receivers() == KIDS
        })
    };
    let collect = || {
        let mut got: Vec<i64> = (0..KIDS)
            .map(|_| recv_i64(&reports, Timeout::After(HANG)).unwrap())
            .collect();
        got.sort_unstable();
        got
    };
    let clean_round = |go_s: &ChannelSendH| {
        for _ in 0..KIDS {
            send_i64(go_s, 0);
        }
        let mine = barrier_round(&b, &rx, WaitMode::Idle, Timeout::After(HANG)).unwrap();
        let mut all = collect();
        all.push(mine);
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3], "a clean round after the break");
    };

    // 1: abort while the three wait in their receives.
    all_asleep("three parties waiting in round 1");
    assert_eq!(q(Poll::BarrierAbort).unwrap(), Polled::Ready);
    assert_eq!(q(Poll::BarrierIsBroken).unwrap(), Polled::Value(1));
    for t in [Timeout::Try, Timeout::After(HANG), Timeout::Block] {
        let late = b.poll(Poll::BarrierWait, t, WaitMode::Spin);
        assert!(matches!(late, Err(Error::ChannelBarrierBroken)), "{late:?}");
    }
    assert_eq!(collect(), [-1, -1, -1]);
    assert_eq!(q(Poll::BarrierIsBroken).unwrap(), Polled::Value(1));
    assert_eq!(q(Poll::Reset).unwrap(), Polled::Ready);
    assert_eq!(q(Poll::BarrierIsBroken).unwrap(), Polled::Value(0));
    // 2: clean.
    clean_round(&go_s);

    // 3: reset while the three wait.
    for _ in 0..KIDS {
        send_i64(&go_s, 0);
    }
    all_asleep("three parties waiting in round 3");
    assert_eq!(q(Poll::Reset).unwrap(), Polled::Ready);
    assert_eq!(q(Poll::BarrierIsBroken).unwrap(), Polled::Value(0));
    assert_eq!(collect(), [-1, -1, -1]);
    // 4: clean.
    clean_round(&go_s);

    for k in &mut kids.0 {
        assert!(wait_child(k, HANG).success(), "a party failed");
    }
    assert_eq!(q(Poll::Size).unwrap(), Polled::Value(0));
    drop((rx, reports, go_s));
    for c in [b, ctrl, go] {
        c.destroy().unwrap();
    }
    pool.destroy().unwrap();
}

/// The channels of a barrier test with a coordinator: the barrier, reports to the parent,
/// "go" messages to the children, and a channel nobody sends to (a victim waits on it).
struct Crew {
    b: Channel,
    ctrl: Channel,
    go: Channel,
    idle: Channel,
}

impl Crew {
    fn new(pool: &MemoryPool, parties: u32) -> Self {
        let mk = |uid: u64, cap: u32| Channel::create(pool, uid, attrs(cap, 8)).unwrap();
        Self {
            b: mk(1, parties),
            ctrl: mk(2, 64),
            go: mk(3, 64),
            idle: mk(4, 1),
        }
    }

    fn envs(&self, i: usize) -> Vec<(&'static str, String)> {
        vec![
            (DESC, hex(&self.b.serialize())),
            (CTRL, hex(&self.ctrl.serialize())),
            (GO, hex(&self.go.serialize())),
            (IDLE_CH, hex(&self.idle.serialize())),
            (INDEX, i.to_string()),
            (MODE, mode_name(MODES[i % 3]).to_owned()),
        ]
    }

    /// Sends `n` "go" messages.
    fn go(&self, n: u32) {
        let s = sender(&self.go);
        for _ in 0..n {
            send_i64(&s, 0);
        }
    }

    /// Receives `n` reports, sorted.
    fn collect(&self, n: u32) -> Vec<i64> {
        let r = receiver(&self.ctrl);
        let mut v: Vec<i64> = (0..n)
            .map(|_| recv_i64(&r, Timeout::After(HANG)).expect("a child reports"))
            .collect();
        v.sort_unstable();
        v
    }

    fn q(&self, op: Poll) -> Polled {
        self.b.poll(op, Timeout::Try, WaitMode::Adaptive).unwrap()
    }

    fn destroy(self) {
        for c in [self.b, self.ctrl, self.go, self.idle] {
            c.destroy().unwrap();
        }
    }
}

/// A child's end of a [`Crew`].
struct CrewMember {
    b: Channel,
    rx: ChannelRecvH,
    report: ChannelSendH,
    go: ChannelRecvH,
    mode: WaitMode,
}

impl CrewMember {
    fn from_env() -> Self {
        let b = attach_env(DESC);
        Self {
            rx: receiver(&b),
            b,
            report: sender(&attach_env(CTRL)),
            go: receiver(&attach_env(GO)),
            mode: mode_env(),
        }
    }

    fn wait_go(&self) {
        recv_i64(&self.go, Timeout::After(HANG)).expect("go");
    }

    fn round(&self) -> i64 {
        barrier_round(&self.b, &self.rx, self.mode, Timeout::After(HANG)).expect("a round")
    }

    fn report(&self, v: i64) {
        send_i64(&self.report, v);
    }
}

fn ordinals(n: u32) -> Vec<i64> {
    (0..i64::from(n)).collect()
}

/// 8 parties; one is SIGKILLed while it waits (not in the barrier: on another channel)
/// between two rounds, so it never arrives at the next one. The 7 survivors arrive; their
/// receives time out; one of them aborts (once all 7 have arrived); each survivor gets -1;
/// the parent resets; a round with a replacement party completes.
#[test]
fn barrier_party_killed_before_arriving_survivors_abort_and_reset() {
    const TEST: &str = "barrier_party_killed_before_arriving_survivors_abort_and_reset";
    const RECV_WAIT: Duration = Duration::from_millis(150);
    if let Some(r) = role() {
        let _watchdog = watchdog(120, "killed-before-arriving child");
        let me = CrewMember::from_env();
        match r.as_str() {
            "victim" => {
                me.wait_go();
                me.report(me.round());
                let idle = attach_env(IDLE_CH);
                let _ = idle.poll(Poll::In, Timeout::Block, WaitMode::Idle);
                unreachable!("nobody sends to the idle channel");
            }
            "survivor" => {
                me.wait_go();
                me.report(me.round());
                // The round the victim never reaches.
                me.wait_go();
                assert_eq!(
                    me.b.poll(Poll::BarrierWait, Timeout::Block, me.mode)
                        .unwrap(),
                    Polled::Ready,
                    "7 of 8 arrived: nobody is last"
                );
                let t0 = Instant::now();
                let mut timeouts = 0;
                let got = loop {
                    match recv_i64(&me.rx, Timeout::After(RECV_WAIT)) {
                        Ok(v) => break v,
                        Err(Error::ChannelTimeout) => {
                            timeouts += 1;
                            assert!(t0.elapsed() >= RECV_WAIT * timeouts, "timed out early");
                            // Survivor 0 aborts once every survivor has arrived.
                            if index() == 0 && me.b.barrier_count() == PARTIES - 1 {
                                let a = me.b.poll(Poll::BarrierAbort, Timeout::Try, me.mode);
                                assert_eq!(a.unwrap(), Polled::Ready);
                            }
                        }
                        Err(e) => panic!("survivor's receive: {e}"),
                    }
                };
                assert_eq!(got, -1, "the aborted round's outcome");
                if index() == 0 {
                    assert!(timeouts >= 1, "the aborting survivor timed out first");
                }
                me.report(got);
                // With the replacement.
                me.wait_go();
                me.report(me.round());
            }
            "replacement" => {
                me.wait_go();
                me.report(me.round());
            }
            _ => {}
        }
        return;
    }
    let _watchdog = watchdog(300, TEST);
    let (pool, _g) = new_pool("killbefore", 1 << 20);
    let crew = Crew::new(&pool, PARTIES);
    let survivors = PARTIES - 1;
    let mut kids = Children(
        (0..survivors as usize)
            .map(|i| spawn_role(TEST, "survivor", &crew.envs(i)))
            .collect(),
    );
    let mut victim = Children(vec![spawn_role(
        TEST,
        "victim",
        &crew.envs(survivors as usize),
    )]);
    crew.go(PARTIES);
    assert_eq!(crew.collect(PARTIES), ordinals(PARTIES), "round 0");

    // The victim waits on the idle channel; kill it there.
    let idle = crew.idle.core_channel().recv_event();
    wait_until("the victim asleep", || idle.waiters(Waiter::All) == 1);
    victim.0[0].kill().unwrap();
    victim.0[0].wait().unwrap();

    crew.go(survivors);
    assert_eq!(crew.collect(survivors), vec![-1; survivors as usize]);
    assert_eq!(crew.q(Poll::BarrierIsBroken), Polled::Value(1));
    assert_eq!(crew.q(Poll::Reset), Polled::Ready);
    assert_eq!(crew.q(Poll::BarrierIsBroken), Polled::Value(0));
    assert_eq!(crew.q(Poll::Size), Polled::Value(0));

    kids.0.push(spawn_role(
        TEST,
        "replacement",
        &crew.envs(PARTIES as usize),
    ));
    crew.go(PARTIES);
    assert_eq!(
        crew.collect(PARTIES),
        ordinals(PARTIES),
        "with the replacement"
    );
    for k in &mut kids.0 {
        assert!(wait_child(k, HANG).success(), "a party failed");
    }
    assert_eq!(crew.q(Poll::Size), Polled::Value(0));
    crew.destroy();
    pool.destroy().unwrap();
}

/// 8 parties; the victim arrives first, then is SIGKILLed: while it waits in its receive
/// (before the round is released), or after the release without having received. Either
/// way it stays counted, so the round completes when the 7 survivors arrive, and its
/// outcome message stays queued: the survivors get 7 distinct ordinals. The next round's
/// arrivals wait for that message to drain; one whose timeout passes breaks the barrier, all
/// get ChannelBarrierBroken; Reset discards the leftover; a round with a replacement party
/// completes.
#[test]
fn barrier_party_killed_after_arriving_leaves_its_outcome_queued() {
    const TEST: &str = "barrier_party_killed_after_arriving_leaves_its_outcome_queued";
    const ARRIVE_WAIT: Duration = Duration::from_millis(100);
    const VICTIM_ARRIVED: i64 = 99;
    if let Some(r) = role() {
        let _watchdog = watchdog(120, "killed-after-arriving child");
        let me = CrewMember::from_env();
        match r.as_str() {
            "victim" => {
                let a = me.b.poll(Poll::BarrierWait, Timeout::Block, me.mode);
                assert_eq!(a.unwrap(), Polled::Ready);
                me.report(VICTIM_ARRIVED);
                if env(PHASE) == "in-receive" {
                    let _ = recv_i64(&me.rx, Timeout::Block);
                    unreachable!("killed in its receive");
                }
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            "survivor" => {
                me.wait_go();
                me.report(me.round());
                // The dead party's outcome is still queued: this arrival waits for it.
                me.wait_go();
                let t0 = Instant::now();
                let a =
                    me.b.poll(Poll::BarrierWait, Timeout::After(ARRIVE_WAIT), me.mode);
                assert!(matches!(a, Err(Error::ChannelBarrierBroken)), "{a:?}");
                me.report(i64::from(t0.elapsed() >= ARRIVE_WAIT));
                me.wait_go();
                me.report(me.round());
            }
            "replacement" => {
                me.wait_go();
                me.report(me.round());
            }
            _ => {}
        }
        return;
    }
    let _watchdog = watchdog(300, TEST);
    for phase in ["in-receive", "after-release"] {
        let (pool, _g) = new_pool("killafter", 1 << 20);
        let crew = Crew::new(&pool, PARTIES);
        let survivors = PARTIES - 1;
        let mut venv = crew.envs(survivors as usize);
        venv.push((PHASE, phase.to_owned()));
        let mut victim = Children(vec![spawn_role(TEST, "victim", &venv)]);
        assert_eq!(crew.collect(1), [VICTIM_ARRIVED]);
        assert_eq!(crew.q(Poll::BarrierWaiters), Polled::Value(1));
        let mut kids = Children(
            (0..survivors as usize)
                .map(|i| spawn_role(TEST, "survivor", &crew.envs(i)))
                .collect(),
        );
        let kill = |victim: &mut Children| {
            victim.0[0].kill().unwrap();
            victim.0[0].wait().unwrap();
        };
        if phase == "in-receive" {
            wait_until("the victim asleep in its receive", || {
                crew.b.blocked_receivers() == 1
            });
            kill(&mut victim);
        }
        crew.go(survivors);
        let got = crew.collect(survivors);
        let distinct: BTreeSet<i64> = got.iter().copied().collect();
        assert_eq!(distinct.len(), survivors as usize, "{phase}: {got:?}");
        assert!(
            got.iter().all(|o| (0..i64::from(PARTIES)).contains(o)),
            "{phase}: {got:?}"
        );
        if phase == "after-release" {
            kill(&mut victim);
        }
        assert_eq!(
            crew.q(Poll::Size),
            Polled::Value(1),
            "{phase}: the dead party's outcome"
        );
        assert_eq!(crew.q(Poll::BarrierWaiters), Polled::Value(0));

        crew.go(survivors);
        let waited = crew.collect(survivors);
        assert!(
            waited.contains(&1),
            "{phase}: the arrival that broke it waited its timeout"
        );
        assert_eq!(crew.q(Poll::BarrierIsBroken), Polled::Value(1));
        assert_eq!(
            crew.q(Poll::Size),
            Polled::Value(1),
            "{phase}: still queued"
        );
        assert_eq!(crew.q(Poll::Reset), Polled::Ready);
        assert_eq!(crew.q(Poll::Size), Polled::Value(0), "{phase}: discarded");
        assert_eq!(crew.q(Poll::BarrierIsBroken), Polled::Value(0));

        kids.0.push(spawn_role(
            TEST,
            "replacement",
            &crew.envs(PARTIES as usize),
        ));
        crew.go(PARTIES);
        assert_eq!(
            crew.collect(PARTIES),
            ordinals(PARTIES),
            "{phase}: with the replacement"
        );
        for k in &mut kids.0 {
            assert!(wait_child(k, HANG).success(), "{phase}: a party failed");
        }
        crew.destroy();
        pool.destroy().unwrap();
    }
}

/// A party dies in the middle of receiving its outcome (the slot taken, not released) and is
/// SIGKILLed. In the next round the others' outcome messages must go through the slot it
/// held (the release stops there until the slot is recovered, then goes on): after an abort
/// every arrived party gets -1 and a Reset mends the barrier; with a replacement party the
/// round completes with every ordinal once. The victim takes the first outcome message of
/// its round or a later one, so the release stops at its first message or part-way.
#[test]
fn barrier_release_through_the_slot_of_a_party_that_died_mid_receive() {
    const TEST: &str = "barrier_release_through_the_slot_of_a_party_that_died_mid_receive";
    const PARTIES4: u32 = 4;
    if let Some(r) = role() {
        if r == "victim" {
            let _watchdog = watchdog(120, "mid-receive victim");
            let me = CrewMember::from_env();
            assert_eq!(
                me.b.poll(Poll::BarrierWait, Timeout::Block, me.mode)
                    .unwrap(),
                Polled::Ready
            );
            me.report(1);
            me.wait_go();
            let died = die_at(Step::RecvTaken, || me.rx.recv_bytes(Timeout::Try));
            assert!(died.is_err(), "the receive stops at RecvTaken: {died:?}");
            me.report(2);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        return;
    }
    let _watchdog = watchdog(120, TEST);
    for (then, before) in [("abort", 0), ("abort", 1), ("replace", 0), ("replace", 2)] {
        let what = format!("{then}, victim received after {before}");
        let (pool, _g) = new_pool("midrecv", 1 << 20);
        let crew = Crew::new(&pool, PARTIES4);
        let mut victim = Children(vec![spawn_role(TEST, "victim", &crew.envs(0))]);
        assert_eq!(crew.collect(1), [1]);
        // This process plays the other three parties.
        let rx = receiver(&crew.b);
        let recv = || recv_i64(&rx, Timeout::After(Duration::from_secs(10))).unwrap();
        assert_eq!(crew.q(Poll::BarrierWait), Polled::Ready);
        assert_eq!(crew.q(Poll::BarrierWait), Polled::Ready);
        assert_eq!(crew.q(Poll::BarrierWait), Polled::ReadyToRelease);
        assert_eq!(
            crew.q(Poll::BarrierRelease),
            Polled::Value(u64::from(PARTIES4))
        );
        let mut got: Vec<i64> = (0..before).map(|_| recv()).collect();
        crew.go(1);
        assert_eq!(crew.collect(1), [2]);
        victim.0[0].kill().unwrap();
        victim.0[0].wait().unwrap();
        got.extend((before..3).map(|_| recv()));
        assert_eq!(got.len(), 3, "{what}");
        assert_eq!(crew.q(Poll::Size), Polled::Value(0), "{what}");

        match then {
            "abort" => {
                for _ in 0..3 {
                    assert_eq!(crew.q(Poll::BarrierWait), Polled::Ready, "{what}");
                }
                assert_eq!(crew.q(Poll::BarrierAbort), Polled::Ready, "{what}");
                let got: Vec<i64> = (0..3).map(|_| recv()).collect();
                assert_eq!(got, [-1, -1, -1], "{what}");
                assert_eq!(crew.q(Poll::Reset), Polled::Ready, "{what}");
            }
            _ => {
                // Three survivors and a replacement: a complete round.
                for _ in 0..3 {
                    assert_eq!(crew.q(Poll::BarrierWait), Polled::Ready, "{what}");
                }
                assert_eq!(crew.q(Poll::BarrierWait), Polled::ReadyToRelease, "{what}");
                assert!(matches!(crew.q(Poll::BarrierRelease), Polled::Value(1..=4)));
                let mut got: Vec<i64> = (0..PARTIES4).map(|_| recv()).collect();
                got.sort_unstable();
                assert_eq!(got, ordinals(PARTIES4), "{what}");
            }
        }
        assert_eq!(crew.q(Poll::BarrierIsBroken), Polled::Value(0), "{what}");
        assert_eq!(crew.q(Poll::BarrierWaiters), Polled::Value(0), "{what}");
        assert_eq!(crew.q(Poll::Size), Polled::Value(0), "{what}");
        // And a clean round.
        for _ in 0..3 {
            assert_eq!(crew.q(Poll::BarrierWait), Polled::Ready);
        }
        assert_eq!(crew.q(Poll::BarrierWait), Polled::ReadyToRelease);
        assert_eq!(
            crew.q(Poll::BarrierRelease),
            Polled::Value(u64::from(PARTIES4))
        );
        let mut got: Vec<i64> = (0..PARTIES4).map(|_| recv()).collect();
        got.sort_unstable();
        assert_eq!(got, ordinals(PARTIES4), "{what}: clean round");
        drop(rx);
        crew.destroy();
        pool.destroy().unwrap();
    }
}

// ----- a semaphore guarding a counter -----

fn sem_iters() -> u64 {
    std::env::var("DC_SEM_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// A bounded semaphore of 1 guards a plain (non-atomic) `u64` counter in pool memory; 8
/// processes, started together, increment it 10,000 times each with a volatile load and
/// store between P and V, yielding the CPU between the two every 16th time (so that others
/// wait in P, and sleep). Any two increments that overlapped would lose one: the final value
/// is exact. (Without P and V the count comes out short.)
#[test]
fn semaphore_guards_a_plain_counter_across_eight_processes() {
    const TEST: &str = "semaphore_guards_a_plain_counter_across_eight_processes";
    const PROCS: u64 = 8;
    let iters = sem_iters();
    if let Some(r) = role() {
        if r == "incrementer" {
            let _watchdog = watchdog(600, "incrementer");
            let sem = attach_env(DESC);
            let words = shared::Words::new(sem.pool(), env(OFF).parse().unwrap(), 4);
            let counter = words.counter();
            let mode = mode_env();
            // The start line: every incrementer runs at once.
            words
                .word(2)
                .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
            while words.word(3).load(core::sync::atomic::Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            for i in 0..iters {
                let p = sem.poll(Poll::SemaphoreP, Timeout::Block, mode).unwrap();
                assert_eq!(
                    p,
                    Polled::Value(1),
                    "a binary semaphore: P takes the only unit"
                );
                // SAFETY: the counter is 8 aligned bytes of the parent's allocation; the
                // semaphore lets one process at a time between P and V.
                let v = unsafe { counter.read_volatile() };
                if i % 16 == 0 {
                    std::thread::yield_now();
                }
                // SAFETY: as above.
                unsafe { counter.write_volatile(v + 1) };
                let v = sem.poll(Poll::SemaphoreV, Timeout::Try, mode).unwrap();
                assert_eq!(v, Polled::Value(0));
            }
        }
        return;
    }
    let _watchdog = watchdog(900, TEST);
    let (pool, _g) = new_pool("semcount", 1 << 20);
    let sem = Channel::create_semaphore(
        &pool,
        1,
        SemaphoreAttrs {
            initial: 1,
            bounded: true,
        },
    )
    .unwrap();
    // The counter (words 0 and 1), incrementers ready (2), start (3).
    let (mem, off) = shared::alloc(&pool, 4);
    let words = shared::Words::new(&pool, off, 4);
    let t0 = Instant::now();
    let mut kids = Children(
        (0..PROCS as usize)
            .map(|i| {
                spawn_role(
                    TEST,
                    "incrementer",
                    &[
                        (DESC, hex(&sem.serialize())),
                        (OFF, off.to_string()),
                        (MODE, mode_name(MODES[i % 3]).to_owned()),
                    ],
                )
            })
            .collect(),
    );
    wait_until("every incrementer at the start line", || {
        words.word(2).load(core::sync::atomic::Ordering::Acquire) == PROCS as u32
    });
    words
        .word(3)
        .store(1, core::sync::atomic::Ordering::Release);
    for k in &mut kids.0 {
        assert!(
            wait_child(k, Duration::from_secs(800)).success(),
            "an incrementer failed"
        );
    }
    let took = t0.elapsed();
    // SAFETY: every incrementer has exited.
    let total = unsafe { words.counter().read_volatile() };
    assert_eq!(total, PROCS * iters, "increments lost");
    println!(
        "{PROCS} processes x {iters} increments under the semaphore: {:.2} s ({:.2} us per P/V)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / (PROCS * iters) as f64
    );
    assert_eq!(
        sem.poll(Poll::SemaphorePeek, Timeout::Try, WaitMode::Adaptive)
            .unwrap(),
        Polled::Value(1)
    );
    drop(mem);
    sem.destroy().unwrap();
    pool.destroy().unwrap();
}

// ----- channel sets -----

/// The descriptors of `chans`, for a child's environment.
fn descs(chans: &[Channel]) -> String {
    chans
        .iter()
        .map(|c| hex(&c.serialize()))
        .collect::<Vec<_>>()
        .join(",")
}

fn attach_all(var: &str) -> Vec<Channel> {
    env(var)
        .split(',')
        .map(|h| Channel::attach(&unhex(h)).expect("attach a set channel"))
        .collect()
}

/// Creates `n` channels of capacity `cap` (uids from 100).
fn set_channels(pool: &MemoryPool, n: usize, cap: u32) -> Vec<Channel> {
    (0..n)
        .map(|i| Channel::create(pool, 100 + i as u64, attrs(cap, 64)).unwrap())
        .collect()
}

/// Sleeps until a set watching `ch`'s pool has armed its doorbell (it is asleep in its poll,
/// or about to be).
fn wait_asleep(ch: &Channel) {
    let bell = ch.core_channel().bell();
    wait_until("the set asleep", || {
        bell.watchers(Side::Arrived) >= 1 && bell.armed()
    });
}

/// A set over 64 channels fed by 8 sender processes, each sending to channels in its own
/// random order with try-once sends only (a full channel: the next one). First the senders
/// send while nobody polls (the set exists, sleeps on nothing): the set then reports every
/// message. Then they send while this process polls (sleeping in every wait mode between
/// messages). Each time every message is reported and received, with a try-once receive
/// after the poll, exactly once; a try-once send into a channel with room always succeeds,
/// however the set waits (the slowest send is printed).
#[test]
fn channel_set_of_64_channels_fed_by_eight_sender_processes() {
    const TEST: &str = "channel_set_of_64_channels_fed_by_eight_sender_processes";
    const CHANNELS: usize = 64;
    const CAP: u32 = 16;
    const SENDERS: u32 = 8;
    // While nobody polls, everything fits: 960 messages in 1,024 slots.
    const QUIET: u32 = 120;
    const BUSY: u32 = 500;
    if let Some(r) = role() {
        if r == "sender" {
            let _watchdog = watchdog(300, "set sender");
            let chans = attach_all(SET);
            let sends: Vec<ChannelSendH> = chans.iter().map(sender).collect();
            let me = index();
            let per = if env(PHASE) == "quiet" { QUIET } else { BUSY };
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((u64::from(me) + 1) * 0x2545_F491));
            let (mut full, mut slowest) = (0i64, Duration::ZERO);
            for seq in 0..per {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&me.to_le_bytes());
                b[4..].copy_from_slice(&seq.to_le_bytes());
                let mut c = rng.below(CHANNELS as u64) as usize;
                let mut tried = 0;
                loop {
                    let t0 = Instant::now();
                    let r = sends[c].send_bytes(&b, 8, None, Timeout::Try);
                    slowest = slowest.max(t0.elapsed());
                    match r {
                        Ok(()) => break,
                        Err(Error::ChannelFull) => {
                            full += 1;
                            tried += 1;
                            c = (c + 1) % CHANNELS;
                            if tried % CHANNELS == 0 {
                                // Every channel full: the parent drains (busy phase only).
                                assert_eq!(env(PHASE), "busy", "no room while nobody polls");
                                std::thread::yield_now();
                            }
                        }
                        Err(e) => panic!("a try-once send: {e}"),
                    }
                }
            }
            let report = sender(&attach_env(CTRL));
            send_i64(&report, full);
            send_i64(&report, slowest.as_nanos() as i64);
        }
        return;
    }
    let _watchdog = watchdog(600, TEST);
    let (pool, _g) = new_pool("set64", 4 << 20);
    let chans = set_channels(&pool, CHANNELS, CAP);
    let ctrl = Channel::create(&pool, 1, attrs(64, 8)).unwrap();
    let reports = receiver(&ctrl);
    let recvs: Vec<ChannelRecvH> = chans.iter().map(receiver).collect();
    let mut set = ChannelSet::new(&chans, Poll::In).unwrap();
    assert_eq!(set.len(), CHANNELS);
    let all = descs(&chans);
    let spawn = |phase: &str| {
        Children(
            (0..SENDERS)
                .map(|i| {
                    spawn_role(
                        TEST,
                        "sender",
                        &[
                            (SET, all.clone()),
                            (CTRL, hex(&ctrl.serialize())),
                            (INDEX, i.to_string()),
                            (PHASE, phase.to_owned()),
                        ],
                    )
                })
                .collect(),
        )
    };
    let stats = |phase: &str| {
        let (mut full, mut slowest) = (0, 0);
        for _ in 0..SENDERS {
            full += recv_i64(&reports, Timeout::After(HANG)).unwrap();
            slowest = slowest.max(recv_i64(&reports, Timeout::After(HANG)).unwrap());
        }
        println!(
            "{phase}: {full} try-once sends found a channel full; slowest send {:.1} us",
            slowest as f64 / 1e3
        );
    };
    // Polls the set until `total` messages are received; every poll reports a channel whose
    // try-once receive succeeds.
    let drain = |set: &mut ChannelSet, per: u32, timeout: Timeout, phase: &str| {
        let mut seen = vec![false; (SENDERS * per) as usize];
        for k in 0..SENDERS * per {
            let ev = set
                .poll(timeout, MODES[k as usize % 3])
                .unwrap_or_else(|e| panic!("{phase}: poll {k}: {e}"));
            assert_eq!(ev.kind, SetEventKind::Ready(Poll::In), "{phase}: {ev:?}");
            let b = recvs[ev.index]
                .recv_bytes(Timeout::Try)
                .unwrap_or_else(|e| panic!("{phase}: receive after {ev:?}: {e}"));
            let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
            let (from, seq) = (u(0), u(4));
            assert!(from < SENDERS && seq < per, "{phase}: {from} {seq}");
            let n = (from * per + seq) as usize;
            assert!(!seen[n], "{phase}: sender {from} message {seq} twice");
            seen[n] = true;
        }
        let r = set.poll(Timeout::Try, WaitMode::Adaptive);
        assert!(timed_out(&r), "{phase}: nothing left: {r:?}");
    };

    // Quiet: nobody polls while they send.
    let mut kids = spawn("quiet");
    for k in &mut kids.0 {
        assert!(wait_child(k, HANG).success(), "a quiet sender failed");
    }
    let queued: usize = chans.iter().map(Channel::num_msgs).sum();
    assert_eq!(queued, (SENDERS * QUIET) as usize);
    stats("senders while nobody polls");
    drain(&mut set, QUIET, Timeout::Try, "quiet");

    // Busy: they send while this process polls.
    let t0 = Instant::now();
    let mut kids = spawn("busy");
    drain(&mut set, BUSY, Timeout::After(HANG), "busy");
    for k in &mut kids.0 {
        assert!(wait_child(k, HANG).success(), "a busy sender failed");
    }
    println!(
        "{} messages through a set of {CHANNELS} channels from {SENDERS} processes: {:.2} s",
        SENDERS * BUSY,
        t0.elapsed().as_secs_f64()
    );
    stats("senders while the set polls");
    assert!(chans.iter().all(|c| c.num_msgs() == 0));
    // The set watches its pool's doorbell while it lives, not after.
    assert_eq!(chans[0].core_channel().bell().watchers(Side::Arrived), 1);
    drop((set, recvs, reports));
    assert_eq!(chans[0].core_channel().bell().watchers(Side::Arrived), 0);
    for c in chans {
        c.destroy().unwrap();
    }
    ctrl.destroy().unwrap();
    pool.destroy().unwrap();
}

/// A channel destroyed (by another process) while the set sleeps on it is reported as
/// Destroyed, not slept on; one destroyed while nobody polls is reported by the next poll;
/// the set goes on with the others.
#[test]
fn channel_set_reports_a_destroyed_channel() {
    const TEST: &str = "channel_set_reports_a_destroyed_channel";
    if let Some(r) = role() {
        if r == "destroyer" {
            let _watchdog = watchdog(120, "destroyer");
            attach_env(DESC).destroy().unwrap();
        }
        return;
    }
    let _watchdog = watchdog(120, TEST);
    let (pool, _g) = new_pool("setdestroy", 1 << 20);
    let chans = set_channels(&pool, 8, 4);
    let mut set = ChannelSet::new(&chans, Poll::In).unwrap();
    for (victim, mode) in [(3, WaitMode::Idle), (6, WaitMode::Adaptive)] {
        let ev = std::thread::scope(|s| {
            let poller = s.spawn(|| set.poll(Timeout::Block, mode));
            wait_asleep(&chans[victim]);
            let mut kid = Children(vec![spawn_role(
                TEST,
                "destroyer",
                &[(DESC, hex(&chans[victim].serialize()))],
            )]);
            assert!(
                wait_child(&mut kid.0[0], HANG).success(),
                "the destroyer failed"
            );
            poller.join().unwrap()
        });
        assert_eq!(
            ev.unwrap(),
            SetEvent {
                index: victim,
                kind: SetEventKind::Destroyed
            }
        );
        assert!(set.get(victim).is_none());
    }
    assert_eq!(set.len(), 6);
    // Destroyed while nobody polls.
    chans[5].clone().destroy().unwrap();
    let ev = set.poll(Timeout::Try, WaitMode::Spin).unwrap();
    assert_eq!((ev.index, ev.kind), (5, SetEventKind::Destroyed));
    assert_eq!(set.len(), 5);
    assert!(timed_out(&set.poll(Timeout::Try, WaitMode::Spin)));
    let t0 = Instant::now();
    let wait = Duration::from_millis(20);
    assert!(timed_out(&set.poll(Timeout::After(wait), WaitMode::Idle)));
    assert!(t0.elapsed() >= wait, "the set gave up early");
    // The others still work.
    let seven = &chans[7];
    sender(seven)
        .send_bytes(b"x", 1, None, Timeout::Try)
        .unwrap();
    let ev = set.poll(Timeout::Block, WaitMode::Idle).unwrap();
    assert_eq!((ev.index, ev.kind), (7, SetEventKind::Ready(Poll::In)));
    assert_eq!(receiver(seven).recv_bytes(Timeout::Try).unwrap(), b"x");
    drop(set);
    for (i, c) in chans.into_iter().enumerate() {
        match c.destroy() {
            Err(Error::ChannelDestroyed) => assert!([3, 5, 6].contains(&i), "{i}"),
            r => assert!(r.is_ok() && ![3, 5, 6].contains(&i), "{i}: {r:?}"),
        }
    }
    pool.destroy().unwrap();
}

/// A set over 40 channels in two pools (more than the sets that spin on readiness hints)
/// waits, asleep or spinning, for each event mask in turn, changed with `set_event_mask`:
/// OUT on full channels, EMPTY on channels holding one message, FULL on channels one short
/// of full, IN on empty ones. Another thread makes the change on one channel once the set is
/// asleep (or at once, while it spins); the set reports that channel, and what holds.
#[test]
fn channel_set_waits_for_every_mask_on_the_side_that_rings() {
    const TEST: &str = "channel_set_waits_for_every_mask_on_the_side_that_rings";
    const CAP: u32 = 2;
    let _watchdog = watchdog(120, TEST);
    let (p1, _g1) = new_pool("setmask1", 1 << 20);
    let (p2, _g2) = new_pool("setmask2", 1 << 20);
    let mut chans = set_channels(&p1, 20, CAP);
    chans.extend(set_channels(&p2, 20, CAP));
    let fill = |n: u32| {
        for c in &chans {
            let s = sender(c);
            while c.num_msgs() < n as usize {
                s.send_bytes(b"f", 1, None, Timeout::Try).unwrap();
            }
            let r = receiver(c);
            while c.num_msgs() > n as usize {
                r.recv_bytes(Timeout::Try).unwrap();
            }
        }
    };
    let mut set = ChannelSet::new(&chans, Poll::In).unwrap();
    // (mask, messages in every channel before, the change, what the set reports)
    // (INOUT always holds on a channel with a slot: nothing to wait for.)
    let plans: [(Poll, u32, &str, Poll); 4] = [
        (Poll::Out, CAP, "recv", Poll::Out),
        (Poll::Empty, 1, "recv", Poll::Empty),
        (Poll::Full, CAP - 1, "send", Poll::Full),
        (Poll::In, 0, "send", Poll::In),
    ];
    for (k, (mask, before, change, reported)) in plans.into_iter().enumerate() {
        for (asleep, target) in [(true, (5 + 17 * k) % 40), (false, 38 - 7 * k)] {
            fill(before);
            set.set_event_mask(mask).unwrap();
            let mode = if asleep {
                WaitMode::Idle
            } else {
                WaitMode::Spin
            };
            let ev = std::thread::scope(|s| {
                let poller = s.spawn(|| set.poll(Timeout::After(HANG), mode));
                if asleep {
                    let bell = chans[target].core_channel().bell();
                    wait_until("the set asleep", || bell.armed());
                }
                match change {
                    "send" => sender(&chans[target])
                        .send_bytes(b"c", 1, None, Timeout::Try)
                        .unwrap(),
                    _ => {
                        receiver(&chans[target]).recv_bytes(Timeout::Try).unwrap();
                    }
                }
                poller.join().unwrap()
            });
            assert_eq!(
                ev.unwrap(),
                SetEvent {
                    index: target,
                    kind: SetEventKind::Ready(reported)
                },
                "{mask:?}, asleep {asleep}"
            );
        }
    }
    drop(set);
    for c in chans {
        c.destroy().unwrap();
    }
    p1.destroy().unwrap();
    p2.destroy().unwrap();
}

/// A set over 130 channels in 130 pools waiting for IN: 130 doorbells, more than one
/// `futex_waitv` takes, so the set sleeps on the first 127 and a helper thread on the rest.
/// A child sends to one channel at a time, each once the set is asleep, alternating between
/// the two groups (their first and last words included): every send wakes the set, which
/// reports it. Then the 130 channels in one pool: one doorbell, the same answers.
#[test]
fn channel_set_over_more_than_128_pools() {
    const TEST: &str = "channel_set_over_more_than_128_pools";
    const CHANNELS: usize = 130;
    const TARGETS: [usize; 8] = [128, 3, 129, 127, 0, 126, 127, 64];
    const _: () = assert!(CHANNELS > dragon_channels::FUTEX_WAITV_MAX);
    if let Some(r) = role() {
        if r == "pinger" {
            let _watchdog = watchdog(120, "pinger");
            let chans = attach_all(SET);
            let acks = receiver(&attach_env(CTRL));
            for t in TARGETS {
                wait_asleep(&chans[t]);
                sender(&chans[t])
                    .send_bytes(&(t as u64).to_le_bytes(), 8, None, Timeout::Try)
                    .unwrap();
                assert_eq!(recv_i64(&acks, Timeout::After(HANG)).unwrap(), t as i64);
            }
        }
        return;
    }
    let _watchdog = watchdog(120, TEST);
    let (pool, _g) = new_pool("set130", 4 << 20);
    let ctrl = Channel::create(&pool, 1, attrs(4, 8)).unwrap();
    let acks = sender(&ctrl);
    let pools: Vec<(MemoryPool, ShmGuard)> = (0..CHANNELS)
        .map(|i| new_pool(&format!("set130-{i}"), 64 << 10))
        .collect();
    let spread: Vec<Channel> = pools
        .iter()
        .map(|(p, _)| Channel::create(p, 100, attrs(2, 64)).unwrap())
        .collect();
    let together = set_channels(&pool, CHANNELS, 2);
    for chans in [&spread, &together] {
        let mut set = ChannelSet::new(chans, Poll::In).unwrap();
        let mut kid = Children(vec![spawn_role(
            TEST,
            "pinger",
            &[(SET, descs(chans)), (CTRL, hex(&ctrl.serialize()))],
        )]);
        for (k, t) in TARGETS.into_iter().enumerate() {
            let mode = [WaitMode::Idle, WaitMode::Adaptive][k % 2];
            let ev = set.poll(Timeout::After(HANG), mode).unwrap();
            assert_eq!((ev.index, ev.kind), (t, SetEventKind::Ready(Poll::In)));
            let b = receiver(&chans[t]).recv_bytes(Timeout::Try).unwrap();
            assert_eq!(b, (t as u64).to_le_bytes());
            // Watching every doorbell while it lives.
            assert!(
                chans
                    .iter()
                    .all(|c| c.core_channel().bell().watchers(Side::Arrived) == 1)
            );
            send_i64(&acks, t as i64);
        }
        assert!(
            wait_child(&mut kid.0[0], HANG).success(),
            "the pinger failed"
        );
        drop(set);
        assert!(
            chans
                .iter()
                .all(|c| c.core_channel().bell().watchers(Side::Arrived) == 0)
        );
    }
    drop(acks);
    for c in spread.into_iter().chain(together) {
        c.destroy().unwrap();
    }
    for (p, _g) in pools {
        p.destroy().unwrap();
    }
    ctrl.destroy().unwrap();
    pool.destroy().unwrap();
}

/// A sender process stops between claiming a slot and publishing it (fault injection at
/// each step from the claim to the write), in a channel of a set that is asleep (or that a
/// `poll(In)` sleeps on), and is SIGKILLed. Another message sent into that channel is
/// reported by the set (the poll returns) once the dead sender's slot is recovered, and
/// received with a try-once receive; the dead one's message never appears.
#[test]
fn channel_set_recovers_from_a_sender_dying_mid_send() {
    const TEST: &str = "channel_set_recovers_from_a_sender_dying_mid_send";
    const STEPS: [(&str, Step); 3] = [
        ("SendClaimed", Step::SendClaimed),
        ("SendAdvanced", Step::SendAdvanced),
        ("SendWritten", Step::SendWritten),
    ];
    if let Some(r) = role() {
        if r == "victim" {
            let _watchdog = watchdog(120, "mid-send victim");
            let ch = attach_env(DESC);
            let s = sender(&ch);
            let step = STEPS.iter().find(|(n, _)| *n == env(PHASE)).unwrap().1;
            let died = die_at(step, || s.send_bytes(b"doomed", 6, None, Timeout::Try));
            assert!(died.is_err(), "the send stops at {step:?}: {died:?}");
            send_i64(&sender(&attach_env(CTRL)), 1);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        return;
    }
    let _watchdog = watchdog(240, TEST);
    for (step, waiter) in STEPS
        .into_iter()
        .flat_map(|s| [(s.0, "set"), (s.0, "poll")])
    {
        let name = format!("{step}, {waiter} waiting");
        let (pool, _g) = new_pool("setdead", 1 << 20);
        let chans = set_channels(&pool, 4, 4);
        let ctrl = Channel::create(&pool, 1, attrs(4, 8)).unwrap();
        let mut set = ChannelSet::new(&chans, Poll::In).unwrap();
        let t0 = Instant::now();
        let ready = std::thread::scope(|s| {
            let poller = s.spawn(|| match waiter {
                "set" => set
                    .poll(Timeout::After(HANG), WaitMode::Idle)
                    .map(|ev| (ev.index, ev.kind) == (2, SetEventKind::Ready(Poll::In))),
                _ => chans[2]
                    .poll(Poll::In, Timeout::After(HANG), WaitMode::Idle)
                    .map(|p| p == Polled::Ready),
            });
            if waiter == "set" {
                wait_asleep(&chans[2]);
            } else {
                let ev = chans[2].core_channel().recv_event();
                wait_until("the poll asleep", || ev.waiters(Waiter::All) >= 1);
            }
            let mut victim = Children(vec![spawn_role(
                TEST,
                "victim",
                &[
                    (DESC, hex(&chans[2].serialize())),
                    (CTRL, hex(&ctrl.serialize())),
                    (PHASE, step.to_owned()),
                ],
            )]);
            assert_eq!(recv_i64(&receiver(&ctrl), Timeout::After(HANG)).unwrap(), 1);
            victim.0[0].kill().unwrap();
            victim.0[0].wait().unwrap();
            // Waits for the dead sender's claim to be recovered when it meets it.
            sender(&chans[2])
                .send_bytes(b"next", 4, None, Timeout::After(HANG))
                .unwrap();
            poller.join().unwrap()
        });
        assert!(ready.unwrap_or_else(|e| panic!("{name}: {e}")), "{name}");
        let r = receiver(&chans[2]);
        assert_eq!(r.recv_bytes(Timeout::Try).unwrap(), b"next", "{name}");
        assert!(
            matches!(r.recv_bytes(Timeout::Try), Err(Error::ChannelEmpty)),
            "{name}"
        );
        assert!(timed_out(&set.poll(Timeout::Try, WaitMode::Spin)), "{name}");
        println!(
            "{name}: reported {:.1} ms after the poll began",
            t0.elapsed().as_secs_f64() * 1e3
        );
        drop((set, r));
        for c in chans {
            c.destroy().unwrap();
        }
        ctrl.destroy().unwrap();
        pool.destroy().unwrap();
    }
}
