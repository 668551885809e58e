//! [`ChannelSendH`] and [`ChannelRecvH`]: the handles that send to and receive from a
//! channel.
//!
//! A handle is made unopened by [`Channel::sendh`] / [`Channel::recvh`] with a default timeout
//! (block, unless given), opened with `open`, and refuses every operation with
//! [`Error::ChannelHandleNotOpen`] while closed. Every operation takes a [`Timeout`]:
//! [`Timeout::Default`] uses the handle's default. The deadline is computed once per call.
//!
//! Send forms (the seed's `ownership` and `dest_msg` arguments):
//! - [`ChannelSendH::send`]: copy (`copy_on_send`); the sender keeps its message. Inline when
//!   it fits the channel's block size, else in a side allocation.
//! - [`ChannelSendH::send_transfer`]: `transfer_ownership_on_send`: the message's allocation
//!   itself is queued (zero copy); the call takes the message by value and hands it back in
//!   the error if the send fails.
//! - with `dest_msg`: the payload is copied into the destination message's memory, which is
//!   then sent by transfer; on success the destination message is left without memory.
//! - [`ChannelSendH::send_bytes`]: bytes in, the library manages the message.
//!
//! Receive forms: [`ChannelRecvH::recv`] (a new message that owns the payload's allocation),
//! [`ChannelRecvH::recv_into`] (into a destination message: copied into its memory, or, if it
//! has none, the payload's allocation moves into it) and [`ChannelRecvH::recv_bytes`]. All
//! forms intermix with all send forms.

use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;

use dragon_channels_core::{RecvBuf, SendMode, Side};

use crate::channel::Channel;
use crate::error::{Error, Op, Reason};
use crate::message::{Message, MsgMem};
use crate::wait::{Attempt, Ctx, Timeout, WaitMode};

/// A receive buffer that grows to the message's length, without zeroing what the receive
/// will write anyway.
struct Grow(Vec<u8>);

impl RecvBuf for Grow {
    #[inline]
    fn with_len(&mut self, len: usize) -> Option<&mut [MaybeUninit<u8>]> {
        self.0.clear();
        if self.0.capacity() < len {
            // One allocation of exactly the message's size (no growth policy, no realloc).
            self.0 = exact_vec(len);
        }
        Some(&mut self.0.spare_capacity_mut()[..len])
    }

    #[inline]
    unsafe fn filled(&mut self, len: usize) {
        debug_assert!(len <= self.0.capacity());
        // SAFETY: the caller wrote the first `len` bytes of the spare capacity (the trait's
        // contract), and `with_len` made the capacity at least `len`.
        unsafe { self.0.set_len(len) };
    }

    fn capacity(&self) -> usize {
        usize::MAX
    }
}

/// A [`Grow`] that refuses payloads longer than its limit (they stay queued).
struct Capped(Grow, usize);

impl RecvBuf for Capped {
    #[inline]
    fn with_len(&mut self, len: usize) -> Option<&mut [MaybeUninit<u8>]> {
        if len > self.1 {
            return None;
        }
        self.0.with_len(len)
    }

    #[inline]
    unsafe fn filled(&mut self, len: usize) {
        // SAFETY: forwarded: the caller wrote the `len` bytes `with_len` handed out.
        unsafe { self.0.filled(len) };
    }

    fn capacity(&self) -> usize {
        self.1
    }
}

