//! The channel: messages in a queue (`queue.rs`) that lives in one pool allocation, with
//! Dragon's payload modes, attributes, poll, descriptors and events.
//!
//! The queue moves slots between senders and receivers; this module decides what a slot
//! holds and who owns the memory a message names:
//! - **inline**: a payload of at most `block_size` bytes is copied into the slot;
//! - **side allocation**: a larger payload is copied into an allocation from the channel's
//!   pool (or its buffer pool) made *before* a position is claimed, so a send that fails for
//!   want of memory costs no slot; the slot holds the allocation's descriptor;
//! - **transfer**: the sender's own allocation is put in the slot (zero copy) and moves to the
//!   receiver.
//!
//! # Memory layout (offsets from the channel allocation; `ChannelHeader`)
//! ```text
//! [config 64 B][state 64 B][tail 64 B][head 64 B][recv event 64 B][send event 64 B]
//! [sync 64 B: barrier count, barrier broken, semaphore value][slot 0][slot 1]...   slot = [SlotHead 8 B][MsgHead 40 B][inline bytes], padded to 64 B
//! ```
//! Each index word and event sits on a cache line of its own; each slot is padded to whole
//! lines so neighbours do not share one.
//!
//! # Ownership of side allocations, and what a party that dies leaves behind
//! A side allocation is owned by its sender until the slot holds its descriptor, then by the
//! channel (a structure owner id), then by its receiver, so each death frees it exactly once:
//! - Sender after claiming and before commit: a claim; recovery releases it.
//! - Sender after commit, before publishing: recovery makes the position a tombstone that
//!   receivers skip, freeing a side allocation the channel already owned. The message is not
//!   sent (its send never returned success).
//! - Receiver after commit, before releasing the slot: the message is lost with the receiver;
//!   recovery frees the side allocation the channel still owns and releases the slot.
//! - Receiver after releasing the slot: a transferred allocation is the dead receiver's;
//!   `Pool::recover` frees it.
//! - A receiver that could not free a side allocation (the pool lock was stalled) leaves the
//!   slot marked "free pending": the slot's next sender frees it before taking the position.

use core::mem::{offset_of, size_of};

use crate::bell::{Bell, Side};
use crate::descriptor::{self, DescriptorError, Reader, Writer};
use crate::error::{ChannelError, PoolError};
use crate::event::{Event, EventWords, Wake};
use crate::liveness::Memo;
use crate::message::{
    F_FREE_PENDING, F_INLINE, F_SIDE, F_TOMBSTONE, Head, MsgSlot, Received, RecvBuf, SendMode,
    Sink, SplitU64, slot_stride,
};
use crate::pool::{Alloc, AllocKind, Pool, STRUCT_OWNER_BIT};
use crate::queue::{Abandoned, Queue, Taken};
use crate::region::Region;
use crate::sync::{AtomicU32, Ordering, fence};

mod attach;
mod recovery;

pub use recovery::ChannelRecovery;

/// `"DRCH"`: marks a channel header and a channel descriptor.
const CHAN_MAGIC: u32 = 0x4843_5244;
/// Layout version of channels and of their serialized descriptors.
pub const CHANNEL_LAYOUT_VERSION: u32 = 2;
/// Default capacity (Dragon's).
pub const DEFAULT_CAPACITY: u32 = 100;
/// Default inline bytes per slot (Dragon's).
pub const DEFAULT_BLOCK_SIZE: u32 = 1024;
/// Largest capacity.
pub const MAX_CAPACITY: u32 = 1 << 24;
/// Largest block size.
pub const MAX_BLOCK_SIZE: u32 = 1 << 24;

/// The state word of a destroyed channel.
const STATE_DESTROYED: u32 = 0x4445_4144;
/// `ChannelConfig::flags`: the channel has a buffer pool.
const HAS_BUFFER_POOL: u32 = 1;
/// `ChannelConfig::flags`: the channel is a semaphore (no messages; `sync.sem_value`).
pub(crate) const SEMAPHORE: u32 = 2;
/// `ChannelConfig::flags`: a bounded semaphore (V past `sem_bound` is refused).
pub(crate) const BOUNDED: u32 = 4;

/// One cache line.
#[repr(C, align(64))]
struct Line<T>(T);

/// Written once by the creator (the `uid`, `magic` and `struct_owner` under the pool lock,
/// for uid uniqueness), validated by every attacher.
#[repr(C)]
struct ChannelConfig {
    magic: u32,
    version: u32,
    uid: SplitU64,
    capacity: u32,
    block_size: u32,
    one_lap: u32,
    stride: u32,
    slots_off: u32,
    /// The owner id of everything the channel owns: [`STRUCT_OWNER_BIT`] | its record.
    struct_owner: u32,
    /// Uid of the buffer pool (0: none).
    buffer_pool: SplitU64,
    flags: u32,
    /// A bounded semaphore's bound (its initial value); 0 otherwise.
    sem_bound: u32,
}

