//! [`ChannelSet`]: one thread waits for an event on any of many channels (in one or several
//! pools) with one sleep.
//!
//! # How it waits, and why no event is lost and no sender blocks
//! A set keeps nothing in the channels: no registration records, no per-set event queue.
//! [`ChannelSet::poll`] watches the doorbell of each pool its channels live in (one word per
//! pool, `dragon_channels_core::Bell`), then checks each channel's condition (the set's event
//! mask: IN, OUT, INOUT, EMPTY or FULL, answered by the core's try-once poll), starting after
//! the channel it reported last so that a busy channel cannot starve the others. If none
//! holds, it spins and yields for a while as a blocking receive does (per [`WaitMode`]),
//! reading only the doorbells: every send (for IN and FULL) or receive (for OUT and EMPTY)
//! in a watched pool rings its doorbell with the channel's hint, so the poller looks at that
//! channel alone, however many channels the set has. A send also announces itself on the
//! doorbell before it publishes: the poller hears the hint while the message is being
//! written and reads that channel's readiness hint as it spins, until the next ring, so the
//! doorbell's cache line travels while the sender works rather than after it. (A set of at
//! most 32 channels waiting for IN or OUT spins on the channels' own readiness hints
//! instead: a few hints cost less than the doorbell's extra cache line.) Then it arms each
//! doorbell, checks every condition once more, and sleeps on the doorbells (one `futex_waitv`
//! word per pool). A larger set watches from its first poll until it is dropped, so the next
//! poll looks only at the channels that rang meanwhile, and at the one it reported last; a
//! small one watches only while it sleeps, so that senders do not ring while it spins.
//!
//! The conditions are levels, not edges: a message sent while nobody polls is still queued
//! when the next poll looks, so it is reported then (Dragon's sets lose it unless senders
//! are made to wait for a poller, its `DRAGON_SYNC` mode). A sender only rings, and makes one
//! `FUTEX_WAKE` when a poller sleeps; it never waits for the set. The doorbell protocol
//! (watch, then look; a notifier's fence, then its look for watchers; arm, look again, sleep
//! against the ring) makes a change impossible to miss. Rings that merge, or a hint shared by
//! two channels, cost looks at more channels, never a missed one; every few polls, and before
//! every sleep, the poller looks at every channel anyway. Reporting a channel does not consume
//! anything: the caller receives (or sends) next; another party may have been faster, so a
//! try-once receive after a poll can find the channel empty.
//!
//! While a set lives, every send (or receive, per its mask) in its pools rings (a load, then
//! one compare-and-swap, and a `FUTEX_WAKE` when the set sleeps; a send announces itself
//! too, one more compare-and-swap while no set of the pool sleeps); in a pool no set
//! watches, they pay a load of the watch word before and after the send, a line shared only
//! with values fixed when the pool was made.
//!
//! # More than 128 pools
//! `futex_waitv` takes at most 128 words. A set whose channels live in more pools sleeps on
//! the first 127 plus a process-local bell word, and starts one helper thread per further
//! group of 127 that sleeps on its group plus the bell; whichever wakes first rings the bell,
//! which wakes the rest, and the helpers end. A pool whose doorbell already counts
//! [`dragon_channels_core::MAX_WATCHERS`] pollers is scanned instead, with short sleeps.
//!
//! # Channels destroyed, parties dying
//! A destroyed channel (its destroy rings its doorbell) is reported once as
//! [`SetEvent::Destroyed`] and then left out of the set. A sender that dies between claiming
//! a slot and publishing it leaves IN false on that channel: after [`HOLDER_WAIT`] the poll
//! checks whether the claimant lives and recovers the channel if it does not. A poller that
//! dies while watching leaves its watch counted: senders in that pool then ring when nobody
//! listens (one compare-and-swap each), never less often than needed.

use core::sync::atomic::Ordering;
use core::time::Duration;
use std::time::Instant;

use dragon_channels_core::{
    Awaits, Bell, ChannelError as CoreChannelError, Poll, Polled, Rings, Side, TooManyWatchers,
};
use rustix::thread::futex;

use crate::channel::Channel;
use crate::error::{Error, Op, Reason, from_core};
use crate::pool::MemoryPool;
use crate::sync::AtomicU32;
use crate::wait::{self, HOLDER_WAIT, SLEEP_SLICE, STALL_SLICE, Timeout, WaitMode, YIELD_FOR};

