//! The queue: a bounded MPMC array of slots in shared memory, and nothing else.
//!
//! # Algorithm
//! Dmitry Vyukov's bounded MPMC array queue, in the stamp form of crossbeam-channel's
//! `flavors/array.rs` (reimplemented over region offsets and 32-bit atomics). `tail` and
//! `head` are positions `lap | index` with `one_lap = (capacity + 1).next_power_of_two()`;
//! slot `i` carries a sequence word saying which position may use it next: `pos` for a sender,
//! `pos + 1` for a receiver. Strict FIFO; each message is taken by exactly one receiver.
//!
//! Each side's operation has three steps, so that the channel above can do its payload work
//! between them and a party that dies between any two leaves a state [`Queue::recover`]
//! repairs:
//! - **start** claims the slot at `tail` (send) or at `head` (receive, once a message is
//!   published there) by a CAS of its `claim` word from 0 to the party's owner id (receivers
//!   add [`ROLE_RECV`]), then re-reads the slot's sequence word: unchanged, the position is
//!   still the one the claimant read (an index word moves past a position only by the party
//!   holding its slot's claim, which changes the sequence word before it lets the claim go).
//!   A claim names who is working on a slot; [`Queue::cancel`] gives it back untouched (a
//!   receiver whose destination is too small, a sender whose payload cannot be stored). The
//!   first try is inlined into the caller; retries run in a loop out of line.
//! - **commit** moves `tail` / `head` past the position. The claim makes the claimant the only
//!   party that may do so, so this is a plain store: one CAS per operation, as in
//!   crossbeam.
//! - **finish** publishes the message (`seq = pos + 1`) or releases the slot for the next lap
//!   (`seq = pos + one_lap`), then releases the claim.
//!
//! A slot someone else is working on is reported as [`ChannelError::Stalled`] with that
//! party's owner id after a short spin, never waited for here: the caller's wait layer
//! polls, and checks the party's liveness when the stall lasts longer than an operation takes.
//!
//! # Memory layout
//! ```text
//! tail word (own cache line), head word (own cache line)
//! slot i at slots + i * stride: [SlotHead: seq u32, claim u32][the channel's part of the slot]
//! ```
//!
//! # What a party that dies leaves behind
//! - After start, before commit: a claim on a slot whose position was not taken.
//!   `recover` releases it.
//! - Sender after commit, before finish: receivers find the position taken but unpublished.
//!   `recover` asks the channel to make the slot a message receivers skip (a tombstone) and
//!   publishes it.
//! - Receiver after commit, before finish: the slot is not released for the next lap.
//!   `recover` asks the channel to drop what the slot holds and releases it (the message was
//!   taken: it is lost with the receiver).
//! - After finish: nothing (at most a claim, which `recover` releases).

use crate::error::ChannelError;
use crate::fault::{self, Step};
use crate::region::Region;
use crate::sync::{AtomicU32, Ordering, fence, spin_hint};

/// Set in a receiver's claim word: the claim is a receive.
pub(crate) const ROLE_RECV: u32 = 1 << 31;
/// The owner id part of a claim word.
pub(crate) const OWNER_MASK: u32 = !ROLE_RECV;

/// Spins on a slot another party is working on before reporting [`ChannelError::Stalled`]
/// (about 5 us on x86: longer than an operation takes unless its party was preempted).
#[cfg(not(loom))]
const STALL_SPINS: u32 = 128;
/// Under loom every spin is a scheduling branch: give up quickly.
#[cfg(loom)]
const STALL_SPINS: u32 = 4;

/// How many positions past its own a sender prefetches (see [`Queue::prefetch_ahead`]).
const PREFETCH_AHEAD: u32 = 2;

/// The queue's part of each slot, at the slot's start.
#[repr(C)]
pub(crate) struct SlotHead {
    /// The position that may use the slot next: `pos` (a sender of that position), `pos + 1`
    /// (its message is published; a receiver of `pos`). SYNC: publish (Release, sender's
    /// finish) <-> start_recv (Acquire); release slot (Release, receiver's finish) <->
    /// start_send (Acquire).
    seq: AtomicU32,
    /// 0, or the owner id (with [`ROLE_RECV`] for a receiver) of the party between start and
    /// finish on this slot. SYNC: claim (CAS Acquire) <-> release claim (Release store).
    claim: AtomicU32,
}

