//! [`Message`]: a payload in pool memory plus the `hints` and `clientid` attributes.
//!
//! A message either has no memory (`create_empty`) or owns one pool allocation, recorded in
//! the pool under this process's party id. The process owns that memory exclusively, so the
//! message lends it out as an ordinary byte slice ([`Message::bytes_memview`]). An owned
//! message frees its allocation when dropped, unless it was sent by transfer
//! ([`crate::ChannelSendH::send_transfer`] takes it by value) or its memory moved on as a
//! destination message.
//!
//! If the process dies while it holds a message, the allocation stays recorded under its
//! party id and the next recovery in that pool frees it.

use core::fmt;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use dragon_channels_core::{
    Alloc, AllocKind, ChannelError as CoreChannelError, PoolError as CorePoolError,
};

use crate::cache;
use crate::error::{Error, MemoryPoolError, Op, Reason, from_core};
use crate::pool::MemoryPool;
use crate::wait::{Ctx, Timeout};

/// The memory of a message: one allocation of a pool, owned by this process. Plain data:
/// the owning [`Message`] frees it on drop; code that takes it out decides its fate.
pub(crate) struct MsgMem {
    pub(crate) pool: MemoryPool,
    pub(crate) alloc: Alloc,
    /// The block's address in this process's mapping (kept alive by `pool`).
    ptr: NonNull<u8>,
    /// Block size (the allocation rounded up).
    cap: usize,
    /// Payload bytes; never above `cap` (`set_len` is its only writer after `new`, and both
    /// check), which `payload` relies on.
    len: usize,
}

// SAFETY: `ptr` points into the mapping `pool` keeps alive, and the allocation is owned by
// this process, not by a thread: moving or sharing the handle between threads is as sound as
// moving the `MemoryPool` (which is `Send + Sync`); `&mut` is still required to write it.
unsafe impl Send for MsgMem {}
// SAFETY: see `Send`; `&MsgMem` only reads the block.
unsafe impl Sync for MsgMem {}

impl MsgMem {
    /// Wraps an allocation this process owns; `None` if its descriptor does not fit the pool.
    pub(crate) fn new(pool: &MemoryPool, alloc: Alloc, len: usize) -> Option<Self> {
        Self::with_ref(cache::pool_ref(pool), alloc, len)
    }

    /// [`MsgMem::new`] with the reference to the pool the message keeps.
    #[inline]
    fn with_ref(pool: MemoryPool, alloc: Alloc, len: usize) -> Option<Self> {
        let (off, cap) = pool.inner.core.span_unchecked(&alloc)?;
        // SAFETY: `span_unchecked` checked that `off..off + cap` lies inside the pool's data
        // area; `len <= cap` is checked first.
        (len <= cap).then(|| unsafe { Self::placed(pool, alloc, off, cap, len) })
    }

    /// The memory of `alloc`, whose block is `off..off + cap` of `pool`'s region, with a
    /// `len`-byte payload.
    ///
    /// # Safety
    /// `off..off + cap` lies inside the pool's data area (what [`CorePool::span_unchecked`]
    /// checks, and [`PoolCache::alloc_cached`] says of a block it hands out), and
    /// `len <= cap`.
    ///
    /// [`CorePool::span_unchecked`]: dragon_channels_core::Pool::span_unchecked
    /// [`PoolCache::alloc_cached`]: dragon_channels_core::PoolCache::alloc_cached
    #[inline]
    pub(crate) unsafe fn placed(
        pool: MemoryPool,
        alloc: Alloc,
        off: usize,
        cap: usize,
        len: usize,
    ) -> Self {
        let region = pool.inner.core.region();
        debug_assert!(off + cap <= region.len() && len <= cap);
        // SAFETY: `off` lies inside the region (the caller's promise), whose base is not null;
        // the mapping stays alive as long as `pool` (moved into `Self`).
        let ptr = unsafe { NonNull::new_unchecked(region.base().add(off)) };
        Self {
            pool,
            alloc,
            ptr,
            cap,
            len,
        }
    }

