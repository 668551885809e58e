//! The core's poll operations, one try each, in one thread: conditions, counts, the barrier
//! protocol (arrive, release, abort, reset, leftovers of a dead party) and semaphore channels.
//! Deterministic and small, so Miri runs them too; the multi-process behaviour is in the std
//! adapter's `tests/waiting.rs`.

mod common;

use common::{Mem, pool};
use dragon_channels_core::poll::BARRIER_ABORTED;
use dragon_channels_core::{
    Awaits, Channel, ChannelAttrs, ChannelError, Poll, Polled, SemaphoreAttrs,
};

fn channel(m: &mut Mem, uid: u64, capacity: u32) -> Channel {
    let p = pool(m, 64);
    Channel::create(
        &p,
        uid,
        &ChannelAttrs {
            capacity,
            block_size: 64,
        },
    )
    .unwrap()
}

/// Receives one barrier outcome message.
fn outcome(ch: &Channel) -> i64 {
    let mut b = [0u8; 8];
    let got = ch.try_recv_into(&mut b).unwrap();
    assert_eq!(got.len, 8);
    i64::from_le_bytes(b)
}

#[test]
fn values_are_dragons_and_round_trip() {
    for (i, op) in Poll::ALL.into_iter().enumerate() {
        assert_eq!(op.value(), i as u32 + 1);
        assert_eq!(Poll::from_value(op.value()), Some(op));
    }
    assert_eq!(Poll::from_value(0), None, "POLLNOTHING is no operation");
    assert_eq!(
        Poll::from_value(19),
        None,
        "CLEANUP is internal to Dragon's transport"
    );
    assert_eq!(Poll::BarrierWait.value(), 9);
    assert_eq!(Poll::SemaphorePeek.value(), 18);
}

#[test]
fn conditions_and_counts_follow_the_queue() {
    let mut m = Mem::new(64 * 1024);
    let ch = channel(&mut m, 1, 2);
    let not_ready = |a| Err(ChannelError::NotReady(a));
    assert_eq!(ch.try_poll(Poll::In), not_ready(Awaits::Send));
    assert_eq!(ch.try_poll(Poll::Out), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::InOut), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::Empty), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::Full), not_ready(Awaits::Send));
    assert_eq!(ch.try_poll(Poll::Size), Ok(Polled::Value(0)));
    assert_eq!(ch.try_poll(Poll::Capacity), Ok(Polled::Value(2)));
    ch.try_send(b"a", 0, 0).unwrap();
    assert_eq!(ch.try_poll(Poll::In), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::Empty), not_ready(Awaits::Receive));
    assert_eq!(ch.try_poll(Poll::Size), Ok(Polled::Value(1)));
    ch.try_send(b"b", 0, 0).unwrap();
    assert_eq!(ch.try_poll(Poll::Full), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::Out), not_ready(Awaits::Receive));
    assert_eq!(ch.try_poll(Poll::InOut), Ok(Polled::Ready));
    // The u64 form: 1 / 0 for conditions.
    assert_eq!(ch.poll(Poll::Out), Ok(0));
    assert_eq!(ch.poll(Poll::Full), Ok(1));
    assert_eq!(ch.poll(Poll::BlockedReceivers), Ok(0));
    assert_eq!(ch.poll(Poll::BarrierIsBroken), Ok(0));
    assert_eq!(ch.poll(Poll::BarrierWaiters), Ok(0));
}

#[test]
fn semaphore_polls_only_on_semaphores_and_queue_polls_only_on_channels() {
    let mut m = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let attrs = ChannelAttrs {
        capacity: 4,
        block_size: 64,
    };
    let ch = Channel::create(&p, 1, &attrs).unwrap();
    let sem = Channel::create_semaphore(&p, 2, SemaphoreAttrs::default()).unwrap();
    assert!(sem.is_semaphore() && !ch.is_semaphore());
    for op in Poll::ALL {
        let (on_ch, on_sem) = (ch.try_poll(op), sem.try_poll(op));
        if op.is_semaphore_op() {
            assert!(
                matches!(on_ch, Err(ChannelError::BadOperation(_))),
                "{op:?}"
            );
        } else if op == Poll::Capacity {
            assert_eq!(on_sem, Ok(Polled::Value(1)));
        } else {
            assert!(
                matches!(on_sem, Err(ChannelError::BadOperation(_))),
                "{op:?}"
            );
        }
    }
    // Attached handles know the kind (it lives in the channel's header).
    let again = Channel::attach(&p, &sem.serialize(), None).unwrap();
    assert!(again.is_semaphore());
}

