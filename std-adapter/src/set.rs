//! [`ChannelSet`]: one thread waits for an event on any of many channels (in one or several
//! pools) with one sleep.
//!
//! # How it waits, and why no event is lost and no sender blocks
//! A set keeps nothing in the channels: no registration records, no per-set event queue.
//! [`ChannelSet::poll`] checks each channel's condition (the set's event mask: IN, OUT,
//! INOUT, EMPTY or FULL, answered by the core's try-once poll), starting after the channel it
//! reported last so that a busy channel cannot starve the others. If none holds, it spins and
//! yields for a while as a blocking receive does (per [`WaitMode`]), then registers as a
//! [`Waiter::All`] waiter on each channel's event word that can make its condition hold
//! (the receive event for IN and FULL, the send event for OUT and EMPTY), checks every
//! condition once more, and sleeps on all those words at once with `futex_waitv`.
//!
//! The conditions are levels, not edges: a message sent while nobody polls is still queued
//! when the next poll looks, so it is reported then (Dragon's sets lose it unless senders
//! are made to wait for a poller, its `DRAGON_SYNC` mode). A sender only notifies, as it
//! does for a blocked receiver: it finds a registered waiter, bumps the word and makes one
//! `FUTEX_WAKE`; it never waits for the set. The `Event` protocol (register, re-check,
//! sleep against change, then look for waiters) makes a wake-up impossible to miss, and
//! since the set registers as "all", a send wakes it even when blocked receivers sleep on the
//! same word. Reporting a channel does not consume anything: the caller receives (or sends)
//! next; another party may have been faster, so a try-once receive after a poll can find the
//! channel empty.
//!
//! # More than 128 words
//! `futex_waitv` takes at most 128 words. A set needing more sleeps on the first 127 plus a
//! process-local bell word, and starts one helper thread per further group of 127 words
//! that sleeps on its group plus the bell; whichever wakes first rings the bell, which wakes
//! the rest, and the helpers end. So a set of any size still sleeps until an event, at the
//! cost of one thread per 127 words while it sleeps.
//!
//! # Channels destroyed, parties dying
//! A destroyed channel (its destroy wakes every sleeper) is reported once as
//! [`SetEvent::Destroyed`] and then left out of the set. A sender that dies between claiming
//! a slot and publishing it leaves IN false on that channel: after [`HOLDER_WAIT`] the poll
//! checks whether the claimant lives and recovers the channel if it does not. A poller that
//! dies while registered leaves its registration counted: senders then wake sleepers they
//! did not need to, never fewer.

use core::sync::atomic::Ordering;
use core::time::Duration;
use std::time::Instant;

use dragon_channels_core::{Awaits, ChannelError as CoreChannelError, Event, Poll, Polled, Waiter};
use rustix::thread::futex;

use crate::channel::Channel;
use crate::error::{Error, Op, Reason, from_core};
use crate::sync::AtomicU32;
use crate::wait::{self, HOLDER_WAIT, SLEEP_SLICE, STALL_SLICE, Timeout, WaitMode, YIELD_FOR};

/// Spin-phase polls between two reads of the clock.
const CLOCK_EVERY: u32 = 16;
/// Spin-phase polls between two looks for destroyed channels.
const DESTROYED_EVERY: u32 = 64;

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
}

