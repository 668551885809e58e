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
//! 3. sleeps: registers on the core's events (`Channel::recv_event` for receivers,
//!    `send_event` for senders, `Pool::free_event` for allocations), tries once more,
//!    and waits on the word with `FUTEX_WAIT` (shared, not `FUTEX_PRIVATE`, since the word lives
//!    in a `MAP_SHARED` file mapping seen by other processes) while it still holds the value
//!    read at registration, for at most [`SLEEP_SLICE`]; then tries again, still registered
//!    (it unregisters when it leaves), so a woken receiver counts as blocked until it has
//!    its message.
//!
//! A try-once send that finds its channel full while receivers sleep on it does not fail at
//! once: the sends that filled the channel woke those receivers, so it waits (yielding, then
//! napping) for one of them to make room, at most [`HANDOFF_WAIT`] (`Ctx::hand_over`).
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
//!
//! # Parties in the middle of a step
//! A `Stalled { owner }` answer is checked at once against the party table (pid and start
//! time, see `party`), then at most every [`CHECK_EVERY`] for the same owner: reading
//! `/proc` costs some microseconds, and a waiter that checks after every try keeps a busy
//! machine busier. While the owner lives (it was preempted) the caller lets it run: it yields
//! a few times, then naps [`HOLDER_NAP`] between tries rather than spin or yield, so that on
//! a machine with fewer cores than runnable processes the holder gets a CPU. After
//! [`HOLDER_WAIT`] a try-once send or receive reports the channel busy and a blocking one
//! sleeps on its event for at most [`STALL_SLICE`] at a time, one try and one liveness check
//! per slice: the [`HOLDER_WAIT`] window is counted once per call, not once per try. A pool
//! operation (allocation, channel attach or create) keeps waiting for a live holder of the
//! pool lock, as long as it lives: "out of space" would be wrong there. Together these bound the
//! time from a holder's death to its recovery by about [`CHECK_EVERY`] + [`HOLDER_NAP`] for a
//! caller in its first [`HOLDER_WAIT`] and by [`STALL_SLICE`] for a sleeper.

use core::time::Duration;
use std::time::Instant;

use dragon_channels_core::{
    Awaits, Channel as CoreChannel, ChannelError as CoreChannelError, Event, Notice,
    PoolError as CorePoolError, Side, Waiter, Wake,
};
use rustix::thread::futex;
use spin::relax::{RelaxStrategy, Spin};

use crate::error::{Error, Op, from_core};
use crate::pool::PoolInner;
use crate::sync::{AtomicI32, AtomicU32, Ordering};

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
/// How long a call keeps retrying (yielding) while a live party is in the middle of the step
/// it needs, before it treats the channel as busy (a try-once call then reports full or
/// empty; a blocking one waits): far longer than a step takes unless its party was
/// preempted.
pub const HOLDER_WAIT: Duration = Duration::from_millis(50);
/// Longest futex sleep while the last try met a party in the middle of a step: if that party
/// dies it never notifies, so the sleeper checks again this often (this bounds the time from
/// a death to recovery while everyone else sleeps).
pub const STALL_SLICE: Duration = Duration::from_millis(2);
/// Least time between two liveness checks of the same owner by one call (the first check is
/// at once): a check reads `/proc/<pid>/stat`, some microseconds of system time.
pub const CHECK_EVERY: Duration = Duration::from_micros(200);
/// Tries, each after a `yield_now`, that a call makes behind a live party mid-step before it
/// naps between tries instead.
const HOLDER_YIELDS: u32 = 4;
/// Nap between two tries behind a live party mid-step, after [`HOLDER_YIELDS`] yields: the
/// holder was preempted, and on a machine with fewer cores than runnable processes a waiter
/// that keeps spinning or yielding delays it further.
pub const HOLDER_NAP: Duration = Duration::from_micros(100);

