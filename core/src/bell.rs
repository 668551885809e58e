//! The pool's doorbell: one word per pool that tells channel-set pollers, in O(1), that a
//! channel of the pool changed and which one.
//!
//! # Why a doorbell
//! A poller waiting on many channels could watch every channel's event word, but then a
//! spinning poller reads one word per channel per look and a sleeping one registers on and
//! sleeps on every word (`futex_waitv` takes 128 at most): waking a set of 128 channels cost
//! 2.3x a blocking receive. With a doorbell it watches one word per pool, whatever the number
//! of channels, and the word names the channel that rang last.
//!
//! # Protocol
//! A poller [`Bell::watch`]es before its first look at its channels, for messages that arrive
//! ([`Side::Arrived`]: a send's notify of the receive event), for slots that are freed
//! ([`Side::Freed`]: a receive's notify of the send event), or both, as its event mask needs.
//! From then on every such notifier in the pool rings: after its change and its SeqCst fence
//! (the one [`crate::Event::notify`] issues), it loads the watch word and, only when watchers
//! of its side are counted, rewrites the bell word with its channel's hint and the next ring
//! number ([`crate::Channel::ring`]).
//! A notifier that sees watchers before its change may also announce it
//! ([`crate::Channel::announce`]: the hint and the next ring number with an announced flag),
//! so that a spinning poller learns which channel to watch while the change is being made,
//! instead of after it: the doorbell's line then travels while the change is made, not after
//! it. An announcement is only a hint: the ring after the change still comes, and when the
//! word still holds an announcement with the ringer's hint it only clears the flag, so that
//! the poller hears one more ring of that channel (not a merge of two rings). Nothing is
//! announced over another announcement, while a watcher sleeps, or when the word changed
//! under the announcer.
//! The poller spins on [`Bell::peek`] and, to sleep, [`Bell::arm`]s the word (sets the
//! sleeping flag), checks its channels once more and sleeps while the word holds the armed
//! value; a ring clears the flag, so the word changes, and tells the ringer to wake every
//! sleeper on the word. [`Bell::unwatch`] when the poll returns.
//!
//! Either a notifier sees the watcher (and rings), or the watcher's SeqCst registration comes
//! after the notifier's fence and the watcher's look sees the change: the `Event` protocol's
//! argument, on a word per pool instead of per channel. An announcement changes nothing to
//! it: a poller that looks after hearing it may find nothing yet, but the ring after the
//! change comes anyway (and brings the change with it), and an announcement leaves the
//! sleeping flag alone. Rings that come close together may merge: the poller then sees a
//! ring number more than one ahead ([`Rings::Many`]) and looks at every channel. A hint
//! names a channel by its header's offset in the pool (64-byte units, 13 bits), so two
//! channels can share one; the poller looks at each channel with the hint, and at every
//! channel when none of them is ready.
//!
//! # Memory layout
//! Two `u32`s on the pool header's first line. The watch word counts watchers of arrivals
//! (low 16 bits) and of freed slots (high 16 bits). The bell word, which sleepers wait on,
//! holds the hint of the channel that rang last (bits 0-12), the ring number (bits 13-29,
//! wrapping), the announced flag (bit 30) and the sleeping flag (bit 31). A ring number one
//! ahead means one ring unless 2^17 rang in between; a poller still looks at every channel
//! from time to time and before it sleeps.
//!
//! # Deaths
//! A poller that dies while watching leaves its count: notifiers of that side in the pool
//! then ring on every change (one compare-and-swap each, and one wake-up call the first
//! time), until the pool is created anew. Nothing is lost or delayed by it. A notifier that
//! dies between its announcement and its ring leaves the announced flag: announcements stop
//! until another channel's ring clears it; rings go on as before.

use crate::sync::{AtomicU32, Ordering};

/// Hint of the channel that rang last (bits 0-12).
const HINT_MASK: u32 = (1 << 13) - 1;
/// Where the ring number starts (17 bits).
const SEQ_SHIFT: u32 = 13;
const SEQ_MASK: u32 = (1 << 17) - 1;
/// Set by an announcement (a ring before the change), cleared by the ring after it (bit 30).
const ANNOUNCED: u32 = 1 << 30;
/// Set while a watcher sleeps on the bell word (bit 31).
const SLEEPING: u32 = 1 << 31;