struct Entry {
    ch: Channel,
    /// Since when IN has been false with a message position claimed at the head.
    stuck: Option<Instant>,
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
        };
        for ch in channels {
            set.add(ch)?;
        }
        Ok(set)
    }

    /// Adds a channel; returns its index.
    ///
    /// # Errors
    /// [`Error::ChannelDestroyed`]; [`Error::ChannelError`] for a semaphore channel.
    pub fn add(&mut self, ch: &Channel) -> Result<usize, Error> {
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
        Ok(self.entries.len() - 1)
    }

    /// Removes the channel at `index`; returns it (`None` if there is none there).
    pub fn remove(&mut self, index: usize) -> Option<Channel> {
        self.entries.get_mut(index)?.take().map(|e| e.ch)
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
        if let Some(ev) = self.check()? {
            return Ok(ev);
        }
        // Spin, then yield, as a blocking receive does: polling each channel's readiness hint
        // (one word the other side writes only when it completes), an exact look only at a
        // channel whose hint says so, the clock every few polls while spinning (reading it
        // costs about as much as a look at one channel).
        let start = Instant::now();
        let spin_for = if mode == WaitMode::Idle {
            Duration::ZERO
        } else {
            wait::spin_budget()
        };
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
            if let Some(i) = self.hinted(polls.is_multiple_of(DESTROYED_EVERY)) {
                self.next = i;
                if let Some(ev) = self.check_one(i)? {
                    wait::spin_outcome(spin_for, spun < spin_for);
                    return Ok(ev);
                }
                // A hint that did not hold: the next look starts after it, so one channel
                // whose hint misleads cannot hide the others.
                self.next = i + 1;
            }
            if spun >= spin_for || polls.is_multiple_of(CLOCK_EVERY) {
                let now = Instant::now();
                if deadline.passed(now) {
                    return Err(Error::ChannelTimeout);
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

    /// The first channel (from where the next look starts) whose cheap readiness hint says
    /// "look": for IN (OUT) one word of the head (tail) slot, which a sender (receiver) writes
    /// only when it completes, so a spinning poller does not pull the lines the other side
    /// works on (see `wait.rs`); with `destroyed`, also one that was destroyed (its state
    /// word). Masks without a hint always look.
    fn hinted(&self, destroyed: bool) -> Option<usize> {
        let hint: fn(&Channel) -> bool = match self.mask {
            Poll::In => |c| c.core.may_recv(),
            Poll::Out => |c| c.core.may_send(),
            _ => return Some(self.next % self.entries.len().max(1)),
        };
        let n = self.entries.len();
        (0..n).map(|k| (self.next + k) % n).find(|&i| {
            self.entries[i].as_ref().is_some_and(|e| {
                hint(&e.ch) || (destroyed && e.ch.core.try_poll(Poll::Capacity).is_err())
            })
        })
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

    /// One exact look at the channel at `i` (for the spinning poller, whose hint named it: a
    /// hint that does not hold costs one look, not one per channel).
    fn check_one(&mut self, i: usize) -> Result<Option<SetEvent>, Error> {
        let Some(e) = self.entries.get_mut(i).and_then(Option::as_mut) else {
            return Ok(None);
        };
        let Some(found) = readiness(e, self.mask)? else {
            return Ok(None);
        };
        if found == SetEventKind::Destroyed {
            self.entries[i] = None;
        }
        self.next = i + 1;
        Ok(Some(SetEvent {
            index: i,
            kind: found,
        }))
    }

    /// Registers on every word, checks once more, sleeps until a word changes or a slice
    /// passes, unregisters.
    fn sleep(&mut self, deadline: wait::Deadline) -> Result<Option<SetEvent>, Error> {
        let mask = self.mask;
        let mut regs: Vec<(Event<'_>, u32)> = Vec::new();
        // The entry of each registered word, to look there first after a wake-up.
        let mut owners: Vec<usize> = Vec::new();
        let mut stuck = false;
        for (i, e) in self.entries.iter().enumerate() {
            let Some(e) = e else { continue };
            stuck |= e.stuck.is_some();
            for ev in events(&e.ch, mask) {
                let seen = ev.register(Waiter::All);
                regs.push((ev, seen));
                owners.push(i);
            }
        }
        // Re-check after registering: a change made before it is seen here, one made after
        // it bumps a word and wakes us (the `Event` protocol).
        let ready = self.any_ready();
        let mut woke = None;
        if matches!(ready, Ok(false)) {
            let now = Instant::now();
            let mut slice = deadline.slice(now);
            if stuck {
                slice = slice.min(STALL_SLICE);
            }
            if !slice.is_zero() {
                woke = sleep_on_all(&regs, slice);
            }
        }
        for (ev, _) in &regs {
            ev.unregister(Waiter::All);
        }
        drop(regs);
        ready?;
        // Start looking at the channel whose word woke us (futex_waitv says which).
        if let Some(&i) = woke.and_then(|w| owners.get(w)) {
            self.next = i;
        }
        self.check()
    }

    /// Whether some channel's condition holds (or it was destroyed), without changing the
    /// set (the registrations borrow its channels).
    fn any_ready(&self) -> Result<bool, Error> {
        for e in self.entries.iter().flatten() {
            match e.ch.core.try_poll(self.mask) {
                Ok(_) | Err(CoreChannelError::Destroyed) => return Ok(true),
                Err(CoreChannelError::NotReady(_)) => {}
                Err(err) => return Err(from_core(err, Op::Poll(self.mask))),
            }
        }
        Ok(false)
    }
}

/// The event words whose change can make `mask` hold on `ch`.
fn events(ch: &Channel, mask: Poll) -> impl Iterator<Item = Event<'_>> {
    let core = &ch.core;
    let (recv, send) = match mask {
        Poll::In | Poll::Full => (true, false),
        Poll::Out | Poll::Empty => (false, true),
        _ => (true, true),
    };
    recv.then(|| core.recv_event())
        .into_iter()
        .chain(send.then(|| core.send_event()))
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
                    wait::notify_all(e.ch.core.recv_event());
                    wait::notify_all(e.ch.core.send_event());
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

/// Sleeps until one of the words no longer holds its registered value, or `slice` passes.
/// Returns the index of the word that woke it, when one call waited on all of them and the
/// kernel said.
fn sleep_on_all(regs: &[(Event<'_>, u32)], slice: Duration) -> Option<usize> {
    let words: Vec<(&AtomicU32, u32)> = regs.iter().map(|(ev, v)| (ev.word(), *v)).collect();
    sleep_on_words(&words, slice)
}

/// [`sleep_on_all`] over plain words, each with the value to sleep on (the async waiter's
/// sleep, `crate::reactor`).
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
