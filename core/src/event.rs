//! Events: the words a waiter sleeps on while it waits for a condition that another party
//! makes true (a message arrived, a slot became free, pool memory was freed).
//!
//! # Protocol
//! The classic "register, re-check, sleep" of std's `sync/mpmc` waker, over two shared words
//! so that processes can use it: a waiter calls [`Event::register`] (which returns the value
//! of the sequence word), checks its condition once more, sleeps on [`Event::word`] while the
//! word still holds that value (a futex in the std adapter, a spin in firmware), then calls
//! [`Event::unregister`]. The party that made the condition true calls [`Event::notify`],
//! which bumps the sequence word and returns `true` only when a waiter is registered; the
//! caller then wakes sleepers (the system call is made only when somebody sleeps). A
//! channel's notifier then rings the pool's doorbell ([`crate::Channel::ring`]), for
//! channel-set pollers, which watch one word per pool instead of each channel's (`bell.rs`).
//!
//! Both sides' SeqCst operations order "register, then check" against "change, then look for
//! waiters": either the waiter's re-check sees the change, or the notifier sees the waiter.
//! A waiter that dies while registered leaves the count one too high; that costs notifiers a
//! wake call they did not need, never a lost wake-up.
//!
//! # Two kinds of waiter
//! A waiter registers as [`Waiter::One`] when any one waiter can use what a notify announces
//! (a blocked receiver: one message, one receiver) and as [`Waiter::All`] when every waiter
//! must look (a poll for "empty", a channel set, a barrier waiting for the last round to
//! drain). [`Event::notify`] says which: [`Wake::One`] while only `One` waiters are
//! registered, [`Wake::All`] as soon as one `All` waiter is. Without this a notify that woke
//! one sleeper could wake a channel set's poller instead of the blocked receiver that needed
//! the message, and the receiver would sleep on with a message queued.
//!
//! # Memory layout
//! `EventWords`: two 32-bit atomics, `seq` then `waiters`, inside a channel or pool header.
//! `waiters` counts `One` waiters in its low 16 bits and `All` waiters in its high 16 bits,
//! so a notifier reads both kinds with one load.

use crate::region::Region;
use crate::sync::{AtomicU32, Ordering, fence};

/// The in-region words of one event.
#[repr(C)]
pub(crate) struct EventWords {
    /// Bumped (wrapping) by every notify that found a waiter; sleepers wait on it.
    seq: AtomicU32,
    /// Registered waiters (`One` count low, `All` count high). SYNC: register (SeqCst RMW)
    /// <-> notify (SeqCst fence + load).
    waiters: AtomicU32,
}

/// How a waiter wants to be woken (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Waiter {
    /// Any one waiter can use the change (blocked receivers, senders, semaphore P).
    One,
    /// Every waiter must look at the change (polls, channel sets, barrier waiters).
    All,
}

impl Waiter {
    /// This kind's unit in the `waiters` word.
    const fn unit(self) -> u32 {
        match self {
            Self::One => 1,
            Self::All => ALL_UNIT,
        }
    }
}

/// `waiters` word unit of one [`Waiter::All`] waiter.
const ALL_UNIT: u32 = 1 << 16;

/// What a notifier must wake (the answer of [`Event::notify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use]
pub enum Wake {
    /// Nobody is registered: no system call needed.
    None,
    /// Wake one sleeper.
    One,
    /// Wake every sleeper.
    All,
}

impl Wake {
    /// How many sleepers to wake: 0, 1 or `u32::MAX`.
    pub const fn count(self) -> u32 {
        match self {
            Self::None => 0,
            Self::One => 1,
            Self::All => u32::MAX,
        }
    }
}

impl EventWords {
    /// Constructs the words at `off` (creator only, before the structure is published).
    pub(crate) fn init(r: Region, off: usize) {
        r.init_atomic(off + core::mem::offset_of!(EventWords, seq), 0);
        r.init_atomic(off + core::mem::offset_of!(EventWords, waiters), 0);
    }
}

/// A handle on one event's words.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    seq: &'a AtomicU32,
    waiters: &'a AtomicU32,
}

impl core::fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .field("waiters", &self.waiters.load(Ordering::Relaxed))
            .finish()
    }
}

impl<'a> Event<'a> {
    /// The event whose [`EventWords`] are at `off` of `r`.
    ///
    /// # Safety
    /// `EventWords::init` constructed the words at `off`, and the region outlives `'a`.
    #[inline]
    pub(crate) unsafe fn at(r: Region, off: usize) -> Self {
        // SAFETY: the caller guarantees both atomics were constructed there and outlive 'a.
        unsafe {
            Self {
                seq: r.atomic(off + core::mem::offset_of!(EventWords, seq)),
                waiters: r.atomic(off + core::mem::offset_of!(EventWords, waiters)),
            }
        }
    }