/// Longest wait of a try-once send that found its channel full while receivers sleep on it
/// (see `Ctx::hand_over`): far longer than a woken receiver takes to run (measured: a 1 ms
/// bound let 2 of 300 hand-overs in `tests/waiting.rs` fail, 10 ms none of 500, 200 of them
/// with both vCPUs kept busy), and short enough that a registration left by a receiver that
/// died asleep costs a try-once send into that full channel little. Futures, streams and the
/// gateway make try-once sends too: they may wait this long.
pub const HANDOFF_WAIT: Duration = Duration::from_millis(10);
/// Nap between two tries of such a send after [`HOLDER_YIELDS`] yields: short, since a woken
/// receiver takes some microseconds to make room.
const HANDOFF_NAP: Duration = Duration::from_micros(20);

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
    /// [`Error::ChannelFull`] / [`Error::ChannelEmpty`], not a timeout. A send into a full
    /// channel on which receivers sleep hands its message over instead: it waits for one of
    /// them (woken by the sends that filled it) to make room, at most [`HANDOFF_WAIT`].
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

/// How a blocked call waits (Dragon's `wait_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaitMode {
    /// Spin, then yield between tries, then sleep on the futex (the default): a peer that
    /// answers within [`YIELD_FOR`] costs no system call, one that takes longer costs no CPU.
    #[default]
    Adaptive,
    /// Never sleep: keep trying, spinning briefly then yielding between tries (lowest
    /// latency, one CPU busy for the whole wait).
    Spin,
    /// Sleep on the futex after one try (no CPU while waiting; every wake-up costs the
    /// kernel's).
    Idle,
}

/// When a blocking call gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    Try,
    Never,
    At(Instant),
}

impl Deadline {
    pub(crate) fn passed(self, now: Instant) -> bool {
        match self {
            Self::Try => true,
            Self::Never => false,
            Self::At(t) => now >= t,
        }
    }

    /// How long to sleep now: the time left, at most one slice.
    pub(crate) fn slice(self, now: Instant) -> Duration {
        match self {
            Self::Try => Duration::ZERO,
            Self::Never => SLEEP_SLICE,
            Self::At(t) => t.saturating_duration_since(now).min(SLEEP_SLICE),
        }
    }
}

impl Timeout {
    /// Whether this timeout (`default` standing in for [`Timeout::Default`]) means "try once".
    #[inline]
    pub(crate) fn is_try(self, default: Timeout) -> bool {
        let t = if self == Self::Default { default } else { self };
        matches!(t, Self::Try) || t == Self::After(Duration::ZERO)
    }

    /// This timeout with `default` standing in for [`Timeout::Default`] (a default of
    /// `Default` means block).
    pub(crate) fn or(self, default: Timeout) -> Timeout {
        match (self, default) {
            (Self::Default, Self::Default) => Self::Block,
            (Self::Default, d) => d,
            (t, _) => t,
        }
    }

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

/// Which try of a blocking call an operation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The first try of a call that may wait: a receive may use the core's lazy variant,
    /// which reports "looks empty" without confirming it (the waiting that follows does).
    First,
    /// Any other try: exact (it tells an empty channel from a stalled sender).
    Again,
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
    /// A poll's condition (the operations named notify).
    Poll(Awaits),
}

/// Whether spinning has been paying off for this process's waits: each wait that ended while
/// it spun counts up, each that ended only after yielding or sleeping counts down (within
/// `-SPIN_SCORE_BOUND..=SPIN_SCORE_BOUND`; a probe that pays while the score is negative
/// sets it back to zero). While it is below zero a wait starts yielding at once: with more runnable processes than CPUs (eight barrier parties on two vCPUs), a waiter
/// that spins holds the CPU the party it waits for needs (measured: an 8-party barrier round
/// 25-55 us with the spin, 6.5 us yielding at once). Every [`SPIN_PROBE_EVERY`]th wait spins
/// anyway, so the score recovers when spinning pays again. A process-wide hint: updated only
/// on the slow path, read once per wait.
static SPIN_SCORE: AtomicI32 = AtomicI32::new(0);
/// How far [`SPIN_SCORE`] goes either way.
const SPIN_SCORE_BOUND: i32 = 8;
/// Waits between two that spin whatever the score says.
const SPIN_PROBE_EVERY: u32 = 32;
/// Counts waits, for [`SPIN_PROBE_EVERY`].
static WAITS: AtomicU32 = AtomicU32::new(0);

