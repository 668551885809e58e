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
//! caller then wakes sleepers (the system call is made only when somebody sleeps).
//!
//! Both sides' SeqCst operations order "register, then check" against "change, then look for
//! waiters": either the waiter's re-check sees the change, or the notifier sees the waiter.
//! A waiter that dies while registered leaves the count one too high; that costs notifiers a
//! wake call they did not need, never a lost wake-up.
//!
//! # Memory layout
//! `EventWords`: two 32-bit atomics, `seq` then `waiters`, inside a channel or pool header.

use crate::region::Region;
use crate::sync::{AtomicU32, Ordering, fence};

/// The in-region words of one event.
#[repr(C)]
pub(crate) struct EventWords {
    /// Bumped (wrapping) by every notify that found a waiter; sleepers wait on it.
    seq: AtomicU32,
    /// Registered waiters. SYNC: register (SeqCst RMW) <-> notify (SeqCst fence + load).
    waiters: AtomicU32,
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
    pub(crate) unsafe fn at(r: Region, off: usize) -> Self {
        // SAFETY: the caller guarantees both atomics were constructed there and outlive 'a.
        unsafe {
            Self {
                seq: r.atomic(off + core::mem::offset_of!(EventWords, seq)),
                waiters: r.atomic(off + core::mem::offset_of!(EventWords, waiters)),
            }
        }
    }

    /// Registers a waiter; returns the word value to sleep on.
    pub fn register(&self) -> u32 {
        // SYNC: register waiter (SeqCst) <-> notify's fence + waiters load.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.seq.load(Ordering::SeqCst)
    }

    /// Unregisters a waiter (never below zero, whatever a dead waiter left).
    pub fn unregister(&self) {
        // Relaxed: the count only decides whether a notifier bumps the word and wakes; a
        // stale value costs one spurious wake, never a lost one (register is SeqCst).
        let _ = self
            .waiters
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1));
    }

    /// Call after making the condition true. Returns whether sleepers may need a wake-up
    /// (the word was bumped); then the caller wakes them.
    #[inline]
    pub fn notify(&self) -> bool {
        // SYNC: fence (SeqCst) <-> register's SeqCst RMW: either the waiter sees the change
        // in its re-check, or we see the waiter here.
        fence(Ordering::SeqCst);
        self.notify_fenced()
    }

    /// [`Event::notify`] for a caller that has just issued a SeqCst fence after making its
    /// change (one fence can serve several events).
    #[inline]
    pub fn notify_fenced(&self) -> bool {
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return false;
        }
        // SYNC: bump (Release) <-> register's SeqCst load of `seq` and the futex's re-read: a
        // sleeper that sees the new value sees the change made before it.
        self.seq.fetch_add(1, Ordering::Release);
        true
    }

    /// The word sleepers wait on.
    pub fn word(&self) -> &'a AtomicU32 {
        self.seq
    }

    /// Registered waiters now.
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }
}
