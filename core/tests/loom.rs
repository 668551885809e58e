//! loom models of the concurrent paths: pool alloc/free under its lock, channel send/recv at
//! the full/empty edges with wrap-around, MPMC exactly-once, the wait protocol (one and all
//! waiters against a send and its notify), the doorbell (a set's watch, arm and sleep against
//! a send and its ring), the barrier's count. Every role runs on a spawned
//! thread (a role on the main thread hides bugs: tokio-rs/loom#392); each model counts its
//! executions and asserts loom explored more than one interleaving.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p dragon-channels-core --release --test loom`
#![allow(clippy::std_instead_of_core, clippy::disallowed_types)] // a std test program
#![cfg(loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dragon_channels_core::{
    AllocKind, Bell, Channel, ChannelAttrs, ChannelError, Event, Poll, Polled, Pool, PoolConfig,
    PoolError, Region, Rings, Side, Waiter, Wake,
};

struct Mem(Vec<u64>);

// SAFETY: the memory is only accessed through the crate's handles, whose shared state is
// atomic or lock-protected; loom checks exactly that.
unsafe impl Send for Mem {}
// SAFETY: as above.
unsafe impl Sync for Mem {}

impl Mem {
    fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Self(vec![0u64; bytes / 8 + 8]))
    }

    fn region(&self) -> Region {
        let p = self.0.as_ptr() as *mut u8;
        let off = p.align_offset(64);
        // SAFETY: `off + len` stays inside the vector, which the Arc keeps alive until every
        // thread that uses the region has been joined.
        unsafe { Region::new(p.add(off), self.0.len() * 8 - 64).unwrap() }
    }
}

fn explored(counter: &AtomicUsize, name: &str) {
    let n = counter.load(Ordering::Relaxed);
    println!("{name}: {n} executions");
    assert!(n > 1, "{name}: loom explored only {n} execution(s)");
}

#[test]
fn pool_concurrent_alloc_free() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let mem = Mem::new(16 * 1024);
        let p = Pool::init(mem.region(), &PoolConfig::default(), 1).unwrap();
        let base = p.stats().unwrap();
        let hs: Vec<_> = [64usize, 200]
            .into_iter()
            .enumerate()
            .map(|(i, size)| {
                let p = p.with_owner(10 + i as u32).unwrap();
                let mem = mem.clone();
                loom::thread::spawn(move || {
                    let a = p.alloc(size, AllocKind::Data).unwrap();
                    let (off, len) = p.resolve(&a).unwrap();
                    // SAFETY: the block is ours alone until freed.
                    unsafe { core::ptr::write_bytes(p.region().base().add(off), i as u8 + 1, len) };
                    p.free(a).unwrap();
                    drop(mem);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(p.stats().unwrap(), base);
    });
    explored(&RUNS, "pool_concurrent_alloc_free");
}

/// A fresh region with a pool and a channel of `capacity` one-byte-ish slots.
fn channel_in_new_region(capacity: u32) -> (Arc<Mem>, Channel) {
    let mem = Mem::new(8 * 1024);
    let p = Pool::init(mem.region(), &PoolConfig::default(), 1).unwrap();
    let attrs = ChannelAttrs {
        capacity,
        block_size: 8,
    };
    let ch = Channel::create(&p, 1, &attrs).unwrap();
    (mem, ch)
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(2, f);
}

fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b.check(f);
}

/// [`model`] for a model whose set-up takes many atomic steps (filling a pool).
fn model_long(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.max_branches = 100_000;
    b.check(f);
}