/// How long the wait starting now spins before it yields: [`SPIN_FOR`], or nothing while
/// spinning has not been paying off (see [`SPIN_SCORE`]).
pub(crate) fn spin_budget() -> Duration {
    // Plain loads and stores, no locked instruction: a lost update among racing threads only
    // blurs a hint.
    let n = WAITS.load(Ordering::Relaxed);
    WAITS.store(n.wrapping_add(1), Ordering::Relaxed);
    let probe = n.is_multiple_of(SPIN_PROBE_EVERY);
    if probe || SPIN_SCORE.load(Ordering::Relaxed) >= 0 {
        SPIN_FOR
    } else {
        Duration::ZERO
    }
}

/// Records how a wait that was given `spin_for` to spin ended: while it still spun
/// (`while_spinning`) or later. A wait that did not spin tells nothing about spinning.
pub(crate) fn spin_outcome(spin_for: Duration, while_spinning: bool) {
    if spin_for.is_zero() {
        return;
    }
    let s = SPIN_SCORE.load(Ordering::Relaxed);
    // A spin that paid while the score said not to (a probe) trusts spinning again at once:
    // two processes that answer each other quickly must not stay stuck yielding because each
    // made the other slow once (a partner that was still starting up, say).
    let next = match (while_spinning, s < 0) {
        (true, true) => 0,
        (true, false) => (s + 1).min(SPIN_SCORE_BOUND),
        (false, _) => (s - 1).max(-SPIN_SCORE_BOUND),
    };
    if next != s {
        SPIN_SCORE.store(next, Ordering::Relaxed);
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

/// Wakes up to `n` sleepers on a shared futex word (`u32::MAX`: all of them); returns how
/// many it woke.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    // The kernel reads the count as a C `int`: `u32::MAX` would be -1, which wakes one
    // sleeper only. `i32::MAX` wakes them all (glibc's broadcasts pass `INT_MAX`).
    futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32)).unwrap_or(0)
}

/// Tells sleepers on `ch`'s event of `side` (the receive event for [`Side::Arrived`], the
/// send event for [`Side::Freed`]) that its condition changed: wakes whom the event says (one
/// sleeper, or all when a poller waits there), and rings the pool's doorbell for channel-set
/// pollers that watch it (`Channel::notify`: one test when nobody waits or watches).
#[inline(always)]
pub(crate) fn notify(ch: &CoreChannel, side: Side) {
    if let Some(n) = ch.notify(side) {
        notified(ch, side, n);
    }
}

/// The system calls a notify asked for (out of line: the common case makes none).
#[cold]
#[inline(never)]
fn notified(ch: &CoreChannel, side: Side, n: Notice) {
    woken(ch.event(side), n.wake);
    if n.bell {
        wake(ch.bell().word(), u32::MAX);
    }
}

/// [`notify`] for a change every sleeper must see (a barrier release, a semaphore at 0):
/// wakes all of them.
pub(crate) fn notify_all(ev: Event<'_>) {
    if ev.notify() != Wake::None {
        wake(ev.word(), u32::MAX);
    }
}

/// [`notify_all`] on both of `ch`'s events, and a ring of both sides of its doorbell: for a
/// change anybody waiting on the channel must see (destroyed, recovered, a barrier round).
pub(crate) fn notify_all_of(ch: &CoreChannel) {
    for (ev, side) in [
        (ch.recv_event(), Side::Arrived),
        (ch.send_event(), Side::Freed),
    ] {
        notify_all(ev);
        if ch.ring(side) {
            wake(ch.bell().word(), u32::MAX);
        }
    }
}

/// Tells sleepers on a pool's free event that memory was freed (they registered as
/// [`Waiter::All`]: each may wait for a different size). For a caller that has issued a SeqCst
/// fence after its frees.
pub(crate) fn notify_freed_fenced(ev: Event<'_>) {
    woken(ev, ev.notify_fenced());
}

/// Wakes whom a pool free's notify says (the fast path computed it without a fence: see the
/// core's `Event::notify_after_seqcst`).
pub(crate) fn notify_freed(ev: Event<'_>, w: Wake) {
    woken(ev, w);
}

/// Longest time a channel's destroy waits for its sleepers to leave its event words.
pub const DRAIN_FOR: Duration = Duration::from_millis(20);

