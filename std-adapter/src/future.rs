//! Async sends and receives: futures over the handles' try-once operations, woken by the
//! process's async waiter ([`crate::AsyncWaiter`]), on any executor (they use nothing but
//! [`core::task::Waker`]).
//!
//! What a future does while it waits, and what one that is dropped did or did not do: see
//! [`ChannelFuture`].

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::time::Instant;

use dragon_channels_core::PoolError as CorePoolError;

use crate::channel::Channel;
use crate::error::{Error, Reason};
use crate::handle::{ChannelRecvH, ChannelSendH, TransferError};
use crate::message::Message;
use crate::reactor::{self, Awaited, Registration};
use crate::set::{ChannelSet, SetEvent};
use crate::sync::{AtomicI32, AtomicU32, Ordering};
use crate::wait::{self, Timeout, WaitMode};

/// Tries a busy future makes in one poll, each after registering for what the last one
/// waited for, before it lets the executor poll it again later: a try that is busy for
/// another reason than the one before (a full channel, then an out-of-memory pool) registers
/// again.
const TRIES_PER_POLL: u32 = 4;

/// Longest spin of a future whose first try found its channel empty or full, before it
/// registers with the waiter ([`AsyncWait::set_spin`]): long enough to cover a peer that is
/// itself woken through its waiter thread and executor (measured 4-5 us a hop on this
/// project's 2-vCPU machine), so that two processes that answer each other quickly keep
/// spinning rather than make each other slow; short beside a timeslice.
pub const ASYNC_SPIN_FOR: Duration = Duration::from_micros(20);

/// Spin polls between two reads of the clock (as the wait layer's spin).
const SPIN_CLOCK_EVERY: u32 = 16;

/// One task's wait on a channel: the building block of the futures of this module, for
/// code that writes its own (the Python binding's asyncio support does).
///
/// [`AsyncWait::poll_op`] runs a try-once operation and, while it is busy, keeps the task's
/// waker registered with the process's async waiter. Dropping it (or [`AsyncWait::cancel`])
/// takes the registration out.
#[derive(Debug, Default)]
pub struct AsyncWait {
    reg: Option<Registration>,
    /// What the operation usually waits for (a receive: a message; a send: a slot): a poll
    /// whose readiness hint says "not yet" goes straight to its spin, without a first try.
    expect: Option<Awaited>,
    /// Whether a busy first try is followed by a short spin (see [`AsyncWait::set_spin`]).
    no_spin: bool,
}

/// What a busy try result waits for; `None` when the result is final.
fn busy<T>(r: &Result<T, Error>) -> Option<Awaited> {
    match r {
        Err(Error::ChannelEmpty) => Some(Awaited::Message),
        Err(Error::ChannelFull) => Some(Awaited::Slot),
        Err(
            Error::ChannelSendError(Reason::Pool(CorePoolError::OutOfSpace))
            | Error::ChannelRecvError(Reason::Pool(CorePoolError::OutOfSpace)),
        ) => Some(Awaited::PoolSpace),
        _ => None,
    }
}

impl AsyncWait {
    /// A wait that is not registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// A wait for an operation of a handle in wait mode `mode`: [`WaitMode::Idle`] never
    /// spins (see [`AsyncWait::set_spin`]).
    pub fn for_mode(mode: WaitMode) -> Self {
        let mut w = Self::new();
        w.set_spin(mode != WaitMode::Idle);
        w
    }

    /// A wait for a receive of a handle in wait mode `mode`: as [`AsyncWait::for_mode`],
    /// and a poll whose spin may run starts with it when the channel's readiness hint (one
    /// word of the head slot) says no message is there, rather than with a full try (which
    /// would read the line the sender writes; the try before registering is exact).
    pub fn receiving(mode: WaitMode) -> Self {
        let mut w = Self::for_mode(mode);
        w.expect = Some(Awaited::Message);
        w
    }