/// Capacity 1: the sender sends twice without waiting (the second may find the slot full),
/// the receiver tries twice (each may find it empty). Whatever interleaving, what was sent
/// arrives exactly once and in order, through the wrap-around of the single slot.
#[test]
fn capacity_one_full_empty_edges() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let (mem, ch) = channel_in_new_region(1);
        let (m1, m2) = (mem.clone(), mem.clone());
        let tx = loom::thread::spawn(move || {
            let sent: Vec<u8> = (1..=2)
                .filter(|&v| ch.try_send(&[v], 0, 0).is_ok())
                .collect();
            drop(m1);
            sent
        });
        let rx = loom::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..2 {
                let mut b = [0u8; 1];
                match ch.try_recv_into(&mut b) {
                    Ok(_) => got.push(b[0]),
                    // Stalled: the sender is mid-way at the head; the message stays queued.
                    Err(ChannelError::Empty | ChannelError::Stalled { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            drop(m2);
            got
        });
        let sent = tx.join().unwrap();
        let mut got = rx.join().unwrap();
        let mut b = [0u8; 1];
        while ch.try_recv_into(&mut b).is_ok() {
            got.push(b[0]);
        }
        assert_eq!(got, sent, "exactly once, in order");
        assert_eq!(
            sent[0], 1,
            "an empty channel of capacity 1 accepts a message"
        );
    });
    explored(&RUNS, "capacity_one_full_empty_edges");
}

/// Two senders and two receivers on two slots, each trying once: every message sent is
/// received at most once, and what is not received is still queued. Four threads explode the
/// state space (4.6 million executions at 2 preemptions), so this model allows one.
#[test]
fn mpmc_exactly_once() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    model_bounded(1, || {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let (mem, ch) = channel_in_new_region(2);
        let senders: Vec<_> = [10u8, 20]
            .into_iter()
            .map(|v| {
                let m = mem.clone();
                loom::thread::spawn(move || {
                    // Stalled (another sender holds the claim) is retried: it is transient.
                    while let Err(e) = ch.try_send(&[v], 0, 0) {
                        assert!(matches!(e, ChannelError::Stalled { .. }), "{e}");
                        loom::thread::yield_now();
                    }
                    drop(m);
                })
            })
            .collect();
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let m = mem.clone();
                loom::thread::spawn(move || {
                    let mut b = [0u8; 1];
                    let r = match ch.try_recv_into(&mut b) {
                        Ok(_) => Some(b[0]),
                        // Stalled: a sender is mid-write at the head; the message stays queued.
                        Err(ChannelError::Empty | ChannelError::Stalled { .. }) => None,
                        Err(e) => panic!("{e}"),
                    };
                    drop(m);
                    r
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        let mut got: Vec<u8> = receivers
            .into_iter()
            .filter_map(|r| r.join().unwrap())
            .collect();
        let mut b = [0u8; 1];
        while ch.try_recv_into(&mut b).is_ok() {
            got.push(b[0]);
        }
        got.sort_unstable();
        assert_eq!(got, vec![10, 20]);
    });
    explored(&RUNS, "mpmc_exactly_once");
}

/// Errors a try-once call may give while other parties are mid-operation.
fn transient(e: &ChannelError) -> bool {
    matches!(
        e,
        ChannelError::Full | ChannelError::Empty | ChannelError::Stalled { .. }
    )
}

/// A party's index and what its call returned.
type PartyResult = (u8, Result<Option<u8>, ChannelError>);

/// One try-once call per party, each on its own loom thread: party `i` sends `send[i]` when
/// it is `Some`, else receives once (`Ok(Some(v))`: it received `v`; a send gives `Ok(None)`).
fn try_once_each(
    mem: &Arc<Mem>,
    ch: Channel,
    send: [Option<u8>; 3],
) -> Vec<loom::thread::JoinHandle<PartyResult>> {
    (0..3u8)
        .zip(send)
        .map(|(i, v)| {
            let m = mem.clone();
            loom::thread::spawn(move || {
                let r = match v {
                    Some(v) => ch.try_send(&[v], 0, 0).map(|()| None),
                    None => {
                        let mut b = [0u8; 1];
                        ch.try_recv_into(&mut b).map(|_| Some(b[0]))
                    }
                };
                drop(m);
                (i, r)
            })
        })
        .collect()
}

/// Capacity 1 with two parties of one role lapping a third: a sender preempted after taking
/// the only position leaves the slot one lap behind the next sender (`Full`, never
/// `Corrupt`), and a receiver preempted before releasing the slot leaves it one lap behind
/// the next receiver (`Empty`). Whatever the interleaving, only transient errors come back and
/// every message sent arrives exactly once.
#[test]
fn capacity_one_lapped_by_a_preempted_party() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let (mem, ch) = channel_in_new_region(1);
        // Receivers' side: one message queued, two receivers race for it while a sender
        // tries to send the next.
        ch.try_send(&[1], 0, 0).unwrap();
        let threads = try_once_each(&mem, ch, [Some(2), None, None]);
        let mut sent = vec![1u8];
        let mut got = Vec::new();
        for t in threads {
            match t.join().unwrap() {
                (0, Ok(_)) => sent.push(2),
                (_, Ok(Some(v))) => got.push(v),
                (_, Ok(None)) => unreachable!(),
                (i, Err(e)) => assert!(transient(&e), "party {i}: {e}"),
            }
        }
        let mut b = [0u8; 1];
        while ch.try_recv_into(&mut b).is_ok() {
            got.push(b[0]);
        }
        got.sort_unstable();
        assert_eq!(got, sent, "exactly once");
        assert!(ch.is_empty());
    });
    explored(
        &RUNS,
        "capacity_one_lapped_by_a_preempted_party (receivers)",
    );
    static RUNS2: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        RUNS2.fetch_add(1, Ordering::Relaxed);
        let (mem, ch) = channel_in_new_region(1);
        // Senders' side: two senders race for the only slot while a receiver tries.
        let threads = try_once_each(&mem, ch, [Some(10), Some(11), None]);
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        for t in threads {
            match t.join().unwrap() {
                (i, Ok(None)) => sent.push(10 + i),
                (_, Ok(Some(v))) => got.push(v),
                (i, Err(e)) => assert!(transient(&e), "party {i}: {e}"),
            }
        }
        let mut b = [0u8; 1];
        while ch.try_recv_into(&mut b).is_ok() {
            got.push(b[0]);
        }
        sent.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, sent, "exactly once");
    });
    explored(&RUNS2, "capacity_one_lapped_by_a_preempted_party (senders)");
}

