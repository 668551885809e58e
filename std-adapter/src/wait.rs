//! Blocking: timeouts, deadlines, and waiting that spins briefly, yields, then sleeps on a
//! shared futex in the pool file.
//!
//! # Algorithm
//! A blocking call converts its [`Timeout`] into a deadline once (`Instant::now() + t`), then:
//! 1. tries the core's try-once operation (a blocking receive whose readiness hint,
//!    `Channel::may_recv`, says "nothing yet" skips this try);
//! 2. polls the hint (`may_recv` / `may_send`: one word of the awaited slot) for about
//!    [`SPIN_FOR`] with a `spin_loop` hint between polls, then after each `yield_now` until
//!    [`YIELD_FOR`] has passed, and tries again whenever the hint says so or every
//!    [`TRY_EVERY`] polls (a peer that is about to answer costs no futex call, and one that
//!    shares our CPU gets to run). Polling the hint rather than retrying matters: a failed
//!    receive reads the tail word, and a waiter that keeps taking that line from the sender
//!    makes every message pay a cache-line round trip;
//! 3. sleeps: registers on the core's event words (`Channel::recv_event` for receivers,
//!    `send_event` for senders, the pool's free counter for allocations), tries once more,
//!    and waits on the word with `FUTEX_WAIT` (shared, not `FUTEX_PRIVATE`, since the word lives
//!    in a `MAP_SHARED` file mapping seen by other processes) while it still holds the value
//!    read at registration, for at most [`SLEEP_SLICE`]; then unregisters and tries again.
//!
//! A successful send calls `recv_event().notify()` and makes the `FUTEX_WAKE` system call only
//! when it reports a registered sleeper; a successful receive does the same on the send
//! event. "Register, then check" against "change, then look for sleepers" is the core's
//! `Event` protocol (SeqCst on both sides), so no wake-up is lost; the sleep slice bounds the
//! damage of a peer that died between changing the queue and waking.
//!
//! The sleep slice also makes a sleeper re-check periodically: an operation that meets a slot
//! or lock held too long by one party gets `Stalled { owner }` from the core; if the owner's
//! process is dead the adapter runs recovery and retries at once, otherwise it keeps waiting.

use core::time::Duration;
use std::time::Instant;

use dragon_channels_core::channel::Event;
use dragon_channels_core::{
    Channel as CoreChannel, ChannelError as CoreChannelError, Pool as CorePool,
    PoolError as CorePoolError,
};
use rustix::thread::futex;
use spin::relax::{RelaxStrategy, Spin};

use crate::error::{Error, Op, from_core};
use crate::pool::PoolInner;
use crate::sync::{AtomicU32, Ordering};

/// How long a blocked call spins (CPU spin hints between polls) before it starts yielding.
/// Short, because a peer that shares the CPU cannot answer while we spin.
pub const SPIN_FOR: Duration = Duration::from_micros(2);
/// Polls of the readiness hint between two reads of the clock while spinning (one CPU spin
/// hint, about 20 ns on this project's x86 machines, between two polls).
const CLOCK_EVERY: u32 = 16;
/// Polls between two full tries even when the hint says "not yet".
const TRY_EVERY: u32 = 64;
/// How long a blocked call keeps trying (spinning, then yielding between tries) before it
/// sleeps: longer than a futex wake-up takes, so two parties that answer each other quickly
/// stay awake.
pub const YIELD_FOR: Duration = Duration::from_micros(100);
/// Longest single futex sleep: a sleeper re-checks at least this often (dead peers, lost
/// wake-ups of crashed wakers).
pub const SLEEP_SLICE: Duration = Duration::from_millis(100);

/// How long a send or receive may wait (the seed's `blocking` and `timeout` arguments).
///
/// `Duration::ZERO` is the same as [`Timeout::Try`]. Negative timeouts, which the seed
/// rejects at run time, cannot be expressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timeout {
    /// Use the handle's default (`USE_CHANNEL_SENDH_DEFAULT` / `USE_CHANNEL_RECVH_DEFAULT`).
    #[default]
    Default,
    /// Block until the operation can complete (`timeout=None`).
    Block,
    /// Try once (`blocking=False` or `timeout=0`): a full or empty channel gives
    /// [`Error::ChannelFull`] / [`Error::ChannelEmpty`], not a timeout.
    Try,
    /// Wait at most this long, then fail with [`Error::ChannelTimeout`].
    After(Duration),
}

