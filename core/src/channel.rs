//! The channel: a bounded MPMC message queue that lives in one pool allocation.
//!
//! # Algorithm
//! Dmitry Vyukov's bounded MPMC array queue, in the stamp form of crossbeam-channel's
//! `flavors/array.rs` (reimplemented over region offsets and 32-bit atomics): `tail` and
//! `head` are positions `lap | index` with `one_lap = (capacity + 1).next_power_of_two()`;
//! slot `i` carries a sequence word that says which position may use it next (`pos` for a
//! sender, `pos + 1` for a receiver). Strict FIFO, each message delivered exactly once.
//!
//! One addition makes process death recoverable: before a party advances `tail` or `head` it
//! claims the slot by a CAS of the slot's `claim` word from 0 to its owner id (with a role
//! bit), and releases it after publishing. A claim therefore always names who is working on a
//! slot and in which step, so [`Channel::recover`] can finish or undo a dead party's step.
//!
//! # Memory layout (offsets from the channel allocation)
//! ```text
//! [config 64 B][state 64 B][tail 64 B][head 64 B][recv event 64 B][send event 64 B]
//! [slot 0][slot 1]...     slot = [seq, claim, len, flags, hints, clientid, desc 16 B][inline bytes]
//! ```
//! Each slot is padded to 64 bytes so neighbours do not share a cache line. A payload of at
//! most `block_size` bytes is copied inline; a larger one goes into a side allocation from the
//! channel's pool (or its buffer pool) and the slot holds the descriptor. A transfer send puts
//! the sender's own allocation in the slot (zero copy).
//!
//! # What a party that dies leaves behind
//! - Sender, after claiming and before advancing `tail`: a claim; `recover` releases it.
//! - Sender, after advancing `tail` and before publishing: receivers wait at that position
//!   (they report [`ChannelError::Stalled`]); `recover` publishes a tombstone that receivers
//!   skip, and frees a side allocation the slot already owned. The message is not sent (its
//!   send never returned success).
//! - Sender, after publishing: the message is delivered; `recover` only releases the claim.
//! - Receiver, before advancing `head`: the message stays queued; `recover` releases the claim.
//! - Receiver, after advancing `head` and before releasing the slot: the message is lost with
//!   the receiver (it was taken); `recover` frees its side allocation and the slot.
//! - Receiver, after releasing the slot: a transferred allocation is now owned by the dead
//!   receiver; `Pool::recover` frees it.
//! - Side allocations are owned by the sender until the slot holds their descriptor, then by
//!   the channel (a structure owner id), then by the receiver, so each death frees each
//!   allocation exactly once.

use core::cell::Cell;

use heapless::Vec;

use crate::error::ChannelError;
use crate::fault::{self, Step};
use crate::pool::{Alloc, AllocKind, Pool, STRUCT_OWNER_BIT};
use crate::region::Region;
use crate::sync::{AtomicU32, Ordering, fence, spin_hint};
use crate::time::{Clock, Deadline, expired};

/// `"DRCH"`: marks a channel header.
const CHAN_MAGIC: u32 = 0x4843_5244;
/// Layout version of channels and of their serialized descriptors.
pub const CHANNEL_LAYOUT_VERSION: u32 = 1;
/// Default capacity (Dragon's).
pub const DEFAULT_CAPACITY: u32 = 100;
/// Default inline bytes per slot (Dragon's).
pub const DEFAULT_BLOCK_SIZE: u32 = 1024;
/// Largest capacity.
pub const MAX_CAPACITY: u32 = 1 << 24;
/// Largest block size.
pub const MAX_BLOCK_SIZE: u32 = 1 << 24;

const STATE_DESTROYED: u32 = 0x4445_4144;
const ROLE_RECV: u32 = 1 << 31;
const OWNER_MASK: u32 = !ROLE_RECV;
/// Spins on a claimed or unpublished slot before [`ChannelError::Stalled`].
#[cfg(not(loom))]
const STALL_SPINS: u32 = 1 << 16;
/// Under loom every spin is a scheduling branch: give up quickly.
#[cfg(loom)]
const STALL_SPINS: u32 = 4;

const F_INLINE: u32 = 1;
const F_SIDE: u32 = 2;
const F_TOMBSTONE: u32 = 8;
/// The slot is free, but the side allocation its descriptor names still has to be freed (the
/// receiver could not take the pool lock): the next sender to claim the slot frees it.
const F_FREE_PENDING: u32 = 16;

const LINE: usize = 64;
/// How many positions past its own a sender prefetches (see `Channel::prefetch_ahead`).
#[cfg(not(any(loom, miri)))]
const PREFETCH_AHEAD: u32 = 2;

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

/// Poll operations (Dragon's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Poll {
    /// A message can be received (1) or not (0).
    In,
    /// A message can be sent (1) or not (0).
    Out,
    /// Either.
    InOut,
    /// The channel is empty.
    Empty,
    /// The channel is full.
    Full,
    /// Number of queued messages.
    Size,
    /// Capacity.
    Capacity,
    /// Receivers registered as blocked (sleeping) on the channel.
    BlockedReceivers,
}

/// What a receive returns besides the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Received {
    /// Payload bytes.
    pub len: usize,
    /// The sender's `hints`.
    pub hints: u64,
    /// The sender's `clientid`.
    pub clientid: u64,
}

/// How a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode<'a> {
    /// Copy these bytes (the sender keeps its buffer).
    Copy(&'a [u8]),
    /// Move this allocation (of the channel's pool or buffer pool) to the receiver: zero copy.
    /// `len` payload bytes of it are the message.
    Transfer {
        /// The allocation; owned by the sender until the send succeeds.
        alloc: Alloc,
        /// Payload bytes.
        len: usize,
    },
}

/// A serialized channel descriptor: fixed size, versioned, checksummed.
pub type ChannelDescriptor = Vec<u8, { Channel::DESCRIPTOR_LEN }>;

/// Sleep/wake words of one direction, for the std adapter's futex waits.
///
/// Protocol (std `sync/mpmc` style): a waiter calls [`Event::register`], checks readiness
/// once more, sleeps on [`Event::word`] while it still holds the returned value, then calls
/// [`Event::unregister`]. The party that makes the condition true calls [`Event::notify`]
/// and wakes sleepers only when it returns `true`. Both sides' SeqCst operations order the
/// "register, then check" against "change, then look for waiters": no lost wake-up.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    seq: &'a AtomicU32,
    waiters: &'a AtomicU32,
}

impl<'a> Event<'a> {
    /// Registers a waiter; returns the word value to sleep on.
    pub fn register(&self) -> u32 {
        // SYNC: register waiter (SeqCst) <-> notify's fence + waiters load.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.seq.load(Ordering::SeqCst)
    }

