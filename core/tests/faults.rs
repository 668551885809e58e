//! A party stopped at each step of pool and channel operations (fault injection), declared
//! dead, and recovered: the others carry on, nothing else is lost, and the pool returns to its
//! baseline.
#![allow(clippy::std_instead_of_core, clippy::disallowed_types)] // a std test program

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use common::{Mem, pool};
use dragon_channels_core::fault::{self, Step};
use dragon_channels_core::{AllocKind, Channel, ChannelAttrs, ChannelError, Pool, PoolError, Wake};

/// Victim owner id -> the step where it dies.
static VICTIMS: Mutex<Option<HashMap<u32, Step>>> = Mutex::new(None);

/// Owner id -> (step where it pauses, "reached" signal, "resume" signal): a party preempted
/// at that step, alive, that carries on when told.
type Pause = (Step, Sender<()>, Receiver<()>);
static PAUSES: Mutex<Option<HashMap<u32, Pause>>> = Mutex::new(None);

fn hook(owner: u32, step: Step) -> bool {
    if VICTIMS
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|m| m.get(&owner) == Some(&step))
    {
        return true;
    }
    let pause = {
        let mut p = PAUSES.lock().unwrap();
        match p.as_mut() {
            Some(m) if m.get(&owner).is_some_and(|e| e.0 == step) => m.remove(&owner),
            _ => None,
        }
    };
    if let Some((_, reached, resume)) = pause {
        reached.send(()).unwrap();
        resume.recv().unwrap();
    }
    false
}

/// `owner` will pause at `step`; returns (reached, resume) ends for the test.
fn pause_at(owner: u32, step: Step) -> (Receiver<()>, Sender<()>) {
    let (reached_tx, reached_rx) = channel();
    let (resume_tx, resume_rx) = channel();
    PAUSES
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(owner, (step, reached_tx, resume_rx));
    fault::set_hook(Some(hook));
    (reached_rx, resume_tx)
}

fn doom(owner: u32, step: Step) {
    let mut v = VICTIMS.lock().unwrap();
    v.get_or_insert_with(HashMap::new).insert(owner, step);
    fault::set_hook(Some(hook));
}

#[derive(Clone, Copy, Debug)]
enum Victim {
    SendInline,
    SendSide,
    RecvInto,
    RecvAlloc,
    /// Receives the inline message, then the side one.
    RecvTwice,
}