/// Between marking a channel destroyed and freeing its memory: wakes every sleeper (bumping
/// the words, so one about to sleep does not) and waits, at most [`DRAIN_FOR`], until they
/// have unregistered; a sleeper's unregister must not land in memory that a new allocation
/// owns. A waiter that died registered leaves a count that never drops: the bound covers it.
pub(crate) fn drain_sleepers(ch: &CoreChannel) {
    let start = Instant::now();
    loop {
        notify_all_of(ch);
        let mut left = 0;
        for ev in [ch.recv_event(), ch.send_event()] {
            left += ev.waiters(Waiter::One) + ev.waiters(Waiter::All);
        }
        if left == 0 || start.elapsed() >= DRAIN_FOR {
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Makes the wake-up a notify asked for.
#[inline]
fn woken(ev: Event<'_>, w: Wake) {
    if w != Wake::None {
        wake(ev.word(), w.count());
    }
}

/// Where a blocking operation runs: the pool (recovery, pool-space waits) and the channel
/// (event words, channel recovery).
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) pool: &'a PoolInner,
    pub(crate) ch: Option<&'a CoreChannel>,
    pub(crate) op: Op,
    pub(crate) mode: WaitMode,
}

/// A call's record of live parties met in the middle of a step (a local of the slow path, not
/// part of `Ctx`: interior mutability there would keep the compiler from folding `Ctx::op` on
/// the fast path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stall {
    /// Since when this call's tries keep meeting live parties mid-step; `None` when the last
    /// try did not (then a sleeper sleeps [`STALL_SLICE`] at most: that party notifies when
    /// it finishes, but not if it dies).
    since: Option<Instant>,
    /// The owner last found alive, and when (it is checked again after [`CHECK_EVERY`]).
    checked: Option<(u32, Instant)>,
}

enum Step<T> {
    Done(Result<T, Error>),
    Busy(Wait),
}

impl<'a> Ctx<'a> {
    /// The context of a pool operation (an allocation, a channel's create or attach): no
    /// channel, waiting adaptively.
    pub(crate) fn pool_op(pool: &'a PoolInner) -> Self {
        Self {
            pool,
            ch: None,
            op: Op::Other,
            mode: WaitMode::Adaptive,
        }
    }
}

/// Lets another party run before the next try, the `tries`th: a yield for the first
/// [`HOLDER_YIELDS`], then a sleep of `nap` (on a machine with fewer cores than runnable
/// processes, a waiter that keeps yielding delays the party it waits for).
fn let_others_run(tries: u32, nap: Duration) {
    if tries < HOLDER_YIELDS {
        std::thread::yield_now();
    } else {
        std::thread::sleep(nap);
    }
}

