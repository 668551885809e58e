//! The async waiter: one background thread per process that sleeps on every event word that
//! futures of this process wait on, and wakes their [`Waker`]s when a word changes.
//!
//! How it works, what it does past 128 words, and what a dead process leaves: see
//! [`AsyncWaiter`] (public, so the docs are there).

use core::task::Waker;
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Instant;

use dragon_channels_core::{Event, Waiter};

use crate::channel::Channel;
use crate::error::{Error, MemoryPoolError};
use crate::sync::{AtomicU32, Ordering, fence};
use crate::wait::{self, SLEEP_SLICE};

#[cfg(doc)]
use crate::set::FUTEX_WAITV_MAX;

/// How long the waiter thread stays after the last future stopped waiting, before it ends:
/// a process that keeps awaiting (a ping-pong, a server between requests) does not start a
/// thread for every message.
pub const LINGER: Duration = Duration::from_secs(1);

/// What a future waits for: which event word of its channel it watches (for a channel's
/// two events, what `dragon_channels_core::Side` names the doorbell's sides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Awaited {
    /// A message (the channel's receive event: senders notify).
    Message,
    /// A free slot (the channel's send event: receivers notify).
    Slot,
    /// Pool memory (the pool's free event: frees notify).
    PoolSpace,
}

impl Awaited {
    /// The event `ch` notifies on for this side.
    fn event(self, ch: &Channel) -> Event<'_> {
        match self {
            Self::Message => ch.core.recv_event(),
            Self::Slot => ch.core.send_event(),
            Self::PoolSpace => ch.pool.inner.core.free_event(),
        }
    }
}

/// A future's place in the table (dropping it does not cancel: call [`cancel`]).
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    key: usize,
}

/// One watched word: the channel that holds it (keeping its pool mapped) and the futures
/// waiting there.
struct Watch {
    ch: Channel,
    side: Awaited,
    entries: Vec<Entry>,
}

impl Watch {
    fn event(&self) -> Event<'_> {
        self.side.event(&self.ch)
    }
}

/// A waiting future: the word's value when it joined, and its waker.
struct Entry {
    id: u64,
    seen: u32,
    waker: Waker,
}

#[derive(Default)]
struct Table {
    /// Watched words by address (the address is stable while `Watch::ch` keeps the pool
    /// mapped).
    watches: HashMap<usize, Watch>,
    /// Channels of words that left the table since the waiter last looked: the waiter may be
    /// asleep on those words, so their pools stay mapped until it wakes and drops these.
    retired: Vec<Channel>,
    /// Registrations made so far; the last one's id.
    next_id: u64,
    /// Whether a waiter thread runs (it clears this, under the lock, as it ends).
    running: bool,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);

/// Rung (bumped and woken) when a word joins the table, so that the waiter sleeps on it too.
static BELL: AtomicU32 = AtomicU32::new(0);

fn table() -> MutexGuard<'static, Table> {
    // A panic while holding the lock leaves the table consistent (every change to it is one
    // push, remove or retain): keep using it.
    TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The async waiter of this process: one background thread that sleeps on every event word