/// The ring-number bits of the ring after bell word `b` (its other bits zero).
const fn next_seq(b: u32) -> u32 {
    ((b >> SEQ_SHIFT).wrapping_add(1) & SEQ_MASK) << SEQ_SHIFT
}
/// Watch-word unit of an arrivals watcher, and of a freed-slots watcher.
const ARRIVED_UNIT: u32 = 1;
const FREED_UNIT: u32 = 1 << 16;
const COUNT_MASK: u32 = 0xFFFF;

/// Most pollers that can watch one side of one pool's bell at once.
pub const MAX_WATCHERS: u32 = COUNT_MASK;

/// Which changes ring a bell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Side {
    /// A message arrived (a send notified a channel's receive event).
    Arrived,
    /// A slot was freed (a receive notified a channel's send event).
    Freed,
}

impl Side {
    const fn unit(self) -> u32 {
        match self {
            Self::Arrived => ARRIVED_UNIT,
            Self::Freed => FREED_UNIT,
        }
    }
}

/// A pool's doorbell, seen by a notifier (with its channel's hint and side) or a watcher.
#[derive(Clone, Copy)]
pub struct Bell<'a> {
    word: &'a AtomicU32,
    watch: &'a AtomicU32,
    hint: u32,
    side: Side,
}

impl core::fmt::Debug for Bell<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Bell")
            .field("word", &self.word.load(Ordering::Relaxed))
            .field("watch", &self.watch.load(Ordering::Relaxed))
            .field("hint", &self.hint)
            .field("side", &self.side)
            .finish()
    }
}

/// What happened to a bell between two looks (see [`Bell::rings_since`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Rings {
    /// No ring.
    None,
    /// Exactly one ring, by a channel with this hint.
    One(u32),
    /// Several: any channel of the pool may have changed.
    Many,
}

/// The watcher count is full: [`MAX_WATCHERS`] pollers watch that side of the pool already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TooManyWatchers;

impl<'a> Bell<'a> {
    /// The bell on `word` with watchers counted in `watch`, rung with `hint` (its low 13 bits)
    /// for changes of `side`.
    #[inline]
    pub(crate) fn new(word: &'a AtomicU32, watch: &'a AtomicU32, hint: u32, side: Side) -> Self {
        Self {
            word,
            watch,
            hint: hint & HINT_MASK,
            side,
        }
    }

    /// This bell, rung for changes of `side`.
    #[inline]
    pub(crate) fn on(self, side: Side) -> Self {
        Self { side, ..self }
    }

    /// The hint a channel whose header sits at region offset `base` rings with.
    #[inline]
    pub const fn hint_of(base: usize) -> u32 {
        (base >> 6) as u32 & HINT_MASK
    }

    /// The hint this bell rings with.
    pub fn hint(&self) -> u32 {
        self.hint
    }

