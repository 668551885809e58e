//! Dragon's poll operations on a channel, each answered by one try: conditions on the queue
//! (IN, OUT, EMPTY, FULL...), counts, the channel used as a barrier, and semaphore channels.
//!
//! A poll whose condition does not hold yet returns [`ChannelError::NotReady`] naming the
//! operations that can make it hold ([`Awaits`]); a blocking poll is the caller's wait layer:
//! it registers on that side's [`crate::Event`] as a [`crate::Waiter::All`] waiter (every
//! poller must look), re-checks and sleeps, as a blocking receive does.
//!
//! # Barrier (Dragon's channel-as-barrier; capacity = number of parties)
//! - `BarrierWait`: a party arrives (`barrier_count + 1`). The last one to arrive gets
//!   [`Polled::ReadyToRelease`] and must then poll `BarrierRelease`; the others get
//!   [`Polled::Ready`]. Every party then receives one 8-byte message from the channel: its
//!   ordinal in the round, `0..parties` as a little-endian `i64`, or `-1` when the round was
//!   aborted. An arrival waits (`NotReady`) while the previous round's outcome messages are
//!   still queued or a release is under way, so rounds never mix. A broken barrier refuses
//!   arrivals with [`ChannelError::BarrierBroken`] until it is reset.
//! - `BarrierRelease`: deposits one message per arrived party (ordinals, or `-1` each when the
//!   barrier is broken or fewer than `parties` arrived) and starts the next round. Returns the
//!   number of messages deposited.
//! - `BarrierAbort`: marks the barrier broken and releases the parties that arrived with `-1`.
//! - `Reset`: discards outcome messages nobody will receive (a party that died before taking
//!   its own), releases parties that arrived with `-1`, and clears broken. Call it once every
//!   live party has its outcome (for example after an abort every survivor received its `-1`).
//!
//! What a party that dies leaves, and what the others see: one that dies before arriving
//! leaves the round short, so it never completes: the others' receives time out; any of them
//! aborts (everyone arrived gets `-1`) and, once the survivors have their `-1`, resets. One
//! that dies after arriving stays counted, so the round completes when the others arrive;
//! its outcome message, like that of one that dies after the release without receiving it,
//! stays queued: the next round's arrivals wait for it to drain; a blocking arrival whose
//! timeout passes breaks the barrier and releases with `-1` (as Dragon's does), and a reset
//! discards the message. A party that dies in the middle of a release leaves the round
//! marked "releasing": a reset clears it. A release that finds the slot of its next outcome
//! message still held (by a receiver of the last round that has not finished, or died
//! there) stops and returns the error, leaving the round claimed with the outcomes it still
//! owes; the next release or abort deposits them (the std adapter retries at once, after
//! recovering a dead holder), and a reset gives them as `-1`.
//!
//! # Semaphore channels (`Channel::create_semaphore`)
//! The value is a 32-bit word of the channel header. `SemaphoreP` takes one (waiting while it
//! is 0) and answers the value before, `SemaphoreV` gives one back (a bounded semaphore
//! refuses to go past its initial value: [`ChannelError::SemaphoreBound`]), `SemaphoreZ` waits
//! for 0, `SemaphorePeek` reads it. A party that dies between P and V never gives its unit
//! back: as in Dragon, that is the caller's to handle (a V on its behalf).

use core::mem::offset_of;

use crate::channel::{BOUNDED, Channel, SEMAPHORE, SyncWords};
use crate::error::ChannelError;
use crate::event::Waiter;
use crate::sync::{Ordering, fence};

/// `barrier_count` while one party deposits a round's outcome.
pub(crate) const RELEASING: u32 = u32::MAX;
/// `barrier_count` of a release that stopped half-way (see `barrier_release`): this bit,
/// [`STOPPED_ORDINALS`] when it was depositing ordinals, and in the bits below that the
/// number of outcome messages it still owes (at most the capacity, `<= 2^24`).
const STOPPED: u32 = 1 << 31;
/// In a stopped release: the messages owed are the round's last ordinals,
/// `parties - owed..parties` (otherwise `-1` each).
const STOPPED_ORDINALS: u32 = 1 << 30;
/// In a stopped release: the number of messages owed.
const OWED: u32 = STOPPED_ORDINALS - 1;
/// The outcome message of a party in an aborted round.
pub const BARRIER_ABORTED: i64 = -1;