/// Spin-phase polls between two reads of the clock.
const CLOCK_EVERY: u32 = 16;
/// Spin-phase polls between two scans of every channel (the doorbells' backstop).
const SCAN_EVERY: u32 = 64;
/// Sets of at most this many channels waiting for IN or OUT spin on the channels' readiness
/// hints rather than on the doorbells (measured: 16 hints cost what one does; 128 cost 2.3x
/// a blocking receive).
const HINT_SPIN_MAX: usize = 32;

/// Words one `futex_waitv` call can wait on (the kernel's limit).
pub const FUTEX_WAITV_MAX: usize = 128;

/// What a [`ChannelSet::poll`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetEvent {
    /// The channel's index in the set (as [`ChannelSet::add`] returned it).
    pub index: usize,
    /// What happened.
    pub kind: SetEventKind,
}

/// The kind of a [`SetEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetEventKind {
    /// The set's condition holds on the channel (IN, OUT, INOUT, EMPTY or FULL: the mask).
    Ready(Poll),
    /// The channel was destroyed; it is no longer in the set.
    Destroyed,
}

/// A set of channels polled together (Dragon's `ChannelSet`).
///
/// # Examples
/// ```
/// use dragon_channels::{Channel, ChannelSet, MemoryPool, Poll, SetEventKind, Timeout, WaitMode};
/// # let name = format!("doc-set-{}", std::process::id());
/// let pool = MemoryPool::create(1 << 20, &name, 0)?;
/// let chans: Vec<Channel> = (0..3).map(|i| Channel::create(&pool, i, None)).collect::<Result<_, _>>()?;
/// let mut set = ChannelSet::new(&chans, Poll::In)?;
/// let mut sendh = chans[2].sendh()?;
/// sendh.open()?;
/// sendh.send_bytes(b"x", 1, None, Timeout::Default)?;
/// let ev = set.poll(Timeout::Block, WaitMode::Adaptive)?;
/// assert_eq!((ev.index, ev.kind), (2, SetEventKind::Ready(Poll::In)));
/// # for c in chans { c.destroy()?; } pool.destroy()?;
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
pub struct ChannelSet {
    /// Channels by index; `None` once removed or reported destroyed.
    entries: Vec<Option<Entry>>,
    mask: Poll,
    /// Where the next poll starts looking (after the channel reported last).
    next: usize,
    /// The watch on the doorbells of the set's pools: from the first poll until the set is
    /// dropped or its channels change (`None` until the next poll then); a small set's only
    /// while it sleeps.
    watch: Option<Watch>,
    /// Channels that may be ready. Every other channel was found not ready by a look made
    /// while the set watched its doorbell, and has not rung since.
    pending: Pending,
}

struct Entry {
    ch: Channel,
    /// Since when IN has been false with a message position claimed at the head.
    stuck: Option<Instant>,
}

/// One pool of the set's channels: its doorbell, and which of its channels ring with which
/// hint.
struct PoolBell {
    /// Keeps the mapping, and with it the doorbell, for as long as the set watches it.
    pool: MemoryPool,
    /// `(hint, entry index)` of the pool's channels, sorted by hint.
    hints: Vec<(u32, usize)>,
}

impl PoolBell {
    fn bell(&self) -> Bell<'_> {
        self.pool.inner.core.bell()
    }
}

/// The set's watch on its pools' doorbells: counted as a watcher on each, with the value
/// each had when it was last looked at; uncounted when dropped.
struct Watch {
    bells: Vec<PoolBell>,
    /// The sides watched: what the event mask needs.
    sides: &'static [Side],
    seen: Vec<u32>,
    /// Bells that refused a watcher (full); their pools' channels are scanned instead.
    unwatched: Vec<bool>,
    /// The channels of the last lone ring heard: a sender announces its channel before it
    /// sends, so the spin phase keeps reading their readiness hints until the next ring.
    hot: Vec<usize>,
}