    /// The word watchers sleep on.
    pub fn word(&self) -> &'a AtomicU32 {
        self.word
    }

    /// The watch word's count for `side`, shifted in place (non-zero: watched).
    #[inline(always)]
    pub(crate) fn watchers_of(watch: &AtomicU32, side: Side) -> u32 {
        // Relaxed: the caller's SeqCst fence orders this load after its change (SYNC: fence
        // <-> `watch`'s SeqCst RMW, as in `Event`).
        watch.load(Ordering::Relaxed) & (COUNT_MASK * side.unit())
    }

    /// Rings: for a notifier that saw watchers of its side after its SeqCst fence (see
    /// [`crate::Channel::ring`]). Returns `true` when sleepers must be woken (every sleeper
    /// on [`Bell::word`]).
    ///
    /// When the word still holds an announcement with this bell's hint (and nothing rang
    /// since), the ring only clears the announced flag: a watcher that heard the
    /// announcement hears this as one more ring of the same channel, and one that did not
    /// hears one ring of it, not two merged ones.
    #[cold]
    #[inline(never)]
    pub(crate) fn ring(&self) -> bool {
        let mut b = self.word.load(Ordering::Relaxed);
        loop {
            let next = if b & (ANNOUNCED | SLEEPING | HINT_MASK) == ANNOUNCED | self.hint {
                b & !ANNOUNCED
            } else {
                next_seq(b) | self.hint
            };
            // SYNC: ring (SeqCst CAS; its release half) <-> the watcher's Acquire `peek` and
            // SeqCst `arm`: a watcher that reads this value sees the change made before it;
            // an `arm` before it is seen here (the sleeping flag, which the ring clears).
            match self
                .word
                .compare_exchange_weak(b, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return b & SLEEPING != 0,
                Err(now) => b = now,
            }
        }
    }

    /// Announces a change about to be made (a notifier that saw watchers of its side, before
    /// its change; see [`crate::Channel::announce`]): writes the hint and the next ring
    /// number with the announced flag, so that a spinning watcher learns which channel to
    /// watch while the change is being made. A hint only: the change still rings after it
    /// ([`Bell::ring`]), and nothing is announced while the word is announced already, or a
    /// watcher sleeps (it is woken by that ring), or another ring wins the word.
    #[cold]
    #[inline(never)]
    pub(crate) fn announce(&self) {
        // Relaxed: a hint (no partner); the compare-and-swap below acts only on this value.
        let b = self.word.load(Ordering::Relaxed);
        if b & (ANNOUNCED | SLEEPING) != 0 {
            return;
        }
        let seq = next_seq(b);
        // Relaxed: nothing is published with an announcement (the change comes after it);
        // the ring after the change carries it (see `ring`). The RMW keeps every ring's value
        // (a plain store could overwrite one).
        let _ = self.word.compare_exchange(
            b,
            seq | ANNOUNCED | self.hint,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Counts a watcher of `side`; returns the bell word's value, to compare later looks
    /// with.
    ///
    /// # Errors
    /// [`TooManyWatchers`] when [`MAX_WATCHERS`] pollers watch that side already.
    pub fn watch(&self, side: Side) -> Result<u32, TooManyWatchers> {
        let unit = side.unit();
        // SYNC: watch (SeqCst RMW) <-> the notifier's SeqCst fence before `ring`'s load.
        self.watch
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                ((w / unit) & COUNT_MASK < MAX_WATCHERS).then_some(w + unit)
            })
            .map_err(|_| TooManyWatchers)?;
        Ok(self.word.load(Ordering::SeqCst))
    }

    /// Stops counting a watcher of `side` (never below zero, whatever a dead watcher left).
    pub fn unwatch(&self, side: Side) {
        let unit = side.unit();
        // Relaxed: a stale count costs a ring nobody needed, never a missed one.
        let _ = self
            .watch
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                ((w / unit) & COUNT_MASK > 0).then(|| w - unit)
            });
    }

    /// Pollers watching `side` now (a dead one's watch included).
    pub fn watchers(&self, side: Side) -> u32 {
        (self.watch.load(Ordering::Relaxed) / side.unit()) & COUNT_MASK
    }

    /// Whether a poller armed the bell to sleep and no ring came since.
    pub fn armed(&self) -> bool {
        self.word.load(Ordering::Relaxed) & SLEEPING != 0
    }

    /// The bell word now, for a spinning watcher.
    #[inline]
    pub fn peek(&self) -> u32 {
        // SYNC: peek (Acquire) <-> ring's SeqCst CAS: a rung value brings the change with it.
        self.word.load(Ordering::Acquire)
    }

    /// Sets the sleeping flag; returns the value to sleep on. Check the channels once more
    /// after it, then sleep only while the word holds this value.
    pub fn arm(&self) -> u32 {
        // SYNC: arm (SeqCst RMW) <-> ring's SeqCst CAS: a ring before it is read here (and
        // the re-check sees its change); one after it sees the flag and wakes us.
        self.word.fetch_or(SLEEPING, Ordering::SeqCst) | SLEEPING
    }

    /// What rang between two values of the bell word (the sleeping flag ignored). An
    /// announcement counts as a ring, and so does the ring after it (the flag cleared, the
    /// ring number kept).
    pub const fn rings_since(old: u32, new: u32) -> Rings {
        if old & !SLEEPING == new & !SLEEPING {
            return Rings::None;
        }
        let step = (new >> SEQ_SHIFT).wrapping_sub(old >> SEQ_SHIFT) & SEQ_MASK;
        if step == 1 || (step == 0 && old & ANNOUNCED != 0 && new & HINT_MASK == old & HINT_MASK) {
            Rings::One(new & HINT_MASK)
        } else {
            Rings::Many
        }
    }
}