/// Runs one case: the survivor queues an inline and a side message, the victim does `op` and
/// dies at `step`, then recovery runs and the survivor drains and keeps going.
fn channel_case(victim_id: u32, op: Victim, step: Step) {
    doom(victim_id, step);
    let mut m = Mem::new(128 * 1024);
    let p = pool(&mut m, 64);
    let baseline = p.stats().unwrap();
    let ch = Channel::create(
        &p,
        1,
        &ChannelAttrs {
            capacity: 4,
            block_size: 64,
        },
    )
    .unwrap();
    ch.try_send(b"first", 1, 0).unwrap();
    ch.try_send(&[2u8; 300], 2, 0).unwrap();

    let vp = Pool::attach(m.region(), victim_id).unwrap();
    let vch = Channel::attach(&vp, &ch.serialize(), None).unwrap();
    let victim_payload = [9u8; 200];
    let r = std::thread::scope(|s| {
        s.spawn(|| match op {
            Victim::SendInline => vch.try_send(b"victim", 9, 0).map(|_| ()),
            Victim::SendSide => vch.try_send(&victim_payload, 9, 0).map(|_| ()),
            Victim::RecvInto => vch.try_recv_into(&mut [0u8; 512]).map(|_| ()),
            Victim::RecvAlloc => vch.try_recv_alloc().map(|_| ()),
            Victim::RecvTwice => {
                vch.try_recv_into(&mut [0u8; 512]).unwrap();
                vch.try_recv_into(&mut [0u8; 512]).map(|_| ())
            }
        })
        .join()
        .unwrap()
    });
    assert!(
        matches!(
            r,
            Err(ChannelError::Died) | Err(ChannelError::Pool(PoolError::Died))
        ),
        "{op:?} at {step:?}: the victim must have died, got {r:?}"
    );
    let alive = |o: u32| o != victim_id;
    p.recover(&alive).unwrap();
    let rep = ch.recover(&alive).unwrap();

    // Drain: what arrives must be the survivor's messages in order (minus one taken by a
    // receiver that died after advancing head), plus the victim's if it published.
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match ch.try_recv_into(&mut buf) {
            Ok(g) => got.push(g.hints),
            Err(ChannelError::Empty) => break,
            Err(e) => panic!("{op:?} at {step:?}: survivor stalled after recovery: {e}"),
        }
    }
    let receiver_took_one = matches!(op, Victim::RecvInto | Victim::RecvAlloc)
        && matches!(step, Step::RecvAdvanced | Step::RecvTaken);
    let victim_sent =
        matches!(op, Victim::SendInline | Victim::SendSide) && matches!(step, Step::SendPublished);
    let mut want: Vec<u64> = if receiver_took_one {
        vec![2]
    } else {
        vec![1, 2]
    };
    if matches!(op, Victim::RecvTwice) {
        want.clear(); // the first was delivered to the victim, the second died with it
    }
    if victim_sent {
        want.push(9);
    }
    assert_eq!(got, want, "{op:?} at {step:?}: recovery report {rep:?}");
    // The survivor carries on through every slot, several laps.
    for i in 0..12u64 {
        ch.try_send(&[i as u8; 100], i, 0).unwrap();
        assert_eq!(ch.try_recv_into(&mut buf).unwrap().hints, i);
    }
    ch.destroy().unwrap();
    p.recover(&alive).unwrap();
    let mut after = p.stats().unwrap();
    after.rebuilds = 0;
    assert_eq!(after, baseline, "{op:?} at {step:?}: pool back to baseline");
}

#[test]
fn sender_dies_at_each_step() {
    let steps = [
        Step::SendClaimed,
        Step::SendAdvanced,
        Step::SendWritten,
        Step::SendPublished,
        Step::PoolAllocSplit,
        Step::PoolAllocRecorded,
    ];
    let mut id = 100;
    for step in steps {
        for op in [Victim::SendInline, Victim::SendSide] {
            if matches!(op, Victim::SendInline)
                && matches!(step, Step::PoolAllocSplit | Step::PoolAllocRecorded)
            {
                continue; // inline sends allocate nothing
            }
            id += 1;
            channel_case(id, op, step);
        }
    }
}

#[test]
fn receiver_dies_at_each_step() {
    let steps = [Step::RecvClaimed, Step::RecvAdvanced, Step::RecvTaken];
    let mut id = 200;
    for step in steps {
        for op in [Victim::RecvInto, Victim::RecvAlloc] {
            id += 1;
            channel_case(id, op, step);
        }
    }
    // Freeing the side allocation after taking it, and allocating for an inline message.
    channel_case(250, Victim::RecvTwice, Step::PoolFreeCommitted);
}

#[test]
fn pool_lock_holder_dies_and_is_taken_over() {
    for (i, step) in [
        Step::PoolAllocSplit,
        Step::PoolAllocRecorded,
        Step::PoolFreeCommitted,
    ]
    .into_iter()
    .enumerate()
    {
        let victim = 300 + i as u32;
        doom(victim, step);
        let mut m = Mem::new(128 * 1024);
        let p = pool(&mut m, 64);
        let baseline = p.stats().unwrap();
        let keep = p.alloc(5000, AllocKind::Data).unwrap();
        let v = Pool::attach(m.region(), victim).unwrap();
        let r = if matches!(step, Step::PoolFreeCommitted) {
            // Larger than a magazine keeps: this free takes the pool lock (a free into the
            // magazine is `magazine_holder_dies_mid_free`).
            let a = v.alloc(8192, AllocKind::Data);
            doom(victim, step);
            v.free(a.unwrap())
        } else {
            v.alloc(100, AllocKind::Data).map(|_| ())
        };
        assert_eq!(r, Err(PoolError::Died));
        assert_eq!(p.lock_holder(), Some(victim));
        assert_eq!(
            p.alloc(64, AllocKind::Data),
            Err(PoolError::Stalled { owner: victim })
        );
        let rep = p.recover(&|o| o != victim).unwrap();
        assert!(rep.lock_taken_over, "{step:?}");
        assert_eq!(p.stats().unwrap().rebuilds, 1);
        // The survivor's allocation is intact and everything else is free again.
        let s = p.stats().unwrap();
        assert_eq!((s.live, s.total - s.free), (1, 8192), "{step:?}: {rep:?}");
        let a = p.alloc(64, AllocKind::Data).unwrap();
        p.free(a).unwrap();
        p.free(keep).unwrap();
        let mut after = p.stats().unwrap();
        after.rebuilds = 0;
        assert_eq!(after, baseline, "{step:?}");
        let big = p.alloc(p.max_alloc(), AllocKind::Data).unwrap();
        p.free(big).unwrap();
    }
}