/// Poll operations, with Dragon's names and values (`Poll::value`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u32)]
pub enum Poll {
    /// Ready when a message can be received.
    In = 1,
    /// Ready when a message can be sent.
    Out = 2,
    /// Ready when either can.
    InOut = 3,
    /// Ready when the channel is empty.
    Empty = 4,
    /// Ready when the channel is full.
    Full = 5,
    /// The number of queued messages.
    Size = 6,
    /// Barrier reset (see the module docs).
    Reset = 7,
    /// The capacity.
    Capacity = 8,
    /// Barrier arrival.
    BarrierWait = 9,
    /// Barrier abort.
    BarrierAbort = 10,
    /// Barrier release (by the party told [`Polled::ReadyToRelease`]).
    BarrierRelease = 11,
    /// 1 while the barrier is broken.
    BarrierIsBroken = 12,
    /// Parties arrived in the current round.
    BarrierWaiters = 13,
    /// Receivers sleeping on the channel.
    BlockedReceivers = 14,
    /// Semaphore P (take one; waits at 0). Answers the value before.
    SemaphoreP = 15,
    /// Semaphore V (give one back). Answers the value before.
    SemaphoreV = 16,
    /// Ready when the semaphore is 0.
    SemaphoreZ = 17,
    /// The semaphore's value.
    SemaphorePeek = 18,
}

impl Poll {
    /// Every operation, in Dragon's order.
    pub const ALL: [Poll; 18] = [
        Self::In,
        Self::Out,
        Self::InOut,
        Self::Empty,
        Self::Full,
        Self::Size,
        Self::Reset,
        Self::Capacity,
        Self::BarrierWait,
        Self::BarrierAbort,
        Self::BarrierRelease,
        Self::BarrierIsBroken,
        Self::BarrierWaiters,
        Self::BlockedReceivers,
        Self::SemaphoreP,
        Self::SemaphoreV,
        Self::SemaphoreZ,
        Self::SemaphorePeek,
    ];

    /// Dragon's value of this operation (`DRAGON_CHANNEL_POLLIN` = 1 ... `SEMAPHORE_PEEK` = 18).
    pub const fn value(self) -> u32 {
        self as u32
    }

    /// The operation with Dragon's value `v`, if there is one.
    pub fn from_value(v: u32) -> Option<Self> {
        Self::ALL.get((v as usize).wrapping_sub(1)).copied()
    }

    /// Whether the operation may have to wait for a condition (the others answer at once).
    pub const fn may_wait(self) -> bool {
        matches!(
            self,
            Self::In
                | Self::Out
                | Self::InOut
                | Self::Empty
                | Self::Full
                | Self::BarrierWait
                | Self::SemaphoreP
                | Self::SemaphoreZ
        )
    }

    /// Whether the operation applies to a semaphore channel (and only to one).
    pub const fn is_semaphore_op(self) -> bool {
        matches!(
            self,
            Self::SemaphoreP | Self::SemaphoreV | Self::SemaphoreZ | Self::SemaphorePeek
        )
    }

    /// How a blocked poller of this operation registers on the event it waits for.
    pub const fn waiter(self) -> Waiter {
        match self {
            // One V lets one P through.
            Self::SemaphoreP => Waiter::One,
            _ => Waiter::All,
        }
    }
}

/// Which operations can make a poll's condition hold: the waiter sleeps on the event those
/// operations notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Awaits {
    /// Sends (and semaphore V, barrier releases): wait on [`Channel::recv_event`].
    Send,
    /// Receives (and semaphore P): wait on [`Channel::send_event`].
    Receive,
}