impl From<Duration> for Timeout {
    fn from(d: Duration) -> Self {
        Self::After(d)
    }
}

impl From<Option<Duration>> for Timeout {
    /// `None` blocks forever (the seed's `timeout=None`).
    fn from(d: Option<Duration>) -> Self {
        d.map_or(Self::Block, Self::After)
    }
}

/// When a blocking call gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    Try,
    Never,
    At(Instant),
}

impl Deadline {
    fn passed(self, now: Instant) -> bool {
        match self {
            Self::Try => true,
            Self::Never => false,
            Self::At(t) => now >= t,
        }
    }

    /// How long to sleep now: the time left, at most one slice.
    fn slice(self, now: Instant) -> Duration {
        match self {
            Self::Try => Duration::ZERO,
            Self::Never => SLEEP_SLICE,
            Self::At(t) => t.saturating_duration_since(now).min(SLEEP_SLICE),
        }
    }
}

impl Timeout {
    /// The deadline of a call made now with this timeout; `default` stands in for
    /// [`Timeout::Default`] (a handle default of `Default` means block).
    pub(crate) fn deadline(self, default: Timeout) -> Deadline {
        let t = match self {
            Self::Default => default,
            t => t,
        };
        match t {
            Self::Default | Self::Block => Deadline::Never,
            Self::Try => Deadline::Try,
            Self::After(d) if d.is_zero() => Deadline::Try,
            Self::After(d) => Instant::now()
                .checked_add(d)
                .map_or(Deadline::Never, Deadline::At),
        }
    }
}

/// What a blocked call waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A free slot (senders; receivers notify).
    Slot,
    /// A message (receivers; senders notify).
    Message,
    /// Pool memory (anyone; frees notify).
    PoolSpace,
}

/// The words one kind of waiter registers on and sleeps on.
enum Sleeper<'a> {
    Event(Event<'a>),
    PoolFree(&'a CorePool),
}

impl Sleeper<'_> {
    fn register(&self) -> u32 {
        match self {
            Self::Event(e) => e.register(),
            Self::PoolFree(p) => {
                // SYNC: register (SeqCst) <-> the freer's fence + waiter load in
                // `PoolInner::wake_free_waiters`.
                p.free_waiters().fetch_add(1, Ordering::SeqCst);
                p.free_seq().load(Ordering::SeqCst)
            }
        }
    }

    fn unregister(&self) {
        match self {
            Self::Event(e) => e.unregister(),
            Self::PoolFree(p) => {
                // Relaxed: the count only decides whether a freer makes the wake system
                // call; a stale value costs at most one spurious wake.
                let _ = p
                    .free_waiters()
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1));
            }
        }
    }

    fn word(&self) -> &AtomicU32 {
        match self {
            Self::Event(e) => e.word(),
            Self::PoolFree(p) => p.free_seq(),
        }
    }
}

/// Sleeps on a shared futex word while it holds `expected`, at most `d`.
pub(crate) fn sleep_on(word: &AtomicU32, expected: u32, d: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    };
    // AGAIN (the word changed), TIMEDOUT and INTR all mean "check again".
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// Wakes up to `n` sleepers on a shared futex word.
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

/// Tells sleepers on `ev` that its condition changed; wakes one if any registered.
pub(crate) fn notify(ev: Event<'_>) {
    if ev.notify() {
        wake(ev.word(), 1);
    }
}

/// Where a blocking operation runs: the pool (recovery, pool-space waits) and the channel
/// (event words, channel recovery).
pub(crate) struct Ctx<'a> {
    pub(crate) pool: &'a PoolInner,
    pub(crate) ch: Option<&'a CoreChannel>,
    pub(crate) op: Op,
}