/// A party preempted mid-operation while the others lap the ring around it is alive, not
/// corrupt: a sender paused after taking a position makes the next lap's sender see a slot one
/// lap behind (Full), and a receiver paused before releasing its slot makes the next lap's
/// receiver see one too (Empty). Both carry on when the paused party resumes, nothing lost.
/// (Before the fix, both states were reported as `Corrupt` after a short spin: a preempted
/// thread made a 4x4 stress test's sender panic and the others wait forever.)
#[test]
fn paused_party_one_lap_behind_is_neither_corrupt_nor_lost() {
    let mut m = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let attrs = ChannelAttrs {
        capacity: 2,
        block_size: 16,
    };
    let ch = Channel::create(&p, 1, &attrs).unwrap();
    let mut b = [0u8; 16];
    let mut recv = |ch: &Channel| ch.try_recv_into(&mut b).map(|g| b[..g.len].to_vec());
    for (owner, step) in [(400u32, Step::SendAdvanced), (401, Step::SendWritten)] {
        let (reached, resume) = pause_at(owner, step);
        let vp = Pool::attach(m.region(), owner).unwrap();
        let vch = Channel::attach(&vp, &ch.serialize(), None).unwrap();
        std::thread::scope(|s| {
            let v = s.spawn(|| vch.try_send(b"paused", 0, 0));
            reached
                .recv_timeout(Duration::from_secs(60))
                .expect("the paused party reaches its step");
            // The paused sender holds position 0 of this lap; position 1 is free. The next
            // position is the paused sender's slot one lap on. (Resume before asserting, so
            // that a failure fails instead of waiting for the paused thread.)
            let after = ch.try_send(b"after", 0, 0);
            let lapped = ch.try_send(b"x", 0, 0);
            resume.send(()).unwrap();
            assert_eq!(
                (after, lapped),
                (Ok(()), Err(ChannelError::Full)),
                "{step:?}"
            );
            v.join().unwrap().unwrap();
        });
        assert_eq!(recv(&ch).unwrap(), b"paused");
        assert_eq!(recv(&ch).unwrap(), b"after");
        assert_eq!(recv(&ch), Err(ChannelError::Empty));
    }
    for (owner, step) in [(402u32, Step::RecvAdvanced), (403, Step::RecvTaken)] {
        let (reached, resume) = pause_at(owner, step);
        let vp = Pool::attach(m.region(), owner).unwrap();
        let vch = Channel::attach(&vp, &ch.serialize(), None).unwrap();
        ch.try_send(b"first", 0, 0).unwrap();
        ch.try_send(b"second", 0, 0).unwrap();
        std::thread::scope(|s| {
            let v = s.spawn(|| {
                let mut vb = [0u8; 16];
                vch.try_recv_into(&mut vb).map(|g| vb[..g.len].to_vec())
            });
            reached
                .recv_timeout(Duration::from_secs(60))
                .expect("the paused party reaches its step");
            // Then `head` is the paused receiver's slot one lap on, and nothing is queued.
            let (second, lapped) = (recv(&ch), recv(&ch));
            resume.send(()).unwrap();
            assert_eq!(
                (second, lapped),
                (Ok(b"second".to_vec()), Err(ChannelError::Empty)),
                "{step:?}"
            );
            assert_eq!(v.join().unwrap().unwrap(), b"first");
        });
        ch.try_send(b"third", 0, 0).unwrap();
        assert_eq!(recv(&ch).unwrap(), b"third");
    }
    ch.destroy().unwrap();
}