    /// A wait for a send of a handle in wait mode `mode`: as [`AsyncWait::receiving`], for a
    /// free slot.
    pub fn sending(mode: WaitMode) -> Self {
        let mut w = Self::for_mode(mode);
        w.expect = Some(Awaited::Slot);
        w
    }

    /// Whether a poll whose first try finds the channel empty or full spins briefly (at
    /// most [`ASYNC_SPIN_FOR`]: CPU spin hints for [`crate::SPIN_FOR`], then yielding the
    /// thread between polls; it polls the channel's readiness hint, one word of the awaited
    /// slot) before it registers and returns `Pending`: a peer that answers within that
    /// time (a ping-pong partner on another core) then costs no wake-up through the waiter
    /// thread and the executor. Only while spinning pays: a process-wide score (each spin
    /// that ended with the channel ready counts up, each that ran out counts down; every
    /// 32nd spins anyway) turns it off when waits are long, so a server whose futures
    /// mostly wait spends at most one spin in 32 on it; inside the spin, the wait layer's own
    /// score decides whether it starts with spin hints or yields at once (two processes
    /// sharing a CPU). On by default.
    pub fn set_spin(&mut self, spin: bool) {
        self.no_spin = !spin;
    }

    /// Runs `op`, a try-once operation on `ch` (a handle call with [`Timeout::Try`]). When it
    /// completes or fails for good, returns its result (and drops any registration); when it
    /// reports the channel busy ([`Error::ChannelEmpty`], [`Error::ChannelFull`], or pool
    /// memory exhausted), registers `cx`'s waker for the event that ends that, runs `op` once
    /// more, and returns `Pending` if it is still busy.
    ///
    /// `op` must change nothing when it reports busy (every handle operation with
    /// [`Timeout::Try`] is so). A channel on another node is refused with [`Error::Remote`]
    /// (`LocalOnly`): the waiter can only watch local memory.
    pub fn poll_op<T>(
        &mut self,
        ch: &Channel,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> Result<T, Error>,
    ) -> Poll<Result<T, Error>> {
        if ch.is_remote() {
            // Its words are the gateway channel's: nothing there says the far channel changed.
            return Poll::Ready(Err(Error::Remote(crate::remote::RemoteError::LocalOnly(
                "an async operation (use the blocking call on a thread of its own)",
            ))));
        }
        let mut r = match self.expect {
            // The hint says "not yet": the spin (or the exact try after registering) tries.
            Some(side) if !self.no_spin && !hint(ch, side) => Err(match side {
                Awaited::Message => Error::ChannelEmpty,
                _ => Error::ChannelFull,
            }),
            _ => op(),
        };
        if !self.no_spin
            && let Some(side @ (Awaited::Message | Awaited::Slot)) = busy(&r)
        {
            r = spin(ch, side, r, &mut op);
        }
        for _ in 0..TRIES_PER_POLL {
            let Some(side) = busy(&r) else {
                self.cancel();
                return Poll::Ready(r);
            };
            match reactor::register(ch, side, cx.waker(), self.reg.take()) {
                Ok(reg) => self.reg = Some(reg),
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Re-check after registering: a change made before the registration is seen
            // here, one made after it wakes us.
            r = op();
            if busy(&r) == Some(side) {
                return Poll::Pending;
            }
        }
        // Busy for another reason on every try: let the executor come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether a waker is registered.
    pub fn is_registered(&self) -> bool {
        self.reg.is_some()
    }

    /// Takes the registration out of the waiter's table. The waiter calls the waker at most
    /// once more, and only if it had already taken the entry out (the word moved) when this
    /// ran: a spurious wake-up, which executors ignore.
    pub fn cancel(&mut self) {
        if let Some(reg) = self.reg.take() {
            reactor::cancel(reg);
        }
    }
}

/// The core's cheap readiness hint for `side` of `ch` (`true`: worth a try).
fn hint(ch: &Channel, side: Awaited) -> bool {
    match side {
        Awaited::Message => ch.core.may_recv(),
        Awaited::Slot => ch.core.may_send(),
        Awaited::PoolSpace => true,
    }
}

/// Whether the async spin has been paying off in this process: each spin that ended with
/// the channel ready counts up, each that ran out counts down (within `-SCORE_BOUND..=
/// SCORE_BOUND`; a probe that pays while it is negative sets it back to zero). While it is
/// negative futures register at once, except every [`PROBE_EVERY`]th, which spins anyway.
/// A process-wide hint, as the wait layer's spin score (which decides, inside this spin,
/// how long to spin before yielding).
static ASYNC_SPIN_SCORE: AtomicI32 = AtomicI32::new(0);
/// How far [`ASYNC_SPIN_SCORE`] goes either way.
const SCORE_BOUND: i32 = 8;
/// Async spins between two that run whatever the score says.
const PROBE_EVERY: u32 = 32;
/// Counts async spins, for [`PROBE_EVERY`].
static ASYNC_SPINS: AtomicU32 = AtomicU32::new(0);

/// Whether the spin starting now runs (see [`ASYNC_SPIN_SCORE`]).
fn async_spin_pays() -> bool {
    // Plain loads and stores: a lost update among racing threads only blurs a hint.
    let n = ASYNC_SPINS.load(Ordering::Relaxed);
    ASYNC_SPINS.store(n.wrapping_add(1), Ordering::Relaxed);
    n.is_multiple_of(PROBE_EVERY) || ASYNC_SPIN_SCORE.load(Ordering::Relaxed) >= 0
}

/// Records how an async spin ended.
fn async_spin_outcome(paid: bool) {
    let s = ASYNC_SPIN_SCORE.load(Ordering::Relaxed);
    let next = match (paid, s < 0) {
        (true, true) => 0,
        (true, false) => (s + 1).min(SCORE_BOUND),
        (false, _) => (s - 1).max(-SCORE_BOUND),
    };
    if next != s {
        ASYNC_SPIN_SCORE.store(next, Ordering::Relaxed);
    }
}

/// Spins (CPU spin hints for the wait layer's [`crate::SPIN_FOR`], then `yield_now` between
/// polls) at most [`ASYNC_SPIN_FOR`], and not at all while spinning has not been paying (the
/// wait layer's process-wide score), polling `ch`'s readiness hint for `side` and trying `op`
/// when it says so; returns the last try's result (`busy_first` if there was none). Not at
/// all while the async spin has not been paying ([`ASYNC_SPIN_SCORE`]).
fn spin<T>(
    ch: &Channel,
    side: Awaited,
    busy_first: Result<T, Error>,
    op: &mut impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    if !async_spin_pays() {
        return busy_first;
    }
    let spin_for = wait::spin_budget();
    let hint = || hint(ch, side);
    let start = Instant::now();
    let mut r = busy_first;
    let mut polls = 0u32;
    let mut spun = Duration::ZERO;
    loop {
        if spun < spin_for {
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        polls = polls.wrapping_add(1);
        if hint() {
            r = op();
            if busy(&r) != Some(side) {
                wait::spin_outcome(spin_for, spun < spin_for);
                async_spin_outcome(true);
                return r;
            }
        }
        if spun >= spin_for || polls.is_multiple_of(SPIN_CLOCK_EVERY) {
            spun = start.elapsed();
            if spun >= ASYNC_SPIN_FOR {
                wait::spin_outcome(spin_for, false);
                async_spin_outcome(false);
                return r;
            }
        }
    }
}

impl Drop for AsyncWait {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The future of an async send or receive: a try-once operation `op` on a channel, polled
/// through an [`AsyncWait`]. Returned by the `*_async` methods of the handles.
///
/// # How a future waits
/// Each poll runs the handle's operation with [`Timeout::Try`]. When it completes (a message
/// was there, a slot was free) the future is ready and the waiter is never involved: that is
/// the fast path. When it is busy (the channel is empty or full, or the pool has no memory
/// for the payload) the future registers its waker with the process's one waiter thread on
/// the event word that the other side notifies (see [`crate::AsyncWaiter`]), tries once more, and
/// returns `Pending` only if that try is still busy. The waiter wakes it when the word
/// changes; it then tries again.
///
/// A try meets a sender or receiver of another process in the middle of its step only
/// rarely; then it behaves as a try-once call does ([`crate::HOLDER_WAIT`]): it checks that
/// party's liveness, recovers the channel if the party is dead, and otherwise waits for it
/// (yielding the thread, not the task) at most [`crate::HOLDER_WAIT`] before treating the
/// channel as busy.
///
/// # Timeouts
/// The futures have none: wrap them in the executor's timer, e.g.
/// `tokio::time::timeout(d, recvh.recv_async())`. When the timer fires it drops the future,
/// which is cancellation (below): nothing was received or sent.
///
/// # Cancellation
/// Every poll either completes the whole operation and returns `Ready`, or changes nothing
/// in the channel and returns `Pending`; the only state a pending future holds is its entry
/// in the waiter's table. Dropping a future that has not returned `Ready` therefore:
/// - for a receive: received nothing. Every message stays queued for the next receive; none
///   is lost or taken half-way. With [`ChannelRecvH::recv_into_async`], the destination
///   message is left as it was.
/// - for a send: sent nothing and holds no slot. [`ChannelSendH::send_transfer_async`]'s
///   message is dropped with the future (its memory goes back to the pool); the other forms
///   leave the caller's message (and a destination message) as they were.
/// - removes its waker from the waiter's table before the drop returns, and the last future
///   leaving an event word unregisters the process there (no stale registration is left for
///   senders to wake). The waker may be called once more, spuriously, if the waiter had
///   already taken it out because the word moved.
///
/// A future that returned `Ready(Ok)` completed its operation exactly once; one that
/// returned `Ready(Err)` did nothing (the error says why).
#[must_use = "futures do nothing unless awaited"]
pub struct ChannelFuture<'a, F> {
    ch: &'a Channel,
    op: F,
    wait: AsyncWait,
}

impl<F> core::fmt::Debug for ChannelFuture<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelFuture")
            .field("ch", self.ch)
            .field("wait", &self.wait)
            .finish()
    }
}

impl<T, F: FnMut() -> Result<T, Error> + Unpin> Future for ChannelFuture<'_, F> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.wait.poll_op(this.ch, cx, &mut this.op)
    }
}