/// The wait protocol that the std adapter's sleepers follow (`Event`): a receiver registers
/// on the receive event, tries once more (an exact try: its empty verdict is fenced against
/// the sender's tail), and would then sleep while the event word still holds the value it
/// registered with; a sender sends and notifies. Whatever the interleaving, a receiver that
/// would sleep must find the word changed afterwards (the futex would not block, or be woken):
/// no lost wake-up. Capacity 1, one message.
#[test]
fn register_recheck_sleep_against_send_notify() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    wait_protocol(&RUNS, false);
    explored(&RUNS, "register_recheck_sleep_against_send_notify");
}

/// Planted bug: the same protocol with the lazy try (`try_recv_buf_lazy`, which reports
/// "empty" without the fence and tail read) as the re-check. loom must find the lost
/// wake-up: that is why the adapter uses the lazy try only for a call's first try, never for
/// the re-check before sleeping.
#[test]
#[should_panic(expected = "would sleep")]
fn planted_bug_lazy_recheck_loses_a_wake_up() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    wait_protocol(&RUNS, true);
}

fn wait_protocol(runs: &'static AtomicUsize, lazy_recheck: bool) {
    model(move || {
        runs.fetch_add(1, Ordering::Relaxed);
        let (mem, ch) = channel_in_new_region(1);
        let (m1, m2) = (mem.clone(), mem.clone());
        let tx = loom::thread::spawn(move || {
            ch.try_send(&[7], 0, 0).unwrap();
            // The adapter wakes the futex when this says so; the model checks the word.
            let _ = ch.recv_event().notify();
            drop(m1);
        });
        let rx = loom::thread::spawn(move || {
            let ev = ch.recv_event();
            let seen = ev.register(Waiter::One);
            let mut b = [0u8; 1];
            let got = loop {
                let r = if lazy_recheck {
                    ch.try_recv_buf_lazy(&mut b[..])
                } else {
                    ch.try_recv_into(&mut b)
                };
                match r {
                    Ok(_) => break true,
                    // A sender mid-way: it will publish and notify; an exact verdict needs
                    // it done (loom makes the spin a yield).
                    Err(ChannelError::Stalled { .. }) => loom::thread::yield_now(),
                    Err(ChannelError::Empty) => break false,
                    Err(e) => panic!("{e}"),
                }
            };
            drop(m2);
            (got, seen)
        });
        tx.join().unwrap();
        let (got, seen) = rx.join().unwrap();
        let now = ch
            .recv_event()
            .word()
            .load(core::sync::atomic::Ordering::SeqCst);
        assert!(
            got || now != seen,
            "the receiver found the channel empty and would sleep on a word nobody changed"
        );
        ch.recv_event().unregister(Waiter::One);
    });
}