impl Watch {
    /// Watches the doorbell of every pool of `entries` for the changes that can make `mask`
    /// hold.
    fn new(entries: &[Option<Entry>], mask: Poll) -> Self {
        let sides: &'static [Side] = match mask {
            Poll::In | Poll::Full => &[Side::Arrived],
            Poll::Out | Poll::Empty => &[Side::Freed],
            _ => &[Side::Arrived, Side::Freed],
        };
        let mut bells: Vec<PoolBell> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let Some(e) = e else { continue };
            let hint = e.ch.core.bell().hint();
            let pool = &e.ch.pool;
            match bells
                .iter_mut()
                .find(|b| std::sync::Arc::ptr_eq(&b.pool.inner, &pool.inner))
            {
                Some(b) => b.hints.push((hint, i)),
                None => bells.push(PoolBell {
                    pool: pool.clone(),
                    hints: vec![(hint, i)],
                }),
            }
        }
        let mut seen = Vec::with_capacity(bells.len());
        let mut unwatched = Vec::with_capacity(bells.len());
        for b in &mut bells {
            b.hints.sort_unstable();
            let bell = b.bell();
            let mut watched = Ok(0);
            for (k, &side) in sides.iter().enumerate() {
                watched = bell.watch(side);
                if watched.is_err() {
                    // Not half watched: the pool is scanned instead.
                    for &done in &sides[..k] {
                        bell.unwatch(done);
                    }
                    break;
                }
            }
            seen.push(watched.unwrap_or(0));
            unwatched.push(watched == Err(TooManyWatchers));
        }
        Self {
            bells,
            sides,
            seen,
            unwatched,
            hot: Vec::new(),
        }
    }

    /// Whether some pool could not be watched: its channels must be scanned.
    fn partial(&self) -> bool {
        self.unwatched.iter().any(|&u| u)
    }

    /// Marks pending the channels whose ring a doorbell heard since the last look: those
    /// with the hint of a lone ring (they are hot then), every channel of a pool whose rings
    /// merged. Returns whether anything rang.
    fn hear(&mut self, pending: &mut Pending) -> bool {
        let mut rang = false;
        let hot = &mut self.hot;
        for (k, b) in self.bells.iter().enumerate() {
            if self.unwatched[k] {
                continue;
            }
            let now = b.bell().peek();
            let was = core::mem::replace(&mut self.seen[k], now);
            match Bell::rings_since(was, now) {
                Rings::None => {}
                Rings::One(hint) => {
                    if !rang {
                        hot.clear();
                    }
                    let from = b.hints.partition_point(|&(h, _)| h < hint);
                    for &(_, i) in b.hints[from..].iter().take_while(|&&(h, _)| h == hint) {
                        pending.set(i);
                        hot.push(i);
                    }
                    rang = true;
                }
                Rings::Many => {
                    if !rang {
                        hot.clear();
                    }
                    for &(_, i) in &b.hints {
                        pending.set(i);
                    }
                    rang = true;
                }
            }
        }
        rang
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for (b, &u) in self.bells.iter().zip(&self.unwatched) {
            if !u {
                for &side in self.sides {
                    b.bell().unwatch(side);
                }
            }
        }
    }
}

/// A set of entry indices (a bitmap).
#[derive(Default)]
struct Pending(Vec<u64>);

impl Pending {
    fn set(&mut self, i: usize) {
        let w = i / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    /// Every index below `n`.
    fn set_all(&mut self, n: usize) {
        self.0.clear();
        self.0.resize(n.div_ceil(64), u64::MAX);
    }

    /// The first index at or after `from` (below `n`), else the first from 0.
    fn first_from(&self, from: usize, n: usize) -> Option<usize> {
        let after = |start: usize| {
            let mut w = start / 64;
            let mut bits = self.0.get(w)? & (u64::MAX << (start % 64));
            loop {
                if bits != 0 {
                    let i = w * 64 + bits.trailing_zeros() as usize;
                    return (i < n).then_some(i);
                }
                w += 1;
                bits = *self.0.get(w)?;
            }
        };
        after(from.min(n)).or_else(|| after(0).filter(|&i| i < from))
    }
}

impl core::fmt::Debug for ChannelSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelSet")
            .field("channels", &self.len())
            .field("mask", &self.mask)
            .finish()
    }
}

/// Whether `mask` is one a set can wait for.
fn check_mask(mask: Poll) -> Result<(), Error> {
    match mask {
        Poll::In | Poll::Out | Poll::InOut | Poll::Empty | Poll::Full => Ok(()),
        _ => Err(Error::ChannelError(Reason::Core(
            CoreChannelError::BadOperation(
                "a channel set's event mask is one of In, Out, InOut, Empty, Full",
            ),
        ))),
    }
}