    /// The whole block as an exclusive slice.
    #[inline]
    pub(crate) fn block_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr + cap` is inside the live mapping `pool` keeps (see `new`), the
        // allocation is this process's alone, and `&mut self` makes the loan exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// The payload: the first `len` bytes of the block.
    #[inline]
    pub(crate) fn payload(&self) -> &[u8] {
        // SAFETY: `len <= cap` (the field's invariant), so the range lies inside the block,
        // which is inside the live mapping `pool` keeps (see `new`); the allocation is this
        // process's alone: no other party writes it while we hold it.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The payload, writable.
    #[inline]
    pub(crate) fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `payload`; `&mut self` makes the loan exclusive within the process.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Payload bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Sets the payload length; `len` above the capacity is a bug of the caller (every caller
    /// checks first): it is refused, leaving the length as it was.
    #[inline]
    pub(crate) fn set_len(&mut self, len: usize) {
        debug_assert!(
            len <= self.cap,
            "payload length {len} above capacity {}",
            self.cap
        );
        if len <= self.cap {
            self.len = len;
        }
    }

    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }
}

impl Drop for Message {
    #[inline]
    fn drop(&mut self) {
        let Some(mem) = &*self.mem else {
            return;
        };
        // SAFETY: on `Ok`, `mem.pool` is never dropped: `mem` is in a `ManuallyDrop` that
        // nothing takes after this drop.
        let Err(cache_err) = (unsafe { cache::free_message(&mem.pool, &mem.alloc) }) else {
            return;
        };
        // SAFETY: `mem` is not used again: the message is being dropped.
        if let Some(mem) = unsafe { ManuallyDrop::take(&mut self.mem) } {
            cache::free_message_slow(mem.pool, mem.alloc, cache_err);
        }
    }
}

/// A message: optional pool memory with a payload, plus `hints` and `clientid`.
///
/// # Examples
/// ```
/// use dragon_channels::{MemoryPool, Message};
/// # let name = format!("doc-msg-{}", std::process::id());
/// let pool = MemoryPool::create(1 << 16, &name, 0)?;
/// let mut msg = Message::create_alloc(&pool, 512)?;
/// msg.bytes_memview()?[0..5].copy_from_slice(b"Hello");
/// assert_eq!(&msg.bytes()?[0..5], b"Hello");
/// drop(msg); // frees the allocation
/// pool.destroy()?;
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Default)]
pub struct Message {
    /// Its memory; taken by the drop (whatever code takes it out decides its fate), so the
    /// compiler adds no second drop of it.
    pub(crate) mem: ManuallyDrop<Option<MsgMem>>,
    hints: u64,
    clientid: u64,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("hints", &self.hints)
            .field("clientid", &self.clientid)
            .finish()
    }
}

impl Message {
    /// A message with no memory backing (a destination for a receive to fill).
    pub fn create_empty() -> Self {
        Self::default()
    }

    /// A message with `n_bytes` of memory from `pool` (rounded up to a power of two inside
    /// the pool; the payload is `n_bytes` long). Tries once.
    ///
    /// # Errors
    /// [`Error::ChannelError`] with the pool's reason when no block of that size is free now
    /// or the request can never fit.
    #[inline(always)]
    pub fn create_alloc(pool: &MemoryPool, n_bytes: usize) -> Result<Self, Error> {
        // The fast path: what this thread's cache of the pool holds; the rest is out of line.
        match cache::alloc_message(pool, n_bytes) {
            Some(mem) => Ok(Self::from_mem(mem, 0, 0)),
            None => Self::create_alloc_slow(pool, n_bytes),
        }
    }