fn future<T, F: FnMut() -> Result<T, Error> + Unpin>(
    ch: &Channel,
    wait: AsyncWait,
    op: F,
) -> ChannelFuture<'_, F> {
    ChannelFuture { ch, op, wait }
}

impl ChannelSendH {
    /// [`ChannelSendH::send`] as a future: sends a copy of `msg` (through `dest_msg` when
    /// given) once a slot is free.
    ///
    /// Dropped before it completes, it sent nothing (see [`ChannelFuture`]).
    ///
    /// # Examples
    /// ```
    /// use dragon_channels::{Channel, MemoryPool, Message};
    /// # let name = format!("doc-async-{}", std::process::id());
    /// let pool = MemoryPool::create(1 << 20, &name, 0)?;
    /// let ch = Channel::create(&pool, 1, None)?;
    /// let (mut sendh, mut recvh) = (ch.sendh()?, ch.recvh()?);
    /// sendh.open()?;
    /// recvh.open()?;
    /// let mut msg = Message::create_alloc(&pool, 5)?;
    /// msg.bytes_memview()?.copy_from_slice(b"hello");
    /// futures::executor::block_on(async {
    ///     sendh.send_async(&msg, None).await?;
    ///     let got = recvh.recv_async().await?;
    ///     assert_eq!(got.bytes()?, b"hello");
    ///     Ok::<(), dragon_channels::Error>(())
    /// })?;
    /// # drop((msg, sendh, recvh)); ch.destroy()?; pool.destroy()?;
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`ChannelSendH::send`], less the timeouts.
    pub fn send_async<'a>(
        &'a self,
        msg: &'a Message,
        mut dest_msg: Option<&'a mut Message>,
    ) -> ChannelFuture<'a, impl FnMut() -> Result<(), Error> + Unpin + 'a> {
        future(
            self.channel(),
            AsyncWait::sending(self.wait_mode()),
            move || self.send(msg, dest_msg.as_deref_mut(), Timeout::Try),
        )
    }

    /// [`ChannelSendH::send_bytes`] as a future.
    ///
    /// # Errors
    /// As [`ChannelSendH::send_bytes`], less the timeouts.
    pub fn send_bytes_async<'a>(
        &'a self,
        msg_bytes: &'a [u8],
        msg_len: usize,
        mut dest_msg: Option<&'a mut Message>,
    ) -> ChannelFuture<'a, impl FnMut() -> Result<(), Error> + Unpin + 'a> {
        future(
            self.channel(),
            AsyncWait::sending(self.wait_mode()),
            move || self.send_bytes(msg_bytes, msg_len, dest_msg.as_deref_mut(), Timeout::Try),
        )
    }

    /// [`ChannelSendH::send_transfer`] as a future: moves `msg`'s allocation into the
    /// channel. A failure hands the message back; a future dropped before it completes
    /// drops the message (its memory goes back to the pool) and sent nothing.
    ///
    /// # Errors
    /// As [`ChannelSendH::send_transfer`], less the timeouts.
    pub fn send_transfer_async(&self, msg: Message) -> TransferFuture<'_> {
        TransferFuture {
            h: self,
            msg: Some(msg),
            wait: AsyncWait::sending(self.wait_mode()),
        }
    }
}