impl ChannelSet {
    /// A set over `channels` (indices `0..channels.len()`) waiting for `mask`.
    ///
    /// # Errors
    /// [`Error::ChannelError`] for a mask other than In, Out, InOut, Empty, Full, or a
    /// semaphore channel; [`Error::ChannelDestroyed`] for a destroyed channel.
    pub fn new(channels: &[Channel], mask: Poll) -> Result<Self, Error> {
        check_mask(mask)?;
        let mut set = Self {
            entries: Vec::with_capacity(channels.len()),
            mask,
            next: 0,
            watch: None,
            pending: Pending::default(),
        };
        for ch in channels {
            set.add(ch)?;
        }
        Ok(set)
    }

    /// Adds a channel; returns its index.
    ///
    /// # Errors
    /// [`Error::ChannelDestroyed`]; [`Error::ChannelError`] for a semaphore channel;
    /// [`Error::Remote`] for a channel on another node (sets watch local memory).
    pub fn add(&mut self, ch: &Channel) -> Result<usize, Error> {
        if ch.is_remote() {
            return Err(Error::Remote(crate::remote::RemoteError::LocalOnly(
                "a channel set (poll a remote channel with Channel::poll)",
            )));
        }
        ch.check_live()?;
        if ch.is_semaphore() {
            return Err(Error::ChannelError(Reason::Core(
                CoreChannelError::BadOperation("a semaphore channel cannot be in a channel set"),
            )));
        }
        self.entries.push(Some(Entry {
            ch: ch.clone(),
            stuck: None,
        }));
        self.watch = None;
        Ok(self.entries.len() - 1)
    }

    /// Removes the channel at `index`; returns it (`None` if there is none there).
    pub fn remove(&mut self, index: usize) -> Option<Channel> {
        let e = self.entries.get_mut(index)?.take()?;
        self.watch = None;
        Some(e.ch)
    }

    /// The channel at `index`, if it is in the set.
    pub fn get(&self, index: usize) -> Option<&Channel> {
        self.entries.get(index)?.as_ref().map(|e| &e.ch)
    }

    /// Channels in the set.
    pub fn len(&self) -> usize {
        self.entries.iter().flatten().count()
    }

    /// Whether no channel is in the set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The event mask.
    pub fn event_mask(&self) -> Poll {
        self.mask
    }

    /// Changes the event mask.
    ///
    /// # Errors
    /// As [`ChannelSet::new`].
    pub fn set_event_mask(&mut self, mask: Poll) -> Result<(), Error> {
        check_mask(mask)?;
        self.mask = mask;
        // Another mask may need other sides watched.
        self.watch = None;
        Ok(())
    }

    /// Waits until the mask's condition holds on a channel of the set, or one is destroyed,
    /// or `timeout` passes ([`Timeout::Default`] blocks).
    ///
    /// # Errors
    /// [`Error::ChannelTimeout`] (also for a try-once poll that found nothing);
    /// [`Error::ChannelError`] when the set is empty and the poll would wait forever.
    pub fn poll(&mut self, timeout: Timeout, mode: WaitMode) -> Result<SetEvent, Error> {
        if self.is_empty() {
            return Err(Error::ChannelError(Reason::Core(
                CoreChannelError::BadOperation(
                    "the channel set is empty: add a channel before polling it",
                ),
            )));
        }
        let deadline = timeout.deadline(Timeout::Block);
        // A small set waiting for IN or OUT reads its channels' readiness words and watches
        // the doorbells only while it sleeps (then senders do not ring while it spins); a
        // larger one watches them from its first poll until it is dropped.
        let small =
            matches!(self.mask, Poll::In | Poll::Out) && self.entries.len() <= HINT_SPIN_MAX;
        let r = self.poll_watching(deadline, mode, small);
        if small {
            self.watch = None;
        }
        r
    }