/// The words of a channel used as a barrier or a semaphore (`poll.rs`).
#[repr(C)]
pub(crate) struct SyncWords {
    /// Barrier parties arrived in this round; [`crate::poll::RELEASING`] while one party
    /// deposits the round's outcome; or, after a release that stopped part-way (a slot still
    /// held), `STOPPED` with what it still owes (see `poll.rs`), for the next release, abort
    /// or reset to deposit. SYNC: arrival CAS (AcqRel) <-> release's claim CAS and its final
    /// Release store.
    pub(crate) barrier_count: AtomicU32,
    /// 1 while the barrier is broken (aborted or timed out), until reset.
    pub(crate) barrier_broken: AtomicU32,
    /// A semaphore channel's value. SYNC: P/V CAS (AcqRel) <-> each other.
    pub(crate) sem_value: AtomicU32,
}

/// The channel header at the start of its allocation.
#[repr(C)]
struct ChannelHeader {
    config: Line<ChannelConfig>,
    /// 0 while the creator fills the channel, then the channel's ready token, then
    /// [`STATE_DESTROYED`]. SYNC: publish (Release, `create`) and destroy (AcqRel CAS) <->
    /// every operation's Acquire load.
    state: Line<AtomicU32>,
    /// The queue's tail word.
    tail: Line<AtomicU32>,
    /// The queue's head word.
    head: Line<AtomicU32>,
    /// Receivers sleep here; senders notify.
    recv_event: Line<EventWords>,
    /// Senders sleep here; receivers notify.
    send_event: Line<EventWords>,
    /// Barrier and semaphore state.
    sync: Line<SyncWords>,
}

const HEADER_BYTES: usize = size_of::<ChannelHeader>();
#[cfg(not(loom))]
const _: () = assert!(HEADER_BYTES == 7 * 64);
#[cfg(not(loom))]
const _: () = assert!(size_of::<ChannelConfig>() <= 64);

/// Channel creation attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelAttrs {
    /// Messages in flight (default 100, minimum 1).
    pub capacity: u32,
    /// Payload bytes stored inline per slot (default 1024); larger payloads go to a side
    /// allocation.
    pub block_size: u32,
}

impl Default for ChannelAttrs {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

impl ChannelAttrs {
    /// Slot stride and checked attributes.
    fn stride(&self) -> Result<usize, ChannelError> {
        if self.capacity == 0 {
            return Err(ChannelError::BadAttr("capacity must be at least 1"));
        }
        if self.capacity > MAX_CAPACITY {
            return Err(ChannelError::BadAttr("capacity above 2^24"));
        }
        if self.block_size > MAX_BLOCK_SIZE {
            return Err(ChannelError::BadAttr("block size above 2^24"));
        }
        Ok(slot_stride(self.block_size))
    }
}

/// Creation attributes of a semaphore channel (Dragon's `semaphore`, `bounded_semaphore` and
/// `initial_sem_value`). A semaphore channel carries no messages: only the semaphore polls
/// (`Poll::SemaphoreP` / `V` / `Z` / `Peek`) apply to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SemaphoreAttrs {
    /// The value at creation.
    pub initial: u32,
    /// A bounded semaphore refuses a V that would take it past `initial`.
    pub bounded: bool,
}

/// A serialized channel descriptor: fixed size, versioned, checksummed
/// (`[magic][version][pool uid u64][channel allocation 16 B][c_uid u64][buffer pool tag u32]
/// [checksum]`, see [`crate::descriptor`]).
pub type ChannelDescriptor = [u8; Channel::DESCRIPTOR_LEN];

/// What [`Channel::notify`] found to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use]
pub struct Notice {
    /// Whom to wake on the event's word.
    pub wake: Wake,
    /// Whether to wake every sleeper on the doorbell's word ([`Bell::word`]).
    pub bell: bool,
}

/// A handle on a channel. Every party (thread, process or core) may hold its own; all of
/// them see the same queue. The geometry is validated once, when the handle is made.
#[derive(Clone, Copy, Debug)]
pub struct Channel {
    pool: Pool,
    buffer_pool: Option<Pool>,
    alloc: Alloc,
    uid: u64,
    /// Region offset of the channel header.
    base: usize,
    block_size: u32,
    struct_owner: u32,
    /// The state word's value while this channel lives (see `ready_token`), computed once.
    token: u32,
    /// `ChannelConfig::flags` (semaphore, bounded, buffer pool).
    pub(crate) flags: u32,
    /// A bounded semaphore's bound.
    pub(crate) sem_bound: u32,
    queue: Queue,
}