/// Three parties arrive at a barrier (a channel of capacity 3) at once with try-once
/// `BarrierWait` polls, retrying while told "not ready": exactly one is told to release; it
/// releases the three outcome messages; each party then tries twice to receive one (a party
/// that waits longer would be a spin loop loom cannot bound; what they leave is received
/// after they end), and the ordinals are 0, 1 and 2, each once.
#[test]
fn barrier_three_parties_one_releaser_distinct_ordinals() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    model_bounded(1, || {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let (mem, ch) = channel_in_new_region(3);
        let parties: Vec<_> = (0..3)
            .map(|_| {
                let m = mem.clone();
                loom::thread::spawn(move || {
                    let released = loop {
                        match ch.try_poll(Poll::BarrierWait) {
                            Ok(Polled::ReadyToRelease) => {
                                let r = ch.try_poll(Poll::BarrierRelease);
                                assert_eq!(r, Ok(Polled::Value(3)));
                                break true;
                            }
                            Ok(Polled::Ready) => break false,
                            Err(ChannelError::NotReady(_)) => loom::thread::yield_now(),
                            r => panic!("arrival: {r:?}"),
                        }
                    };
                    let mut b = [0u8; 8];
                    let ordinal = (0..2).find_map(|_| match ch.try_recv_into(&mut b) {
                        Ok(_) => Some(i64::from_le_bytes(b)),
                        // Not released yet, or the releaser is mid-send.
                        Err(ChannelError::Empty | ChannelError::Stalled { .. }) => {
                            loom::thread::yield_now();
                            None
                        }
                        Err(e) => panic!("receive: {e}"),
                    });
                    drop(m);
                    (released, ordinal)
                })
            })
            .collect();
        let got: Vec<(bool, Option<i64>)> =
            parties.into_iter().map(|p| p.join().unwrap()).collect();
        assert_eq!(
            got.iter().filter(|g| g.0).count(),
            1,
            "exactly one party is told to release"
        );
        let mut ordinals: Vec<i64> = got.iter().filter_map(|g| g.1).collect();
        let mut b = [0u8; 8];
        while ch.try_recv_into(&mut b).is_ok() {
            ordinals.push(i64::from_le_bytes(b));
        }
        ordinals.sort_unstable();
        assert_eq!(ordinals, [0, 1, 2]);
        assert_eq!((ch.barrier_count(), ch.barrier_broken()), (0, false));
        assert!(ch.is_empty());
    });
    explored(
        &RUNS,
        "barrier_three_parties_one_releaser_distinct_ordinals",
    );
}

/// Planted bug: a copy of the arrival's count with a load and a store where the core has a
/// compare-and-swap. loom must find two parties reading the same count, so that none (or
/// two) is told to release.
#[test]
#[should_panic(expected = "exactly one party")]
fn planted_bug_racy_barrier_count() {
    model(|| {
        let count = Arc::new(loom::sync::atomic::AtomicU32::new(0));
        let parties: Vec<_> = (0..3)
            .map(|_| {
                let count = count.clone();
                loom::thread::spawn(move || {
                    let c = count.load(Ordering::Acquire);
                    count.store(c + 1, Ordering::Release);
                    c + 1 == 3
                })
            })
            .collect();
        let releasers = parties
            .into_iter()
            .map(|p| p.join().unwrap())
            .filter(|&last| last)
            .count();
        assert_eq!(releasers, 1, "exactly one party is told to release");
    });
}