#[test]
fn semaphore_p_v_z_peek() {
    let mut m = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let sem = Channel::create_semaphore(
        &p,
        1,
        SemaphoreAttrs {
            initial: 2,
            bounded: false,
        },
    )
    .unwrap();
    assert_eq!(sem.try_poll(Poll::SemaphorePeek), Ok(Polled::Value(2)));
    assert_eq!(
        sem.try_poll(Poll::SemaphoreZ),
        Err(ChannelError::NotReady(Awaits::Receive))
    );
    assert_eq!(sem.try_poll(Poll::SemaphoreP), Ok(Polled::Value(2)));
    assert_eq!(sem.try_poll(Poll::SemaphoreP), Ok(Polled::Value(1)));
    assert_eq!(
        sem.try_poll(Poll::SemaphoreP),
        Err(ChannelError::NotReady(Awaits::Send)),
        "P at 0 waits for a V"
    );
    assert_eq!(sem.try_poll(Poll::SemaphoreZ), Ok(Polled::Ready));
    // Unbounded: V past the initial value is fine.
    for v in 0..5 {
        assert_eq!(sem.try_poll(Poll::SemaphoreV), Ok(Polled::Value(v)));
    }
    assert_eq!(sem.semaphore_value(), 5);
    assert_eq!(sem.semaphore_bound(), None);
}

#[test]
fn bounded_semaphore_refuses_v_past_its_initial_value() {
    let mut m = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let sem = Channel::create_semaphore(
        &p,
        1,
        SemaphoreAttrs {
            initial: 1,
            bounded: true,
        },
    )
    .unwrap();
    assert_eq!(sem.semaphore_bound(), Some(1));
    assert_eq!(
        sem.try_poll(Poll::SemaphoreV),
        Err(ChannelError::SemaphoreBound { bound: 1 })
    );
    assert_eq!(sem.try_poll(Poll::SemaphoreP), Ok(Polled::Value(1)));
    assert_eq!(sem.try_poll(Poll::SemaphoreV), Ok(Polled::Value(0)));
    assert_eq!(sem.semaphore_value(), 1);
    let msg = ChannelError::SemaphoreBound { bound: 1 }.to_string();
    assert!(msg.contains("bound of 1"), "{msg}");
}

#[test]
fn barrier_round_gives_each_party_a_distinct_ordinal() {
    let mut m = Mem::new(64 * 1024);
    let ch = channel(&mut m, 1, 3);
    for _round in 0..3 {
        assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::Ready));
        assert_eq!(ch.barrier_count(), 1);
        assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::Ready));
        assert_eq!(ch.try_poll(Poll::BarrierWaiters), Ok(Polled::Value(2)));
        assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::ReadyToRelease));
        // Full round, not released yet: a fourth arrival waits.
        assert_eq!(
            ch.try_poll(Poll::BarrierWait),
            Err(ChannelError::NotReady(Awaits::Receive))
        );
        assert_eq!(ch.try_poll(Poll::BarrierRelease), Ok(Polled::Value(3)));
        assert_eq!(ch.barrier_count(), 0);
        // Outcome still queued: the next round's arrivals wait for it to drain.
        assert_eq!(
            ch.try_poll(Poll::BarrierWait),
            Err(ChannelError::NotReady(Awaits::Receive))
        );
        let mut got = [outcome(&ch), outcome(&ch), outcome(&ch)];
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
    }
    // Nothing to release: nothing deposited.
    assert_eq!(ch.try_poll(Poll::BarrierRelease), Ok(Polled::Value(0)));
    assert!(ch.is_empty());
}