impl Ctx<'_> {
    /// The event a waiter for `w` sleeps on, and how it registers there.
    fn sleeper(&self, w: Wait) -> (Event<'_>, Waiter) {
        let poller = match self.op {
            Op::Poll(p) => p.waiter(),
            _ => Waiter::All,
        };
        match (w, self.ch) {
            (Wait::Slot, Some(ch)) => (ch.send_event(), Waiter::One),
            (Wait::Message, Some(ch)) => (ch.recv_event(), Waiter::One),
            (Wait::Poll(Awaits::Send), Some(ch)) => (ch.recv_event(), poller),
            (Wait::Poll(Awaits::Receive), Some(ch)) => (ch.send_event(), poller),
            _ => (self.pool.core.free_event(), Waiter::All),
        }
    }

    /// What a stalled (live) party makes us wait for.
    fn own_wait(&self) -> Wait {
        match self.op {
            Op::Send => Wait::Slot,
            Op::Recv => Wait::Message,
            Op::Other => Wait::PoolSpace,
            // A barrier reset or release behind a party mid-step: the step's end notifies.
            Op::Poll(_) => Wait::Poll(Awaits::Receive),
        }
    }

    fn busy_error(&self, w: Wait) -> Error {
        match w {
            Wait::Slot => Error::ChannelFull,
            Wait::Message => Error::ChannelEmpty,
            Wait::PoolSpace => {
                from_core(CoreChannelError::Pool(CorePoolError::OutOfSpace), self.op)
            }
            Wait::Poll(_) => Error::ChannelTimeout,
        }
    }

    /// The core's cheap readiness hint for what `w` waits for (`true`: worth a try).
    #[inline]
    fn may_proceed(&self, w: Wait) -> bool {
        match (w, self.ch) {
            (Wait::Message, Some(ch)) => ch.may_recv(),
            (Wait::Slot, Some(ch)) => ch.may_send(),
            _ => true,
        }
    }

    /// One try, with recovery when it stalls on a dead party (a claimed slot, or the pool
    /// lock inside a channel operation).
    fn attempt<T>(
        &self,
        st: &mut Stall,
        op: &mut impl FnMut(Attempt) -> Result<T, CoreChannelError>,
    ) -> Step<T> {
        let r = op(Attempt::Again);
        self.attempt_from(st, r, op)
    }

    /// [`Ctx::attempt`] for a try whose result `r` is already known.
    fn attempt_from<T>(
        &self,
        st: &mut Stall,
        mut r: Result<T, CoreChannelError>,
        op: &mut impl FnMut(Attempt) -> Result<T, CoreChannelError>,
    ) -> Step<T> {
        let mut tries = 0u32;
        loop {
            let owner = match r {
                Err(
                    CoreChannelError::Stalled { owner }
                    | CoreChannelError::Pool(CorePoolError::Stalled { owner }),
                ) => owner,
                r => {
                    // Not held up by a party mid-step (any more).
                    *st = Stall::default();
                    return match r {
                        Ok(v) => Step::Done(Ok(v)),
                        Err(CoreChannelError::Full) => Step::Busy(Wait::Slot),
                        Err(CoreChannelError::Empty) => Step::Busy(Wait::Message),
                        Err(CoreChannelError::Pool(CorePoolError::OutOfSpace)) => {
                            Step::Busy(Wait::PoolSpace)
                        }
                        Err(CoreChannelError::NotReady(a)) => Step::Busy(Wait::Poll(a)),
                        Err(e) => Step::Done(Err(from_core(e, self.op))),
                    };
                }
            };
            // The core reports a party in the middle of the step we need after a few
            // microseconds: check whether it is alive, at once for an owner not checked
            // lately (owner 0: it let go as the core gave up). A dead one is recovered from
            // now, not after a sleep.
            let now = Instant::now();
            let due = st.checked.is_none_or(|(o, at)| {
                o != owner || now.saturating_duration_since(at) >= CHECK_EVERY
            });
            if owner != 0 && due && !self.pool.is_alive(owner) {
                *st = Stall::default();
                if let Err(e) = self.pool.recover(self.ch) {
                    return Step::Done(Err(e.into()));
                }
            } else {
                // A live one was preempted (a busy machine): let it run, and keep trying for
                // a while (counted once per call) before treating it as busy.
                if due {
                    st.checked = Some((owner, now));
                }
                let since = *st.since.get_or_insert(now);
                // A pool operation (allocation, attach, create) has nothing to call busy: it
                // waits for a live lock holder as long as it lives, as `PoolInner::retry`
                // does (napping, so the holder gets a CPU).
                if self.op != Op::Other && now.saturating_duration_since(since) >= HOLDER_WAIT {
                    return Step::Busy(self.own_wait());
                }
                let_others_run(tries, HOLDER_NAP);
                tries += 1;
            }
            r = op(Attempt::Again);
        }
    }

    /// Runs `op` (a core try-once operation) until it completes, fails, or `timeout`
    /// (`default` standing in for [`Timeout::Default`]) passes. Busy results are `Full`,
    /// `Empty` and pool `OutOfSpace`; with a try-once timeout they are returned as
    /// `ChannelFull` / `ChannelEmpty` / the pool error, after that as `ChannelTimeout`.
    #[inline]
    pub(crate) fn block<T>(
        &self,
        timeout: Timeout,
        default: Timeout,
        mut op: impl FnMut(Attempt) -> Result<T, CoreChannelError>,
    ) -> Result<T, Error> {
        // The fast path, kept small (it is most of the cost of a message that does not wait):
        // one try, and on success the wake-up check. The first try is `Attempt::First`: a
        // receive then reports a channel that looks empty at once, without the fence and tail
        // read that tell an empty channel from a sender mid-way (`Channel::try_recv_buf_lazy`):
        // the sender would otherwise have to take that line back before its message becomes
        // visible, one more cache-line round trip on every message of a ping-pong.
        match op(Attempt::First) {
            Ok(v) => {
                self.notify_peers();
                Ok(v)
            }
            Err(e) => self.block_after(timeout, default, e, op),
        }
    }

    /// [`Ctx::block`] after a first try (`Attempt::First`, made by the caller or by
    /// [`Ctx::block`]) that failed with `first`. The deadline is computed here, later than the
    /// call began, so a wait never ends early. A try-once call does not report "empty" on a
    /// lazy first try's word alone: one exact try tells an empty channel from a sender
    /// mid-way (and a dead one gets recovered).
    #[cold]
    pub(crate) fn block_after<T>(
        self,
        timeout: Timeout,
        default: Timeout,
        first: CoreChannelError,
        mut op: impl FnMut(Attempt) -> Result<T, CoreChannelError>,
    ) -> Result<T, Error> {
        let first = if first == CoreChannelError::Empty && timeout.is_try(default) {
            match op(Attempt::Again) {
                Ok(v) => return self.done(Ok(v)),
                Err(e) => e,
            }
        } else {
            first
        };
        self.block_slow(timeout.deadline(default), op, first)
    }

    /// The waiting of [`Ctx::block_after`], after a try that failed with `first`.
    #[inline(never)]
    fn block_slow<T>(
        self,
        deadline: Deadline,
        mut op: impl FnMut(Attempt) -> Result<T, CoreChannelError>,
        first: CoreChannelError,
    ) -> Result<T, Error> {
        let mut st = Stall::default();
        // What the last try waits for.
        let mut wait = match self.attempt_from(&mut st, Err(first), &mut op) {
            Step::Done(r) => return self.done(r),
            Step::Busy(Wait::Slot) if deadline == Deadline::Try => {
                return self.hand_over(&mut st, &mut op);
            }
            Step::Busy(w) if deadline == Deadline::Try => return Err(self.busy_error(w)),
            Step::Busy(w) => w,
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
        // An idle wait does not spin (and so says nothing about spinning).
        let spin_for = if self.mode == WaitMode::Idle {
            Duration::ZERO
        } else {
            spin_budget()
        };
        let mut spun = Duration::ZERO;
        let mut polls = 0u32;
        // Idle waiters go to sleep at once.
        let mut spinning = self.mode != WaitMode::Idle;
        while spinning {
            polls = polls.wrapping_add(1);
            if spun < spin_for {
                Spin::relax();
            } else {
                std::thread::yield_now();
            }
            if polls.is_multiple_of(TRY_EVERY) || self.may_proceed(wait) {
                match self.attempt(&mut st, &mut op) {
                    Step::Done(r) => {
                        spin_outcome(spin_for, spun < spin_for);
                        return self.done(r);
                    }
                    Step::Busy(w) => wait = w,
                }
            }
            // Reading the clock costs about as much as a try: while spinning, look at it
            // every few polls only (`perf record` showed 16 % of a ping-pong in
            // `clock_gettime` when it was read on every try); after each yield always.
            if spun >= spin_for || polls.is_multiple_of(CLOCK_EVERY) {
                let now = Instant::now();
                if deadline.passed(now) {
                    return Err(Error::ChannelTimeout);
                }
                spun = now.saturating_duration_since(spin_start);
                spinning = spun < YIELD_FOR || self.mode == WaitMode::Spin;
            }
        }
        // Sleep. A waiter stays registered from its first sleep until it leaves (done,
        // expired, or waiting for something else): a woken receiver counts as blocked until
        // it has taken its message or gone back to sleep, which a try-once send waiting for
        // it relies on (`Ctx::hand_over`). A notify meanwhile costs its sender one needless
        // wake.
        loop {
            let (sleeper, how) = self.sleeper(wait);
            let mut seen = sleeper.register(how);
            let left = loop {
                match self.attempt(&mut st, &mut op) {
                    Step::Done(r) => break Ok(r),
                    Step::Busy(w) if w != wait => break Err(Some(w)),
                    Step::Busy(_) => {}
                }
                let now = Instant::now();
                if deadline.passed(now) {
                    break Err(None);
                }
                let slice = deadline.slice(now);
                let slice = if st.since.is_some() {
                    slice.min(STALL_SLICE)
                } else {
                    slice
                };
                sleep_on(sleeper.word(), seen, slice);
                seen = sleeper.rearm();
            };
            sleeper.unregister(how);
            // Done, expired (`None`), or now waiting for something else.
            match left {
                Ok(r) => {
                    spin_outcome(spin_for, false);
                    return self.done(r);
                }
                Err(None) => return Err(Error::ChannelTimeout),
                Err(Some(w)) => wait = w,
            }
        }
    }

    /// A try-once send that found the channel full while receivers sleep on it: those
    /// receivers were woken by the sends that filled it (or are about to take a message
    /// anyway), so the channel is full only until they run. The send waits for one of them
    /// to make room, as a non-blocking send hands its value to a waiting receiver in Go, and
    /// fails with [`Error::ChannelFull`] once no receiver sleeps there or after
    /// [`HANDOFF_WAIT`] (a receiver that died asleep leaves its registration behind). It
    /// yields, then naps, so that on a machine with fewer cores than runnable processes the
    /// receivers get a CPU.
    #[cold]
    fn hand_over<T>(
        &self,
        st: &mut Stall,
        op: &mut impl FnMut(Attempt) -> Result<T, CoreChannelError>,
    ) -> Result<T, Error> {
        let receivers = |ctx: &Self| {
            ctx.ch
                .is_some_and(|ch| ch.recv_event().waiters(Waiter::One) > 0)
        };
        let start = Instant::now();
        let mut tries = 0u32;
        while receivers(self) && start.elapsed() < HANDOFF_WAIT {
            let_others_run(tries, HANDOFF_NAP);
            tries += 1;
            match self.attempt(st, op) {
                Step::Done(r) => return self.done(r),
                Step::Busy(Wait::Slot) => {}
                Step::Busy(w) => return Err(self.busy_error(w)),
            }
        }
        Err(Error::ChannelFull)
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
                Op::Send => notify(ch, Side::Arrived),
                // A receive that freed a side allocation also wakes pool-space waiters
                // (`Handle::freed_side`); an inline one frees nothing.
                Op::Recv => notify(ch, Side::Freed),
                // A poll's notifications depend on its answer: the caller makes them.
                Op::Other | Op::Poll(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `wake(word, u32::MAX)` wakes every sleeper. Passed to the kernel as is, the count read
    /// as -1 and woke one: a barrier release, an abort or a destroy left the other sleepers
    /// asleep for a whole [`SLEEP_SLICE`] (a barrier of 8 processes took 100 ms a round).
    #[test]
    fn wake_all_wakes_every_sleeper() {
        const SLEEPERS: usize = 4;
        let word = AtomicU32::new(0);
        let tids = std::sync::Mutex::new(Vec::new());
        // Whether thread `tid` sleeps in the kernel ('S' in its stat line).
        let asleep = |tid: i32| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).is_ok_and(|l| {
                l.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    == Some("S")
            })
        };
        std::thread::scope(|s| {
            for _ in 0..SLEEPERS {
                s.spawn(|| {
                    let tid = rustix::thread::gettid().as_raw_nonzero().get();
                    tids.lock().unwrap().push(tid);
                    // From here on, the futex is the only place this thread blocks.
                    while word.load(Ordering::Acquire) == 0 {
                        sleep_on(&word, 0, Duration::from_secs(3600));
                    }
                });
            }
            loop {
                let t = tids.lock().unwrap().clone();
                if t.len() == SLEEPERS && t.iter().all(|&tid| asleep(tid)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            word.store(1, Ordering::Release);
            let woken = wake(&word, u32::MAX);
            // Let every sleeper go before checking, so that a failure does not hang.
            for _ in 0..SLEEPERS {
                wake(&word, 1);
            }
            assert_eq!(
                woken, SLEEPERS,
                "a wake of all woke {woken} of {SLEEPERS} sleepers"
            );
        });
    }
}