    /// [`Message::create_alloc`] when the thread's cache holds nothing of that size: one try
    /// through the pool lock. A lock held too long goes to the blocking path, which waits
    /// for a live holder and recovers a dead one; every other answer is final.
    #[cold]
    #[inline(never)]
    fn create_alloc_slow(pool: &MemoryPool, n_bytes: usize) -> Result<Self, Error> {
        cache::make_hot(pool);
        match cache::alloc(&pool.inner, n_bytes, AllocKind::Data) {
            Ok(alloc) => Self::with_alloc(pool, alloc, n_bytes),
            Err(CorePoolError::Stalled { .. }) => {
                Self::create_alloc_blocking(pool, n_bytes, Timeout::Try)
            }
            Err(e) => Err(from_core(CoreChannelError::from(e), Op::Other)),
        }
    }

    /// Like [`Message::create_alloc`], waiting for pool memory as `timeout` says
    /// ([`Timeout::Default`] means block).
    ///
    /// # Errors
    /// As [`Message::create_alloc`] for a try-once timeout, [`Error::ChannelTimeout`] when
    /// the timeout expires.
    pub fn create_alloc_blocking(
        pool: &MemoryPool,
        n_bytes: usize,
        timeout: Timeout,
    ) -> Result<Self, Error> {
        let ctx = Ctx::pool_op(&pool.inner);
        let alloc = ctx.block(timeout, Timeout::Block, |_| {
            pool.inner
                .alloc(n_bytes, AllocKind::Data)
                .map_err(CoreChannelError::from)
        })?;
        Self::with_alloc(pool, alloc, n_bytes)
    }

    /// A message owning `alloc` of `pool`, with an `n_bytes` payload.
    fn with_alloc(pool: &MemoryPool, alloc: Alloc, n_bytes: usize) -> Result<Self, Error> {
        match MsgMem::new(pool, alloc, n_bytes) {
            Some(mem) => Ok(Self::from_mem(mem, 0, 0)),
            None => Err(Self::outside(pool, alloc)),
        }
    }

    /// `alloc` does not fit its pool (corrupt metadata): frees it and says so.
    #[cold]
    #[inline(never)]
    fn outside(pool: &MemoryPool, alloc: Alloc) -> Error {
        let _ = pool.inner.free(alloc);
        Error::ChannelError(Reason::Core(CoreChannelError::Corrupt(
            "allocation outside the pool",
        )))
    }

    /// A message that takes over `alloc`, a live data allocation of `pool` (one that
    /// [`Message::destroy`] without `free_mem` handed back, one of the core pool's
    /// [`MemoryPool::core_pool`], or the descriptor of one another process made), with an
    /// `n_bytes` payload (Dragon's `dragon_channel_message_init` on existing memory). The
    /// message owns it from then on: dropping or destroying it frees it, and this process is
    /// recorded as its owner (a recovery after its death frees it).
    ///
    /// # Errors
    /// [`Error::MemoryPool`] for a descriptor that is not a live allocation of `pool`;
    /// [`Error::ChannelError`] for an allocation that is not user data (a channel's own
    /// memory) or a payload longer than the block.
    pub fn create_from_mem(pool: &MemoryPool, alloc: Alloc, n_bytes: usize) -> Result<Self, Error> {
        let core = &pool.inner.core;
        let kind = core.kind_of(&alloc).map_err(MemoryPoolError::Pool)?;
        if kind != AllocKind::Data {
            return Err(Error::ChannelError(Reason::Core(
                CoreChannelError::BadOperation(
                    "the allocation is a channel's own memory, not user data: a message can only \
                     take over a data allocation",
                ),
            )));
        }
        let mem = MsgMem::new(pool, alloc, n_bytes).ok_or(Error::ChannelError(
            Reason::DestinationTooSmall {
                needed: n_bytes,
                capacity: core.span_unchecked(&alloc).map_or(0, |(_, cap)| cap),
            },
        ))?;
        core.set_owner(&alloc, core.owner())
            .map_err(MemoryPoolError::Pool)?;
        Ok(Self::from_mem(mem, 0, 0))
    }

    #[inline]
    pub(crate) fn from_mem(mem: MsgMem, hints: u64, clientid: u64) -> Self {
        Self {
            mem: ManuallyDrop::new(Some(mem)),
            hints,
            clientid,
        }
    }