/// A party that read `tail` (or `head`), was preempted while the ring moved a lap on, and
/// died right after its claim CAS succeeded (before the re-check that would have released
/// it) holds a claim on a slot it never took. Recovery must only release that claim: before
/// the fix it tombstoned the slot's future position (the sender case; the ring then reported
/// `Corrupt`) or threw away the message queued there (the receiver case).
#[test]
fn stale_claim_of_a_dead_party_is_only_released() {
    let mut m = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let baseline = p.stats().unwrap();
    let attrs = ChannelAttrs {
        capacity: 2,
        block_size: 16,
    };
    let ch = Channel::create(&p, 1, &attrs).unwrap();
    let mut b = [0u8; 512];
    for (victim, sender) in [(500u32, true), (501, false)] {
        let (reached, resume) = pause_at(
            victim,
            if sender {
                Step::SendRead
            } else {
                Step::RecvRead
            },
        );
        let vp = Pool::attach(m.region(), victim).unwrap();
        let vch = Channel::attach(&vp, &ch.serialize(), None).unwrap();
        if !sender {
            ch.try_send(b"to be taken", 0, 0).unwrap(); // the victim reads this position
        }
        let r = std::thread::scope(|s| {
            let v = s.spawn(|| {
                if sender {
                    vch.try_send(b"never", 0, 0)
                } else {
                    vch.try_recv_into(&mut [0u8; 16]).map(|_| ())
                }
            });
            reached
                .recv_timeout(Duration::from_secs(60))
                .expect("the victim reads its position");
            // Move the victim's slot on: to a later free position (sender case) or to a later
            // queued message (receiver case), with the index still behind that position.
            let moved = if sender {
                ch.try_send(b"a", 1, 0)
                    .and_then(|()| ch.try_recv_into(&mut b).map(|_| ()))
            } else {
                ch.try_recv_into(&mut b).map(|_| ()).and_then(|()| {
                    ch.try_send(b"b", 2, 0)?;
                    ch.try_send(&[3u8; 300], 3, 0) // a side allocation at the future position
                })
            };
            doom(
                victim,
                if sender {
                    Step::SendClaimed
                } else {
                    Step::RecvClaimed
                },
            );
            resume.send(()).unwrap();
            (moved, v.join().unwrap())
        });
        assert_eq!(r, (Ok(()), Err(ChannelError::Died)), "victim {victim}");
        let rep = ch.recover(&|o| o != victim).unwrap();
        assert_eq!(
            (
                rep.claims_released,
                rep.tombstones,
                rep.lost_in_receive,
                rep.freed
            ),
            (1, 0, 0, 0),
            "victim {victim}: {rep:?}"
        );
        // Nothing lost: the receiver case's two messages arrive, then several clean laps.
        if !sender {
            assert_eq!(ch.try_recv_into(&mut b).unwrap().hints, 2);
            assert_eq!(ch.try_recv_into(&mut b).unwrap().hints, 3);
        }
        assert_eq!(ch.try_recv_into(&mut b), Err(ChannelError::Empty));
        for i in 0..8u64 {
            ch.try_send(&[i as u8; 100], i, 0).unwrap();
            assert_eq!(
                ch.try_recv_into(&mut b).unwrap().hints,
                i,
                "victim {victim}"
            );
        }
    }
    ch.destroy().unwrap();
    let mut after = p.stats().unwrap();
    after.rebuilds = 0;
    assert_eq!(after, baseline);
}