/// Bytes of [`SlotHead`] (the channel's part of a slot follows it).
pub(crate) const SLOT_HEAD: usize = core::mem::size_of::<SlotHead>();

/// A slot claimed by this party, from start to finish.
#[derive(Clone, Copy, Debug)]
#[must_use = "a claimed slot must be finished or cancelled"]
pub(crate) struct Taken {
    /// Region offset of the slot.
    pub(crate) slot: usize,
    /// The position it was claimed for.
    pub(crate) pos: u32,
}

/// What a claim CAS found ([`Queue::claim_slot`]).
enum Claim {
    /// Claimed, with the slot as the caller read it.
    Taken,
    /// Claimed, but the slot had moved on: given back.
    Moved,
    /// Held by this owner word.
    Held(u32),
}

/// What [`Queue::recover`] found in a claim of a dead party.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Abandoned {
    /// A claim only: the position was not taken.
    Claim,
    /// A sender took the position and did not publish: the channel makes the slot a tombstone.
    Send,
    /// A receiver took the message and did not release the slot: the channel drops what the
    /// slot still owns.
    Recv,
}

/// A handle on a queue: where its words and slots are, validated once by the channel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Queue {
    region: Region,
    /// Region offset of the tail word.
    tail: usize,
    /// Region offset of the head word.
    head: usize,
    /// Region offset of slot 0.
    slots: usize,
    /// Bytes from one slot to the next.
    stride: usize,
    capacity: u32,
    one_lap: u32,
    /// `one_lap - 1`: the index bits of a position.
    mask: u32,
    /// [`Queue::prefetch_ahead`]'s reach: slot indices below it have a slot
    /// [`PREFETCH_AHEAD`] on (`capacity - PREFETCH_AHEAD`, saturating).
    #[cfg_attr(any(loom, miri), allow(dead_code))]
    prefetch_below: u32,
    /// Bytes from a slot's start to the second line [`Queue::prefetch_ahead`] takes: 64, or
    /// 0 when the slot is one line (the first line is then taken twice: no branch).
    #[cfg_attr(any(loom, miri), allow(dead_code))]
    prefetch_second: usize,
    /// This party's owner id (the claim word of its sends).
    me: u32,
}

impl Queue {
    /// `one_lap` of a queue of `capacity` slots.
    pub(crate) const fn one_lap(capacity: u32) -> u32 {
        (capacity + 1).next_power_of_two()
    }

    /// A handle; the caller validated that `capacity` slots of `stride` bytes at `slots`, and
    /// the two index words, lie inside `region` and that the atomics were constructed.
    pub(crate) fn new(
        region: Region,
        (tail, head): (usize, usize),
        (slots, stride): (usize, usize),
        capacity: u32,
        me: u32,
    ) -> Self {
        debug_assert!(capacity >= 1 && stride >= SLOT_HEAD);
        debug_assert!(region.contains(slots, stride * capacity as usize));
        Self {
            region,
            tail,
            head,
            slots,
            stride,
            capacity,
            one_lap: Self::one_lap(capacity),
            mask: Self::one_lap(capacity) - 1,
            prefetch_below: capacity.saturating_sub(PREFETCH_AHEAD),
            prefetch_second: if stride > 64 { 64 } else { 0 },
            me,
        }
    }

    /// Constructs an empty queue's atomics (creator only, before publishing).
    pub(crate) fn init(&self) {
        let r = self.region;
        r.init_atomic(self.tail, 0);
        r.init_atomic(self.head, 0);
        for i in 0..self.capacity {
            let s = self.slot(i as usize);
            r.init_atomic(s + core::mem::offset_of!(SlotHead, seq), i);
            r.init_atomic(s + core::mem::offset_of!(SlotHead, claim), 0);
        }
    }

    /// Slots.
    #[inline]
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Region offset of slot `i` (`i < capacity`).
    #[inline(always)]
    pub(crate) fn slot(&self, i: usize) -> usize {
        debug_assert!(i < self.capacity as usize);
        self.slots + i * self.stride
    }