/// One and all waiters on the same event word: a receiver registers as [`Waiter::One`], a
/// poller of IN as [`Waiter::All`]; each re-checks once (an exact receive, a try-once poll)
/// and would then sleep while the word holds what it registered with. A sender sends one
/// message and notifies. Whatever the interleaving: a receiver that would sleep finds the
/// word changed; a poller that would sleep with the message still queued finds it changed
/// and the notify said to wake all (waking one could wake the receiver and leave the poller
/// asleep, or the other way round); and a notifier that saw the poller registered before
/// its notify says to wake all.
#[test]
fn one_and_all_waiters_against_send_and_notify() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    one_and_all_waiters(&RUNS, |ev| ev.notify());
    explored(&RUNS, "one_and_all_waiters_against_send_and_notify");
}

/// Planted bug: a copy of `Event::notify` that answers "wake one" whenever a one-waiter is
/// registered, even with an all-waiter there too. loom must find the poller asleep with the
/// message queued and only one sleeper woken.
#[test]
#[should_panic(expected = "wake of all")]
fn planted_bug_notify_prefers_one() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    one_and_all_waiters(&RUNS, |ev| {
        loom::sync::atomic::fence(Ordering::SeqCst);
        let (one, all) = (ev.waiters(Waiter::One), ev.waiters(Waiter::All));
        if one + all == 0 {
            return Wake::None;
        }
        ev.word().fetch_add(1, Ordering::Release);
        if one > 0 { Wake::One } else { Wake::All }
    });
}

fn one_and_all_waiters(runs: &'static AtomicUsize, notify: fn(&Event<'_>) -> Wake) {
    model(move || {
        runs.fetch_add(1, Ordering::Relaxed);
        let (mem, ch) = channel_in_new_region(1);
        let polling = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let (m1, m2, m3) = (mem.clone(), mem.clone(), mem.clone());
        let flag = polling.clone();
        let tx = loom::thread::spawn(move || {
            ch.try_send(&[7], 0, 0).unwrap();
            // Before the notify's fence: was the poller registered?
            let saw_poller = flag.load(Ordering::Acquire);
            let wake = notify(&ch.recv_event());
            drop(m1);
            (wake, saw_poller)
        });
        let rx = loom::thread::spawn(move || {
            let ev = ch.recv_event();
            let seen = ev.register(Waiter::One);
            let mut b = [0u8; 1];
            let got = loop {
                match ch.try_recv_into(&mut b) {
                    Ok(_) => break true,
                    // A sender mid-way: it will publish and notify; an exact verdict needs
                    // it done (loom makes the spin a yield).
                    Err(ChannelError::Stalled { .. }) => loom::thread::yield_now(),
                    Err(ChannelError::Empty) => break false,
                    Err(e) => panic!("{e}"),
                }
            };
            if got {
                ev.unregister(Waiter::One);
            }
            drop(m2);
            (got, seen)
        });
        let poller = loom::thread::spawn(move || {
            let ev = ch.recv_event();
            let seen = ev.register(Waiter::All);
            polling.store(true, Ordering::Release);
            let ready = match ch.try_poll(Poll::In) {
                Ok(p) => {
                    assert_eq!(p, Polled::Ready);
                    true
                }
                Err(ChannelError::NotReady(_)) => false,
                Err(e) => panic!("{e}"),
            };
            // Stays registered to the end: a sleeper, or one that has not unregistered yet.
            drop(m3);
            (ready, seen)
        });
        let (wake, saw_poller) = tx.join().unwrap();
        let (got, rx_seen) = rx.join().unwrap();
        let (ready, poll_seen) = poller.join().unwrap();
        let now = ch
            .recv_event()
            .word()
            .load(core::sync::atomic::Ordering::SeqCst);
        if !got {
            assert_ne!(
                now, rx_seen,
                "the receiver found the channel empty and would sleep on a word nobody changed"
            );
            assert_ne!(wake, Wake::None);
        }
        if !ready && !ch.is_empty() {
            assert_ne!(
                now, poll_seen,
                "the poller would sleep on a word nobody changed, with a message queued"
            );
            assert_eq!(
                wake,
                Wake::All,
                "a poller asleep with the message queued needs a wake of all"
            );
        }
        if saw_poller {
            assert_eq!(
                wake,
                Wake::All,
                "the poller registered before the notify: a wake of all"
            );
        }
        ch.recv_event().unregister(Waiter::All);
        if !got {
            ch.recv_event().unregister(Waiter::One);
        }
    });
}