    /// Unregisters a waiter.
    pub fn unregister(&self) {
        let _ = self
            .waiters
            .fetch_update(Ordering::Release, Ordering::Relaxed, |w| w.checked_sub(1));
    }

    /// Call after making the condition true. Returns whether sleepers may need a wake-up
    /// (the word was bumped); then the caller wakes them.
    #[inline]
    pub fn notify(&self) -> bool {
        // SYNC: fence (SeqCst) <-> register's SeqCst RMW: either the waiter sees the change
        // in its re-check, or we see the waiter here.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.seq.fetch_add(1, Ordering::Release);
        true
    }

    /// The word sleepers wait on.
    pub fn word(&self) -> &'a AtomicU32 {
        self.seq
    }

    /// Registered waiters.
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }
}

/// What [`Channel::recover`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelRecovery {
    /// Claims of dead parties released with nothing else to do.
    pub claims_released: u32,
    /// Positions a dead sender had taken but not published, now tombstones.
    pub tombstones: u32,
    /// Messages taken by a receiver that died before finishing (lost with it).
    pub lost_in_receive: u32,
    /// Side allocations freed.
    pub freed: u32,
}

/// Geometry cached in a handle after validation.
#[derive(Clone, Copy, Debug)]
struct Geo {
    base: usize,
    capacity: u32,
    block_size: u32,
    one_lap: u32,
    stride: usize,
    slots_off: usize,
}

// Header field offsets (from the channel allocation).
const H_MAGIC: usize = 0;
const H_VERSION: usize = 4;
const H_UID: usize = 8;
const H_CAPACITY: usize = 16;
const H_BLOCK: usize = 20;
const H_ONE_LAP: usize = 24;
const H_STRIDE: usize = 28;
const H_SLOTS_OFF: usize = 32;
const H_STRUCT_OWNER: usize = 36;
const H_BUF_POOL: usize = 40; // u64 uid; 0 = none
const H_FLAGS: usize = 48;
const H_STATE: usize = LINE;
const H_TAIL: usize = 2 * LINE;
const H_HEAD: usize = 3 * LINE;
const H_RECV_EV: usize = 4 * LINE;
const H_SEND_EV: usize = 5 * LINE;
const HEADER_BYTES: usize = 6 * LINE;

// Slot field offsets (from the slot start). Atomics first, sized for loom too.
const ATOMIC: usize = core::mem::size_of::<AtomicU32>();
const S_SEQ: usize = 0;
const S_CLAIM: usize = ATOMIC;
const S_LEN: usize = 2 * ATOMIC;
const S_FLAGS: usize = S_LEN + 4;
const S_HINTS: usize = S_LEN + 8;
const S_CLIENT: usize = S_LEN + 16;
const S_DESC: usize = S_LEN + 24;
const SLOT_HDR: usize = S_DESC + Alloc::SERIALIZED_LEN;

#[cfg(not(loom))]
const _: () = assert!(SLOT_HDR == 48 && ATOMIC == 4);
const _: () = assert!(2 * ATOMIC <= LINE);

/// A handle on a channel. Every party (thread, process or core) may hold its own; all of
/// them see the same queue.
#[derive(Clone, Copy, Debug)]
pub struct Channel {
    pool: Pool,
    buffer_pool: Option<Pool>,
    alloc: Alloc,
    uid: u64,
    struct_owner: u32,
    /// The state word's value while this channel lives (see `ready_token`), computed once.
    token: u32,
    geo: Geo,
}

/// A claimed slot, for the duration of one step.
#[derive(Clone, Copy)]
struct Claimed {
    slot: usize,
    pos: u32,
}

impl Channel {
    /// Bytes of a serialized descriptor.
    pub const DESCRIPTOR_LEN: usize = 48;

    /// Pool bytes a channel with these attributes occupies (before power-of-two rounding).
    pub fn required_size(attrs: &ChannelAttrs) -> Result<usize, ChannelError> {
        let (stride, _) = Self::check_attrs(attrs)?;
        Ok(HEADER_BYTES + stride * attrs.capacity as usize)
    }

    fn check_attrs(attrs: &ChannelAttrs) -> Result<(usize, u32), ChannelError> {
        if attrs.capacity == 0 {
            return Err(ChannelError::BadAttr("capacity must be at least 1"));
        }
        if attrs.capacity > MAX_CAPACITY {
            return Err(ChannelError::BadAttr("capacity above 2^24"));
        }
        if attrs.block_size > MAX_BLOCK_SIZE {
            return Err(ChannelError::BadAttr("block size above 2^24"));
        }
        let stride = (SLOT_HDR + attrs.block_size as usize).div_ceil(LINE) * LINE;
        Ok((stride, (attrs.capacity + 1).next_power_of_two()))
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
        let (stride, one_lap) = Self::check_attrs(attrs)?;
        let size = HEADER_BYTES + stride * attrs.capacity as usize;
        let r = pool.region();
        let uid_of = |off: usize, size: usize| -> Option<u64> {
            (size >= HEADER_BYTES && r.read_u32(off + H_MAGIC) == CHAN_MAGIC)
                .then(|| r.read_u64(off + H_UID))
        };
        let created = pool.alloc_unique(
            size,
            AllocKind::Channel,
            pool.owner(),
            |info| uid_of(info.offset, info.size) == Some(c_uid),
            |a, off| {
                // Under the pool lock: enough of the header for uid uniqueness; the channel
                // is not READY yet, so nobody attaches to it.
                r.init_atomic(off + H_STATE, 0);
                r.write_u64(off + H_UID, c_uid);
                r.write_u32(off + H_MAGIC, CHAN_MAGIC);
                r.write_u32(off + H_STRUCT_OWNER, STRUCT_OWNER_BIT | a.id());
            },
        )?;
        let Some(alloc) = created else {
            return Err(ChannelError::UidInUse(c_uid));
        };
        let base = pool.resolve(&alloc)?.0;
        // The channel structure owns itself, so the creator's death does not free it.
        pool.set_owner(&alloc, STRUCT_OWNER_BIT | alloc.id())?;
        r.write_u32(base + H_VERSION, CHANNEL_LAYOUT_VERSION);
        r.write_u32(base + H_CAPACITY, attrs.capacity);
        r.write_u32(base + H_BLOCK, attrs.block_size);
        r.write_u32(base + H_ONE_LAP, one_lap);
        r.write_u32(base + H_STRIDE, stride as u32);
        r.write_u32(base + H_SLOTS_OFF, HEADER_BYTES as u32);
        r.write_u64(base + H_BUF_POOL, buffer_pool.map_or(0, |p| p.uid()));
        r.write_u32(base + H_FLAGS, u32::from(buffer_pool.is_some()));
        for off in [
            H_TAIL,
            H_HEAD,
            H_RECV_EV,
            H_RECV_EV + ATOMIC,
            H_SEND_EV,
            H_SEND_EV + ATOMIC,
        ] {
            r.init_atomic(base + off, 0);
        }
        for i in 0..attrs.capacity as usize {
            let s = base + HEADER_BYTES + i * stride;
            r.init_atomic(s + S_SEQ, i as u32);
            r.init_atomic(s + S_CLAIM, 0);
            r.write_u32(s + S_FLAGS, 0);
            r.write_u32(s + S_LEN, 0);
        }
        let ch = Self {
            pool: *pool,
            buffer_pool: buffer_pool.copied(),
            alloc,
            uid: c_uid,
            struct_owner: STRUCT_OWNER_BIT | alloc.id(),
            token: Self::ready_token(c_uid, &alloc),
            geo: Geo {
                base,
                capacity: attrs.capacity,
                block_size: attrs.block_size,
                one_lap,
                stride,
                slots_off: HEADER_BYTES,
            },
        };
        // SYNC: publish channel (Release) <-> attach / every operation (Acquire state load).
        ch.atomic(H_STATE).store(ch.token, Ordering::Release);
        Ok(ch)
    }