/// The future of [`ChannelSendH::send_transfer_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct TransferFuture<'a> {
    h: &'a ChannelSendH,
    /// The message until it is sent (`None` after the future completed).
    msg: Option<Message>,
    wait: AsyncWait,
}

impl Future for TransferFuture<'_> {
    type Output = Result<(), TransferError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let h = this.h;
        let slot = &mut this.msg;
        let r = this.wait.poll_op(h.channel(), cx, || {
            let Some(m) = slot.take() else {
                // Polled again after it completed.
                return Err(Error::ChannelSendError(Reason::EmptyMessage));
            };
            h.send_transfer(m, Timeout::Try).map_err(|e| {
                // Busy or not, the message stays with the future until it completes.
                *slot = Some(e.message);
                e.error
            })
        });
        r.map(|r| {
            r.map_err(|error| TransferError {
                error,
                message: this.msg.take().unwrap_or_else(Message::create_empty),
            })
        })
    }
}

impl ChannelRecvH {
    /// [`ChannelRecvH::recv`] as a future: the next message, once there is one.
    ///
    /// Dropped before it completes, it received nothing: the message stays queued (see the
    /// [`ChannelFuture`]).
    ///
    /// # Errors
    /// As [`ChannelRecvH::recv`], less the timeouts.
    pub fn recv_async(&self) -> ChannelFuture<'_, impl FnMut() -> Result<Message, Error> + Unpin> {
        future(
            self.channel(),
            AsyncWait::receiving(self.wait_mode()),
            move || self.recv(Timeout::Try),
        )
    }

    /// [`ChannelRecvH::recv_into`] as a future. Dropped before it completes, it left
    /// `dest_msg` as it was.
    ///
    /// # Errors
    /// As [`ChannelRecvH::recv_into`], less the timeouts.
    pub fn recv_into_async<'a>(
        &'a self,
        dest_msg: &'a mut Message,
    ) -> ChannelFuture<'a, impl FnMut() -> Result<(), Error> + Unpin + 'a> {
        future(
            self.channel(),
            AsyncWait::receiving(self.wait_mode()),
            move || self.recv_into(&mut *dest_msg, Timeout::Try),
        )
    }

    /// [`ChannelRecvH::recv_bytes`] as a future.
    ///
    /// # Errors
    /// As [`ChannelRecvH::recv_bytes`], less the timeouts.
    pub fn recv_bytes_async(
        &self,
    ) -> ChannelFuture<'_, impl FnMut() -> Result<Vec<u8>, Error> + Unpin> {
        future(
            self.channel(),
            AsyncWait::receiving(self.wait_mode()),
            move || self.recv_bytes(Timeout::Try),
        )
    }
}