/// A channel-set poller watches the pool's doorbell, looks, hears the doorbell and looks
/// again (as it spins), arms it, looks again and would sleep on the armed value; a sender
/// announces its send on the doorbell, sends, notifies and rings, as the std adapter does.
/// Whatever the interleaving: after each look that found nothing, the doorbell rings again
/// with the channel's hint (a spinning poller hears it), and a poller that would sleep was
/// rung after it armed (the ring changed the word it sleeps on and told the sender to wake
/// it).
#[test]
fn doorbell_watch_arm_sleep_against_send_and_ring() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    doorbell(&RUNS, Sender::AnnounceSendRing);
    explored(&RUNS, "doorbell_watch_arm_sleep_against_send_and_ring");
}

/// Planted bug: the sender looks for watchers before it sends (no fence between its change
/// and its look). loom must find the poller asleep with the message queued and nobody
/// ringing.
#[test]
#[should_panic(expected = "with a message queued")]
fn planted_bug_ring_before_the_change() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    doorbell(&RUNS, Sender::RingFirst);
}

/// Planted bug: the sender skips its ring when the doorbell still holds the value its
/// announcement left (as if every watcher had heard the announcement already). loom must
/// find a spinning poller that looked after the announcement, before the send, and hears
/// nothing more.
#[test]
#[should_panic(expected = "hears nothing")]
fn planted_bug_announcement_instead_of_ring() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    doorbell(&RUNS, Sender::AnnounceOnly);
}

/// How the doorbell model's sender sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// The adapter's way: announce, send, notify (event and doorbell).
    AnnounceSendRing,
    /// Planted bug: ring, then send.
    RingFirst,
    /// Planted bug: announce, send, and ring only if the doorbell changed since.
    AnnounceOnly,
}