#[test]
fn abort_releases_with_minus_one_and_breaks_until_reset() {
    let mut m = Mem::new(64 * 1024);
    let ch = channel(&mut m, 1, 3);
    assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::BarrierAbort), Ok(Polled::Ready));
    assert!(ch.barrier_broken());
    assert_eq!(ch.try_poll(Poll::BarrierIsBroken), Ok(Polled::Value(1)));
    assert_eq!(
        (outcome(&ch), outcome(&ch)),
        (BARRIER_ABORTED, BARRIER_ABORTED)
    );
    assert!(ch.is_empty(), "one message per arrived party, no more");
    assert_eq!(
        ch.try_poll(Poll::BarrierWait),
        Err(ChannelError::BarrierBroken)
    );
    assert_eq!(ch.try_poll(Poll::Reset), Ok(Polled::Ready));
    assert!(!ch.barrier_broken());
    // A clean round after the reset.
    for _ in 0..2 {
        assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::Ready));
    }
    assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::ReadyToRelease));
    assert_eq!(ch.try_poll(Poll::BarrierRelease), Ok(Polled::Value(3)));
    let mut got = [outcome(&ch), outcome(&ch), outcome(&ch)];
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn reset_discards_a_dead_partys_outcome_and_releases_a_short_round() {
    let mut m = Mem::new(64 * 1024);
    let ch = channel(&mut m, 1, 2);
    // Round 1 completes, but only one party takes its outcome (the other "died").
    assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::ReadyToRelease));
    assert_eq!(ch.try_poll(Poll::BarrierRelease), Ok(Polled::Value(2)));
    let _ = outcome(&ch);
    // The leftover keeps the next round from starting...
    assert_eq!(
        ch.try_poll(Poll::BarrierWait),
        Err(ChannelError::NotReady(Awaits::Receive))
    );
    // ...until a reset discards it.
    assert_eq!(ch.try_poll(Poll::Reset), Ok(Polled::Ready));
    assert!(ch.is_empty());
    // A short round (one party arrived) is released with -1 by a reset.
    assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::Reset), Ok(Polled::Ready));
    assert_eq!(outcome(&ch), BARRIER_ABORTED);
    assert!(!ch.barrier_broken() && ch.barrier_count() == 0);
}

#[test]
fn release_without_room_gives_the_round_back() {
    let mut m = Mem::new(64 * 1024);
    let ch = channel(&mut m, 1, 2);
    assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::Ready));
    assert_eq!(ch.try_poll(Poll::BarrierWait), Ok(Polled::ReadyToRelease));
    // Somebody sends an ordinary message into the barrier channel.
    ch.try_send(b"intruder", 0, 0).unwrap();
    assert_eq!(ch.try_poll(Poll::BarrierRelease), Err(ChannelError::Full));
    assert_eq!(ch.barrier_count(), 2, "the round is still there to release");
    let mut b = [0u8; 8];
    ch.try_recv_into(&mut b).unwrap();
    assert_eq!(ch.try_poll(Poll::BarrierRelease), Ok(Polled::Value(2)));
}

#[test]
fn reset_refuses_to_discard_a_foreign_message() {
    let mut m = Mem::new(64 * 1024);
    let ch = channel(&mut m, 1, 2);
    ch.try_send(&[7u8; 32], 0, 0).unwrap();
    assert!(matches!(
        ch.try_poll(Poll::Reset),
        Err(ChannelError::BadOperation(_))
    ));
    assert_eq!(ch.len(), 1, "the message stays queued");
}

#[test]
fn polls_on_a_destroyed_channel_say_so() {
    let mut m = Mem::new(64 * 1024);
    let ch = channel(&mut m, 1, 2);
    let other = ch;
    ch.destroy().unwrap();
    for op in Poll::ALL {
        assert_eq!(other.try_poll(op), Err(ChannelError::Destroyed), "{op:?}");
    }
}