    /// Destroys the message. With `free_mem` its allocation is freed (what `drop` does);
    /// without, the allocation stays live and its descriptor is returned, for
    /// [`MemoryPool::free`] or to hand on.
    ///
    /// # Errors
    /// [`Error::MemoryPool`] when freeing fails (the descriptor is stale or the pool
    /// metadata is corrupt).
    pub fn destroy(mut self, free_mem: bool) -> Result<Option<Alloc>, Error> {
        let Some(mem) = self.mem.take() else {
            return Ok(None);
        };
        let a = mem.alloc;
        if free_mem {
            mem.pool.inner.free(a)?;
            Ok(None)
        } else {
            Ok(Some(a))
        }
    }

    /// The payload memory as a writable byte slice (the seed's memoryview).
    ///
    /// # Errors
    /// [`Error::ChannelError`] with [`Reason::EmptyMessage`] for a message with no memory.
    #[inline]
    pub fn bytes_memview(&mut self) -> Result<&mut [u8], Error> {
        let mem = self
            .mem
            .as_mut()
            .ok_or(Error::ChannelError(Reason::EmptyMessage))?;
        Ok(mem.payload_mut())
    }

    /// The payload as a read-only byte slice.
    ///
    /// # Errors
    /// As [`Message::bytes_memview`].
    #[inline]
    pub fn bytes(&self) -> Result<&[u8], Error> {
        let mem = self
            .mem
            .as_ref()
            .ok_or(Error::ChannelError(Reason::EmptyMessage))?;
        Ok(mem.payload())
    }

    /// A copy of the payload (the seed's `tobytes`); empty for a message with no memory.
    pub fn tobytes(&self) -> Vec<u8> {
        self.bytes().map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// Payload bytes (0 for a message with no memory).
    pub fn len(&self) -> usize {
        self.mem.as_ref().map_or(0, |m| m.len)
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the memory can hold (its block size); 0 without memory.
    pub fn capacity(&self) -> usize {
        self.mem.as_ref().map_or(0, MsgMem::cap)
    }

    /// Whether the message has memory.
    pub fn has_memory(&self) -> bool {
        self.mem.is_some()
    }

    /// The pool the memory comes from.
    pub fn pool(&self) -> Option<&MemoryPool> {
        self.mem.as_ref().map(|m| &m.pool)
    }

    /// The descriptor of the memory.
    pub fn descriptor(&self) -> Option<Alloc> {
        self.mem.as_ref().map(|m| m.alloc)
    }

    /// The `hints` attribute (travels with the message).
    pub fn hints(&self) -> u64 {
        self.hints
    }

    /// Sets `hints`.
    pub fn set_hints(&mut self, hints: u64) {
        self.hints = hints;
    }

    /// The `clientid` attribute (travels with the message).
    pub fn clientid(&self) -> u64 {
        self.clientid
    }

    /// Sets `clientid`.
    pub fn set_clientid(&mut self, clientid: u64) {
        self.clientid = clientid;
    }

    /// Sets the payload length within the memory's capacity.
    ///
    /// # Errors
    /// [`Error::ChannelError`] with [`Reason::EmptyMessage`] without memory,
    /// [`Reason::DestinationTooSmall`] when `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) -> Result<(), Error> {
        let mem = self
            .mem
            .as_mut()
            .ok_or(Error::ChannelError(Reason::EmptyMessage))?;
        if len > mem.cap {
            return Err(Error::ChannelError(Reason::DestinationTooSmall {
                needed: len,
                capacity: mem.cap,
            }));
        }
        mem.set_len(len);
        Ok(())
    }

    /// Takes the memory out (the message becomes empty and will not free it), for sending
    /// it on; the caller frees it or puts it back.
    pub(crate) fn take_mem(&mut self) -> Option<MsgMem> {
        self.mem.take()
    }

    /// Puts memory taken by [`Message::take_mem`] back.
    pub(crate) fn put_mem(&mut self, mem: MsgMem) {
        debug_assert!(self.mem.is_none());
        *self.mem = Some(mem);
    }
}