/// A receiver whose free of a side allocation finds the pool lock held by a dead party does
/// not leak it: the receive completes, the slot is marked, and after the pool is recovered
/// the slot's next sender frees it. Pool utilization returns to its baseline.
#[test]
fn free_blocked_by_a_dead_lock_holder_is_finished_by_the_next_sender() {
    let mut m = Mem::new(128 * 1024);
    let p = pool(&mut m, 64);
    let baseline = p.stats().unwrap();
    let attrs = ChannelAttrs {
        capacity: 1,
        block_size: 16,
    };
    let ch = Channel::create(&p, 1, &attrs).unwrap();
    let with_channel = p.stats().unwrap();
    // A side allocation larger than a magazine keeps, so its free needs the pool lock.
    ch.try_send(&[7u8; 6000], 7, 0).unwrap();
    // A party dies holding the pool lock.
    let victim = 600;
    doom(victim, Step::PoolAllocSplit);
    let vp = Pool::attach(m.region(), victim).unwrap();
    assert_eq!(vp.alloc(64, AllocKind::Data), Err(PoolError::Died));
    // The receive still delivers; its free is left to the slot's next sender.
    let mut b = [0u8; 8192];
    let g = ch.try_recv_into(&mut b).unwrap();
    assert_eq!((g.len, g.hints, b[5999]), (6000, 7, 7));
    // The next sender cannot finish the free yet: it reports the stall, takes no position.
    assert_eq!(
        ch.try_send(b"x", 1, 0),
        Err(ChannelError::Stalled { owner: victim })
    );
    assert_eq!(ch.len(), 0);
    p.recover(&|o| o != victim).unwrap();
    ch.try_send(b"x", 1, 0).unwrap();
    assert_eq!(ch.try_recv_into(&mut b).unwrap().hints, 1);
    let mut after = p.stats().unwrap();
    after.rebuilds = 0;
    assert_eq!(after, with_channel, "the side allocation was freed");
    ch.destroy().unwrap();
    let mut after = p.stats().unwrap();
    after.rebuilds = 0;
    assert_eq!(after, baseline);
}

/// A party that dies inside a free into its thread's cache (the slot record swapped to
/// cached, the budget not yet counted): recovery frees the cached allocations and releases
/// the magazine; the survivor's allocations are untouched and the pool is back at its
/// baseline.
#[test]
fn magazine_holder_dies_mid_free() {
    let mut m = Mem::new(256 * 1024);
    let p = pool(&mut m, 64);
    let baseline = p.stats().unwrap();
    let victim = 700;
    let v = Pool::attach(m.region(), victim).unwrap();
    let mut cache = v.claim_cache().expect("the pool has a magazine");
    let held: Vec<_> = (0..3)
        .map(|_| cache.alloc(64, AllocKind::Data).unwrap())
        .collect();
    let [a, b, c] = held.as_slice() else {
        unreachable!()
    };
    assert_eq!(cache.free(*a), Ok(Wake::None));
    assert_eq!(cache.free(*b), Ok(Wake::None));
    let keep = p.alloc(64, AllocKind::Data).unwrap();
    doom(victim, Step::PoolFreeCommitted);
    let d = cache.alloc(128, AllocKind::Data).unwrap();
    assert_eq!(cache.free(d), Err(PoolError::Died));
    assert_eq!(p.lock_holder(), None, "a cache free holds no pool lock");
    assert!(
        p.claim_cache().is_none(),
        "the dead party still holds the magazine"
    );
    // The others carry on meanwhile.
    let x = p.alloc(64, AllocKind::Data).unwrap();
    p.free(x).unwrap();
    let rep = p.recover(&|o| o != victim).unwrap();
    assert!(!rep.lock_taken_over);
    // Three cached (one of them by the free that died), one live (`c`).
    assert_eq!(rep.freed, 4, "{rep:?}");
    assert_eq!(p.free(*c), Err(PoolError::Stale), "freed by recovery");
    p.free(keep).unwrap();
    assert_eq!(p.stats().unwrap(), baseline);
    let mine = p.claim_cache().expect("recovery released the magazine");
    mine.release().unwrap();
    let big = p.alloc(p.max_alloc(), AllocKind::Data).unwrap();
    p.free(big).unwrap();
}