impl ChannelSet {
    /// [`ChannelSet::poll`] as a future: the next channel on which the set's condition holds
    /// (or that was destroyed). While nothing holds, the task's waker is registered with the
    /// process's async waiter on every event word the set's mask watches (as a blocking poll
    /// sleeps on them: two per channel for INOUT, one otherwise), so one waiter thread serves
    /// every set and future of the process.
    ///
    /// Reporting a channel consumes nothing, so a dropped poll future loses nothing: it
    /// takes its registrations out of the waiter's table when dropped.
    ///
    /// A sender that died between claiming the head slot of a channel in the set and
    /// publishing it keeps IN from holding there; the next send into that channel wakes the
    /// future, and a poll that has seen the head stuck for [`crate::HOLDER_WAIT`] recovers it.
    ///
    /// # Errors
    /// As [`ChannelSet::poll`], less the timeouts.
    pub fn poll_async(&mut self) -> SetPollFuture<'_> {
        SetPollFuture {
            set: self,
            regs: Vec::new(),
        }
    }
}

/// The future of [`ChannelSet::poll_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct SetPollFuture<'a> {
    set: &'a mut ChannelSet,
    /// One wait per watched word, in the order of [`set_sides`] over the set's channels.
    regs: Vec<AsyncWait>,
}