    /// [`ChannelSet::poll`]; `small`: the set spins on readiness words, not on doorbells.
    fn poll_watching(
        &mut self,
        deadline: wait::Deadline,
        mode: WaitMode,
        small: bool,
    ) -> Result<SetEvent, Error> {
        let first = if small {
            self.scan(false)?
        } else {
            if self.watch.is_none() {
                // Watch first, then look at everything: a change the look misses rings (see
                // `bell.rs`).
                self.watch = Some(Watch::new(&self.entries, self.mask));
                self.pending.set_all(self.entries.len());
            }
            self.look()?
        };
        if let Some(ev) = first {
            return Ok(ev);
        }
        // Spin, then yield, as a blocking receive does, reading one doorbell word per pool
        // (a small set: its channels' readiness words); a scan of every channel's readiness
        // hint now and then (always for a pool whose doorbell could not be watched), the clock
        // every few polls while spinning.
        let start = Instant::now();
        let spin_for = if mode == WaitMode::Idle {
            Duration::ZERO
        } else {
            wait::spin_budget()
        };
        let scan_always = small || self.watch.as_ref().is_some_and(Watch::partial);
        let mut spun = Duration::ZERO;
        let mut polls = 0u32;
        let mut spinning = mode != WaitMode::Idle;
        while spinning {
            polls = polls.wrapping_add(1);
            if spun < spin_for {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            let found = if scan_always {
                self.scan(polls.is_multiple_of(SCAN_EVERY))?
            } else {
                match self.look_hot()? {
                    None => match self.look()? {
                        None if polls.is_multiple_of(SCAN_EVERY) => self.scan(true)?,
                        found => found,
                    },
                    found => found,
                }
            };
            if let Some(ev) = found {
                wait::spin_outcome(spin_for, spun < spin_for);
                return Ok(ev);
            }
            if spun >= spin_for || polls.is_multiple_of(CLOCK_EVERY) {
                let now = Instant::now();
                if deadline.passed(now) {
                    // One exact look at everything before giving up (the readiness words do
                    // not show a destroyed channel, nor one stuck behind a dead sender).
                    return self.check()?.ok_or(Error::ChannelTimeout);
                }
                spun = now.saturating_duration_since(start);
                spinning = mode == WaitMode::Spin || spun < YIELD_FOR;
            }
        }
        loop {
            if let Some(ev) = self.sleep(deadline)? {
                wait::spin_outcome(spin_for, false);
                return Ok(ev);
            }
            if deadline.passed(Instant::now()) {
                return Err(Error::ChannelTimeout);
            }
        }
    }

    /// Hears the doorbells, then looks at each pending channel, from where the next look
    /// starts.
    fn look(&mut self) -> Result<Option<SetEvent>, Error> {
        if let Some(w) = self.watch.as_mut() {
            w.hear(&mut self.pending);
        }
        // Once around, from where the next look starts (a channel that stays pending, stuck
        // behind a sender that may have died, is looked at once).
        let n = self.entries.len();
        let mut from = self.next % n.max(1);
        let mut left = n;
        while let Some(i) = self.pending.first_from(from, n) {
            let step = (i + n - from) % n + 1;
            if step > left {
                break;
            }
            left -= step;
            if let Some(ev) = self.check_one(i)? {
                return Ok(Some(ev));
            }
            from = (i + 1) % n;
        }
        Ok(None)
    }

    /// Looks at the hot channels (those of the last lone ring) whose readiness hint says
    /// so: an announced change may have been made since the ring (see `bell.rs`).
    fn look_hot(&mut self) -> Result<Option<SetEvent>, Error> {
        // By index: `check_one` needs the set mutably (it may end the watch, emptying `hot`).
        for k in 0.. {
            let Some(&i) = self.watch.as_ref().and_then(|w| w.hot.get(k)) else {
                break;
            };
            if self.hint_says_look(i, false)
                && let Some(ev) = self.check_one(i)?
            {
                return Ok(Some(ev));
            }
        }
        Ok(None)
    }

    /// A scan of every channel's readiness hint (with `destroyed`, and of whether it was
    /// destroyed), from where the next look starts; an exact look where one says so. How a
    /// small set spins (a few hints cost less than the doorbell's extra cache line), the
    /// doorbells' backstop (rings merged beyond the ring number's range), and the only watch
    /// on a pool whose doorbell has no room for another watcher.
    fn scan(&mut self, destroyed: bool) -> Result<Option<SetEvent>, Error> {
        let n = self.entries.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.hint_says_look(i, destroyed)
                && let Some(ev) = self.check_one(i)?
            {
                return Ok(Some(ev));
            }
        }
        Ok(None)
    }