/// the process's futures wait on. [`AsyncWaiter::now`] says what it is doing (for tests and
/// monitoring).
///
/// # Registration
/// A future that finds its channel busy (empty, full, or its pool out of space) calls
/// `register` with the channel, the side it waits for and its waker. The process keeps
/// one table, keyed by event word (`Channel::recv_event` for a message, `send_event` for a
/// free slot, the pool's `free_event` for pool memory). The first future on a word registers
/// the process there as one [`Waiter::All`] waiter (the core's `Event` protocol, the same
/// registration blocking calls and channel sets make): so a send, receive or free that
/// changes the word's condition bumps the word and wakes sleepers, whoever they are. Later
/// futures on the same word only join the table. Each entry records the word's value when it
/// joined (after the process's registration); the future then tries its operation once more
/// ("register, re-check, sleep") and returns `Pending` only if it is still busy. A change made
/// after the entry's value was read changes the word, and the waiter sees that the word no
/// longer holds the entry's value: no wake-up is lost. The last entry leaving a word
/// unregisters the process there, so senders go back to making no wake call at all.
///
/// # The waiter thread
/// Started by the first registration (the fast path, a message already there or a slot
/// free, never gets here), it loops: under the table's lock it reads each word, takes out the
/// entries whose word no longer holds their value (their wakers are called after the lock is
/// released), unregisters words that have no entries left, and collects the rest with their
/// current values; then it sleeps on all of them plus a process-local bell word (rung when a
/// new word joins the table) with `futex_waitv` until one changes, at most
/// [`SLEEP_SLICE`]. When no future has waited for [`LINGER`] it ends; the next registration
/// starts a new one.
///
/// # More than 128 words
/// `futex_waitv` takes at most [`FUTEX_WAITV_MAX`] words per call. With more, the waiter
/// sleeps as a channel set does (`set::sleep_on_words`): on the first 127 words plus a bell
/// in one call, and for each further group of 127 words in one scoped helper thread started
/// for that sleep; the first to wake rings the bell, which wakes the others, and the helpers
/// end before the waiter looks at the table. So a process whose futures wait on more than
/// 127 words runs `ceil(words / 127)` threads while they sleep; every wake-up re-spawns the
/// helpers.
///
/// # What a waiter that dies, or a future that goes away, leaves
/// Nothing outlives the process: the registration counts of a process killed while its
/// futures wait stay one too high on each watched word, which costs notifiers a wake call
/// they did not need, never a lost one (as for a killed blocking receiver). A future dropped
/// while pending removes its entry at once (`cancel`); its waker is called after that only if
/// the waiter had already taken it out (once, spuriously).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncWaiter {
    /// Futures waiting now (each pending send or receive future, stream or sink).
    pub waiting: usize,
    /// Event words it watches (one per channel and side that futures wait on).
    pub words: usize,
    /// Whether its thread runs (it stays [`LINGER`] after the last future stopped waiting).
    pub running: bool,
    /// Registrations since the process started (a future that completes at its first try
    /// makes none).
    pub registrations: u64,
}

impl AsyncWaiter {
    /// The waiter's state now.
    pub fn now() -> Self {
        let t = table();
        Self {
            waiting: t.watches.values().map(|w| w.entries.len()).sum(),
            words: t.watches.len(),
            running: t.running,
            registrations: t.next_id,
        }
    }
}

/// Puts `waker` in the table for `side` of `ch`, or, when `prev` is still there, renews its
/// waker. The caller must try its operation again afterwards and wait only if that try is
/// still busy; then a change that makes it ready wakes `waker`.
///
/// # Errors
/// [`Error::MemoryPool`] with [`MemoryPoolError::Io`] when the waiter thread cannot be
/// started (the system is out of threads or memory); the future reports it.
pub(crate) fn register(
    ch: &Channel,
    side: Awaited,
    waker: &Waker,
    prev: Option<Registration>,
) -> Result<Registration, Error> {
    let key = side.event(ch).word().as_ptr() as usize;
    let mut t = table();
    if let Some(prev) = prev {
        if prev.key == key
            && let Some(e) = t
                .watches
                .get_mut(&prev.key)
                .and_then(|w| w.entries.iter_mut().find(|e| e.id == prev.id))
        {
            e.waker.clone_from(waker);
            return Ok(prev);
        }
        remove(&mut t, &prev);
    }
    if !t.running {
        std::thread::Builder::new()
            .name("dragon-async".into())
            .spawn(run)
            .map_err(|source| {
                Error::MemoryPool(MemoryPoolError::Io {
                    op: "start the async waiter thread",
                    name: ch.pool.name().to_owned(),
                    source,
                })
            })?;
        t.running = true;
    }
    t.next_id += 1;
    let id = t.next_id;
    let mut new_word = false;
    let watch = t.watches.entry(key).or_insert_with(|| {
        new_word = true;
        side.event(ch).register(Waiter::All);
        Watch {
            ch: ch.clone(),
            side,
            entries: Vec::new(),
        }
    });
    // SYNC: the process's register (SeqCst RMW, made by this or an earlier future under the
    // lock) <-> a notifier's fence + waiters load; this fence orders our caller's re-check
    // after it as if this thread had registered (fence <-> the notifier's fence).
    fence(Ordering::SeqCst);
    let seen = watch.event().word().load(Ordering::SeqCst);
    watch.entries.push(Entry {
        id,
        seen,
        waker: waker.clone(),
    });
    drop(t);
    if new_word {
        ring();
    }
    Ok(Registration { id, key })
}