enum Step<T> {
    Done(Result<T, Error>),
    Busy(Wait),
}

impl Ctx<'_> {
    fn sleeper(&self, w: Wait) -> Sleeper<'_> {
        match (w, self.ch) {
            (Wait::Slot, Some(ch)) => Sleeper::Event(ch.send_event()),
            (Wait::Message, Some(ch)) => Sleeper::Event(ch.recv_event()),
            _ => Sleeper::PoolFree(&self.pool.core),
        }
    }

    /// What a stalled (live) party makes us wait for.
    fn own_wait(&self) -> Wait {
        match self.op {
            Op::Send => Wait::Slot,
            Op::Recv => Wait::Message,
            Op::Other => Wait::PoolSpace,
        }
    }

    fn busy_error(&self, w: Wait) -> Error {
        match w {
            Wait::Slot => Error::ChannelFull,
            Wait::Message => Error::ChannelEmpty,
            Wait::PoolSpace => {
                from_core(CoreChannelError::Pool(CorePoolError::OutOfSpace), self.op)
            }
        }
    }

    /// The core's cheap readiness hint for what `w` waits for (`true`: worth a try).
    fn may_proceed(&self, w: Wait) -> bool {
        match (w, self.ch) {
            (Wait::Message, Some(ch)) => ch.may_recv(),
            (Wait::Slot, Some(ch)) => ch.may_send(),
            _ => true,
        }
    }

    /// One try, with recovery when it stalls on a dead party (a claimed slot, or the pool
    /// lock inside a channel operation).
    fn attempt<T>(&self, op: &mut impl FnMut() -> Result<T, CoreChannelError>) -> Step<T> {
        let r = op();
        self.attempt_from(r, op)
    }

    /// [`Ctx::attempt`] for a try whose result `r` is already known.
    fn attempt_from<T>(
        &self,
        mut r: Result<T, CoreChannelError>,
        op: &mut impl FnMut() -> Result<T, CoreChannelError>,
    ) -> Step<T> {
        loop {
            match r {
                Ok(v) => return Step::Done(Ok(v)),
                Err(CoreChannelError::Full) => return Step::Busy(Wait::Slot),
                Err(CoreChannelError::Empty) => return Step::Busy(Wait::Message),
                Err(CoreChannelError::Pool(CorePoolError::OutOfSpace)) => {
                    return Step::Busy(Wait::PoolSpace);
                }
                Err(
                    CoreChannelError::Stalled { owner }
                    | CoreChannelError::Pool(CorePoolError::Stalled { owner }),
                ) => {
                    // Owner 0: the holder let go as the core gave up; just try again.
                    if owner == 0 || self.pool.is_alive(owner) {
                        return Step::Busy(self.own_wait());
                    }
                    if let Err(e) = self.pool.recover(self.ch) {
                        return Step::Done(Err(e.into()));
                    }
                }
                Err(e) => return Step::Done(Err(from_core(e, self.op))),
            }
            r = op();
        }
    }

    /// Runs `op` (a core try-once operation) until it completes, fails, or `deadline`
    /// passes. Busy results are `Full`, `Empty` and pool `OutOfSpace`; with a try-once
    /// deadline they are returned as `ChannelFull` / `ChannelEmpty` / the pool error, after
    /// that as `ChannelTimeout`.
    #[inline]
    pub(crate) fn block<T>(
        &self,
        deadline: Deadline,
        mut op: impl FnMut() -> Result<T, CoreChannelError>,
    ) -> Result<T, Error> {
        // The fast path, kept small (it is most of the cost of a message that does not wait):
        // one try, and on success the wake-up check. A blocking receive whose hint already
        // says "not yet" skips the try: a receive that finds the channel empty reads the tail
        // word (after a fence), and the sender then has to take that line back before its
        // message becomes visible, one more cache-line round trip on every message of a
        // ping-pong.
        let first =
            if self.op == Op::Recv && deadline != Deadline::Try && !self.may_proceed(Wait::Message)
            {
                None
            } else {
                match op() {
                    Ok(v) => {
                        self.notify_peers();
                        return Ok(v);
                    }
                    Err(e) => Some(e),
                }
            };
        self.block_slow(deadline, op, first)
    }

    /// [`Ctx::block`] after a first try that did not succeed (`first`; `None`: skipped).
    #[inline(never)]
    fn block_slow<T>(
        &self,
        deadline: Deadline,
        mut op: impl FnMut() -> Result<T, CoreChannelError>,
        first: Option<CoreChannelError>,
    ) -> Result<T, Error> {
        // What the last try waits for.
        let mut wait = match first {
            None => self.own_wait(),
            Some(e) => match self.attempt_from(Err(e), &mut op) {
                Step::Done(r) => return self.done(r),
                Step::Busy(w) if deadline == Deadline::Try => return Err(self.busy_error(w)),
                Step::Busy(w) => w,
            },
        };
        // Spin, then keep polling between yields (a peer on the same CPU gets to run), then
        // sleep. While spinning, poll the core's readiness hint, which reads one word of the
        // slot we wait for and nothing the other side writes on its way: a full try also
        // reads the tail/head word the sender writes, and a poller that keeps taking those
        // lines back makes every send pay for them (measured: the core's two-process
        // ping-pong went from 2.7x to 1.6x the raw-atomic floor when its receiver polled the
        // hint instead of retrying). A try still runs every `TRY_EVERY` polls, so a stalled
        // or dead party is noticed.
        let spin_start = Instant::now();
        let mut spun = Duration::ZERO;
        let mut polls = 0u32;
        loop {
            polls = polls.wrapping_add(1);
            if spun < SPIN_FOR {
                Spin::relax();
            } else {
                std::thread::yield_now();
            }
            if polls.is_multiple_of(TRY_EVERY) || self.may_proceed(wait) {
                match self.attempt(&mut op) {
                    Step::Done(r) => return self.done(r),
                    Step::Busy(w) => wait = w,
                }
            }
            // Reading the clock costs about as much as a try: while spinning, look at it
            // every few polls only (`perf record` showed 16 % of a ping-pong in
            // `clock_gettime` when it was read on every try); after each yield always.
            if spun >= SPIN_FOR || polls.is_multiple_of(CLOCK_EVERY) {
                let now = Instant::now();
                if deadline.passed(now) {
                    return Err(Error::ChannelTimeout);
                }
                spun = now.saturating_duration_since(spin_start);
                if spun >= YIELD_FOR {
                    break;
                }
            }
        }
        // Sleep.
        loop {
            let sleeper = self.sleeper(wait);
            let seen = sleeper.register();
            match self.attempt(&mut op) {
                Step::Done(r) => {
                    sleeper.unregister();
                    return self.done(r);
                }
                Step::Busy(w) if w != wait => {
                    sleeper.unregister();
                    wait = w;
                    continue;
                }
                Step::Busy(_) => {}
            }
            let now = Instant::now();
            if deadline.passed(now) {
                sleeper.unregister();
                return Err(Error::ChannelTimeout);
            }
            sleep_on(sleeper.word(), seen, deadline.slice(now));
            sleeper.unregister();
            match self.attempt(&mut op) {
                Step::Done(r) => return self.done(r),
                Step::Busy(w) => wait = w,
            }
            if deadline.passed(Instant::now()) {
                return Err(Error::ChannelTimeout);
            }
        }
    }

    /// After a completed operation: wake the other side.
    fn done<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_ok() {
            self.notify_peers();
        }
        r
    }

    /// After a successful operation: wake sleepers of the other side, if any registered.
    #[inline]
    fn notify_peers(&self) {
        if let Some(ch) = self.ch {
            match self.op {
                Op::Send => notify(ch.recv_event()),
                Op::Recv => {
                    // SYNC: `Event::notify` begins with a SeqCst fence, after any free the
                    // receive made: it pairs with pool-space sleepers' SeqCst register.
                    notify(ch.send_event());
                    self.pool.wake_free_waiters_fenced();
                }
                Op::Other => {}
            }
        }
    }
}