    /// The serialized descriptor: another party attaches with it.
    pub fn serialize(&self) -> ChannelDescriptor {
        let mut b = [0u8; Self::DESCRIPTOR_LEN];
        b[0..4].copy_from_slice(&CHAN_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&CHANNEL_LAYOUT_VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.pool.uid().to_le_bytes());
        b[16..32].copy_from_slice(&self.alloc.to_bytes());
        b[32..40].copy_from_slice(&self.uid.to_le_bytes());
        b[40..44].copy_from_slice(&self.buffer_pool.map_or(0, |p| p.uid() as u32).to_le_bytes());
        let sum = fnv1a(&b[..44]);
        b[44..48].copy_from_slice(&sum.to_le_bytes());
        let mut v = Vec::new();
        // Cannot fail: the buffer has exactly DESCRIPTOR_LEN bytes.
        let _ = v.extend_from_slice(&b);
        v
    }

    /// Reads the channel uid and pool uid out of a descriptor without attaching.
    ///
    /// # Errors
    /// [`ChannelError::BadDescriptor`] when the bytes are not a valid descriptor.
    pub fn peek_descriptor(bytes: &[u8]) -> Result<(u64, u64), ChannelError> {
        let b = check_descriptor(bytes)?;
        Ok((u64_at(b, 32), u64_at(b, 8)))
    }

