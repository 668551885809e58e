//! Dragon's poll operations on a [`Channel`], with timeouts and wait modes: conditions (IN,
//! OUT, EMPTY, FULL...), counts, the channel as a barrier, and semaphore channels. The
//! operations themselves are the core's (`dragon_channels_core::poll`, whose docs describe
//! the barrier and semaphore protocols and what a dead party leaves); waiting is the one wait
//! layer's ([`crate::wait`]): a blocking poll spins, yields, then sleeps on the channel's
//! event word like a blocking receive, registered so that every notify wakes it.
//!
//! # Examples
//! A semaphore guarding a critical section, and a barrier of one party:
//! ```
//! use dragon_channels::{Channel, MemoryPool, Poll, Polled, SemaphoreAttrs, Timeout, WaitMode};
//! # let name = format!("doc-poll-{}", std::process::id());
//! let pool = MemoryPool::create(1 << 20, &name, 0)?;
//! let sem = Channel::create_semaphore(&pool, 1, SemaphoreAttrs { initial: 1, bounded: true })?;
//! sem.poll(Poll::SemaphoreP, Timeout::Block, WaitMode::Adaptive)?; // take it
//! // ... critical section ...
//! sem.poll(Poll::SemaphoreV, Timeout::Try, WaitMode::Adaptive)?; // give it back
//!
//! let barrier = Channel::create(&pool, 2, Some(dragon_channels::ChannelAttrs { capacity: 1, ..Default::default() }))?;
//! let arrived = barrier.poll(Poll::BarrierWait, Timeout::Block, WaitMode::Adaptive)?;
//! assert_eq!(arrived, Polled::ReadyToRelease); // the last (only) party releases
//! barrier.poll(Poll::BarrierRelease, Timeout::Try, WaitMode::Adaptive)?;
//! let mut recvh = barrier.recvh()?;
//! recvh.open()?;
//! let ordinal = i64::from_le_bytes(recvh.recv_bytes(Timeout::Block)?.try_into().unwrap());
//! assert_eq!(ordinal, 0);
//! # sem.destroy()?; barrier.destroy()?; pool.destroy()?;
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```

use std::time::Instant;

use dragon_channels_core::{
    Channel as CoreChannel, ChannelError as CoreChannelError, Poll, Polled, SemaphoreAttrs, Side,
};

use crate::channel::Channel;
use crate::error::{Error, Op};
use crate::pool::MemoryPool;
use crate::wait::{self, Ctx, Timeout, WaitMode, YIELD_FOR};

impl Channel {
    /// Creates a semaphore channel in `mem_pool` under `c_uid` (Dragon's `Channel(...,
    /// semaphore=True, bounded_semaphore=, initial_sem_value=)`): only the semaphore polls
    /// and [`Poll::Capacity`] apply to it; send and receive handles are refused.
    ///
    /// # Errors
    /// As [`Channel::create`].
    pub fn create_semaphore(
        mem_pool: &MemoryPool,
        c_uid: u64,
        sem: SemaphoreAttrs,
    ) -> Result<Self, Error> {
        Self::create_with(mem_pool, |p| CoreChannel::create_semaphore(p, c_uid, sem))
    }

    /// Dragon's poll: waits until `op`'s condition holds or `timeout` passes, waiting as
    /// `mode` says. Operations that answer at once ignore the timeout.
    ///
    /// Returns [`Polled::Ready`] when a condition holds (or a barrier party arrived),
    /// [`Polled::ReadyToRelease`] to the last party arriving at a barrier (it must poll
    /// [`Poll::BarrierRelease`]), [`Polled::Value`] for counts and semaphore values.
    ///
    /// # Errors
    /// [`Error::ChannelTimeout`] when the condition did not hold in time (also for a try-once
    /// poll: Dragon's `TIMEOUT` / `BARRIER_WAIT_TRY_AGAIN`); [`Error::ChannelBarrierBroken`]
    /// for an arrival at a broken barrier, and for a blocking arrival whose timeout passed
    /// (it breaks the barrier and releases the parties that arrived with `-1`, as Dragon's
    /// does); [`Error::ChannelDestroyed`]; [`Error::ChannelError`] for a semaphore operation
    /// on another channel or the other way round, and for a V past a bounded semaphore's
    /// bound.
    pub fn poll(&self, op: Poll, timeout: Timeout, mode: WaitMode) -> Result<Polled, Error> {
        if let Some(r) = &self.remote {
            return r.poll(op, timeout.or(Timeout::Block));
        }
        let ctx = Ctx {
            pool: &self.pool.inner,
            ch: Some(&self.core),
            op: Op::Poll(op),
            mode,
        };
        // A sender that died between claiming the head slot and publishing it keeps IN from
        // ever holding: once the head has looked that way for a while, report its claimant,
        // so that the wait layer checks it and recovers a dead one.
        let mut stuck: Option<Instant> = None;
        let r =
            ctx.block(timeout, Timeout::Block, |_| {
                let r = self.core.try_poll(op);
                if op == Poll::In && matches!(r, Err(CoreChannelError::NotReady(_))) {
                    return Err(self.stalled_head(&mut stuck).unwrap_or(
                        CoreChannelError::NotReady(dragon_channels_core::Awaits::Send),
                    ));
                }
                r
            });
        match r {
            Ok(p) => {
                self.polled(op, p);
                Ok(p)
            }
            Err(Error::ChannelTimeout)
                if op == Poll::BarrierWait && !timeout.is_try(Timeout::Block) =>
            {
                // Dragon's rule: an arrival that timed out breaks the barrier, so that the
                // parties already waiting learn it instead of waiting forever.
                self.core
                    .barrier_break()
                    .map_err(|e| crate::error::from_core(e, Op::Poll(op)))?;
                self.polled(Poll::BarrierAbort, Polled::Ready);
                Err(Error::ChannelBarrierBroken)
            }
            Err(e) => Err(e),
        }
    }

    /// Receivers sleeping on the channel now (Dragon's `blocked_receivers`).
    pub fn blocked_receivers(&self) -> u32 {
        if let Some(r) = &self.remote {
            return r.value(Poll::BlockedReceivers) as u32;
        }
        self.core
            .recv_event()
            .waiters(dragon_channels_core::Waiter::One)
    }

    /// Parties arrived at the barrier in the current round (Dragon's `barrier_count`).
    pub fn barrier_count(&self) -> u32 {
        if let Some(r) = &self.remote {
            return r.value(Poll::BarrierWaiters) as u32;
        }
        self.core.barrier_count()
    }

    /// Whether the barrier is broken (Dragon's `broken_barrier`).
    pub fn broken_barrier(&self) -> bool {
        if let Some(r) = &self.remote {
            return r.value(Poll::BarrierIsBroken) != 0;
        }
        self.core.barrier_broken()
    }

    /// Whether this is a semaphore channel.
    pub fn is_semaphore(&self) -> bool {
        if let Some(r) = &self.remote {
            return r.info().2;
        }
        self.core.is_semaphore()
    }

    /// After a poll that changed something: wake whom it concerns.
    fn polled(&self, op: Poll, p: Polled) {
        match (op, p) {
            // The value reached 0: Z waiters (registered as "all") look.
            (Poll::SemaphoreP, Polled::Value(1)) => wait::notify_all(self.core.send_event()),
            // One unit for one P waiter.
            (Poll::SemaphoreV, _) => wait::notify(&self.core, Side::Arrived),
            // Outcome messages for every party, and the next round open (or drained).
            (Poll::BarrierRelease | Poll::BarrierAbort | Poll::Reset, _) => {
                wait::notify_all_of(&self.core);
            }
            _ => {}
        }
    }

    /// The claimant of the head slot when the channel has a message position whose sender
    /// has not published it for half of [`YIELD_FOR`] (timed from `since`'s first sighting):
    /// longer than a send takes unless its sender was preempted. A poll that meets the stuck
    /// head while it spins or yields reports it before it sleeps, then sleeps in short slices
    /// and checks the claimant's liveness (measured: a dead sender recovered 1-3 ms after the
    /// poll began); one that first meets it after a sleep (woken by a later send behind the
    /// dead one) reports it at its next look, within a `SLEEP_SLICE` (about 100 ms; a channel
    /// set, which keeps its own timer, about 55 ms).
    fn stalled_head(&self, since: &mut Option<Instant>) -> Option<CoreChannelError> {
        if self.core.is_empty() {
            *since = None;
            return None;
        }
        let first = *since.get_or_insert_with(Instant::now);
        let (owner, _) = self.core.claims();
        (owner != 0 && first.elapsed() >= YIELD_FOR / 2)
            .then_some(CoreChannelError::Stalled { owner })
    }
}