impl Channel {
    /// Bytes of a serialized descriptor.
    pub const DESCRIPTOR_LEN: usize = 48;

    /// Pool bytes a channel with these attributes occupies (before power-of-two rounding).
    ///
    /// # Errors
    /// [`ChannelError::BadAttr`].
    pub fn required_size(attrs: &ChannelAttrs) -> Result<usize, ChannelError> {
        Ok(HEADER_BYTES + attrs.stride()? * attrs.capacity as usize)
    }

    /// Creates a channel registered under `c_uid` in `pool`; side allocations come from the
    /// same pool.
    ///
    /// # Errors
    /// [`ChannelError::UidInUse`], [`ChannelError::BadAttr`], [`ChannelError::Pool`] (no
    /// room).
    pub fn create(pool: &Pool, c_uid: u64, attrs: &ChannelAttrs) -> Result<Self, ChannelError> {
        Self::create_with_buffer_pool(pool, c_uid, attrs, None)
    }

    /// Like [`Channel::create`], with side allocations taken from `buffer_pool`.
    ///
    /// # Errors
    /// As [`Channel::create`].
    pub fn create_with_buffer_pool(
        pool: &Pool,
        c_uid: u64,
        attrs: &ChannelAttrs,
        buffer_pool: Option<&Pool>,
    ) -> Result<Self, ChannelError> {
        let flags = u32::from(buffer_pool.is_some()) * HAS_BUFFER_POOL;
        Self::create_kind(pool, c_uid, attrs, buffer_pool, flags, 0)
    }

    /// Creates a semaphore channel (see [`SemaphoreAttrs`]): no send or receive, only the
    /// semaphore polls. It occupies one slot of 8 bytes, as Dragon's does.
    ///
    /// # Errors
    /// As [`Channel::create`].
    pub fn create_semaphore(
        pool: &Pool,
        c_uid: u64,
        sem: SemaphoreAttrs,
    ) -> Result<Self, ChannelError> {
        let attrs = ChannelAttrs {
            capacity: 1,
            block_size: 8,
        };
        let flags = SEMAPHORE | if sem.bounded { BOUNDED } else { 0 };
        let ch = Self::create_kind(pool, c_uid, &attrs, None, flags, sem.initial)?;
        Ok(ch)
    }

    /// Creates a channel of kind `flags`; a semaphore's value and bound start at `sem`.
    fn create_kind(
        pool: &Pool,
        c_uid: u64,
        attrs: &ChannelAttrs,
        buffer_pool: Option<&Pool>,
        flags: u32,
        sem: u32,
    ) -> Result<Self, ChannelError> {
        let stride = attrs.stride()?;
        let size = HEADER_BYTES + stride * attrs.capacity as usize;
        let r = pool.region();
        let cfg = |off: usize, field: usize| off + offset_of!(ChannelHeader, config) + field;
        let uid_of = |off: usize, size: usize| -> Option<u64> {
            (size >= HEADER_BYTES
                && r.read_u32(cfg(off, offset_of!(ChannelConfig, magic))) == CHAN_MAGIC)
                .then(|| r.read_u64(cfg(off, offset_of!(ChannelConfig, uid))))
        };
        let created = pool.alloc_unique(
            size,
            AllocKind::Channel,
            pool.owner(),
            |info| uid_of(info.offset, info.size) == Some(c_uid),
            |a, off| {
                // Under the pool lock: enough of the header for uid uniqueness; the channel
                // is not ready yet, so nobody attaches to it.
                r.init_atomic(off + offset_of!(ChannelHeader, state), 0);
                r.write_u64(cfg(off, offset_of!(ChannelConfig, uid)), c_uid);
                r.write_u32(cfg(off, offset_of!(ChannelConfig, magic)), CHAN_MAGIC);
                r.write_u32(
                    cfg(off, offset_of!(ChannelConfig, struct_owner)),
                    STRUCT_OWNER_BIT | a.id(),
                );
            },
        )?;
        let Some(alloc) = created else {
            return Err(ChannelError::UidInUse(c_uid));
        };
        let base = pool.resolve(&alloc)?.0;
        // The channel structure owns itself, so the creator's death does not free it.
        pool.set_owner(&alloc, STRUCT_OWNER_BIT | alloc.id())?;
        let put = |field: usize, v: u32| r.write_u32(cfg(base, field), v);
        put(offset_of!(ChannelConfig, version), CHANNEL_LAYOUT_VERSION);
        put(offset_of!(ChannelConfig, capacity), attrs.capacity);
        put(offset_of!(ChannelConfig, block_size), attrs.block_size);
        put(
            offset_of!(ChannelConfig, one_lap),
            Queue::one_lap(attrs.capacity),
        );
        put(offset_of!(ChannelConfig, stride), stride as u32);
        put(offset_of!(ChannelConfig, slots_off), HEADER_BYTES as u32);
        put(offset_of!(ChannelConfig, flags), flags);
        let bound = if flags & BOUNDED != 0 { sem } else { 0 };
        put(offset_of!(ChannelConfig, sem_bound), bound);
        let sync = |field: usize| base + offset_of!(ChannelHeader, sync) + field;
        r.init_atomic(sync(offset_of!(SyncWords, barrier_count)), 0);
        r.init_atomic(sync(offset_of!(SyncWords, barrier_broken)), 0);
        r.init_atomic(sync(offset_of!(SyncWords, sem_value)), sem);
        r.write_u64(
            cfg(base, offset_of!(ChannelConfig, buffer_pool)),
            buffer_pool.map_or(0, |p| p.uid()),
        );
        EventWords::init(r, base + offset_of!(ChannelHeader, recv_event));
        EventWords::init(r, base + offset_of!(ChannelHeader, send_event));
        let ch = Self::handle(
            pool,
            buffer_pool,
            alloc,
            c_uid,
            base,
            attrs,
            stride,
            (flags, bound),
        );
        ch.queue.init();
        for i in 0..attrs.capacity as usize {
            ch.msg(ch.queue.slot(i)).set(0, 0);
        }
        // SYNC: publish channel (Release) <-> attach / every operation (Acquire state load).
        ch.state().store(ch.token, Ordering::Release);
        Ok(ch)
    }