    /// Whether the cheap readiness hint of the channel at `i` says "look": for IN (OUT) one
    /// word of the head (tail) slot, which a sender (receiver) writes only when it completes,
    /// so a spinning poller does not pull the lines the other side works on (see `wait.rs`);
    /// with `destroyed`, also whether it was destroyed (its state word). Masks without a hint
    /// always look.
    fn hint_says_look(&self, i: usize, destroyed: bool) -> bool {
        let Some(e) = self.entries.get(i).and_then(Option::as_ref) else {
            return false;
        };
        let hinted = match self.mask {
            Poll::In => e.ch.core.may_recv(),
            Poll::Out => e.ch.core.may_send(),
            _ => true,
        };
        hinted || (destroyed && e.ch.core.try_poll(Poll::Capacity).is_err())
    }

    /// The channels in the set, in index order (the async poll registers on their words).
    pub(crate) fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.entries.iter().flatten().map(|e| &e.ch)
    }

    /// One look at every channel, starting after the one reported last.
    pub(crate) fn check(&mut self) -> Result<Option<SetEvent>, Error> {
        let n = self.entries.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if let Some(ev) = self.check_one(i)? {
                return Ok(Some(ev));
            }
        }
        Ok(None)
    }

    /// One exact look at the channel at `i`; a channel found not ready (nor stuck behind a
    /// sender that may have died) is no longer pending.
    fn check_one(&mut self, i: usize) -> Result<Option<SetEvent>, Error> {
        let Some(e) = self.entries.get_mut(i).and_then(Option::as_mut) else {
            self.pending.clear(i);
            return Ok(None);
        };
        let Some(found) = readiness(e, self.mask)? else {
            if e.stuck.is_none() {
                self.pending.clear(i);
            }
            return Ok(None);
        };
        if found == SetEventKind::Destroyed {
            self.entries[i] = None;
            self.watch = None;
        }
        // Still pending: the caller may leave it ready.
        self.next = i + 1;
        Ok(Some(SetEvent {
            index: i,
            kind: found,
        }))
    }

    /// Arms every doorbell, looks at every channel once more, sleeps until a doorbell rings
    /// or a slice passes, then looks where it rang.
    fn sleep(&mut self, deadline: wait::Deadline) -> Result<Option<SetEvent>, Error> {
        if self.watch.is_none() {
            // A small set starts watching now, before it arms and looks at everything.
            self.watch = Some(Watch::new(&self.entries, self.mask));
            self.pending.set_all(self.entries.len());
        }
        let armed: Vec<u32> = self.watch.as_ref().map_or_else(Vec::new, |w| {
            w.bells
                .iter()
                .zip(&w.unwatched)
                .map(|(b, &unwatched)| if unwatched { 0 } else { b.bell().arm() })
                .collect()
        });
        // Re-check after arming: a change made before it is seen here, one made after it
        // rings a doorbell, which finds the flag and wakes us (the `bell.rs` protocol). Every
        // channel, not only the pending ones: the backstop before a long sleep.
        if let Some(ev) = self.check()? {
            return Ok(Some(ev));
        }
        let stuck = self.entries.iter().flatten().any(|e| e.stuck.is_some());
        let mut slice = deadline.slice(Instant::now());
        let Some(w) = self.watch.as_ref() else {
            return Ok(None);
        };
        if stuck || w.partial() {
            slice = slice.min(STALL_SLICE);
        }
        if slice.is_zero() {
            return Ok(None);
        }
        let words: Vec<(&AtomicU32, u32)> = w
            .bells
            .iter()
            .zip(&w.unwatched)
            .zip(armed)
            .filter(|&((_, &unwatched), _)| !unwatched)
            .map(|((b, _), v)| (b.bell().word(), v))
            .collect();
        if words.is_empty() {
            std::thread::sleep(slice);
        } else {
            sleep_on_words(&words, slice);
        }
        self.look()
    }
}