fn doorbell(runs: &'static AtomicUsize, sender: Sender) {
    // Small enough for 5 preemptions (831 executions, well under a second).
    model_bounded(5, move || {
        runs.fetch_add(1, Ordering::Relaxed);
        let (mem, ch) = channel_in_new_region(1);
        let (m1, m2) = (mem.clone(), mem.clone());
        let tx = loom::thread::spawn(move || {
            let woke = match sender {
                Sender::RingFirst => {
                    let woke = ch.ring(Side::Arrived);
                    ch.try_send(&[7], 0, 0).unwrap();
                    woke
                }
                Sender::AnnounceSendRing => {
                    ch.announce(Side::Arrived);
                    ch.try_send(&[7], 0, 0).unwrap();
                    // The adapter's notify: the event's and the doorbell's in one.
                    ch.notify(Side::Arrived).is_some_and(|n| n.bell)
                }
                Sender::AnnounceOnly => {
                    ch.announce(Side::Arrived);
                    let announced = ch.bell().peek();
                    ch.try_send(&[7], 0, 0).unwrap();
                    loom::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
                    ch.bell().peek() != announced
                        && ch.notify(Side::Arrived).is_some_and(|n| n.bell)
                }
            };
            drop(m1);
            woke
        });
        let poller = loom::thread::spawn(move || {
            let bell = ch.bell();
            let watched = bell.watch(Side::Arrived).unwrap();
            let ready = |ch: &Channel| loop {
                match ch.try_poll(Poll::In) {
                    Ok(p) => break p == Polled::Ready,
                    Err(ChannelError::NotReady(_)) if ch.is_empty() => break false,
                    // A sender mid-way: it will publish and ring.
                    Err(ChannelError::NotReady(_)) => loom::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            // The doorbell's value heard before the last look that found nothing.
            let mut heard = watched;
            let mut found = ready(&ch);
            if !found {
                // A spinning poller: hears the doorbell, looks again if it rang.
                let now = bell.peek();
                if Bell::rings_since(heard, now) != Rings::None {
                    heard = now;
                    found = ready(&ch);
                }
            }
            let slept_on = if found {
                None
            } else {
                let armed = bell.arm();
                (!ready(&ch)).then_some(armed)
            };
            drop(m2);
            (found, heard, slept_on)
        });
        let woke = tx.join().unwrap();
        let (found, heard, slept_on) = poller.join().unwrap();
        let now = ch.bell().word().load(core::sync::atomic::Ordering::SeqCst);
        if !found {
            assert!(
                matches!(Bell::rings_since(heard, now), Rings::Many)
                    || Bell::rings_since(heard, now) == Rings::One(ch.bell().hint()),
                "a spinning poller that looked after hearing {heard:#x} hears nothing more \
                 (now {now:#x}) with a message queued"
            );
        }
        if let Some(armed) = slept_on {
            assert!(
                now != armed && woke,
                "the poller would sleep on {armed:#x} (now {now:#x}, woken: {woke}) with a \
                 message queued"
            );
        }
        ch.bell().unwatch(Side::Arrived);
    });
}

/// A pool of 2,048 minimum blocks of 64 bytes (one magazine) in a new region, created by
/// owner 1.
fn magazine_pool_in_new_region(max_allocations: u32) -> (Arc<Mem>, Pool) {
    let mem = Mem::new(160 * 1024);
    let cfg = PoolConfig {
        min_block: 64,
        max_allocations: Some(max_allocations),
        uid: 1,
    };
    let p = Pool::init(mem.region(), &cfg, 1).unwrap();
    (mem, p)
}

/// Two frees of one allocation racing (a buggy double free from two parties): one into the
/// owner's cache without any lock, one through the pool lock. Whatever the interleaving,
/// exactly one succeeds, the other is refused as stale, and the pool is back at its baseline
/// (the block counts as free once, cached or not). (With per-party magazines behind a lock,
/// this model found the pool free swapping a record the magazine had already taken: its
/// validation had read the meta word before the magazine's swap.)
#[test]
fn magazine_free_against_pool_free_of_one_allocation() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let (mem, p) = magazine_pool_in_new_region(16);
        let base = p.stats().unwrap();
        let mut cache = p.claim_cache().unwrap();
        let a = cache.alloc(64, AllocKind::Data).unwrap();
        let other = p.with_owner(2).unwrap();
        let (m1, m2) = (mem.clone(), mem.clone());
        let t1 = loom::thread::spawn(move || {
            let r = cache.free(a).map(|w| assert_eq!(w, Wake::None));
            drop(m1);
            (r, cache)
        });
        let t2 = loom::thread::spawn(move || {
            let r = other.free(a);
            drop(m2);
            r
        });
        let ((r1, cache), r2) = (t1.join().unwrap(), t2.join().unwrap());
        assert!(
            matches!(
                (r1, r2),
                (Ok(()), Err(PoolError::Stale)) | (Err(PoolError::Stale), Ok(()))
            ),
            "{r1:?} {r2:?}"
        );
        assert_eq!(p.stats().unwrap(), base);
        cache.release().unwrap();
        assert_eq!(p.stats().unwrap(), base);
    });
    explored(&RUNS, "magazine_free_against_pool_free_of_one_allocation");
}