/// Takes `reg` out of the table (a future that completed or was dropped). A registration the
/// waiter already took out (its word moved) is gone: nothing to do, and the waiter may still
/// call that waker once (a spurious wake-up).
pub(crate) fn cancel(reg: Registration) {
    let mut t = table();
    remove(&mut t, &reg);
}

fn remove(t: &mut Table, reg: &Registration) {
    let Some(w) = t.watches.get_mut(&reg.key) else {
        return;
    };
    w.entries.retain(|e| e.id != reg.id);
    if w.entries.is_empty() {
        w.event().unregister(Waiter::All);
        if let Some(w) = t.watches.remove(&reg.key) {
            t.retired.push(w.ch);
        }
    }
}

/// Wakes the waiter thread so that it looks at the table again.
fn ring() {
    // SYNC: bump (Release) <-> the waiter's load of the bell before it reads the table.
    BELL.fetch_add(1, Ordering::Release);
    wait::wake(&BELL, 1);
}

/// Marks the waiter thread gone if it unwinds (so that the next registration starts
/// another one instead of waiting for a thread that is not there).
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            table().running = false;
        }
    }
}

/// The waiter thread.
fn run() {
    let _running = Running;
    let mut idle_since: Option<Instant> = None;
    let mut wakers: Vec<Waker> = Vec::new();
    let mut words: Vec<(usize, u32)> = Vec::new();
    loop {
        // Read before the table: a word added after this read rings the bell, which then no
        // longer holds `bell`, so the sleep below returns at once.
        let bell = BELL.load(Ordering::Acquire);
        let mut t = table();
        let retired = core::mem::take(&mut t.retired);
        words.clear();
        let mut emptied = Vec::new();
        for (&key, w) in &mut t.watches {
            let cur = w.event().word().load(Ordering::Acquire);
            w.entries.retain_mut(|e| {
                if e.seen == cur {
                    return true;
                }
                wakers.push(e.waker.clone());
                false
            });
            if w.entries.is_empty() {
                w.event().unregister(Waiter::All);
                emptied.push(key);
            } else {
                words.push((key, cur));
            }
        }
        let mut gone: Vec<Channel> = emptied
            .iter()
            .filter_map(|k| t.watches.remove(k).map(|w| w.ch))
            .collect();
        // Idle only in a pass that wakes nobody: a pass that took the last entries out must
        // call their wakers (below) before the thread may end.
        if t.watches.is_empty() && wakers.is_empty() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= LINGER {
                t.running = false;
                drop(t);
                drop((retired, gone));
                return;
            }
        } else {
            idle_since = None;
        }
        // The channels of the words we are about to sleep on stay in the table, or move to
        // `retired` when their last future leaves, until the next pass: their pools stay
        // mapped while we sleep on them.
        drop(t);
        for w in wakers.drain(..) {
            // A waker is the executor's code: one that panics (an interpreter shutting down
            // under a Python waker, say) must not take the waiter of every other future
            // with it.
            let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| w.wake()));
        }
        drop(retired);
        gone.clear();
        let mut sleep: Vec<(&AtomicU32, u32)> = words
            .iter()
            .map(|&(key, v)| {
                // SAFETY: `key` is the address of an event word of a channel that was in the
                // table when read above; that channel (and so its pool's mapping) stays in the
                // table or in `retired`, which only this thread empties, on its next pass.
                (unsafe { &*(key as *const AtomicU32) }, v)
            })
            .collect();
        sleep.push((&BELL, bell));
        crate::set::sleep_on_words(&sleep, SLEEP_SLICE);
    }
}