    /// A handle on the channel at `base`, whose geometry and `(flags, semaphore bound)` the
    /// caller validated.
    #[allow(clippy::too_many_arguments)]
    fn handle(
        pool: &Pool,
        buffer_pool: Option<&Pool>,
        alloc: Alloc,
        uid: u64,
        base: usize,
        attrs: &ChannelAttrs,
        stride: usize,
        (flags, sem_bound): (u32, u32),
    ) -> Self {
        let queue = Queue::new(
            pool.region(),
            (
                base + offset_of!(ChannelHeader, tail),
                base + offset_of!(ChannelHeader, head),
            ),
            (base + HEADER_BYTES, stride),
            attrs.capacity,
            pool.owner(),
        );
        Self {
            pool: *pool,
            buffer_pool: buffer_pool.copied(),
            alloc,
            uid,
            base,
            block_size: attrs.block_size,
            struct_owner: STRUCT_OWNER_BIT | alloc.id(),
            token: Self::ready_token(uid, &alloc),
            flags,
            sem_bound,
            queue,
        }
    }

    /// Destroys the channel: marks it destroyed (other handles get
    /// [`ChannelError::Destroyed`]), frees queued side allocations and every allocation the
    /// channel owns, and frees the channel itself, which unregisters its uid.
    ///
    /// Operations running concurrently through other handles may still touch the memory
    /// while it is freed; stop them first.
    ///
    /// # Errors
    /// [`ChannelError::Destroyed`] if already destroyed.
    pub fn destroy(self) -> Result<(), ChannelError> {
        self.destroy_with(|_| {})
    }

    /// [`Channel::destroy`], calling `drain` once the channel is marked destroyed and before
    /// its memory is freed: the place to wake sleepers and let them unregister from the
    /// channel's events while those words are still the channel's.
    ///
    /// # Errors
    /// [`ChannelError::Destroyed`] if already destroyed.
    pub fn destroy_with(self, drain: impl FnOnce(&Self)) -> Result<(), ChannelError> {
        // SYNC: destroy (AcqRel CAS) <-> operations' Acquire state load.
        self.state()
            .compare_exchange(
                self.token,
                STATE_DESTROYED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map_err(|_| ChannelError::Destroyed)?;
        drain(&self);
        for i in 0..self.queue.capacity() as usize {
            let s = self.queue.slot(i);
            if self.msg(s).head().flags & F_SIDE != 0 {
                // A busy lock here is harmless: `free_all_of` below frees what is left.
                let _ = self.free_side_if_ours(s);
            }
        }
        self.side_pool()
            .free_all_of(self.struct_owner, Some(&self.alloc))?;
        self.region().write_u32(
            self.base + offset_of!(ChannelHeader, config) + offset_of!(ChannelConfig, magic),
            0,
        );
        self.pool.free(self.alloc).map_err(ChannelError::from)
    }

    /// The channel's uid.
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// The pool the channel lives in.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The pool side allocations come from (the buffer pool, or the channel's pool).
    pub fn side_pool(&self) -> &Pool {
        self.buffer_pool.as_ref().unwrap_or(&self.pool)
    }

    /// Capacity in messages.
    pub fn capacity(&self) -> usize {
        self.queue.capacity() as usize
    }

    /// Inline bytes per slot.
    pub fn block_size(&self) -> usize {
        self.block_size as usize
    }

    /// Messages queued now (a snapshot).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every slot holds a message.
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// A hint for waiting receivers: whether the slot at `head` holds a published message.
    /// Reads only the head word and that slot's sequence word (no fence, no tail), so a
    /// receiver that spins on it leaves the sender's lines alone until a message arrives;
    /// a `true` is then confirmed by a receive.
    #[inline]
    pub fn may_recv(&self) -> bool {
        self.queue.may_recv()
    }

    /// A hint for waiting senders: whether the slot at `tail` is free for this lap (see
    /// [`Channel::may_recv`]).
    #[inline]
    pub fn may_send(&self) -> bool {
        self.queue.may_send()
    }

    /// Words receivers sleep on (notify it after every send, then [`Channel::ring`]
    /// [`Side::Arrived`]).
    #[inline]
    pub fn recv_event(&self) -> Event<'_> {
        // SAFETY: `create` constructed the words at this fixed offset of the validated
        // channel; the region outlives the handle.
        unsafe {
            Event::at(
                self.region(),
                self.base + offset_of!(ChannelHeader, recv_event),
            )
        }
    }