/// The answer of a poll that completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Polled {
    /// The condition holds (IN, OUT, INOUT, EMPTY, FULL, SEMAPHORE_Z), the party arrived at
    /// the barrier (BARRIER_WAIT), or the barrier was aborted or reset.
    Ready,
    /// This party arrived last at the barrier: it must poll `BarrierRelease` (Dragon's
    /// `BARRIER_READY_TO_RELEASE`).
    ReadyToRelease,
    /// A number: SIZE, CAPACITY, BARRIER_ISBROKEN (0/1), BARRIER_WAITERS,
    /// BLOCKED_RECEIVERS, SEMAPHORE_PEEK, the value before SEMAPHORE_P / SEMAPHORE_V, the
    /// messages a BARRIER_RELEASE deposited.
    Value(u64),
}

impl Polled {
    /// Dragon's `result`: 1 for a condition that holds, the number otherwise.
    pub const fn result(self) -> u64 {
        match self {
            Self::Ready | Self::ReadyToRelease => 1,
            Self::Value(v) => v,
        }
    }
}

impl Channel {
    /// Whether this is a semaphore channel.
    pub fn is_semaphore(&self) -> bool {
        self.flags & SEMAPHORE != 0
    }

    /// Whether this is a bounded semaphore channel.
    pub fn is_bounded_semaphore(&self) -> bool {
        self.flags & BOUNDED != 0
    }

    /// A bounded semaphore's bound (its initial value); `None` for other channels.
    pub fn semaphore_bound(&self) -> Option<u32> {
        self.is_bounded_semaphore().then_some(self.sem_bound)
    }

    /// Dragon's poll, one try (see the module docs for each operation).
    ///
    /// # Errors
    /// [`ChannelError::NotReady`] when the condition does not hold yet (wait on the event
    /// named, then try again); [`ChannelError::Destroyed`];
    /// [`ChannelError::BadOperation`] for a semaphore operation on another channel or the
    /// other way round; [`ChannelError::BarrierBroken`]; [`ChannelError::SemaphoreBound`];
    /// [`ChannelError::Full`] when a release finds no room for the outcome messages (other
    /// messages were sent into the barrier channel).
    pub fn try_poll(&self, op: Poll) -> Result<Polled, ChannelError> {
        self.check_ready()?;
        if op.is_semaphore_op() != self.is_semaphore() && !matches!(op, Poll::Capacity) {
            return Err(ChannelError::BadOperation(if self.is_semaphore() {
                "only the semaphore polls (P, V, Z, PEEK) and CAPACITY apply to a semaphore channel"
            } else {
                "semaphore polls apply only to a semaphore channel"
            }));
        }
        // Only the operations that need them read the tail and head words (lines senders and
        // receivers write): a poll for IN reads the head slot's word alone.
        let len = || self.len();
        let cap = self.capacity();
        let cond = |holds: bool, awaits: Awaits| {
            if holds {
                Ok(Polled::Ready)
            } else {
                Err(ChannelError::NotReady(awaits))
            }
        };
        match op {
            Poll::In => {
                // SYNC: fence (SeqCst) <-> a sender's publish + notify fence: a poller that
                // registered before this re-check sees the message or gets notified.
                fence(Ordering::SeqCst);
                cond(self.may_recv(), Awaits::Send)
            }
            Poll::Out => cond(len() < cap, Awaits::Receive),
            Poll::InOut => {
                let n = len();
                cond(n > 0 || n < cap, Awaits::Receive)
            }
            Poll::Empty => cond(len() == 0, Awaits::Receive),
            Poll::Full => cond(len() == cap, Awaits::Send),
            Poll::Size => Ok(Polled::Value(len() as u64)),
            Poll::Capacity => Ok(Polled::Value(cap as u64)),
            Poll::BlockedReceivers => Ok(Polled::Value(u64::from(
                self.recv_event().waiters(Waiter::One),
            ))),
            Poll::BarrierIsBroken => Ok(Polled::Value(u64::from(self.barrier_broken()))),
            Poll::BarrierWaiters => Ok(Polled::Value(u64::from(self.barrier_count()))),
            Poll::BarrierWait => self.barrier_arrive(),
            Poll::BarrierRelease => self.barrier_release(),
            Poll::BarrierAbort => {
                // SYNC: broken (Release) <-> arrivals' Acquire load (they refuse after it).
                self.sync_word(offset_of!(SyncWords, barrier_broken))
                    .store(1, Ordering::Release);
                self.barrier_release().map(|_| Polled::Ready)
            }
            Poll::Reset => self.barrier_reset(),
            Poll::SemaphoreP => self.semaphore_p(),
            Poll::SemaphoreV => self.semaphore_v(),
            Poll::SemaphoreZ => cond(self.semaphore_value() == 0, Awaits::Receive),
            Poll::SemaphorePeek => Ok(Polled::Value(u64::from(self.semaphore_value()))),
        }
    }