    #[inline(always)]
    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is the tail or head word or a slot's seq/claim word: inside the
        // validated queue, constructed by `init`; the region outlives the handle.
        unsafe { self.region.atomic(off) }
    }

    #[inline(always)]
    fn tail_word(&self) -> &AtomicU32 {
        self.word(self.tail)
    }

    #[inline(always)]
    fn head_word(&self) -> &AtomicU32 {
        self.word(self.head)
    }

    #[inline(always)]
    fn seq(&self, slot: usize) -> &AtomicU32 {
        self.word(slot + core::mem::offset_of!(SlotHead, seq))
    }

    #[inline(always)]
    fn claim(&self, slot: usize) -> &AtomicU32 {
        self.word(slot + core::mem::offset_of!(SlotHead, claim))
    }

    /// The slot of a position read from shared memory: its index is checked, since another
    /// party may have written anything there.
    #[inline(always)]
    fn slot_of(&self, pos: u32) -> Result<usize, ChannelError> {
        let ix = pos & self.mask;
        if ix >= self.capacity {
            return Err(ChannelError::Corrupt("position outside the slots"));
        }
        Ok(self.slot(ix as usize))
    }

    /// The position after `pos`.
    #[inline(always)]
    fn next(&self, pos: u32) -> u32 {
        if (pos & self.mask) + 1 < self.capacity {
            pos.wrapping_add(1)
        } else {
            (pos & !self.mask).wrapping_add(self.one_lap)
        }
    }

    /// Claims slot `s`, whose sequence word read `seq` (the value that says "yours"), as `me`;
    /// `steps` are the fault-injection points before and after the claim.
    #[inline(always)]
    fn claim_slot(
        &self,
        s: usize,
        seq: u32,
        me: u32,
        steps: [Step; 2],
    ) -> Result<Claim, ChannelError> {
        if fault::dies(self.me, steps[0]) {
            return Err(ChannelError::Died);
        }
        // SYNC: claim (CAS Acquire) <-> release claim (Release) of the last claimant.
        if let Err(holder) =
            self.claim(s)
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            return Ok(Claim::Held(holder));
        }
        if fault::dies(self.me, steps[1]) {
            return Err(ChannelError::Died);
        }
        // The slot may have moved on between the seq load and the claim. Its seq word alone
        // tells: the index word moves past the position only by a party that holds this
        // claim with `seq` unchanged, and that party changes `seq` (publish, release slot, or
        // recovery's tombstone) before it lets the claim go; the CAS acquired that release,
        // so the load below sees the change. (A claim given back without a step, by `cancel`
        // or recovery of a bare claim, moved nothing.)
        // SYNC: re-check (Acquire) <-> publish / release slot (Release).
        if self.seq(s).load(Ordering::Acquire) == seq {
            return Ok(Claim::Taken);
        }
        // SYNC: release claim (Release) <-> next claimant's CAS (Acquire).
        self.claim(s).store(0, Ordering::Release);
        Ok(Claim::Moved)
    }

    /// [`Queue::claim_slot`] for position `pos` of the index word `index`, in a retry loop
    /// that counts `spins`. `Ok(None)`: the position moved on (another party took it, or the
    /// slot changed between the read and the claim), or its claimant is mid-step and the spin
    /// budget is not spent yet; read the index again.
    #[allow(clippy::too_many_arguments)]
    fn claim_at(
        &self,
        index: &AtomicU32,
        pos: u32,
        s: usize,
        seq: u32,
        me: u32,
        steps: [Step; 2],
        spins: &mut u32,
    ) -> Result<Option<Taken>, ChannelError> {
        match self.claim_slot(s, seq, me, steps)? {
            Claim::Taken => Ok(Some(Taken { slot: s, pos })),
            Claim::Moved => Ok(None),
            // Another party of this side claimed the position first: progress.
            Claim::Held(_) if index.load(Ordering::Relaxed) != pos => {
                *spins = 0;
                Ok(None)
            }
            Claim::Held(holder) => Self::stall(spins, holder).map(|()| None),
        }
    }

    /// One more spin on a slot `holder` works on, or [`ChannelError::Stalled`].
    #[cold]
    fn stall(spins: &mut u32, holder: u32) -> Result<(), ChannelError> {
        *spins += 1;
        if *spins >= STALL_SPINS {
            return Err(ChannelError::Stalled {
                owner: holder & OWNER_MASK,
            });
        }
        spin_hint();
        Ok(())
    }

    /// Sender, step 1: claims the slot at `tail`.
    ///
    /// # Errors
    /// [`ChannelError::Full`]; [`ChannelError::Stalled`] when the slot is still being worked
    /// on by the owner it names; [`ChannelError::Corrupt`].
    #[inline(always)]
    pub(crate) fn start_send(&self) -> Result<Taken, ChannelError> {
        // The first try inline, without the loop's state: most sends claim at once.
        let tail_w = self.tail_word();
        let tail = tail_w.load(Ordering::Relaxed);
        let s = self.slot_of(tail)?;
        // SYNC: acquire slot (Acquire) <-> receiver's release slot (Release) in finish_recv.
        let seq = self.seq(s).load(Ordering::Acquire);
        if seq == tail {
            let steps = [Step::SendRead, Step::SendClaimed];
            if let Claim::Taken = self.claim_slot(s, seq, self.me, steps)? {
                return Ok(Taken { slot: s, pos: tail });
            }
        }
        self.start_send_again()
    }

    /// [`Queue::start_send`] after a first try that did not claim: the same steps in a loop.
    #[cold]
    #[inline(never)]
    fn start_send_again(&self) -> Result<Taken, ChannelError> {
        let tail_w = self.tail_word();
        let mut spins = 0;
        loop {
            let tail = tail_w.load(Ordering::Relaxed);
            let s = self.slot_of(tail)?;
            // SYNC: acquire slot (Acquire) <-> receiver's release slot (Release) in finish_recv.
            let seq = self.seq(s).load(Ordering::Acquire);
            if seq == tail {
                let steps = [Step::SendRead, Step::SendClaimed];
                if let Some(t) = self.claim_at(tail_w, tail, s, seq, self.me, steps, &mut spins)? {
                    return Ok(t);
                }
            } else {
                self.send_blocked(tail, s, seq, &mut spins)?;
            }
        }
    }

    /// [`Queue::start_send`] found the slot at `tail` not free for this lap.
    #[cold]
    fn send_blocked(
        &self,
        tail: u32,
        s: usize,
        seq: u32,
        spins: &mut u32,
    ) -> Result<(), ChannelError> {
        let lapped = seq.wrapping_add(self.one_lap);
        if lapped == tail.wrapping_add(1) || lapped == tail {
            // Still in last lap: its message is queued (`seq` = last position + 1), or last
            // lap's sender took the position and has not published (`seq` = last position).
            // SYNC: fence (SeqCst) <-> the receivers' head store and empty-check fence.
            fence(Ordering::SeqCst);
            let head = self.head_word().load(Ordering::Relaxed);
            if head.wrapping_add(self.one_lap) == tail {
                return Err(ChannelError::Full);
            }
            // A receiver took last lap's message and has not released the slot yet.
            let holder = self.claim(s).load(Ordering::Relaxed);
            return Self::stall(spins, holder);
        }
        if self.tail_word().load(Ordering::Relaxed) != tail {
            *spins = 0; // stale tail: another sender committed meanwhile
            return Ok(());
        }
        // `tail` did not move, yet its slot is for no lap near it: only a corrupt sequence
        // word stays like this.
        Self::stall(spins, 0).map_err(|_| ChannelError::Corrupt("tail does not match any slot"))
    }

    /// Sender, step 2: moves `tail` past the claimed position.
    ///
    /// # Errors
    /// [`ChannelError::Died`] (fault injection only).
    #[inline(always)]
    pub(crate) fn commit_send(&self, t: &Taken) -> Result<(), ChannelError> {
        // SYNC: advance tail (Release) <-> other senders' tail load and the receivers'
        // empty check (fence + tail load).
        self.tail_word().store(self.next(t.pos), Ordering::Release);
        if fault::dies(self.me, Step::SendAdvanced) {
            return Err(ChannelError::Died);
        }
        Ok(())
    }

    /// Sender, step 3: publishes the message written into the slot and releases the claim.
    ///
    /// # Errors
    /// [`ChannelError::Died`] (fault injection only).
    #[inline(always)]
    pub(crate) fn finish_send(&self, t: Taken) -> Result<(), ChannelError> {
        if fault::dies(self.me, Step::SendWritten) {
            return Err(ChannelError::Died);
        }
        // SYNC: publish message (Release) <-> receiver's seq load (Acquire) in start_recv.
        self.seq(t.slot)
            .store(t.pos.wrapping_add(1), Ordering::Release);
        if fault::dies(self.me, Step::SendPublished) {
            return Err(ChannelError::Died);
        }
        // SYNC: release claim (Release) <-> next claimant's CAS (Acquire).
        self.claim(t.slot).store(0, Ordering::Release);
        Ok(())
    }

    /// Gives a claim back before commit: the slot is as it was.
    #[inline(always)]
    pub(crate) fn cancel(&self, t: Taken) {
        // SYNC: release claim (Release) <-> next claimant's CAS (Acquire).
        self.claim(t.slot).store(0, Ordering::Release);
    }

    /// Receiver, step 1: claims the slot at `head` once a message is published there.
    ///
    /// # Errors
    /// [`ChannelError::Empty`]; [`ChannelError::Stalled`] when a sender took the position and
    /// has not published yet, or another receiver works on it; [`ChannelError::Corrupt`].
    #[inline]
    pub(crate) fn start_recv(&self) -> Result<Taken, ChannelError> {
        self.start_recv_as::<true>()
    }

    /// [`Queue::start_recv`]; with `EXACT = false` a head slot whose message is not
    /// published yet is reported [`ChannelError::Empty`] at once, without the fence and tail
    /// read that tell an empty queue from a sender mid-way (a waiter's cheap first try).
    #[inline(always)]
    pub(crate) fn start_recv_as<const EXACT: bool>(&self) -> Result<Taken, ChannelError> {
        // The first try inline, without the loop's state: most receives claim at once.
        let head_w = self.head_word();
        let head = head_w.load(Ordering::Relaxed);
        let s = self.slot_of(head)?;
        // SYNC: acquire message (Acquire) <-> publish message (Release) in finish_send.
        let seq = self.seq(s).load(Ordering::Acquire);
        if seq == head.wrapping_add(1) {
            let steps = [Step::RecvRead, Step::RecvClaimed];
            let me = self.me | ROLE_RECV;
            if let Claim::Taken = self.claim_slot(s, seq, me, steps)? {
                return Ok(Taken { slot: s, pos: head });
            }
        } else if !EXACT && seq == head {
            return Err(ChannelError::Empty);
        }
        self.start_recv_again::<EXACT>()
    }

    /// [`Queue::start_recv_as`] after a first try that did not claim: the same steps in a
    /// loop.
    #[cold]
    #[inline(never)]
    fn start_recv_again<const EXACT: bool>(&self) -> Result<Taken, ChannelError> {
        let head_w = self.head_word();
        let me = self.me | ROLE_RECV;
        let mut spins = 0;
        loop {
            let head = head_w.load(Ordering::Relaxed);
            let s = self.slot_of(head)?;
            // SYNC: acquire message (Acquire) <-> publish message (Release) in finish_send.
            let seq = self.seq(s).load(Ordering::Acquire);
            if seq == head.wrapping_add(1) {
                let steps = [Step::RecvRead, Step::RecvClaimed];
                if let Some(t) = self.claim_at(head_w, head, s, seq, me, steps, &mut spins)? {
                    return Ok(t);
                }
            } else if !EXACT && seq == head {
                return Err(ChannelError::Empty);
            } else {
                self.recv_blocked(head, s, seq, &mut spins)?;
            }
        }
    }

    /// [`Queue::start_recv`] found no message published at `head`.
    #[cold]
    fn recv_blocked(
        &self,
        head: u32,
        s: usize,
        seq: u32,
        spins: &mut u32,
    ) -> Result<(), ChannelError> {
        if seq == head || seq.wrapping_add(self.one_lap) == head.wrapping_add(1) {
            // The slot waits for this lap's sender, or last lap's receiver has taken its
            // message and not released the slot yet (no sender can take `head` before that).
            // SYNC: fence (SeqCst) <-> sender's tail store and the fence of its full check:
            // an empty verdict is not reordered before the head load.
            fence(Ordering::SeqCst);
            if self.tail_word().load(Ordering::Relaxed) == head {
                return Err(ChannelError::Empty);
            }
            // A sender took this position and is writing it (or `tail` moved since).
            let holder = self.claim(s).load(Ordering::Relaxed);
            return Self::stall(spins, holder);
        }
        if self.head_word().load(Ordering::Relaxed) != head {
            *spins = 0;
            return Ok(());
        }
        Self::stall(spins, 0).map_err(|_| ChannelError::Corrupt("head does not match any slot"))
    }

    /// Receiver, step 2: moves `head` past the claimed position (the message is now this
    /// receiver's).
    ///
    /// # Errors
    /// [`ChannelError::Died`] (fault injection only).
    #[inline(always)]
    pub(crate) fn commit_recv(&self, t: &Taken) -> Result<(), ChannelError> {
        // SYNC: advance head (Release) <-> senders' full check (fence + head load).
        self.head_word().store(self.next(t.pos), Ordering::Release);
        if fault::dies(self.me, Step::RecvAdvanced) {
            return Err(ChannelError::Died);
        }
        Ok(())
    }

    /// Receiver, step 3: releases the slot for the next lap's sender and the claim.
    ///
    /// # Errors
    /// [`ChannelError::Died`] (fault injection only).
    #[inline(always)]
    pub(crate) fn finish_recv(&self, t: Taken) -> Result<(), ChannelError> {
        if fault::dies(self.me, Step::RecvTaken) {
            return Err(ChannelError::Died);
        }
        // SYNC: release slot (Release) <-> sender's seq load (Acquire) in start_send.
        self.seq(t.slot)
            .store(t.pos.wrapping_add(self.one_lap), Ordering::Release);
        self.claim(t.slot).store(0, Ordering::Release);
        Ok(())
    }

    /// Messages queued now (a snapshot; positions taken but not finished count).
    pub(crate) fn len(&self) -> usize {
        let (tail_w, head_w) = (self.tail_word(), self.head_word());
        loop {
            // SYNC: SeqCst loads: a consistent snapshot of (tail, head) against the other
            // parties' Release stores; `len` is a snapshot, not a synchronization point.
            let tail = tail_w.load(Ordering::SeqCst);
            let head = head_w.load(Ordering::SeqCst);
            if tail_w.load(Ordering::SeqCst) == tail {
                let (hix, tix) = ((head & self.mask) as usize, (tail & self.mask) as usize);
                let cap = self.capacity as usize;
                return if hix < tix {
                    tix - hix
                } else if hix > tix {
                    // Saturating: a corrupt `head` may hold an index beyond the capacity.
                    (cap + tix).saturating_sub(hix)
                } else if tail == head {
                    0
                } else {
                    cap
                }
                .min(cap);
            }
        }
    }

    /// A hint for waiting receivers: whether the slot at `head` holds a published message.
    /// Reads only the head word and that slot's sequence word (no fence, no tail).
    #[inline(always)]
    pub(crate) fn may_recv(&self) -> bool {
        let head = self.head_word().load(Ordering::Relaxed);
        // A corrupt `head`: `true`, so that the receive reports it.
        self.hint_seq(head).is_none_or(|(_, seq)| seq != head)
    }

    /// A hint for waiting senders: whether the slot at `tail` is free for this lap.
    #[inline(always)]
    pub(crate) fn may_send(&self) -> bool {
        let tail = self.tail_word().load(Ordering::Relaxed);
        self.hint_seq(tail)
            .is_none_or(|(_, seq)| seq.wrapping_add(self.one_lap) != tail.wrapping_add(1))
    }

    /// The slot of `pos` and its sequence word, read for a hint only (Relaxed: the operation
    /// that acts on the hint acquires the slot itself); `None` when `pos` names no slot.
    #[inline(always)]
    fn hint_seq(&self, pos: u32) -> Option<(usize, u32)> {
        let s = self.slot_of(pos).ok()?;
        Some((s, self.seq(s).load(Ordering::Relaxed)))
    }

    /// After a send of `t`: if the slot [`PREFETCH_AHEAD`] positions on is already free for
    /// its lap, start taking its first two lines for writing, so that the send that will use
    /// it does not wait for the last receiver's cache to give them up. A slot that still
    /// holds a message is left alone (taking it would slow its receiver down). Measured (two
    /// threads streaming 64 B through capacity 100, 1 KiB slots): 75-103 ns per message
    /// against 117-155 without; distances 1 and 3-16 were worse or no better. Skipped near
    /// the end of the array (one branch instead of the wrap-around arithmetic), and left out
    /// of loom and Miri builds (a hint; its extra load only slows them down).
    #[inline(always)]
    pub(crate) fn prefetch_ahead(&self, t: &Taken) {
        #[cfg(not(any(loom, miri)))]
        if (t.pos & self.mask) < self.prefetch_below {
            let s = t.slot + PREFETCH_AHEAD as usize * self.stride;
            if self.seq(s).load(Ordering::Relaxed) == t.pos.wrapping_add(PREFETCH_AHEAD) {
                self.region.prefetch_write(s);
                self.region.prefetch_write(s + self.prefetch_second);
            }
        }
        #[cfg(any(loom, miri))]
        let _ = t;
    }

    /// The owner ids in the claim words at `head` and at `tail` (diagnostics).
    pub(crate) fn claims(&self) -> (u32, u32) {
        let at = |w: &AtomicU32| {
            let ix = (w.load(Ordering::Relaxed) & self.mask).min(self.capacity - 1);
            self.claim(self.slot(ix as usize)).load(Ordering::Relaxed) & OWNER_MASK
        };
        (at(self.head_word()), at(self.tail_word()))
    }

    /// Finishes or undoes the steps of dead parties. For each slot claimed by a party that
    /// `is_alive` reports dead, takes the claim over (so that of several parties recovering at
    /// once exactly one repairs it), lets `repair(slot, what)` fix the channel's part, then
    /// publishes a tombstone / releases the slot as `what` requires, and releases the claim.
    /// A `repair` that cannot finish now (it met a busy pool lock) returns `Err(owner)`: the
    /// claim goes back to the dead party, untouched, for a later pass.
    /// Returns how many slots of each kind were repaired, `[claims, sends, receives]`, and the
    /// lock holder a deferred repair met, if any.
    pub(crate) fn recover(
        &self,
        is_alive: &dyn Fn(u32) -> bool,
        mut repair: impl FnMut(usize, Abandoned) -> Result<(), u32>,
    ) -> ([u32; 3], Option<u32>) {
        let mut counts = [0u32; 3];
        let mut deferred = None;
        let mask = self.mask;
        for i in 0..self.capacity {
            let s = self.slot(i as usize);
            // SYNC: Acquire <-> the claimant's Release stores before it died.
            let c = self.claim(s).load(Ordering::Acquire);
            if c == 0 || is_alive(c & OWNER_MASK) {
                continue;
            }
            let mine = (c & ROLE_RECV) | self.me;
            // SYNC: take over claim (CAS AcqRel) <-> the dead party's last Release stores.
            if self
                .claim(s)
                .compare_exchange(c, mine, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SYNC: Acquire <-> publish / release slot (Release).
            let seq = self.seq(s).load(Ordering::Acquire);
            let ix = seq & mask;
            // A claim does not say whether its party got as far as commit: it may have died
            // between its claim and the re-check that follows, on a slot that had meanwhile
            // moved on. Only an index word that has moved past the slot's position says the
            // dead party took that position.
            // SYNC: Acquire <-> commit (Release store of tail / head).
            let moved_past = |word: usize, pos: u32| {
                (self.word(word).load(Ordering::Acquire).wrapping_sub(pos) as i32) > 0
            };
            let what = if c & ROLE_RECV == 0 && ix == i && moved_past(self.tail, seq) {
                Abandoned::Send
            } else if c & ROLE_RECV != 0
                && ix == i + 1
                && moved_past(self.head, seq.wrapping_sub(1))
            {
                Abandoned::Recv
            } else {
                Abandoned::Claim
            };
            if let Err(holder) = repair(s, what) {
                // SYNC: give back (Release) <-> the next pass's take-over CAS (Acquire).
                self.claim(s).store(c, Ordering::Release);
                deferred = Some(holder);
                continue;
            }
            match what {
                // SYNC: publish (Release) <-> receiver's seq load (Acquire).
                Abandoned::Send => self.seq(s).store(seq.wrapping_add(1), Ordering::Release),
                // SYNC: release slot (Release) <-> sender's seq load (Acquire).
                Abandoned::Recv => self.seq(s).store(
                    seq.wrapping_sub(1).wrapping_add(self.one_lap),
                    Ordering::Release,
                ),
                Abandoned::Claim => {}
            }
            counts[what as usize] += 1;
            // SYNC: release claim (Release) <-> claim CAS (Acquire).
            self.claim(s).store(0, Ordering::Release);
        }
        (counts, deferred)
    }
}