/// Whether `mask` holds on `e`'s channel now; recovers a channel whose head was claimed by a
/// sender that died (after [`HOLDER_WAIT`] of seeing it stuck).
fn readiness(e: &mut Entry, mask: Poll) -> Result<Option<SetEventKind>, Error> {
    match e.ch.core.try_poll(mask) {
        Ok(Polled::Ready) => {
            e.stuck = None;
            Ok(Some(SetEventKind::Ready(ready_kind(&e.ch, mask))))
        }
        Ok(_) => Ok(None),
        Err(CoreChannelError::Destroyed) => Ok(Some(SetEventKind::Destroyed)),
        Err(CoreChannelError::NotReady(Awaits::Send)) if mask == Poll::In => {
            if e.ch.core.is_empty() {
                e.stuck = None;
                return Ok(None);
            }
            let since = *e.stuck.get_or_insert_with(Instant::now);
            if since.elapsed() >= HOLDER_WAIT {
                let (owner, _) = e.ch.core.claims();
                if owner != 0 && !e.ch.pool.inner.is_alive(owner) {
                    e.ch.recover()?;
                    // Sleepers of the channel re-check what recovery changed.
                    wait::notify_all_of(&e.ch.core);
                }
                e.stuck = Some(Instant::now());
            }
            Ok(None)
        }
        Err(CoreChannelError::NotReady(_)) => Ok(None),
        Err(err) => Err(from_core(err, Op::Poll(mask))),
    }
}

/// For an INOUT mask, which of the two holds (IN first).
fn ready_kind(ch: &Channel, mask: Poll) -> Poll {
    if mask != Poll::InOut {
        return mask;
    }
    if ch.core.may_recv() {
        Poll::In
    } else {
        Poll::Out
    }
}

/// Sleeps until one of the words no longer holds its value, or `slice` passes (a set's
/// doorbells; the async waiter's event words, `crate::reactor`). Returns the index of the word
/// that woke it, when one call waited on all of them and the kernel said.
pub(crate) fn sleep_on_words(words: &[(&AtomicU32, u32)], slice: Duration) -> Option<usize> {
    if words.len() <= FUTEX_WAITV_MAX {
        return waitv(words, slice);
    }
    // More words than one call takes: helpers sleep on the other groups; the first to wake
    // rings the bell, which wakes everyone else.
    let bell = AtomicU32::new(0);
    let group = FUTEX_WAITV_MAX - 1;
    let ring = |bell: &AtomicU32| {
        bell.fetch_add(1, Ordering::Release);
        wait::wake(bell, u32::MAX);
    };
    std::thread::scope(|s| {
        for chunk in words[group..].chunks(group) {
            let bell = &bell;
            s.spawn(move || {
                let mut mine: Vec<(&AtomicU32, u32)> = chunk.to_vec();
                mine.push((bell, 0));
                waitv(&mine, slice);
                ring(bell);
            });
        }
        let mut mine: Vec<(&AtomicU32, u32)> = words[..group].to_vec();
        mine.push((&bell, 0));
        waitv(&mine, slice);
        ring(&bell);
    });
    None
}

/// One `futex_waitv` on at most [`FUTEX_WAITV_MAX`] shared 32-bit words, for at most `d`.
/// Returns the index of the word whose wake-up ended it, if one did.
fn waitv(words: &[(&AtomicU32, u32)], d: Duration) -> Option<usize> {
    debug_assert!(words.len() <= FUTEX_WAITV_MAX);
    let waits: Vec<futex::Wait> = words
        .iter()
        .map(|(w, v)| {
            let mut f = futex::Wait::new();
            f.val = u64::from(*v);
            f.uaddr = futex::WaitPtr::new(w.as_ptr().cast());
            f.flags = futex::WaitFlags::SIZE_U32;
            f
        })
        .collect();
    // futex_waitv takes an absolute deadline on the clock it is given.
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let d = d.min(SLEEP_SLICE);
    let mut ts = rustix::time::Timespec {
        tv_sec: now.tv_sec + d.as_secs() as i64,
        tv_nsec: now.tv_nsec + i64::from(d.subsec_nanos()),
    };
    if ts.tv_nsec >= 1_000_000_000 {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1_000_000_000;
    }
    // A word that changed (EAGAIN), a wake-up, the deadline (ETIMEDOUT) or a signal (EINTR)
    // all mean "look again".
    let r = futex::waitv(
        &waits,
        futex::WaitvFlags::empty(),
        Some(&ts),
        rustix::time::ClockId::Monotonic,
    );
    if r == Err(rustix::io::Errno::NOSYS) {
        // A kernel before 5.16: sleep on the first word for a short slice; the others are
        // seen at the next look (slower wake-ups, never lost ones).
        let (w, v) = words[0];
        wait::sleep_on(w, v, d.min(STALL_SLICE));
    }
    r.ok()
}