    /// Dragon's poll answered as a number (try-once): 1 / 0 for conditions, the number for
    /// counts.
    ///
    /// # Errors
    /// As [`Channel::try_poll`], except that a condition that does not hold is `Ok(0)`.
    pub fn poll(&self, op: Poll) -> Result<u64, ChannelError> {
        match self.try_poll(op) {
            Ok(p) => Ok(p.result()),
            Err(ChannelError::NotReady(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Parties arrived at the barrier in this round (0 while a release is under way or
    /// stopped half-way).
    pub fn barrier_count(&self) -> u32 {
        match self
            .sync_word(offset_of!(SyncWords, barrier_count))
            .load(Ordering::Acquire)
        {
            n if n == RELEASING || n & STOPPED != 0 => 0,
            n => n,
        }
    }

    /// Whether the barrier is broken (aborted, or an arrival timed out), until a reset.
    pub fn barrier_broken(&self) -> bool {
        self.sync_word(offset_of!(SyncWords, barrier_broken))
            .load(Ordering::Acquire)
            != 0
    }

    /// The semaphore's value now (0 for other channels).
    pub fn semaphore_value(&self) -> u32 {
        self.sync_word(offset_of!(SyncWords, sem_value))
            .load(Ordering::Acquire)
    }

    /// Marks the barrier broken and releases the parties that arrived with `-1` (what a
    /// blocking arrival does when its timeout passes, as Dragon's does).
    ///
    /// # Errors
    /// As [`Channel::try_poll`] with [`Poll::BarrierAbort`].
    pub fn barrier_break(&self) -> Result<(), ChannelError> {
        self.try_poll(Poll::BarrierAbort).map(|_| ())
    }

    // ----- internals -----

    fn barrier_arrive(&self) -> Result<Polled, ChannelError> {
        let count = self.sync_word(offset_of!(SyncWords, barrier_count));
        let parties = self.capacity() as u32;
        let mut c = count.load(Ordering::Acquire);
        loop {
            if self.barrier_broken() {
                return Err(ChannelError::BarrierBroken);
            }
            // A release under way, or the last round's outcome still queued: wait for the
            // receives that drain it (a release notifies both events).
            if c >= parties || !self.is_empty() {
                return Err(ChannelError::NotReady(Awaits::Receive));
            }
            // SYNC: arrival CAS (AcqRel) <-> other arrivals and the release's claim CAS.
            match count.compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if c + 1 == parties => return Ok(Polled::ReadyToRelease),
                Ok(_) => return Ok(Polled::Ready),
                Err(now) => c = now,
            }
        }
    }

    /// Deposits the round's outcome: one message per arrived party, or what a release that
    /// stopped half-way still owes.
    fn barrier_release(&self) -> Result<Polled, ChannelError> {
        let count = self.sync_word(offset_of!(SyncWords, barrier_count));
        let parties = self.capacity() as u32;
        // Claim the round: no other release deposits it, and no arrival joins it.
        let mut n = count.load(Ordering::Acquire);
        loop {
            if n == RELEASING {
                // Another party is depositing this round's outcome.
                return Ok(Polled::Value(0));
            }
            if n == 0 {
                return Ok(Polled::Value(0));
            }
            // SYNC: claim (AcqRel) <-> arrivals' CAS: they see RELEASING and wait.
            match count.compare_exchange_weak(n, RELEASING, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let broken = self.barrier_broken();
        // How many messages, and the ordinal of the first (`None`: `-1` each).
        let (owed, first) = if n & STOPPED != 0 {
            let owed = n & OWED;
            let ordinals = n & STOPPED_ORDINALS != 0 && !broken;
            (owed, ordinals.then(|| parties.saturating_sub(owed)))
        } else {
            (n, (!broken && n == parties).then_some(0))
        };
        if self.capacity() - self.len() < owed as usize {
            // Room for the whole outcome or none of it: give the round back.
            count.store(n, Ordering::Release);
            return Err(ChannelError::Full);
        }
        for i in 0..owed {
            let v = first.map_or(BARRIER_ABORTED, |f| i64::from(f + i));
            if let Err(e) = self.try_send(&v.to_le_bytes(), 0, 0) {
                // The slot is still held (a receiver of the last round mid-way, or dead
                // there), or a message sent into the barrier channel took the room: keep
                // what is still owed for the next release (module docs).
                let ordinals = if first.is_some() { STOPPED_ORDINALS } else { 0 };
                // SYNC: stop (Release) <-> the next release's claim CAS (AcqRel).
                count.store(STOPPED | ordinals | (owed - i), Ordering::Release);
                return Err(e);
            }
        }
        // SYNC: next round (Release) <-> arrivals' Acquire loads: an arrival that sees 0
        // also sees the outcome queued and waits for it to drain.
        count.store(0, Ordering::Release);
        Ok(Polled::Value(u64::from(owed)))
    }

    fn barrier_reset(&self) -> Result<Polled, ChannelError> {
        let count = self.sync_word(offset_of!(SyncWords, barrier_count));
        // Outcome messages of parties that will never take them.
        let mut b = [0u8; 8];
        loop {
            match self.try_recv_into(&mut b) {
                Ok(_) => {}
                Err(ChannelError::Empty) => break,
                Err(ChannelError::DestinationTooSmall { .. }) => {
                    return Err(ChannelError::BadOperation(
                        "the barrier channel holds a message that is not a barrier outcome",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        // A release that died half-way: start over.
        let _ = count.compare_exchange(RELEASING, 0, Ordering::AcqRel, Ordering::Acquire);
        // Parties waiting in this round learn it is over.
        if count.load(Ordering::Acquire) > 0 {
            self.sync_word(offset_of!(SyncWords, barrier_broken))
                .store(1, Ordering::Release);
            self.barrier_release()?;
        }
        self.sync_word(offset_of!(SyncWords, barrier_broken))
            .store(0, Ordering::Release);
        Ok(Polled::Ready)
    }

    fn semaphore_p(&self) -> Result<Polled, ChannelError> {
        let v = self.sync_word(offset_of!(SyncWords, sem_value));
        let mut cur = v.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(ChannelError::NotReady(Awaits::Send));
            }
            // SYNC: P (AcqRel) <-> V's CAS: what the V-ing party did before is visible.
            match v.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Polled::Value(u64::from(cur))),
                Err(now) => cur = now,
            }
        }
    }

    fn semaphore_v(&self) -> Result<Polled, ChannelError> {
        let v = self.sync_word(offset_of!(SyncWords, sem_value));
        let bound = if self.is_bounded_semaphore() {
            self.sem_bound
        } else {
            u32::MAX
        };
        let mut cur = v.load(Ordering::Acquire);
        loop {
            if cur >= bound {
                return Err(ChannelError::SemaphoreBound { bound });
            }
            // SYNC: V (AcqRel) <-> P's CAS.
            match v.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Polled::Value(u64::from(cur))),
                Err(now) => cur = now,
            }
        }
    }
}