    /// Attaches to a channel from its serialized descriptor. `pool` must be the channel's
    /// pool (attached by this party); `buffer_pool` its buffer pool if it has one.
    ///
    /// # Errors
    /// [`ChannelError::BadDescriptor`] for malformed, truncated or foreign bytes,
    /// [`ChannelError::Destroyed`] for a channel that no longer exists.
    pub fn attach(
        pool: &Pool,
        bytes: &[u8],
        buffer_pool: Option<&Pool>,
    ) -> Result<Self, ChannelError> {
        let b = check_descriptor(bytes)?;
        if u64_at(b, 8) != pool.uid() {
            return Err(ChannelError::BadDescriptor(
                "descriptor is for another pool",
            ));
        }
        let alloc =
            Alloc::from_bytes(&b[16..32]).ok_or(ChannelError::BadDescriptor("allocation"))?;
        let uid = u64_at(b, 32);
        let (base, size) = match pool.resolve(&alloc) {
            Ok(s) => s,
            Err(crate::PoolError::Stale) => return Err(ChannelError::Destroyed),
            Err(crate::PoolError::BadDescriptor) => {
                return Err(ChannelError::BadDescriptor(
                    "names no allocation of this pool",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let buf_tag = u32::from_le_bytes([b[40], b[41], b[42], b[43]]);
        Self::from_parts(pool, alloc, base, size, uid, buf_tag, buffer_pool)
    }

    fn from_parts(
        pool: &Pool,
        alloc: Alloc,
        base: usize,
        size: usize,
        uid: u64,
        buf_tag: u32,
        buffer_pool: Option<&Pool>,
    ) -> Result<Self, ChannelError> {
        let r = pool.region();
        if size < HEADER_BYTES
            || r.read_u32(base + H_MAGIC) != CHAN_MAGIC
            || r.read_u64(base + H_UID) != uid
        {
            return Err(ChannelError::Destroyed);
        }
        if r.read_u32(base + H_VERSION) != CHANNEL_LAYOUT_VERSION {
            return Err(ChannelError::BadDescriptor("channel layout version"));
        }
        let attrs = ChannelAttrs {
            capacity: r.read_u32(base + H_CAPACITY),
            block_size: r.read_u32(base + H_BLOCK),
        };
        let (stride, one_lap) =
            Self::check_attrs(&attrs).map_err(|_| ChannelError::Corrupt("channel attributes"))?;
        if r.read_u32(base + H_ONE_LAP) != one_lap
            || r.read_u32(base + H_STRIDE) as usize != stride
            || r.read_u32(base + H_SLOTS_OFF) as usize != HEADER_BYTES
            || HEADER_BYTES + stride * attrs.capacity as usize > size
            || r.read_u32(base + H_STRUCT_OWNER) != STRUCT_OWNER_BIT | alloc.id()
        {
            return Err(ChannelError::Corrupt("channel geometry"));
        }
        let has_buf = r.read_u32(base + H_FLAGS) & 1 == 1;
        let want = r.read_u64(base + H_BUF_POOL);
        match (has_buf, buffer_pool) {
            (false, None) => {}
            (true, Some(bp)) if bp.uid() == want && want as u32 == buf_tag => {}
            (true, None) => {
                return Err(ChannelError::BadDescriptor("channel needs its buffer pool"));
            }
            _ => return Err(ChannelError::BadDescriptor("wrong buffer pool")),
        }
        let ch = Self {
            pool: *pool,
            buffer_pool: buffer_pool.copied(),
            alloc,
            uid,
            struct_owner: STRUCT_OWNER_BIT | alloc.id(),
            token: Self::ready_token(uid, &alloc),
            geo: Geo {
                base,
                capacity: attrs.capacity,
                block_size: attrs.block_size,
                one_lap,
                stride,
                slots_off: HEADER_BYTES,
            },
        };
        ch.check_ready()?;
        Ok(ch)
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
        // SYNC: destroy (AcqRel CAS) <-> operations' Acquire state load.
        self.atomic(H_STATE)
            .compare_exchange(
                self.token,
                STATE_DESTROYED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map_err(|_| ChannelError::Destroyed)?;
        let r = self.region();
        for i in 0..self.geo.capacity as usize {
            let s = self.slot_off(i);
            if r.read_u32(s + S_FLAGS) & F_SIDE != 0 {
                self.free_side_if_ours(s);
            }
        }
        self.side_pool()
            .free_all_of(self.struct_owner, Some(&self.alloc))?;
        r.write_u32(self.geo.base + H_MAGIC, 0);
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
        self.geo.capacity as usize
    }

    /// Inline bytes per slot.
    pub fn block_size(&self) -> usize {
        self.geo.block_size as usize
    }

    /// Messages queued now (a snapshot).
    pub fn len(&self) -> usize {
        let (tail_a, head_a) = (self.atomic(H_TAIL), self.atomic(H_HEAD));
        loop {
            let tail = tail_a.load(Ordering::SeqCst);
            let head = head_a.load(Ordering::SeqCst);
            if tail_a.load(Ordering::SeqCst) == tail {
                let mask = self.geo.one_lap - 1;
                let (hix, tix) = ((head & mask) as usize, (tail & mask) as usize);
                let cap = self.capacity();
                return if hix < tix {
                    tix - hix
                } else if hix > tix {
                    // Saturating: a corrupt `head` may hold an index beyond the capacity.
                    (cap + tix).saturating_sub(hix)
                } else if tail == head {
                    0
                } else {
                    cap
                }
                .min(cap);
            }
        }
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
        let head = self.atomic(H_HEAD).load(Ordering::Relaxed);
        // A corrupt `head`: `true`, so that the receive reports it.
        self.hint_seq(head).is_none_or(|(_, seq)| seq != head)
    }

    /// A hint for waiting senders: whether the slot at `tail` is free for this lap (see
    /// [`Channel::may_recv`]).
    #[inline]
    pub fn may_send(&self) -> bool {
        let tail = self.atomic(H_TAIL).load(Ordering::Relaxed);
        self.hint_seq(tail)
            .is_none_or(|(_, seq)| seq.wrapping_add(self.geo.one_lap) != tail.wrapping_add(1))
    }

    /// The slot of position `pos` and its sequence word, read for a hint only (Relaxed: the
    /// operation that acts on the hint acquires the slot itself); `None` when `pos` names no
    /// slot.
    #[inline]
    fn hint_seq(&self, pos: u32) -> Option<(usize, u32)> {
        let s = self.slot_off(self.index(pos).ok()?);
        Some((s, self.slot_atomic(s, S_SEQ).load(Ordering::Relaxed)))
    }

    /// Dragon's poll, answered at once: booleans as 0/1, counts as numbers.
    ///
    /// # Errors
    /// [`ChannelError::Destroyed`].
    pub fn poll(&self, op: Poll) -> Result<u64, ChannelError> {
        self.check_ready()?;
        let len = self.len();
        let cap = self.capacity();
        Ok(match op {
            Poll::In => u64::from(len > 0),
            Poll::Out => u64::from(len < cap),
            Poll::InOut => u64::from(len > 0 || len < cap),
            Poll::Empty => u64::from(len == 0),
            Poll::Full => u64::from(len == cap),
            Poll::Size => len as u64,
            Poll::Capacity => cap as u64,
            Poll::BlockedReceivers => u64::from(self.recv_event().waiters()),
        })
    }

    /// Words receivers sleep on (senders notify after every send).
    pub fn recv_event(&self) -> Event<'_> {
        Event {
            seq: self.atomic(H_RECV_EV),
            waiters: self.atomic(H_RECV_EV + ATOMIC),
        }
    }

    /// Words senders sleep on (receivers notify after every receive).
    pub fn send_event(&self) -> Event<'_> {
        Event {
            seq: self.atomic(H_SEND_EV),
            waiters: self.atomic(H_SEND_EV + ATOMIC),
        }
    }

    /// Try-once copy send of `bytes` with `hints` and `clientid`.
    ///
    /// # Errors
    /// [`ChannelError::Full`], [`ChannelError::Destroyed`], [`ChannelError::Stalled`],
    /// [`ChannelError::Pool`] when a side allocation is needed and the pool has no room.
    #[inline]
    pub fn try_send(&self, bytes: &[u8], hints: u64, clientid: u64) -> Result<(), ChannelError> {
        self.try_send_mode(SendMode::Copy(bytes), hints, clientid)
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
        if let SendMode::Transfer { alloc, len } = mode {
            let (_, size) = self.side_pool().resolve(&alloc).map_err(|e| match e {
                crate::PoolError::Stale | crate::PoolError::BadDescriptor => {
                    ChannelError::BadMessage
                }
                // A stalled pool lock says nothing about the message.
                e => e.into(),
            })?;
            if len > size {
                return Err(ChannelError::BadMessage);
            }
        }
        // A payload that needs a side allocation gets it, filled, before a position is
        // claimed: a send that fails for want of memory must not cost a slot. (A sender that
        // dies meanwhile owns the allocation, so recovery frees it.) The full check first
        // spares the allocation and copy when the channel is visibly full.
        let side_copy = match mode {
            SendMode::Copy(bytes) if bytes.len() > self.block_size() => {
                if self.is_full() {
                    return Err(ChannelError::Full);
                }
                let side = self.side_pool();
                let a = side.alloc(bytes.len(), AllocKind::ChannelBuffer)?;
                if let Some((off, _)) = side.span_unchecked(&a) {
                    side.region().copy_in(off, bytes);
                }
                Some((a, bytes.len()))
            }
            _ => None,
        };
        let c = match self.claim_send() {
            Ok(c) => c,
            Err(e) => {
                if let Some((a, _)) = side_copy {
                    let _ = self.side_pool().free(a);
                }
                return Err(e);
            }
        };
        let r = self.region();
        let s = c.slot;
        match (mode, side_copy) {
            (_, Some((a, len))) => {
                if let Err(e) = self.put_side(c, a, len) {
                    let _ = self.side_pool().free(a);
                    return Err(e);
                }
            }
            (SendMode::Copy(bytes), None) => {
                r.copy_in(s + SLOT_HDR, bytes);
                r.write_u32(s + S_LEN, bytes.len() as u32);
                r.write_u32(s + S_FLAGS, F_INLINE);
            }
            (SendMode::Transfer { alloc, len }, None) => self.put_side(c, alloc, len)?,
        }
        r.write_u64(s + S_HINTS, hints);
        r.write_u64(s + S_CLIENT, clientid);
        let pos = c.pos;
        self.publish_send(c)?;
        self.prefetch_ahead(pos);
        Ok(())
    }

    /// After a send at `pos`: if the slot [`PREFETCH_AHEAD`] positions on is already free for
    /// its lap, start taking its header and first payload line for writing, so that the send
    /// that will use it does not wait for the last receiver's cache to give them up (a claim
    /// CAS on a line another CPU holds costs a full cache-line round trip). A slot that still
    /// holds a message is left alone: taking it would slow down the receiver reading it.
    /// Measured (two threads streaming 64 B messages through one channel, capacity 100,
    /// 1 KiB slots): 75-103 ns per message against 117-155 without; distance 1 (the slot a
    /// caught-up receiver polls) and 3-16 were worse or no better. A hint only: loom and Miri
    /// builds leave it out (its extra load would only slow their runs down).
    #[inline]
    fn prefetch_ahead(&self, pos: u32) {
        #[cfg(not(any(loom, miri)))]
        {
            let mut ahead = pos;
            for _ in 0..PREFETCH_AHEAD {
                ahead = self.next_pos(ahead);
            }
            // A capacity up to the distance wraps onto the sender's own slot, whose sequence
            // now says "published", never `ahead`: nothing is prefetched.
            if let Some((s, seq)) = self.hint_seq(ahead)
                && seq == ahead
            {
                self.region().prefetch_write(s);
                self.region().prefetch_write(s + LINE);
            }
        }
        #[cfg(any(loom, miri))]
        let _ = pos;
    }

    /// Blocking send: retries until `deadline` of `clock`, relaxing with `R`. A deadline
    /// already reached tries once and reports `Full`.
    ///
    /// # Errors
    /// As [`Channel::try_send_mode`], plus [`ChannelError::Timeout`].
    pub fn send_blocking<C: Clock + ?Sized, R: spin::RelaxStrategy>(
        &self,
        mode: SendMode<'_>,
        hints: u64,
        clientid: u64,
        clock: &C,
        deadline: Deadline,
    ) -> Result<(), ChannelError> {
        block_on::<_, _, R, _>(clock, deadline, ChannelError::Full, || {
            self.try_send_mode(mode, hints, clientid)
        })
    }

    /// Try-once receive into `dest`: the payload is copied, a side allocation freed. If `dest`
    /// is too small the message stays queued.
    ///
    /// # Errors
    /// [`ChannelError::Empty`], [`ChannelError::DestinationTooSmall`],
    /// [`ChannelError::Destroyed`], [`ChannelError::Stalled`].
    #[inline]
    pub fn try_recv_into(&self, dest: &mut [u8]) -> Result<Received, ChannelError> {
        let capacity = dest.len();
        self.recv_inner(
            |len, _| {
                if len > capacity {
                    Err(ChannelError::DestinationTooSmall {
                        needed: len,
                        capacity,
                    })
                } else {
                    Ok(())
                }
            },
            |ch, s, len, side| {
                let r = ch.region();
                match side {
                    None => {
                        r.copy_out(s + SLOT_HDR, &mut dest[..len]);
                    }
                    Some(a) => {
                        let sp = ch.side_pool();
                        if let Some((off, _)) = sp.span_unchecked(&a) {
                            sp.region().copy_out(off, &mut dest[..len]);
                        }
                        match sp.free(a) {
                            Ok(()) => {}
                            Err(crate::PoolError::Died) => return Err(ChannelError::Died),
                            // The pool lock is stalled (its holder may be dead): leave the
                            // free to the slot's next sender rather than leak it.
                            Err(crate::PoolError::Stalled { .. }) => return Ok(true),
                            Err(_) => {}
                        }
                    }
                }
                Ok(false)
            },
        )
    }

    /// Try-once receive that hands over an allocation: a side allocation moves to the
    /// receiver as is (zero copy); an inline payload is copied into a new allocation from the
    /// side pool. The receiver owns the returned allocation.
    ///
    /// # Errors
    /// As [`Channel::try_recv_into`], plus [`ChannelError::Pool`] when no allocation for an
    /// inline payload can be made (the message stays queued).
    pub fn try_recv_alloc(&self) -> Result<(Alloc, Received), ChannelError> {
        let fresh: Cell<Option<Alloc>> = Cell::new(None);
        let mut out: Option<Alloc> = None;
        let got = self.recv_inner(
            |len, is_side| {
                if !is_side && fresh.get().is_none() {
                    fresh.set(Some(self.side_pool().alloc(len, AllocKind::Data)?));
                }
                Ok(())
            },
            |ch, s, len, side| {
                match side {
                    Some(a) => {
                        // A stalled pool lock leaves the allocation recorded as the channel's;
                        // the caller still owns it and frees it by descriptor.
                        if ch.side_pool().set_owner(&a, ch.side_pool().owner())
                            == Err(crate::PoolError::Died)
                        {
                            return Err(ChannelError::Died);
                        }
                        out = Some(a);
                    }
                    None => {
                        if let Some(a) = fresh.take() {
                            let sp = ch.side_pool();
                            if let Some((off, _)) = sp.span_unchecked(&a) {
                                sp.region()
                                    .copy_within_from(ch.region(), s + SLOT_HDR, off, len);
                            }
                            out = Some(a);
                        }
                    }
                }
                Ok(false)
            },
        );
        if let Some(a) = fresh.take() {
            let _ = self.side_pool().free(a);
        }
        let got = got?;
        out.map(|a| (a, got))
            .ok_or(ChannelError::Corrupt("message vanished"))
    }

    /// Blocking receive into `dest`; see [`Channel::send_blocking`] for the deadline rules.
    ///
    /// # Errors
    /// As [`Channel::try_recv_into`], plus [`ChannelError::Timeout`].
    pub fn recv_blocking_into<C: Clock + ?Sized, R: spin::RelaxStrategy>(
        &self,
        dest: &mut [u8],
        clock: &C,
        deadline: Deadline,
    ) -> Result<Received, ChannelError> {
        block_on::<_, _, R, _>(clock, deadline, ChannelError::Empty, || {
            self.try_recv_into(dest)
        })
    }

    /// Finishes or undoes the steps of dead parties: releases their claims, turns positions a
    /// dead sender took into tombstones, frees side allocations that would otherwise leak.
    /// `is_alive` answers for party owner ids.
    ///
    /// # Errors
    /// [`ChannelError::Destroyed`].
    pub fn recover(&self, is_alive: &dyn Fn(u32) -> bool) -> Result<ChannelRecovery, ChannelError> {
        self.check_ready()?;
        let mut rep = ChannelRecovery::default();
        let mask = self.geo.one_lap - 1;
        for i in 0..self.geo.capacity as usize {
            let s = self.slot_off(i);
            let claim_a = self.slot_atomic(s, S_CLAIM);
            let c = claim_a.load(Ordering::Acquire);
            if c == 0 || is_alive(c & OWNER_MASK) {
                continue;
            }
            // Take the dead party's claim over (keeping its role bit), so that of several
            // parties recovering at once exactly one repairs this slot, and no live party
            // touches it meanwhile.
            let mine = (c & ROLE_RECV) | self.pool.owner();
            // SYNC: take over claim (CAS AcqRel) <-> the dead party's last Release stores.
            if claim_a
                .compare_exchange(c, mine, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let seq_a = self.slot_atomic(s, S_SEQ);
            let seq = seq_a.load(Ordering::Acquire);
            let ix = seq & mask;
            // A claim does not say whether its party got as far as moving `tail` or `head`:
            // it may have died between its claim CAS and the re-check that follows, on a slot
            // that had meanwhile moved on to a later position. Only an index that has moved
            // past the slot's position says the dead party took that position.
            let moved_past = |index: usize, pos: u32| {
                (self.atomic(index).load(Ordering::Acquire).wrapping_sub(pos) as i32) > 0
            };
            if c & ROLE_RECV == 0 && ix == i as u32 && moved_past(H_TAIL, seq) {
                // Sender took position `seq` but did not publish: tombstone it.
                self.free_side_if_ours(s);
                let r = self.region();
                r.write_u32(s + S_FLAGS, F_TOMBSTONE);
                r.write_u32(s + S_LEN, 0);
                seq_a.store(seq.wrapping_add(1), Ordering::Release);
                rep.tombstones += 1;
            } else if c & ROLE_RECV != 0
                && ix == i as u32 + 1
                && moved_past(H_HEAD, seq.wrapping_sub(1))
            {
                // Receiver took position `seq - 1` but did not release the slot.
                if self.region().read_u32(s + S_FLAGS) & F_SIDE != 0 && self.free_side_if_ours(s) {
                    rep.freed += 1;
                }
                seq_a.store(
                    seq.wrapping_sub(1).wrapping_add(self.geo.one_lap),
                    Ordering::Release,
                );
                rep.lost_in_receive += 1;
            } else {
                rep.claims_released += 1;
            }
            // SYNC: release claim (Release) <-> claim CAS (Acquire).
            claim_a.store(0, Ordering::Release);
        }
        if rep.tombstones + rep.lost_in_receive > 0 {
            self.recv_event().notify();
            self.send_event().notify();
        }
        Ok(rep)
    }

    /// The claim word of the slot at the current head (what a stalled receiver waits on) and
    /// at the current tail; diagnostic for tests and the adapter.
    pub fn claims(&self) -> (u32, u32) {
        let mask = self.geo.one_lap - 1;
        let h = (self.atomic(H_HEAD).load(Ordering::Relaxed) & mask).min(self.geo.capacity - 1);
        let t = (self.atomic(H_TAIL).load(Ordering::Relaxed) & mask).min(self.geo.capacity - 1);
        (
            self.slot_atomic(self.slot_off(h as usize), S_CLAIM)
                .load(Ordering::Relaxed)
                & OWNER_MASK,
            self.slot_atomic(self.slot_off(t as usize), S_CLAIM)
                .load(Ordering::Relaxed)
                & OWNER_MASK,
        )
    }

    // ----- internals -----

    fn region(&self) -> Region {
        self.pool.region()
    }

    fn atomic(&self, off: usize) -> &AtomicU32 {
        // SAFETY: header atomics are at fixed offsets inside the validated channel allocation,
        // constructed by `create`; the region outlives the handle.
        unsafe { self.region().atomic(self.geo.base + off) }
    }

    fn slot_off(&self, i: usize) -> usize {
        debug_assert!(i < self.geo.capacity as usize);
        self.geo.base + self.geo.slots_off + i * self.geo.stride
    }

    fn slot_atomic(&self, slot: usize, field: usize) -> &AtomicU32 {
        // SAFETY: `slot` comes from `slot_off` with an index below the validated capacity;
        // `create` constructed the slot atomics.
        unsafe { self.region().atomic(slot + field) }
    }

    /// The state word of a live channel: specific to this channel (uid, record, generation),
    /// so a stale handle whose memory was reused by another channel still reads "destroyed".
    fn ready_token(uid: u64, alloc: &Alloc) -> u32 {
        let mut b = [0u8; 14];
        b[..8].copy_from_slice(&uid.to_le_bytes());
        b[8..12].copy_from_slice(&alloc.id().to_le_bytes());
        b[12..].copy_from_slice(&alloc.generation().to_le_bytes());
        let t = fnv1a(&b);
        if t == 0 || t == STATE_DESTROYED { 1 } else { t }
    }

    fn check_ready(&self) -> Result<(), ChannelError> {
        // SYNC: Acquire <-> publish channel (Release) in `create`, destroy's CAS.
        if self.atomic(H_STATE).load(Ordering::Acquire) != self.token {
            return Err(ChannelError::Destroyed);
        }
        Ok(())
    }

    fn next_pos(&self, pos: u32) -> u32 {
        let mask = self.geo.one_lap - 1;
        if (pos & mask) + 1 < self.geo.capacity {
            pos.wrapping_add(1)
        } else {
            (pos & !mask).wrapping_add(self.geo.one_lap)
        }
    }

    /// Validated slot index of a position read from shared memory.
    fn index(&self, pos: u32) -> Result<usize, ChannelError> {
        let ix = pos & (self.geo.one_lap - 1);
        if ix >= self.geo.capacity {
            return Err(ChannelError::Corrupt("position outside the slots"));
        }
        Ok(ix as usize)
    }

    /// Claims the slot at `tail` and advances `tail`.
    fn claim_send(&self) -> Result<Claimed, ChannelError> {
        let (tail_a, head_a) = (self.atomic(H_TAIL), self.atomic(H_HEAD));
        let me = self.pool.owner();
        let mut spins = 0u32;
        loop {
            let tail = tail_a.load(Ordering::Relaxed);
            let s = self.slot_off(self.index(tail)?);
            let seq_a = self.slot_atomic(s, S_SEQ);
            // SYNC: acquire slot (Acquire) <-> receiver's slot release (Release).
            let seq = seq_a.load(Ordering::Acquire);
            if seq == tail {
                if fault::dies(me, Step::SendRead) {
                    return Err(ChannelError::Died);
                }
                let claim = self.slot_atomic(s, S_CLAIM);
                // SYNC: claim (CAS Acquire) <-> release claim (Release) of the last claimant.
                match claim.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => {
                        if fault::dies(me, Step::SendClaimed) {
                            return Err(ChannelError::Died);
                        }
                        // Holding the claim of the slot whose sequence says "position `tail`",
                        // this party alone may move `tail` past it: a plain store suffices
                        // (one CAS per operation, not two).
                        if seq_a.load(Ordering::Acquire) == tail
                            && tail_a.load(Ordering::Relaxed) == tail
                        {
                            // Finish a free the slot's last receiver could not do, before
                            // taking the position: if the pool is still stalled, the slot is
                            // left as it was and the caller gets the pool's error.
                            if let Err(e) = self.finish_pending_free(s) {
                                claim.store(0, Ordering::Release);
                                return Err(e);
                            }
                            // SYNC: advance tail (Release) <-> other senders' tail load and the
                            // receivers' empty check (fence + tail load).
                            tail_a.store(self.next_pos(tail), Ordering::Release);
                            if fault::dies(me, Step::SendAdvanced) {
                                return Err(ChannelError::Died);
                            }
                            return Ok(Claimed { slot: s, pos: tail });
                        }
                        claim.store(0, Ordering::Release);
                    }
                    // Another sender claimed this position first: move on once it advances.
                    Err(_) if tail_a.load(Ordering::Relaxed) != tail => spins = 0,
                    Err(holder) => self.stall(&mut spins, holder)?,
                }
            } else if seq.wrapping_add(self.geo.one_lap) == tail.wrapping_add(1)
                || seq.wrapping_add(self.geo.one_lap) == tail
            {
                // The slot is still in last lap: its message is queued (`seq` = last lap's
                // position + 1), or last lap's sender took the position and has not published
                // yet (`seq` = last lap's position; it may be preempted, not only dead). Full
                // unless a receiver is mid-way.
                fence(Ordering::SeqCst);
                let head = head_a.load(Ordering::Relaxed);
                if head.wrapping_add(self.geo.one_lap) == tail {
                    return Err(ChannelError::Full);
                }
                let holder = self.slot_atomic(s, S_CLAIM).load(Ordering::Relaxed);
                self.stall(&mut spins, holder)?;
            } else if tail_a.load(Ordering::Relaxed) != tail {
                spins = 0;
            } else {
                // `tail` did not move, yet its slot is for no lap near it: only a corrupt
                // sequence word stays like this.
                spins += 1;
                if spins >= STALL_SPINS {
                    return Err(ChannelError::Corrupt("tail does not match any slot"));
                }
                spin_hint();
            }
        }
    }

    fn stall(&self, spins: &mut u32, holder: u32) -> Result<(), ChannelError> {
        *spins += 1;
        if *spins >= STALL_SPINS {
            return Err(ChannelError::Stalled {
                owner: holder & OWNER_MASK,
            });
        }
        self.pool.relax(*spins);
        Ok(())
    }

    /// Undoes a claim whose send failed after `tail` moved: the position becomes a tombstone.
    fn abort_send(&self, c: Claimed) {
        let r = self.region();
        r.write_u32(c.slot + S_FLAGS, F_TOMBSTONE);
        r.write_u32(c.slot + S_LEN, 0);
        let _ = self.publish_send(c);
    }

    /// Puts a side allocation in the claimed slot and hands it to the channel. On failure
    /// the position becomes a tombstone and the allocation still belongs to the caller.
    fn put_side(&self, c: Claimed, a: Alloc, len: usize) -> Result<(), ChannelError> {
        let r = self.region();
        let s = c.slot;
        // Order matters for crash recovery: descriptor in the slot first, then the channel
        // takes ownership, then publish.
        r.copy_in(s + S_DESC, &a.to_bytes());
        r.write_u32(s + S_LEN, len as u32);
        r.write_u32(s + S_FLAGS, F_SIDE);
        if let Err(e) = self.side_pool().set_owner(&a, self.struct_owner) {
            self.abort_send(c);
            return Err(e.into());
        }
        Ok(())
    }

    fn publish_send(&self, c: Claimed) -> Result<(), ChannelError> {
        if fault::dies(self.pool.owner(), Step::SendWritten) {
            return Err(ChannelError::Died);
        }
        // SYNC: publish message (Release) <-> receiver's seq load (Acquire).
        self.slot_atomic(c.slot, S_SEQ)
            .store(c.pos.wrapping_add(1), Ordering::Release);
        if fault::dies(self.pool.owner(), Step::SendPublished) {
            return Err(ChannelError::Died);
        }
        // SYNC: release claim (Release) <-> next claimant's CAS (Acquire).
        self.slot_atomic(c.slot, S_CLAIM)
            .store(0, Ordering::Release);
        Ok(())
    }

    /// Frees the side allocation a receiver left to the slot's next sender
    /// ([`F_FREE_PENDING`]); the caller holds the slot's claim.
    fn finish_pending_free(&self, s: usize) -> Result<(), ChannelError> {
        let r = self.region();
        if r.read_u32(s + S_FLAGS) & F_FREE_PENDING == 0 {
            return Ok(());
        }
        let mut d = [0u8; Alloc::SERIALIZED_LEN];
        r.copy_out(s + S_DESC, &mut d);
        if let Some(a) = Alloc::from_bytes(&d) {
            match self.side_pool().free(a) {
                // Stale: freed already (by a sender that died before clearing the flag, or
                // by recovery).
                Ok(()) | Err(crate::PoolError::Stale | crate::PoolError::BadDescriptor) => {}
                Err(e) => return Err(e.into()),
            }
        }
        r.write_u32(s + S_FLAGS, 0);
        Ok(())
    }

    /// Frees the slot's side allocation if the channel still owns it. Returns whether it did.
    fn free_side_if_ours(&self, s: usize) -> bool {
        let mut d = [0u8; Alloc::SERIALIZED_LEN];
        self.region().copy_out(s + S_DESC, &mut d);
        let Some(a) = Alloc::from_bytes(&d) else {
            return false;
        };
        let sp = self.side_pool();
        if sp.owner_of(&a) == Ok(self.struct_owner) {
            return sp.free(a).is_ok();
        }
        false
    }

    /// The receive skeleton: claim the head slot, let `prepare(len, is_side)` accept the
    /// message (or refuse it, leaving it queued), advance `head`, let `take` move the payload,
    /// release the slot. Tombstones are skipped.
    fn recv_inner(
        &self,
        mut prepare: impl FnMut(usize, bool) -> Result<(), ChannelError>,
        mut take: impl FnMut(&Self, usize, usize, Option<Alloc>) -> Result<bool, ChannelError>,
    ) -> Result<Received, ChannelError> {
        self.check_ready()?;
        let (tail_a, head_a) = (self.atomic(H_TAIL), self.atomic(H_HEAD));
        let me = self.pool.owner() | ROLE_RECV;
        let r = self.region();
        let mut spins = 0u32;
        loop {
            let head = head_a.load(Ordering::Relaxed);
            let s = self.slot_off(self.index(head)?);
            let seq_a = self.slot_atomic(s, S_SEQ);
            // SYNC: acquire message (Acquire) <-> publish message (Release).
            let seq = seq_a.load(Ordering::Acquire);
            if seq == head.wrapping_add(1) {
                if fault::dies(me & OWNER_MASK, Step::RecvRead) {
                    return Err(ChannelError::Died);
                }
                let claim = self.slot_atomic(s, S_CLAIM);
                // SYNC: claim (CAS Acquire) <-> release claim (Release).
                if let Err(holder) =
                    claim.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                {
                    if head_a.load(Ordering::Relaxed) != head {
                        spins = 0; // another receiver took this position: progress
                    } else {
                        self.stall(&mut spins, holder)?;
                    }
                    continue;
                }
                if fault::dies(me & OWNER_MASK, Step::RecvClaimed) {
                    return Err(ChannelError::Died);
                }
                if seq_a.load(Ordering::Acquire) != seq || head_a.load(Ordering::Relaxed) != head {
                    claim.store(0, Ordering::Release);
                    continue;
                }
                let flags = r.read_u32(s + S_FLAGS);
                let len = r.read_u32(s + S_LEN) as usize;
                let tomb = flags & F_TOMBSTONE != 0;
                let side = if tomb {
                    None
                } else if flags & F_SIDE != 0 {
                    let mut d = [0u8; Alloc::SERIALIZED_LEN];
                    r.copy_out(s + S_DESC, &mut d);
                    match Alloc::from_bytes(&d)
                        .and_then(|a| Some((a, self.side_pool().span_unchecked(&a)?)))
                    {
                        Some((a, (_, size))) if len <= size => Some(a),
                        _ => None,
                    }
                } else {
                    None
                };
                let valid =
                    tomb || (flags == F_INLINE && len <= self.block_size()) || side.is_some();
                if !tomb
                    && valid
                    && let Err(e) = prepare(len, side.is_some())
                {
                    claim.store(0, Ordering::Release);
                    return Err(e);
                }
                // The claim makes this receiver the only one that may move `head` past this
                // position (checked above): a plain store.
                // SYNC: advance head (Release) <-> senders' full check (fence + head load).
                head_a.store(self.next_pos(head), Ordering::Release);
                if fault::dies(me & OWNER_MASK, Step::RecvAdvanced) {
                    return Err(ChannelError::Died);
                }
                let got = Received {
                    len,
                    hints: r.read_u64(s + S_HINTS),
                    clientid: r.read_u64(s + S_CLIENT),
                };
                // An injected death inside `take` stops here, leaving the slot claimed.
                let pending = !tomb && valid && take(self, s, len, side)?;
                r.write_u32(s + S_FLAGS, if pending { F_FREE_PENDING } else { 0 });
                if fault::dies(me & OWNER_MASK, Step::RecvTaken) {
                    return Err(ChannelError::Died);
                }
                // SYNC: release slot (Release) <-> sender's seq load (Acquire).
                seq_a.store(head.wrapping_add(self.geo.one_lap), Ordering::Release);
                claim.store(0, Ordering::Release);
                if tomb {
                    continue;
                }
                if !valid {
                    return Err(ChannelError::Corrupt("slot header"));
                }
                return Ok(got);
            } else if seq == head || seq.wrapping_add(self.geo.one_lap) == head.wrapping_add(1) {
                // Nothing published at `head`: the slot waits for this lap's sender, or last
                // lap's receiver has taken its message and not released the slot yet (it may
                // be preempted, not only dead; no sender can take `head` before it does).
                // SYNC: fence (SeqCst) <-> sender's tail store and the fence of its full
                // check: an empty verdict is not reordered before the head load.
                fence(Ordering::SeqCst);
                if tail_a.load(Ordering::Relaxed) == head {
                    return Err(ChannelError::Empty);
                }
                // A sender took this position and is writing it (or `tail` moved since).
                let holder = self.slot_atomic(s, S_CLAIM).load(Ordering::Relaxed);
                self.stall(&mut spins, holder)?;
            } else if head_a.load(Ordering::Relaxed) != head {
                spins = 0;
            } else {
                // As in `claim_send`: an unmoving `head` whose slot matches no lap is corrupt.
                spins += 1;
                if spins >= STALL_SPINS {
                    return Err(ChannelError::Corrupt("head does not match any slot"));
                }
                spin_hint();
            }
        }
    }
}

impl Region {
    /// Copies `len` bytes from `src_region` at `src` into this region at `dst` (the regions
    /// may be the same mapping; ranges must not overlap). Silently does nothing out of range.
    pub(crate) fn copy_within_from(&self, src_region: Region, src: usize, dst: usize, len: usize) {
        if src_region.base() == self.base() {
            self.copy_within(src, dst, len);
            return;
        }
        if !src_region.contains(src, len) || !self.contains(dst, len) {
            return;
        }
        // SAFETY: both ranges are inside their regions (checked) and the regions are distinct
        // mappings, so they do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(src_region.ptr(src), self.ptr(dst), len) };
    }
}

fn block_on<T, C: Clock + ?Sized, R: spin::RelaxStrategy, F: FnMut() -> Result<T, ChannelError>>(
    clock: &C,
    deadline: Deadline,
    busy: ChannelError,
    mut op: F,
) -> Result<T, ChannelError> {
    // A deadline reached before the call means "try once": report the busy state. One that
    // passes while waiting (even during the first try) is a timeout.
    let try_once = expired(clock, deadline);
    match op() {
        Err(e) if e == busy => {}
        other => return other,
    }
    if try_once {
        return Err(busy);
    }
    loop {
        R::relax();
        match op() {
            Err(e) if e == busy => {
                if expired(clock, deadline) {
                    return Err(ChannelError::Timeout);
                }
            }
            other => return other,
        }
    }
}

fn check_descriptor(bytes: &[u8]) -> Result<&[u8], ChannelError> {
    if bytes.len() != Channel::DESCRIPTOR_LEN {
        return Err(ChannelError::BadDescriptor(
            "wrong length (truncated or padded)",
        ));
    }
    if u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != CHAN_MAGIC {
        return Err(ChannelError::BadDescriptor("not a channel descriptor"));
    }
    if u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) != CHANNEL_LAYOUT_VERSION {
        return Err(ChannelError::BadDescriptor("unsupported layout version"));
    }
    if fnv1a(&bytes[..44]).to_le_bytes() != bytes[44..48] {
        return Err(ChannelError::BadDescriptor("checksum mismatch"));
    }
    Ok(bytes)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// 32-bit FNV-1a.
fn fnv1a(b: &[u8]) -> u32 {
    b.iter().fold(0x811C_9DC5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}