/// An empty `Vec<u8>` with a capacity of exactly `len` (> 0), straight from the global
/// allocator: `Vec::with_capacity` goes through `RawVec`'s general, out-of-line growth path,
/// which costs about 40 instructions more per 64 B `recv_bytes` (callgrind, `op_cost bytes`).
#[inline]
fn exact_vec(len: usize) -> Vec<u8> {
    let Ok(layout) = core::alloc::Layout::array::<u8>(len) else {
        // Beyond `isize::MAX`: let `Vec` report the capacity overflow as it always does.
        return Vec::with_capacity(len);
    };
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: `layout` has a non-zero size (`len > 0`).
    let ptr = unsafe { std::alloc::alloc(layout) };
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` was allocated by the global allocator (`Vec<u8>`'s) with the layout of
    // `len` `u8`s, which is the layout a `Vec<u8>` of capacity `len` frees with; length 0
    // initializes nothing.
    unsafe { Vec::from_raw_parts(ptr, 0, len) }
}

/// What [`ChannelRecvH::recv_bytes_or_message`] received.
#[derive(Debug)]
pub enum BytesOrMessage {
    /// A payload up to the limit, copied out (its memory freed).
    Bytes(Vec<u8>),
    /// A longer payload: the message that owns its allocation (zero copy).
    Message(Message),
}

/// A failed [`ChannelSendH::send_transfer`]: the error and the message, handed back.
pub struct TransferError {
    /// Why the send failed.
    pub error: Error,
    /// The message, still owned by the caller.
    pub message: Message,
}

impl fmt::Debug for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferError")
            .field("error", &self.error)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (the message is handed back)", self.error)
    }
}

impl core::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A handle on a channel, for one direction: [`ChannelSendH`] (`Handle<Sending>`) or
/// [`ChannelRecvH`] (`Handle<Receiving>`). Both hold the channel, whether the handle is open
/// and its default timeout; every operation goes through one blocking helper.
pub struct Handle<D: Direction> {
    ch: Channel,
    open: bool,
    default_timeout: Timeout,
    /// How a blocked operation of this handle waits (Dragon's `wait_mode` of `sendh()` /
    /// `recvh()`); [`WaitMode::Adaptive`] unless set.
    wait_mode: WaitMode,
    /// A remote channel's handle state (see [`crate::remote`]); `None` for a local channel.
    pub(crate) remote: Option<Box<crate::remote::RemoteHandle>>,
    /// Open on a local channel: the one flag the fast paths test (a closed handle and a
    /// remote one both take the out-of-line path).
    local_open: bool,
    _direction: PhantomData<D>,
}

/// A send handle on a channel.
pub type ChannelSendH = Handle<Sending>;
/// A receive handle on a channel.
pub type ChannelRecvH = Handle<Receiving>;

/// The direction of a [`Handle`]: [`Sending`] or [`Receiving`].
pub trait Direction: sealed::Sealed {
    /// The seed's name of the handle type.
    const NAME: &'static str;
}

/// Marks a send handle.
#[derive(Debug)]
pub enum Sending {}
/// Marks a receive handle.
#[derive(Debug)]
pub enum Receiving {}

impl Direction for Sending {
    const NAME: &'static str = "ChannelSendH";
}
impl Direction for Receiving {
    const NAME: &'static str = "ChannelRecvH";
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Sending {}
    impl Sealed for super::Receiving {}
}

impl<D: Direction> fmt::Debug for Handle<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(D::NAME)
            .field("ch", &self.ch)
            .field("open", &self.open)
            .field("default_timeout", &self.default_timeout)
            .field("wait_mode", &self.wait_mode)
            .finish()
    }
}

impl<D: Direction> Handle<D> {
    pub(crate) fn new(ch: Channel, default_timeout: Timeout) -> Self {
        Self {
            remote: ch
                .remote
                .as_deref()
                .map(|r| Box::new(crate::remote::RemoteHandle::new(r))),
            ch,
            open: false,
            local_open: false,
            default_timeout,
            wait_mode: WaitMode::Adaptive,
            _direction: PhantomData,
        }
    }

    /// Opens the handle for use.
    ///
    /// # Errors
    /// [`Error::ChannelDestroyed`] when the channel was destroyed, [`Error::ChannelError`]
    /// with [`Reason::AlreadyOpen`] when it is open.
    pub fn open(&mut self) -> Result<(), Error> {
        if self.open {
            return Err(Error::ChannelError(Reason::AlreadyOpen));
        }
        if self.remote.is_none() {
            self.ch.check_live()?;
        }
        self.open = true;
        self.local_open = self.remote.is_none();
        Ok(())
    }

    /// Closes the handle.
    ///
    /// # Errors
    /// [`Error::ChannelHandleNotOpen`] when it is not open.
    pub fn close(&mut self) -> Result<(), Error> {
        if !self.open {
            return Err(Error::ChannelHandleNotOpen);
        }
        self.open = false;
        self.local_open = false;
        Ok(())
    }

    /// Whether the handle is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The timeout used by calls that pass [`Timeout::Default`].
    pub fn default_timeout(&self) -> Timeout {
        self.default_timeout
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// How blocked operations of this handle wait ([`WaitMode::Adaptive`] unless set).
    pub fn wait_mode(&self) -> WaitMode {
        self.wait_mode
    }

    /// Sets how blocked operations of this handle wait: [`WaitMode::Spin`] never sleeps,
    /// [`WaitMode::Idle`] sleeps on the futex after one try (Dragon's `wait_mode`).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.wait_mode = mode;
    }

    /// Where an operation of this handle blocks: the channel's, waiting in this handle's mode.
    #[inline]
    fn ctx(&self, op: Op) -> Ctx<'_> {
        let mut c = self.ch.ctx(op);
        c.mode = self.wait_mode;
        c
    }

    #[inline]
    fn check_open(&self) -> Result<(), Error> {
        if self.open {
            Ok(())
        } else {
            Err(Error::ChannelHandleNotOpen)
        }
    }

    /// The remote state of a handle that is open and not local.
    fn remote(&self) -> Result<&crate::remote::RemoteHandle, Error> {
        self.remote.as_deref().ok_or(Error::ChannelHandleNotOpen)
    }

    /// The one blocking call of both handles: runs the core's try-once `op` until it
    /// completes, fails, or `timeout` (this handle's default for [`Timeout::Default`])
    /// passes, then wakes the other side.
    #[inline]
    fn block<T>(
        &self,
        op_kind: Op,
        timeout: Timeout,
        op: impl FnMut(Attempt) -> Result<T, dragon_channels_core::ChannelError>,
    ) -> Result<T, Error> {
        self.ctx(op_kind).block(timeout, self.default_timeout, op)
    }
}

impl Handle<Sending> {
    /// Sends a copy of `msg`'s payload with its `hints` and `clientid` (`copy_on_send`); with
    /// `dest_msg`, the payload is copied into the destination message's memory (from the
    /// channel's pool), which is then sent by transfer and left without memory on success.
    ///
    /// # Errors
    /// [`Error::ChannelHandleNotOpen`]; [`Error::ChannelFull`] for a try-once timeout on a
    /// full channel on which no receiver sleeps (see [`Timeout::Try`]); [`Error::ChannelTimeout`]; [`Error::ChannelSendError`] for a message
    /// with no memory, or a destination that is too small or from another pool;
    /// [`Error::ChannelDestroyed`].
    #[inline(always)]
    pub fn send(
        &self,
        msg: &Message,
        dest_msg: Option<&mut Message>,
        timeout: Timeout,
    ) -> Result<(), Error> {
        if !self.local_open {
            return self.send_other(msg, dest_msg, timeout);
        }
        let payload = msg
            .bytes()
            .map_err(|_| Error::ChannelSendError(Reason::EmptyMessage))?;
        match dest_msg {
            None => self.send_copy(payload, msg.hints(), msg.clientid(), timeout),
            Some(dest) => self.send_msg_via_dest(payload, msg, dest, timeout),
        }
    }

    /// Sends `msg` by moving its allocation into the channel (`transfer_ownership_on_send`,
    /// zero copy). The memory must come from the channel's pool.
    ///
    /// # Errors
    /// As [`ChannelSendH::send`], plus [`Reason::ForeignMemory`] for memory of another
    /// pool; the message comes back in the error.
    pub fn send_transfer(&self, mut msg: Message, timeout: Timeout) -> Result<(), TransferError> {
        if let Err(error) = self.check_open() {
            return Err(TransferError {
                error,
                message: msg,
            });
        }
        let Some(mem) = msg.take_mem() else {
            return Err(TransferError {
                error: Error::ChannelSendError(Reason::EmptyMessage),
                message: msg,
            });
        };
        match self.transfer(&mem, msg.hints(), msg.clientid(), timeout) {
            // The allocation now belongs to the channel: `msg` drops without memory.
            Ok(()) => Ok(()),
            Err(error) => {
                msg.put_mem(mem);
                Err(TransferError {
                    error,
                    message: msg,
                })
            }
        }
    }

    /// Sends `msg_bytes` as a message of `msg_len` bytes (zero padded); the library makes and
    /// releases the message. With `dest_msg` the payload goes into the destination message as
    /// in [`ChannelSendH::send`]. `hints` and `clientid` are 0.
    ///
    /// # Errors
    /// As [`ChannelSendH::send`], plus [`Reason::MsgLenTooShort`] when `msg_len` is shorter
    /// than `msg_bytes`.
    #[inline]
    pub fn send_bytes(
        &self,
        msg_bytes: &[u8],
        msg_len: usize,
        dest_msg: Option<&mut Message>,
        timeout: Timeout,
    ) -> Result<(), Error> {
        // The common case first, in one test: a local channel, no padding, no destination.
        if self.local_open && msg_len == msg_bytes.len() && dest_msg.is_none() {
            return self.send_copy(msg_bytes, 0, 0, timeout);
        }
        self.send_bytes_other(msg_bytes, msg_len, dest_msg, timeout)
    }

    /// [`ChannelSendH::send_bytes`] past its common case: a closed handle, a remote channel,
    /// padding or a destination message.
    #[inline(never)]
    fn send_bytes_other(
        &self,
        msg_bytes: &[u8],
        msg_len: usize,
        dest_msg: Option<&mut Message>,
        timeout: Timeout,
    ) -> Result<(), Error> {
        let local = self.local_open;
        if !local {
            self.check_open()?;
        }
        let n = msg_bytes.len();
        if msg_len < n {
            return Err(Error::ChannelSendError(Reason::MsgLenTooShort {
                bytes: n,
                msg_len,
            }));
        }
        let send = |bytes: &[u8]| {
            if local {
                self.send_copy(bytes, 0, 0, timeout)
            } else {
                self.send_bytes_remote(bytes, timeout)
            }
        };
        match dest_msg {
            Some(dest) => self.send_via_dest(
                msg_len,
                |buf| {
                    buf[..n].copy_from_slice(msg_bytes);
                    buf[n..].fill(0);
                },
                (0, 0),
                dest,
                timeout,
            ),
            None if msg_len == n => send(msg_bytes),
            None => {
                let mut padded = vec![0u8; msg_len];
                padded[..n].copy_from_slice(msg_bytes);
                send(&padded)
            }
        }
    }

    #[inline(always)]
    pub(crate) fn send_copy(
        &self,
        bytes: &[u8],
        hints: u64,
        clientid: u64,
        timeout: Timeout,
    ) -> Result<(), Error> {
        // The fast path inline, the waiting out of line with only what it needs.
        self.ch.core.announce(Side::Arrived);
        match self.ch.core.try_send(bytes, hints, clientid) {
            Ok(()) => {
                crate::wait::notify(&self.ch.core, Side::Arrived);
                Ok(())
            }
            Err(e) => self.send_copy_slow(e, bytes, hints, clientid, timeout),
        }
    }

    /// [`ChannelSendH::send`] into a destination message: `msg`'s payload, hints and
    /// clientid go into `dest`, which is sent by transfer.
    fn send_msg_via_dest(
        &self,
        payload: &[u8],
        msg: &Message,
        dest: &mut Message,
        timeout: Timeout,
    ) -> Result<(), Error> {
        self.send_via_dest(
            payload.len(),
            |buf| buf.copy_from_slice(payload),
            (msg.hints(), msg.clientid()),
            dest,
            timeout,
        )
    }

    /// [`ChannelSendH::send`] on a closed handle or a remote channel.
    #[cold]
    #[inline(never)]
    fn send_other(
        &self,
        msg: &Message,
        dest_msg: Option<&mut Message>,
        timeout: Timeout,
    ) -> Result<(), Error> {
        self.check_open()?;
        let payload = msg
            .bytes()
            .map_err(|_| Error::ChannelSendError(Reason::EmptyMessage))?;
        match dest_msg {
            None => self.remote()?.send(
                payload,
                msg.hints(),
                msg.clientid(),
                timeout.or(self.default_timeout),
            ),
            Some(dest) => self.send_msg_via_dest(payload, msg, dest, timeout),
        }
    }

    /// [`ChannelSendH::send_bytes`]'s padded bytes to a remote channel (the handle is open).
    #[cold]
    #[inline(never)]
    fn send_bytes_remote(&self, bytes: &[u8], timeout: Timeout) -> Result<(), Error> {
        self.remote()?
            .send(bytes, 0, 0, timeout.or(self.default_timeout))
    }

    #[cold]
    #[inline(never)]
    fn send_copy_slow(
        &self,
        first: dragon_channels_core::ChannelError,
        bytes: &[u8],
        hints: u64,
        clientid: u64,
        timeout: Timeout,
    ) -> Result<(), Error> {
        let core = &self.ch.core;
        self.ctx(Op::Send)
            .block_after(timeout, self.default_timeout, first, |_| {
                core.try_send(bytes, hints, clientid)
            })
    }

    fn transfer(
        &self,
        mem: &MsgMem,
        hints: u64,
        clientid: u64,
        timeout: Timeout,
    ) -> Result<(), Error> {
        if let Some(r) = &self.remote {
            // The payload travels as bytes; the memory is freed once it was sent, as a
            // transferred allocation leaves the sender.
            r.send(
                mem.payload(),
                hints,
                clientid,
                timeout.or(self.default_timeout),
            )?;
            let _ = mem.pool.inner.free(mem.alloc);
            return Ok(());
        }
        if !mem.pool.same_pool(&self.ch.pool) {
            return Err(Error::ChannelSendError(Reason::ForeignMemory));
        }
        let mode = SendMode::Transfer {
            alloc: mem.alloc,
            len: mem.len(),
        };
        let core = &self.ch.core;
        core.announce(Side::Arrived);
        self.block(Op::Send, timeout, |_| {
            core.try_send_mode(mode, hints, clientid)
        })
    }

    /// Fills `len` bytes of `dest`'s memory with `fill`, then transfers that memory.
    fn send_via_dest(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        (hints, clientid): (u64, u64),
        dest: &mut Message,
        timeout: Timeout,
    ) -> Result<(), Error> {
        let Some(mut mem) = dest.take_mem() else {
            return Err(Error::ChannelSendError(Reason::EmptyMessage));
        };
        if len > mem.cap() {
            let capacity = mem.cap();
            dest.put_mem(mem);
            return Err(Error::ChannelSendError(Reason::DestinationTooSmall {
                needed: len,
                capacity,
            }));
        }
        fill(&mut mem.block_mut()[..len]);
        mem.set_len(len);
        match self.transfer(&mem, hints, clientid, timeout) {
            Ok(()) => Ok(()),
            Err(e) => {
                dest.put_mem(mem);
                Err(e)
            }
        }
    }
}

impl Handle<Receiving> {
    /// After a receive copied out a payload of `len` bytes: a payload longer than the block
    /// size came in a side allocation, which the receive freed; wake parties waiting for pool
    /// space.
    #[inline]
    fn freed_side(&self, len: usize) {
        if len > self.ch.core.block_size() {
            self.ch.pool.inner.wake_free_waiters();
        }
    }

    /// Receives the next message as a new [`Message`] that owns the payload's memory (a
    /// transferred or side allocation moves to it as is; an inline payload is copied into a
    /// new allocation from the channel's pool).
    ///
    /// # Errors
    /// [`Error::ChannelHandleNotOpen`]; [`Error::ChannelEmpty`] for a try-once timeout on an
    /// empty channel; [`Error::ChannelTimeout`]; [`Error::ChannelDestroyed`];
    /// [`Error::ChannelRecvError`] when the pool has no memory for an inline payload and the
    /// timeout is try-once (the message stays queued).
    pub fn recv(&self, timeout: Timeout) -> Result<Message, Error> {
        if !self.local_open {
            self.check_open()?;
            return self
                .remote()?
                .recv_message(timeout.or(self.default_timeout));
        }
        let core = &self.ch.core;
        let (alloc, got) = self.block(Op::Recv, timeout, |_| core.try_recv_alloc())?;
        self.message_of(alloc, got)
    }

    /// The message that owns `alloc`, received as `got`.
    fn message_of(
        &self,
        alloc: dragon_channels_core::Alloc,
        got: dragon_channels_core::Received,
    ) -> Result<Message, Error> {
        match MsgMem::new(&self.ch.pool, alloc, got.len) {
            Some(mem) => Ok(Message::from_mem(mem, got.hints, got.clientid)),
            None => {
                let _ = self.ch.pool.inner.free(alloc);
                Err(Error::ChannelRecvError(Reason::Core(
                    dragon_channels_core::ChannelError::Corrupt("received allocation"),
                )))
            }
        }
    }

    /// Receives the next message into `dest_msg`: copied into its memory when it has some
    /// (the payload length becomes the message's length), else the payload's memory moves
    /// into it. `hints` and `clientid` are set from the message.
    ///
    /// # Errors
    /// As [`ChannelRecvH::recv`], plus [`Error::ChannelRecvError`] with
    /// [`Reason::DestinationTooSmall`] when the payload does not fit (it stays queued).
    #[inline(always)]
    pub fn recv_into(&self, dest_msg: &mut Message, timeout: Timeout) -> Result<(), Error> {
        if !self.local_open {
            return self.recv_into_other(dest_msg, timeout);
        }
        let Some(mem) = dest_msg.mem.as_mut() else {
            *dest_msg = self.recv(timeout)?;
            return Ok(());
        };
        let buf = mem.block_mut();
        // The first try inline and lazy (a waiter's try: "looks empty" is not confirmed
        // against the tail), the waiting out of line.
        let got = match self.ch.core.try_recv_buf_lazy(&mut *buf) {
            Ok(got) => {
                crate::wait::notify(&self.ch.core, Side::Freed);
                got
            }
            Err(e) => self.recv_slow(e, buf, timeout)?,
        };
        self.freed_side(got.len);
        mem.set_len(got.len);
        dest_msg.set_hints(got.hints);
        dest_msg.set_clientid(got.clientid);
        Ok(())
    }

    /// [`ChannelRecvH::recv_into`] on a closed handle or a remote channel.
    #[cold]
    #[inline(never)]
    fn recv_into_other(&self, dest_msg: &mut Message, timeout: Timeout) -> Result<(), Error> {
        self.check_open()?;
        self.remote()?
            .recv_into(dest_msg, timeout.or(self.default_timeout))
    }

    /// [`ChannelRecvH::recv_into`] or [`ChannelRecvH::recv_bytes`] after its lazy first try
    /// into `buf` failed with `first`.
    #[cold]
    #[inline(never)]
    fn recv_slow<B: RecvBuf + ?Sized>(
        &self,
        first: dragon_channels_core::ChannelError,
        buf: &mut B,
        timeout: Timeout,
    ) -> Result<dragon_channels_core::Received, Error> {
        let core = &self.ch.core;
        self.ctx(Op::Recv)
            .block_after(timeout, self.default_timeout, first, |_| {
                core.try_recv_buf(&mut *buf)
            })
    }

    /// Receives the next message as bytes; the library frees the message.
    ///
    /// # Errors
    /// As [`ChannelRecvH::recv`].
    #[inline]
    pub fn recv_bytes(&self, timeout: Timeout) -> Result<Vec<u8>, Error> {
        if !self.local_open {
            self.check_open()?;
            return self
                .remote()?
                .recv(timeout.or(self.default_timeout))
                .map(|m| m.0);
        }
        // Sized to the message once its length is known: one allocation of exactly its size.
        let mut buf = Grow(Vec::new());
        // The first try inline and lazy (as in `recv_into`), the waiting out of line.
        let got = match self.ch.core.try_recv_buf_lazy(&mut buf) {
            Ok(got) => {
                crate::wait::notify(&self.ch.core, Side::Freed);
                got
            }
            Err(e) => self.recv_slow(e, &mut buf, timeout)?,
        };
        self.freed_side(got.len);
        // `filled` set the length to the payload's (an unreadable payload leaves it empty).
        Ok(buf.0)
    }

    /// Receives the next message as bytes when its payload is at most `max_bytes` long
    /// (copied out, as [`ChannelRecvH::recv_bytes`]), else as the [`Message`] that owns its
    /// allocation (zero copy, as [`ChannelRecvH::recv`]): a relay that forwards small
    /// messages by value and large ones by reference pays no copy for the large ones. On a
    /// remote channel it receives as [`ChannelRecvH::recv`].
    ///
    /// # Errors
    /// As [`ChannelRecvH::recv`].
    pub fn recv_bytes_or_message(
        &self,
        max_bytes: usize,
        timeout: Timeout,
    ) -> Result<BytesOrMessage, Error> {
        if !self.local_open {
            return self.recv(timeout).map(BytesOrMessage::Message);
        }
        let core = &self.ch.core;
        let mut buf = Capped(Grow(Vec::new()), max_bytes);
        // A payload over the limit is refused by `buf` and stays queued: the same try then
        // takes it (or whatever another receiver left at the head) with its allocation.
        let got = self.block(Op::Recv, timeout, |attempt| {
            let r = match attempt {
                Attempt::First => core.try_recv_buf_lazy(&mut buf),
                Attempt::Again => core.try_recv_buf(&mut buf),
            };
            match r {
                Ok(got) => Ok(Ok(got)),
                Err(dragon_channels_core::ChannelError::DestinationTooSmall { .. }) => {
                    core.try_recv_alloc().map(Err)
                }
                Err(e) => Err(e),
            }
        })?;
        match got {
            Ok(got) => {
                self.freed_side(got.len);
                // `filled` set the length to the payload's.
                Ok(BytesOrMessage::Bytes(buf.0.0))
            }
            Err((alloc, got)) => self.message_of(alloc, got).map(BytesOrMessage::Message),
        }
    }
}