    /// Registers a waiter of kind `how`; returns the word value to sleep on.
    pub fn register(&self, how: Waiter) -> u32 {
        // SYNC: register waiter (SeqCst) <-> notify's fence + waiters load.
        self.waiters.fetch_add(how.unit(), Ordering::SeqCst);
        self.seq.load(Ordering::SeqCst)
    }

    /// For a waiter still registered (it woke, and its re-check found nothing): the word
    /// value to sleep on next, read before that re-check as [`Event::register`] reads it. The
    /// registration stays in place, so the argument is `register`'s.
    pub fn rearm(&self) -> u32 {
        // SYNC: SeqCst load <-> notify's bump, as in `register`, after this waiter's
        // registration RMW (still counted).
        self.seq.load(Ordering::SeqCst)
    }

    /// Unregisters a waiter of kind `how` (never below zero, whatever a dead waiter left).
    pub fn unregister(&self, how: Waiter) {
        let unit = how.unit();
        // Relaxed: the count only decides whether a notifier bumps the word and whom it
        // wakes; a stale value costs a spurious wake, never a lost one (register is SeqCst).
        let _ = self
            .waiters
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                let mine = if unit == 1 {
                    w & (ALL_UNIT - 1)
                } else {
                    w >> 16
                };
                (mine > 0).then(|| w - unit)
            });
    }

    /// Call after making the condition true. Bumps the word when somebody is registered and
    /// says whom the caller must wake.
    #[inline]
    pub fn notify(&self) -> Wake {
        // SYNC: fence (SeqCst) <-> register's SeqCst RMW: either the waiter sees the change
        // in its re-check, or we see the waiter here.
        fence(Ordering::SeqCst);
        self.notify_fenced()
    }

    /// [`Event::notify`] for a caller that has just issued a SeqCst fence after making its
    /// change (one fence can serve several events).
    #[inline]
    pub fn notify_fenced(&self) -> Wake {
        let w = self.waiters.load(Ordering::Relaxed);
        if w == 0 {
            return Wake::None;
        }
        // SYNC: bump (Release) <-> register's SeqCst load of `seq` and the futex's re-read: a
        // sleeper that sees the new value sees the change made before it.
        self.seq.fetch_add(1, Ordering::Release);
        if w >= ALL_UNIT { Wake::All } else { Wake::One }
    }

    /// [`Event::notify`] for a caller whose change was published by a `SeqCst`
    /// read-modify-write, for waiters whose re-check issues a `SeqCst` fence before it reads
    /// the changed word: no fence needed here. If this load misses a waiter's registration,
    /// it precedes the waiter's fence in the single total order `S` of `SeqCst` operations
    /// (C++20 [atomics.order]), and so does the change (sequenced before this load); a load
    /// after that fence cannot read a value older than the change. (The pool's magazines
    /// use it: `pool/magazine.rs`.)
    ///
    /// loom treats `SeqCst` loads and read-modify-writes as acquire/release (it cannot check
    /// this argument), so loom builds issue the `SeqCst` fence here, and the models check the
    /// rest of the protocol.
    #[inline]
    pub fn notify_after_seqcst(&self) -> Wake {
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        // SYNC: SeqCst load <-> the waiter's register (RMW) and the SeqCst fence its re-check
        // issues before reading the caller's word; ordered after the caller's SeqCst
        // publishing RMW (see the doc comment).
        let w = self.waiters.load(Ordering::SeqCst);
        if w == 0 {
            return Wake::None;
        }
        // SYNC: bump (Release) <-> register's SeqCst load of `seq` and the futex's re-read.
        self.seq.fetch_add(1, Ordering::Release);
        if w >= ALL_UNIT { Wake::All } else { Wake::One }
    }

    /// The waiters word as it is now, for a notifier right after its SeqCst fence (see
    /// `Channel::notify`): zero means nobody is registered.
    #[inline(always)]
    pub(crate) fn waiters_now(&self) -> u32 {
        // Relaxed: ordered by the caller's fence (SYNC: as in `notify_fenced`).
        self.waiters.load(Ordering::Relaxed)
    }

    /// The word sleepers wait on.
    pub fn word(&self) -> &'a AtomicU32 {
        self.seq
    }

    /// Registered waiters of kind `how` now.
    pub fn waiters(&self, how: Waiter) -> u32 {
        let w = self.waiters.load(Ordering::Relaxed);
        match how {
            Waiter::One => w & (ALL_UNIT - 1),
            Waiter::All => w >> 16,
        }
    }
}