/// The words whose change can make `mask` hold: the receive event for IN and FULL, the send
/// event for OUT and EMPTY (the sides a set watches on its doorbells, `set.rs`).
fn set_sides(mask: dragon_channels_core::Poll) -> &'static [Awaited] {
    use dragon_channels_core::Poll as P;
    match mask {
        P::In | P::Full => &[Awaited::Message],
        P::Out | P::Empty => &[Awaited::Slot],
        _ => &[Awaited::Message, Awaited::Slot],
    }
}

impl Future for SetPollFuture<'_> {
    type Output = Result<SetEvent, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.set.is_empty() {
            // The blocking poll's answer for an empty set (an error, at once).
            return Poll::Ready(this.set.poll(Timeout::Try, crate::WaitMode::Idle));
        }
        match this.set.check() {
            Ok(None) => {}
            Ok(Some(ev)) => {
                this.regs.clear();
                return Poll::Ready(Ok(ev));
            }
            Err(e) => {
                this.regs.clear();
                return Poll::Ready(Err(e));
            }
        }
        let sides = set_sides(this.set.event_mask());
        let n = this.set.len() * sides.len();
        this.regs.resize_with(n, AsyncWait::new);
        let mut regs = this.regs.iter_mut();
        for ch in this.set.channels() {
            for &side in sides {
                let Some(w) = regs.next() else { break };
                match reactor::register(ch, side, cx.waker(), w.reg.take()) {
                    Ok(reg) => w.reg = Some(reg),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        // Re-check after registering (see `AsyncWait::poll_op`).
        match this.set.check() {
            Ok(None) => Poll::Pending,
            Ok(Some(ev)) => {
                this.regs.clear();
                Poll::Ready(Ok(ev))
            }
            Err(e) => {
                this.regs.clear();
                Poll::Ready(Err(e))
            }
        }
    }
}