    /// The doorbell of the channel's pool, with this channel's hint (see `bell.rs`).
    #[inline]
    pub fn bell(&self) -> Bell<'_> {
        self.pool.bell_for(self.base)
    }

    /// After notifying the event of `side` (whose SeqCst fence this relies on): rings the
    /// pool's doorbell when a channel-set poller watches that side. Returns `true` when
    /// sleepers on the doorbell's word must be woken (every one).
    #[inline(always)]
    pub fn ring(&self, side: Side) -> bool {
        self.pool.bell_watchers(side) != 0 && self.bell().on(side).ring()
    }

    /// Before a change of `side` (a send: [`Side::Arrived`]): announces it on the pool's
    /// doorbell when a channel-set poller watches that side, so that a spinning poller can
    /// watch this channel while the change is made. A hint: [`Channel::notify`] after the
    /// change still rings (see `bell.rs`).
    #[inline(always)]
    pub fn announce(&self, side: Side) {
        if self.pool.bell_watchers(side) != 0 {
            self.bell().on(side).announce();
        }
    }

    /// The event of `side`: the receive event for [`Side::Arrived`], the send event for
    /// [`Side::Freed`].
    #[inline(always)]
    pub fn event(&self, side: Side) -> Event<'_> {
        match side {
            Side::Arrived => self.recv_event(),
            Side::Freed => self.send_event(),
        }
    }

    /// After a change of `side` (a send: [`Side::Arrived`]; a receive: [`Side::Freed`]):
    /// [`Event::notify`] of its event and [`Channel::ring`] in one, with one test on the
    /// common path where nobody waits or watches (`None`). Otherwise says whom to wake.
    #[inline(always)]
    pub fn notify(&self, side: Side) -> Option<Notice> {
        // SYNC: fence (SeqCst) <-> a waiter's register and a set's watch (SeqCst RMWs): either
        // they see the change, or we see them in the loads below (the `Event` protocol).
        fence(Ordering::SeqCst);
        if self.event(side).waiters_now() | self.pool.bell_watchers(side) == 0 {
            return None;
        }
        Some(self.notify_found(side))
    }

    /// [`Channel::notify`] once a waiter or a watcher was seen.
    #[cold]
    #[inline(never)]
    fn notify_found(&self, side: Side) -> Notice {
        Notice {
            wake: self.event(side).notify_fenced(),
            bell: self.ring(side),
        }
    }

    /// Words senders sleep on (notify it after every receive, then [`Channel::ring`]
    /// [`Side::Freed`]).
    #[inline]
    pub fn send_event(&self) -> Event<'_> {
        // SAFETY: as in `recv_event`.
        unsafe {
            Event::at(
                self.region(),
                self.base + offset_of!(ChannelHeader, send_event),
            )
        }
    }

    /// Try-once copy send of `bytes` with `hints` and `clientid`.
    ///
    /// # Errors
    /// [`ChannelError::Full`], [`ChannelError::Destroyed`], [`ChannelError::Stalled`],
    /// [`ChannelError::Pool`] when a side allocation is needed and the pool has no room.
    #[inline(always)]
    pub fn try_send(&self, bytes: &[u8], hints: u64, clientid: u64) -> Result<(), ChannelError> {
        if bytes.len() > self.block_size as usize {
            return self.try_send_mode(SendMode::Copy(bytes), hints, clientid);
        }
        self.check_ready()?;
        let t = self.start_send()?;
        // In bounds: `bytes.len() <= block_size` (checked above).
        self.msg(t.slot).write_inline(bytes);
        self.publish(t, hints, clientid)
    }

    /// Try-once send in either mode. On failure a transferred allocation still belongs to
    /// the caller.
    ///
    /// # Errors
    /// As [`Channel::try_send`], plus [`ChannelError::BadMessage`] when a transferred
    /// allocation is not a live allocation of the side pool or is shorter than `len`.
    pub fn try_send_mode(
        &self,
        mode: SendMode<'_>,
        hints: u64,
        clientid: u64,
    ) -> Result<(), ChannelError> {
        self.check_ready()?;
        let side = self.side_pool();
        let (alloc, len, ours) = match mode {
            SendMode::Copy(bytes) if bytes.len() <= self.block_size as usize => {
                return self.try_send(bytes, hints, clientid);
            }
            SendMode::Copy(bytes) => {
                // The side allocation is made and filled before a position is claimed: a
                // send that fails for want of memory must not cost a slot. (A sender that
                // dies meanwhile owns it, so recovery frees it.) The full check first spares
                // the allocation and copy when the channel is visibly full.
                if self.is_full() {
                    return Err(ChannelError::Full);
                }
                let a = side.alloc(bytes.len(), AllocKind::ChannelBuffer)?;
                if let Some((off, _)) = side.span_unchecked(&a) {
                    side.region().copy_in(off, bytes);
                }
                (a, bytes.len(), true)
            }
            SendMode::Transfer { alloc, len } => {
                let (_, size) = side.resolve(&alloc).map_err(|e| match e {
                    PoolError::Stale | PoolError::BadDescriptor => ChannelError::BadMessage,
                    // A stalled pool lock says nothing about the message.
                    e => e.into(),
                })?;
                if len > size {
                    return Err(ChannelError::BadMessage);
                }
                (alloc, len, false)
            }
        };
        self.send_side(alloc, len, hints, clientid, ours)
    }

    /// Sends the side allocation `a` (`len` payload bytes). If the send fails before the
    /// channel took `a` over, `a` is freed when `ours` (a copy the send made) and otherwise
    /// still belongs to the caller; once the channel owns it, it is the channel's whatever
    /// happens next. An injected death frees nothing (a dead party cannot).
    fn send_side(
        &self,
        a: Alloc,
        len: usize,
        hints: u64,
        clientid: u64,
        ours: bool,
    ) -> Result<(), ChannelError> {
        let give_back = |e: ChannelError| {
            if ours && e != ChannelError::Died {
                // A busy pool lock is tried a few more times: the allocation is this party's
                // and would otherwise stay allocated until it dies.
                for _ in 0..4 {
                    if !matches!(self.side_pool().free(a), Err(PoolError::Stalled { .. })) {
                        break;
                    }
                }
            }
            e
        };
        let t = self.start_send().map_err(give_back)?;
        let msg = self.msg(t.slot);
        // Order matters for crash recovery: descriptor in the slot first, then the channel
        // takes ownership, then publish.
        msg.write_side(&a, len);
        if let Err(e) = self.side_pool().set_owner(&a, self.struct_owner) {
            // The position is taken: it becomes a tombstone.
            msg.set(F_TOMBSTONE, 0);
            let _ = self.queue.finish_send(t);
            return Err(give_back(e.into()));
        }
        self.publish(t, hints, clientid)
    }

    /// Claims the slot at `tail`, finishes a free its last receiver left pending, and takes
    /// the position.
    #[inline(always)]
    fn start_send(&self) -> Result<Taken, ChannelError> {
        let t = self.queue.start_send()?;
        if self.msg(t.slot).flags() & F_FREE_PENDING != 0
            && let Err(e) = self.finish_pending_free(t.slot)
        {
            // The pool is still stalled: the slot is left as it was.
            self.queue.cancel(t);
            return Err(e);
        }
        self.queue.commit_send(&t)?;
        Ok(t)
    }

    /// Writes the message attributes and publishes the slot.
    #[inline(always)]
    fn publish(&self, t: Taken, hints: u64, clientid: u64) -> Result<(), ChannelError> {
        self.msg(t.slot).write_attrs(hints, clientid);
        let ahead = t;
        self.queue.finish_send(t)?;
        self.queue.prefetch_ahead(&ahead);
        Ok(())
    }

    /// Frees the side allocation a receiver left to the slot's next sender
    /// ([`F_FREE_PENDING`]); the caller holds the slot's claim.
    #[cold]
    fn finish_pending_free(&self, s: usize) -> Result<(), ChannelError> {
        let msg = self.msg(s);
        if let Some(a) = msg.side_desc() {
            match self.side_pool().free(a) {
                // Stale: freed already (by a sender that died before clearing the flag, or
                // by recovery).
                Ok(()) | Err(PoolError::Stale | PoolError::BadDescriptor) => {}
                Err(e) => return Err(e.into()),
            }
        }
        msg.set_flags(0);
        Ok(())
    }

    /// Try-once receive into `dest`: the payload is copied, a side allocation freed. If `dest`
    /// is too small the message stays queued.
    ///
    /// # Errors
    /// [`ChannelError::Empty`], [`ChannelError::DestinationTooSmall`],
    /// [`ChannelError::Destroyed`], [`ChannelError::Stalled`] (a sender took the position
    /// at the head and has not published it after a short spin).
    #[inline(always)]
    pub fn try_recv_into(&self, dest: &mut [u8]) -> Result<Received, ChannelError> {
        self.recv_as::<true, _>(dest)
    }

    /// [`Channel::try_recv_into`] into a buffer sized once the message's length is known
    /// (see [`RecvBuf`]).
    ///
    /// # Errors
    /// As [`Channel::try_recv_into`].
    #[inline]
    pub fn try_recv_buf<B: RecvBuf + ?Sized>(
        &self,
        dest: &mut B,
    ) -> Result<Received, ChannelError> {
        self.recv_as::<true, B>(dest)
    }

    /// [`Channel::try_recv_buf`] for a waiter's first try: a head slot with no message
    /// published yet is reported [`ChannelError::Empty`] at once, without the fence and tail
    /// read that tell an empty channel from a sender in the middle of a send. It leaves the
    /// sender's tail line alone, which matters while the sender is about to publish; the
    /// waiting that follows must use [`Channel::try_recv_buf`] (or
    /// [`Channel::try_recv_into`]), which notices a stalled, perhaps dead, sender.
    ///
    /// # Errors
    /// As [`Channel::try_recv_into`].
    #[inline(always)]
    pub fn try_recv_buf_lazy<B: RecvBuf + ?Sized>(
        &self,
        dest: &mut B,
    ) -> Result<Received, ChannelError> {
        self.recv_as::<false, B>(dest)
    }

    #[inline(always)]
    fn recv_as<const EXACT: bool, B: RecvBuf + ?Sized>(
        &self,
        dest: &mut B,
    ) -> Result<Received, ChannelError> {
        self.check_ready()?;
        loop {
            let t = self.queue.start_recv_as::<EXACT>()?;
            let msg = self.msg(t.slot);
            let h = msg.head();
            // The common case, kept short: an inline message that fits.
            if h.flags == F_INLINE
                && h.len <= self.block_size as usize
                && let Some(d) = dest.with_len(h.len)
            {
                self.queue.commit_recv(&t)?;
                // In bounds: `h.len <= block_size` was checked above.
                msg.read_inline(d);
                // SAFETY: `read_inline` wrote all `h.len` bytes.
                unsafe { dest.filled(h.len) };
                let got = msg.received(h.len);
                self.queue.finish_recv(t)?;
                return Ok(got);
            }
            if let Some(got) = self.recv_slot(t, h, Sink::Into(dest))? {
                return Ok(got);
            }
        }
    }

    /// Try-once receive that hands over an allocation: a side allocation moves to the
    /// receiver as is (zero copy); an inline payload is copied into a new allocation from the
    /// side pool. The receiver owns the returned allocation.
    ///
    /// # Errors
    /// As [`Channel::try_recv_into`], plus [`ChannelError::Pool`] when no allocation for an
    /// inline payload can be made (the message stays queued).
    pub fn try_recv_alloc(&self) -> Result<(Alloc, Received), ChannelError> {
        self.check_ready()?;
        loop {
            let t = self.queue.start_recv()?;
            let mut out = None;
            if let Some(got) =
                self.recv_slot::<[u8]>(t, self.msg(t.slot).head(), Sink::Alloc(&mut out))?
            {
                return out
                    .map(|a| (a, got))
                    .ok_or(ChannelError::Corrupt("message vanished"));
            }
        }
    }

    /// Receives the message in the claimed slot `t` into `sink`: `None` for a tombstone
    /// (skipped; the caller takes the next position).
    fn recv_slot<B: RecvBuf + ?Sized>(
        &self,
        t: Taken,
        h: Head,
        sink: Sink<'_, B>,
    ) -> Result<Option<Received>, ChannelError> {
        let msg = self.msg(t.slot);
        let tomb = h.flags & F_TOMBSTONE != 0;
        let side = if !tomb && h.flags & F_SIDE != 0 {
            msg.side_desc().filter(|a| {
                self.side_pool()
                    .span_unchecked(a)
                    .is_some_and(|(_, size)| h.len <= size)
            })
        } else {
            None
        };
        let valid =
            tomb || (h.flags == F_INLINE && h.len <= self.block_size as usize) || side.is_some();
        // Accept the message, or refuse it and leave it queued.
        let mut sink = sink;
        if !tomb && valid {
            let refused = match &mut sink {
                Sink::Into(dest) => {
                    dest.with_len(h.len)
                        .is_none()
                        .then(|| ChannelError::DestinationTooSmall {
                            needed: h.len,
                            capacity: dest.capacity(),
                        })
                }
                Sink::Alloc(out) if side.is_none() => {
                    match self.side_pool().alloc(h.len, AllocKind::Data) {
                        Ok(a) => {
                            **out = Some(a);
                            None
                        }
                        Err(e) => Some(e.into()),
                    }
                }
                Sink::Alloc(_) => None,
            };
            if let Some(e) = refused {
                self.queue.cancel(t);
                return Err(e);
            }
        }
        self.queue.commit_recv(&t)?;
        let got = msg.received(h.len);
        let mut pending = false;
        if !tomb && valid {
            let sp = self.side_pool();
            match (sink, side) {
                (Sink::Into(dest), None) => {
                    // Valid inline: `h.len <= block_size`.
                    if let Some(d) = dest.with_len(h.len) {
                        msg.read_inline(d);
                        // SAFETY: `read_inline` wrote all `h.len` bytes.
                        unsafe { dest.filled(h.len) };
                    }
                }
                (Sink::Into(dest), Some(a)) => {
                    if let (Some((off, _)), Some(d)) = (sp.span_unchecked(&a), dest.with_len(h.len))
                        && sp.region().copy_out_uninit(off, d)
                    {
                        // SAFETY: the copy wrote all `h.len` bytes.
                        unsafe { dest.filled(h.len) };
                    }
                    match sp.free(a) {
                        Err(PoolError::Died) => return Err(ChannelError::Died),
                        // The pool lock is stalled (its holder may be dead): leave the free
                        // to the slot's next sender rather than leak it.
                        Err(PoolError::Stalled { .. }) => pending = true,
                        _ => {}
                    }
                }
                (Sink::Alloc(out), None) => {
                    if let Some((off, _)) = (*out).and_then(|a| sp.span_unchecked(&a)) {
                        sp.region().copy_within_from(
                            self.region(),
                            msg.inline_offset(),
                            off,
                            h.len,
                        );
                    }
                }
                (Sink::Alloc(out), Some(a)) => {
                    // A stalled pool lock leaves the allocation recorded as the channel's;
                    // the caller still owns it and frees it by descriptor.
                    if sp.set_owner(&a, sp.owner()) == Err(PoolError::Died) {
                        return Err(ChannelError::Died);
                    }
                    *out = Some(a);
                }
            }
        }
        msg.set_flags(if pending { F_FREE_PENDING } else { 0 });
        self.queue.finish_recv(t)?;
        match (tomb, valid) {
            (true, _) => Ok(None),
            (false, false) => Err(ChannelError::Corrupt("slot header")),
            (false, true) => Ok(Some(got)),
        }
    }

    /// The claim word of the slot at the current head (what a stalled receiver waits on) and
    /// at the current tail; diagnostic for tests and the adapter.
    pub fn claims(&self) -> (u32, u32) {
        self.queue.claims()
    }

    // ----- internals -----

    #[inline(always)]
    fn region(&self) -> Region {
        self.pool.region()
    }

    #[inline(always)]
    fn state(&self) -> &AtomicU32 {
        // SAFETY: the state word sits at a fixed offset inside the validated channel
        // allocation, constructed by `create`; the region outlives the handle.
        unsafe {
            self.region()
                .atomic(self.base + offset_of!(ChannelHeader, state))
        }
    }

    /// The barrier and semaphore words.
    #[inline(always)]
    pub(crate) fn sync_word(&self, field: usize) -> &AtomicU32 {
        // SAFETY: the sync words sit at a fixed offset inside the validated channel
        // allocation, constructed by `create`; the region outlives the handle.
        unsafe {
            self.region()
                .atomic(self.base + offset_of!(ChannelHeader, sync) + field)
        }
    }

    /// The message part of slot `s` (an offset from the validated queue).
    #[inline(always)]
    fn msg(&self, s: usize) -> MsgSlot {
        MsgSlot::new(self.region(), s)
    }

    /// The state word of a live channel: specific to this channel (uid, record, generation),
    /// so a stale handle whose memory was reused by another channel still reads "destroyed".
    fn ready_token(uid: u64, alloc: &Alloc) -> u32 {
        let mut b = [0u8; 14];
        Writer::new(&mut b)
            .u64(uid)
            .u32(alloc.id())
            .u16(alloc.generation());
        let t = descriptor::checksum(&b);
        if t == 0 || t == STATE_DESTROYED { 1 } else { t }
    }

    #[inline(always)]
    pub(crate) fn check_ready(&self) -> Result<(), ChannelError> {
        // SYNC: Acquire <-> publish channel (Release) in `create`, destroy's CAS.
        if self.state().load(Ordering::Acquire) != self.token {
            return Err(ChannelError::Destroyed);
        }
        Ok(())
    }
}