/// A cache's holder takes its cached allocation back while another party drains every
/// magazine (its free-block query): exactly one gets the block. If the drain had freed a
/// block the holder took, the pool would count it free while the holder has it.
#[test]
fn cache_alloc_against_a_drain() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let (mem, p) = magazine_pool_in_new_region(16);
        let base = p.stats().unwrap();
        let mut cache = p.claim_cache().unwrap();
        let a = cache.alloc(64, AllocKind::Data).unwrap();
        assert_eq!(cache.free(a), Ok(Wake::None));
        let other = p.with_owner(2).unwrap();
        let (m1, m2) = (mem.clone(), mem.clone());
        let t1 = loom::thread::spawn(move || {
            let r = cache.alloc(64, AllocKind::Data);
            drop(m1);
            (r, cache)
        });
        let t2 = loom::thread::spawn(move || {
            let mut fb = [0u32; dragon_channels_core::pool::SIZE_CLASSES];
            let r = other.free_blocks(&mut fb);
            drop(m2);
            r
        });
        let ((got, mut cache), drained) = (t1.join().unwrap(), t2.join().unwrap());
        drained.unwrap();
        let got = got.unwrap();
        let st = p.stats().unwrap();
        assert_eq!(st.live, 1, "the holder's allocation is live");
        assert_eq!(st.free, base.free - 64, "and its block is not free: {st:?}");
        assert_eq!(cache.free(got), Ok(Wake::None));
        cache.release().unwrap();
        assert_eq!(p.stats().unwrap(), base);
    });
    explored(&RUNS, "cache_alloc_against_a_drain");
}

/// The free event without a fence on the fast path: a blocked allocator registers and
/// retries (its retry drains magazines) while a cache frees the only memory left into its
/// magazine and notifies with `notify_after_seqcst`. Either the retry gets the block, or the
/// free saw the waiter and bumped the word the allocator would sleep on.
#[test]
fn cache_free_wakes_or_is_found_by_a_blocked_allocator() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    blocked_allocator_against_cache_free(&RUNS, false);
    explored(&RUNS, "cache_free_wakes_or_is_found_by_a_blocked_allocator");
}

/// Planted bug: the same, with a re-check that only reads the statistics (which scan the
/// magazines' slots with no fence) instead of allocating (whose drain starts with one).
/// loom must find the lost wake-up: a waiter's re-check must go through the drain.
#[test]
#[should_panic(expected = "would sleep")]
fn planted_bug_recheck_without_the_drain_fence_loses_a_wake_up() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    blocked_allocator_against_cache_free(&RUNS, true);
}

fn blocked_allocator_against_cache_free(runs: &'static AtomicUsize, stats_recheck: bool) {
    model_long(move || {
        runs.fetch_add(1, Ordering::Relaxed);
        let (mem, p) = magazine_pool_in_new_region(32);
        let mut cache = p.claim_cache().unwrap();
        let a = cache.alloc(64, AllocKind::Data).unwrap();
        // Party 2 takes everything else.
        let other = p.with_owner(2).unwrap();
        let mut held = Vec::new();
        let mut size = other.max_alloc();
        while size >= 64 {
            match other.alloc(size, AllocKind::Data) {
                Ok(h) => held.push(h),
                Err(PoolError::OutOfSpace) => size /= 2,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(p.free_space().unwrap(), 0);
        let (m1, m2) = (mem.clone(), mem.clone());
        let t1 = loom::thread::spawn(move || {
            let w = cache.free(a).unwrap();
            drop(m1);
            (w, cache)
        });
        let t2 = loom::thread::spawn(move || {
            let ev = other.free_event();
            let seen = ev.register(Waiter::All);
            let got = loop {
                if stats_recheck {
                    match other.free_space() {
                        Ok(n) => break (n > 0).then_some(None),
                        Err(PoolError::Stalled { .. }) => loom::thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                    continue;
                }
                match other.alloc(64, AllocKind::Data) {
                    Ok(b) => break Some(Some(b)),
                    Err(PoolError::Stalled { .. }) => loom::thread::yield_now(),
                    Err(PoolError::OutOfSpace) => break None,
                    Err(e) => panic!("{e:?}"),
                }
            };
            drop(m2);
            (got, seen)
        });
        let (w, cache) = t1.join().unwrap();
        let (got, seen) = t2.join().unwrap();
        let ev = p.free_event();
        let now = ev.word().load(core::sync::atomic::Ordering::SeqCst);
        assert!(
            got.is_some() || (now != seen && w == Wake::All),
            "the allocator found no memory and would sleep on a word nobody changed"
        );
        ev.unregister(Waiter::All);
        if let Some(Some(b)) = got {
            p.free(b).unwrap();
        }
        for h in held {
            p.free(h).unwrap();
        }
        cache.release().unwrap();
    });
}
