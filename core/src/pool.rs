//! The managed-memory pool: a buddy allocator whose every byte of state lives in the region.
//!
//! # Algorithm
//! A binary buddy allocator (Knowlton 1965; the layout of Dragon's heap manager and of
//! iceoryx2's `bb/memory` pool allocator, reimplemented): the data area is `n` minimum blocks;
//! a block of order `k` is `2^k` minimum blocks aligned to its size; a request rounds up to the
//! next power of two. Free blocks of each order sit on a doubly linked list whose links are
//! kept inside the free blocks themselves, so the lists cost no metadata.
//!
//! # Memory layout (offsets from the region start, identical on 32- and 64-bit targets)
//! ```text
//! [PoolHeader 384 B][order table: 1 B per minimum block][records: 12 B each][data, 64-aligned]
//! ```
//! - The **order table** is the allocator's ground truth. The entry of the first minimum block
//!   of every block ("head") says `FREE|k` or `USED|k`; the heads tile the data area. Entries
//!   inside a block are ignored. Every mutation moves from one valid tiling to another with a
//!   single byte store, so a party that dies mid-operation leaves a tiling that
//!   [`Pool::recover`] can rebuild everything else from.
//! - A **record** (the manifest) names each live allocation: block index, owner id, and a
//!   16-bit generation + order + kind word. A descriptor ([`Alloc`]) is `(block, record,
//!   generation, order)`; freeing checks all four, so a stale, forged or double free is refused
//!   and never touches the allocator. There are `max_allocations` records (default: one per 16
//!   minimum blocks).
//!
//! Metadata overhead: 384 B + 1 B per minimum block + 12 B per record. For a 1 MiB region with
//! 64-byte minimum blocks that is 26.6 KiB, 2.6 % (`metadata_overhead` test).
//!
//! # Concurrency
//! One in-region lock (an `AtomicU32` holding the owner id of the holder, 0 when free) guards
//! all metadata; a critical section is a few list operations and byte stores. The lock records
//! its owner so a dead holder is detected: a waiter that spins past a bound gets
//! [`PoolError::Stalled`] with the holder's id and may call [`Pool::recover`].
//!
//! # What a party that dies leaves behind
//! - Holding no lock: its allocations stay live under its owner id; `recover` frees them.
//! - Inside `alloc`, before the head byte is set to `USED`: blocks split so far are valid free
//!   blocks that are merely not on the free lists, and a record may be filled but not yet
//!   published. `recover` takes the lock over, rebuilds the lists and record list from the
//!   table, and merges buddies: nothing is lost.
//! - Inside `alloc`, after the head byte: a `USED` block with its record; it is returned as
//!   the dead party's allocation and freed by `recover` like any other.
//! - Inside `free`, before the head byte is set to `FREE`: the allocation is still live and
//!   `recover` frees it. After it: the block is free (merged by the rebuild), the record is
//!   released by the rebuild because its block is no longer `USED`.

use crate::descriptor::{Reader, Writer};
use crate::error::PoolError;
use crate::event::{Event, EventWords};
use crate::fault::{self, Step};
use crate::liveness::Memo;
use crate::region::Region;
use crate::sync::{AtomicU32, Ordering, spin_hint};

/// `"DRPL"`: marks a pool header.
pub const POOL_MAGIC: u32 = 0x4C50_5244;
/// Version of the pool layout; attach refuses any other.
pub const POOL_LAYOUT_VERSION: u32 = 1;
/// Smallest allowed minimum block (the free-list links need 8 bytes).
pub const MIN_BLOCK_MIN: u32 = 16;
/// Default minimum block size.
pub const DEFAULT_MIN_BLOCK: u32 = 64;
/// Owner ids with this bit set name structures (a channel holding in-flight messages), never
/// parties; [`Pool::recover`] never treats them as dead.
pub const STRUCT_OWNER_BIT: u32 = 1 << 30;
/// Largest party owner id (ids are `1..=MAX_PARTY_OWNER`; 0 means "nobody").
pub const MAX_PARTY_OWNER: u32 = STRUCT_OWNER_BIT - 1;

const NIL: u32 = u32::MAX;
/// Number of size classes a pool reports in [`Pool::free_blocks`].
pub const SIZE_CLASSES: usize = 32;
const MAX_ORDERS: usize = SIZE_CLASSES;
/// One allocation record (the manifest entry of a live allocation, or a free record).
#[repr(C)]
struct Record {
    /// Head block index of the allocation; of a free record, the next free record.
    block: u32,
    /// Owner id.
    owner: u32,
    /// [`Meta`], packed.
    meta: u32,
}

const RECORD_SIZE: usize = core::mem::size_of::<Record>();
const _: () = assert!(RECORD_SIZE == 12);
/// Offsets of a record's fields.
const R_BLOCK: usize = core::mem::offset_of!(Record, block);
const R_OWNER: usize = core::mem::offset_of!(Record, owner);
const R_META: usize = core::mem::offset_of!(Record, meta);

/// The free-list links kept inside a free block.
#[repr(C)]
struct Links {
    next: u32,
    prev: u32,
}

/// Offsets of a free block's links.
const L_NEXT: usize = core::mem::offset_of!(Links, next);
const L_PREV: usize = core::mem::offset_of!(Links, prev);

/// A record's meta word, unpacked (packed: `live:1 | kind:7 | order:8 | generation:16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    live: bool,
    generation: u16,
    order: u32,
    kind: u8,
}

impl Meta {
    /// The meta word of a free record whose last allocation had `generation`.
    const fn free(generation: u16) -> Self {
        Self {
            live: false,
            generation,
            order: 0,
            kind: 0,
        }
    }

    const fn pack(self) -> u32 {
        ((self.live as u32) << 31)
            | (((self.kind & 0x7F) as u32) << 24)
            | ((self.order & 0xFF) << 16)
            | self.generation as u32
    }

    const fn unpack(m: u32) -> Self {
        Self {
            live: m >> 31 == 1,
            generation: m as u16,
            order: (m >> 16) & 0xFF,
            kind: ((m >> 24) & 0x7F) as u8,
        }
    }
}
const DATA_ALIGN: usize = 64;
/// Spins on a lock held by the same holder before [`PoolError::Stalled`] is reported (a few
/// milliseconds: far longer than a critical section takes unless its holder was preempted or
/// died, and long enough that a preempted holder usually runs again first, since a free
/// inside a receive cannot be retried by the caller). The caller's wait layer then checks
/// whether the holder is alive.
#[cfg(not(loom))]
const STALL_SPINS: u32 = 1 << 16;
/// Under loom every spin is a scheduling branch: give up quickly.
#[cfg(loom)]
const STALL_SPINS: u32 = 4;

/// Order-table entries: `FREE|k`, `USED|k`, with `MARK` used only while rebuilding.
const T_FREE: u8 = 0x40;
const T_USED: u8 = 0x80;
const T_MARK: u8 = 0x20;
const T_ORDER: u8 = 0x1F;

/// What an allocation is for; travels in its record and in [`AllocInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum AllocKind {
    /// User data (messages, `Pool::alloc`).
    Data = 0,
    /// A channel's queue.
    Channel = 1,
    /// A channel's side allocation for a payload larger than its block size.
    ChannelBuffer = 2,
}

impl AllocKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Data),
            1 => Some(Self::Channel),
            2 => Some(Self::ChannelBuffer),
            _ => None,
        }
    }
}

/// The in-region header. Plain fields are protected by `lock` once `initialized` is set;
/// geometry fields are written once by the creator and validated by every attacher.
#[repr(C)]
struct PoolHeader {
    magic: u32,
    version: u32,
    header_size: u32,
    min_block_shift: u32,
    region_size: [u32; 2],
    pool_uid: [u32; 2],
    n_blocks: u32,
    max_records: u32,
    table_off: u32,
    records_off: u32,
    data_off: u32,
    max_order: u32,
    _reserved: [u32; 2],
    /// 0 until the creator has finished; then [`POOL_MAGIC`]. SYNC: publish pool (Release
    /// store in `init`) <-> attach (Acquire load in `attach`).
    initialized: AtomicU32,
    /// Owner id of the lock holder, 0 when free. SYNC: acquire (CAS Acquire) <-> release
    /// (store Release) in `lock`/`Guard::drop`.
    lock: AtomicU32,
    /// Blocked allocators sleep here; whoever frees notifies (the std adapter does after
    /// every operation that may free).
    free_event: EventWords,
    /// Live allocations.
    live: u32,
    /// Head of the free-record list.
    rec_free: u32,
    /// Free minimum blocks.
    free_min_blocks: u32,
    /// Times the metadata was rebuilt after a dead lock holder.
    rebuilds: u32,
    /// Bumped by every lock holder (Relaxed, under the lock): waiters see the lock change
    /// hands even when the same owner id takes it again, so only a holder that keeps it
    /// counts as stalled.
    lock_epoch: AtomicU32,
    _reserved2: [u32; 3],
    /// Head block index of each order's free list (`NIL` when empty).
    free_heads: [u32; MAX_ORDERS],
    /// Length of each order's free list.
    free_counts: [u32; MAX_ORDERS],
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<PoolHeader>() == 368);

macro_rules! off {
    ($f:ident) => {
        core::mem::offset_of!(PoolHeader, $f)
    };
}

const HEADER_SIZE: usize =
    (core::mem::size_of::<PoolHeader>() + DATA_ALIGN - 1) & !(DATA_ALIGN - 1);

/// Creation parameters of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PoolConfig {
    /// Minimum block size in bytes: a power of two, at least [`MIN_BLOCK_MIN`]. Requests round
    /// up to a power of two no smaller than this.
    pub min_block: u32,
    /// Most live allocations at once; `None`: one per 16 minimum blocks (at least 16).
    pub max_allocations: Option<u32>,
    /// Identity of the pool, stored in the header and in every descriptor.
    pub uid: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_block: DEFAULT_MIN_BLOCK,
            max_allocations: None,
            uid: 0,
        }
    }
}

/// Where everything lives in a region of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    shift: u32,
    n_blocks: u32,
    max_records: u32,
    table_off: usize,
    records_off: usize,
    data_off: usize,
    max_order: u32,
}

impl Geometry {
    const fn default_records(n_blocks: u32) -> u32 {
        let r = n_blocks / 16;
        if r < 16 { 16 } else { r }
    }

    /// Layout for `n` blocks.
    fn with_blocks(shift: u32, n_blocks: u32, max_records: Option<u32>) -> Option<(Self, usize)> {
        let max_records = max_records
            .unwrap_or(Self::default_records(n_blocks))
            .max(1);
        let table_off = HEADER_SIZE;
        let records_off = align_up(table_off.checked_add(n_blocks as usize)?, 4)?;
        let data_off = align_up(
            records_off.checked_add((max_records as usize).checked_mul(RECORD_SIZE)?)?,
            DATA_ALIGN,
        )?;
        let total = data_off.checked_add((n_blocks as usize).checked_mul(1usize << shift)?)?;
        if u32::try_from(data_off).is_err() {
            return None;
        }
        let max_order = if n_blocks == 0 {
            0
        } else {
            31 - n_blocks.leading_zeros()
        };
        Some((
            Self {
                shift,
                n_blocks,
                max_records,
                table_off,
                records_off,
                data_off,
                max_order,
            },
            total,
        ))
    }

    /// The most blocks that fit `region_len` (binary search: the size grows with `n`).
    fn for_region(region_len: usize, cfg: &PoolConfig) -> Result<Self, PoolError> {
        let shift = check_min_block(cfg.min_block)?;
        let fits = |n: u32| match Self::with_blocks(shift, n, cfg.max_allocations) {
            Some((g, total)) if total <= region_len => Some(g),
            _ => None,
        };
        let upper = region_len.saturating_sub(HEADER_SIZE) / ((1usize << shift) + 1);
        let (mut lo, mut hi) = (0u32, u32::try_from(upper).unwrap_or(u32::MAX - 1));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid).is_some() {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        match fits(lo) {
            Some(g) if lo > 0 => Ok(g),
            _ => Err(PoolError::RegionTooSmall {
                need: Self::required(1, cfg)?,
                have: region_len,
            }),
        }
    }

    fn required(n_blocks: u32, cfg: &PoolConfig) -> Result<usize, PoolError> {
        let shift = check_min_block(cfg.min_block)?;
        Self::with_blocks(shift, n_blocks, cfg.max_allocations)
            .map(|(_, total)| total)
            .ok_or(PoolError::BadConfig("pool too large for this target"))
    }
}

fn check_min_block(min_block: u32) -> Result<u32, PoolError> {
    if !min_block.is_power_of_two() || min_block < MIN_BLOCK_MIN {
        return Err(PoolError::BadConfig(
            "min_block must be a power of two of at least 16",
        ));
    }
    Ok(min_block.trailing_zeros())
}

fn align_up(v: usize, a: usize) -> Option<usize> {
    Some(v.checked_add(a - 1)? & !(a - 1))
}

/// A live allocation: the descriptor every pool operation validates.
///
/// Plain data, `Copy`; holding one grants nothing by itself. Freeing it twice, or freeing it
/// after its block was reused, is refused because the record's generation moved on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Alloc {
    block: u32,
    record: u32,
    gen_: u16,
    order: u8,
    /// Low 32 bits of the pool uid, so a descriptor of another pool is refused.
    pool_tag: u32,
}

/// Byte 11 of a serialized [`Alloc`]: tells a descriptor from zeroed or foreign bytes.
const ALLOC_MARK: u8 = 0xA5;

impl Alloc {
    /// Size of the serialized form.
    pub const SERIALIZED_LEN: usize = 16;

    /// The descriptor as bytes (little endian), for storing in a channel slot or sending to
    /// another process.
    pub fn to_bytes(&self) -> [u8; Self::SERIALIZED_LEN] {
        let mut b = [0u8; Self::SERIALIZED_LEN];
        Writer::new(&mut b)
            .u32(self.block)
            .u32(self.record)
            .u16(self.gen_)
            .u8(self.order)
            .u8(ALLOC_MARK)
            .u32(self.pool_tag);
        b
    }

    /// Parses [`Alloc::to_bytes`]. Only the shape is checked here; the pool validates the
    /// rest on every use.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != Self::SERIALIZED_LEN {
            return None;
        }
        let mut r = Reader::new(b);
        let (block, record, gen_, order) = (r.u32(), r.u32(), r.u16(), r.u8());
        (r.u8() == ALLOC_MARK).then(|| Self {
            block,
            record,
            gen_,
            order,
            pool_tag: r.u32(),
        })
    }

    /// Record index (stable while the allocation lives; an id for diagnostics).
    pub fn id(&self) -> u32 {
        self.record
    }

    /// Generation of the record when this allocation was made.
    pub fn generation(&self) -> u16 {
        self.gen_
    }
}

/// One live allocation, as the pool's iteration reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AllocInfo {
    /// Its descriptor.
    pub alloc: Alloc,
    /// Byte offset of the block from the region start.
    pub offset: usize,
    /// Block size in bytes.
    pub size: usize,
    /// Owner id recorded at allocation (or by the last ownership transfer).
    pub owner: u32,
    /// What it is for.
    pub kind: AllocKind,
}

/// Pool statistics, read under the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PoolStats {
    /// Bytes of the data area.
    pub total: usize,
    /// Free bytes.
    pub free: usize,
    /// Live allocations.
    pub live: u32,
    /// Most live allocations possible.
    pub max_allocations: u32,
    /// Metadata rebuilds after dead lock holders.
    pub rebuilds: u32,
}

impl PoolStats {
    /// Used share of the data area in percent.
    pub fn utilization(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        // Saturating: `free` comes from shared memory, which may be corrupt.
        100.0 * self.total.saturating_sub(self.free) as f64 / self.total as f64
    }
}

/// What [`Pool::recover`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PoolRecovery {
    /// The lock was held by a dead party and was taken over (metadata rebuilt).
    pub lock_taken_over: bool,
    /// Allocations of dead parties that were freed.
    pub freed: u32,
    /// `USED` blocks that had no record (a party died inside `alloc`) and were freed.
    pub orphans: u32,
}

/// A handle on a pool in a region. Cheap to copy between threads of one process; every party
/// (thread, process or core) holds its own, made by [`Pool::init`] or [`Pool::attach`].
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    region: Region,
    geo: Geometry,
    owner: u32,
    uid: u64,
}

/// Holds the pool lock; releases it on drop.
struct Guard<'a> {
    pool: &'a Pool,
}

impl Guard<'_> {
    /// Passes `r` through; on an injected death keeps the lock held, as a crash would.
    fn finish<T>(self, r: Result<T, PoolError>) -> Result<T, PoolError> {
        if matches!(r, Err(PoolError::Died)) {
            core::mem::forget(self);
        }
        r
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // SYNC: release lock (Release) <-> acquire lock (CAS Acquire) in `Pool::lock`.
        self.pool.hdr_atomic(off!(lock)).store(0, Ordering::Release);
    }
}

impl Pool {
    /// Region bytes needed for a pool whose data area holds at least `data_bytes`.
    ///
    /// # Errors
    /// [`PoolError::BadConfig`] for a bad minimum block or a size this target cannot address.
    pub fn required_size(data_bytes: usize, cfg: &PoolConfig) -> Result<usize, PoolError> {
        let shift = check_min_block(cfg.min_block)?;
        let n = data_bytes.div_ceil(1 << shift).max(1);
        let n = u32::try_from(n).map_err(|_| PoolError::BadConfig("more than 2^32 blocks"))?;
        Geometry::required(n, cfg)
    }

    /// Creates a pool in `region`, overwriting whatever it held, and returns the creator's
    /// handle. `owner` is this party's owner id (`1..=MAX_PARTY_OWNER`).
    ///
    /// # Errors
    /// [`PoolError::BadConfig`], [`PoolError::BadOwner`], [`PoolError::RegionTooSmall`].
    pub fn init(region: Region, cfg: &PoolConfig, owner: u32) -> Result<Self, PoolError> {
        check_owner(owner)?;
        let geo = Geometry::for_region(region.len(), cfg)?;
        let r = &region;
        // Not yet published: nobody else may use the pool until `initialized` is set.
        r.init_atomic(off!(initialized), 0);
        r.write_u32(off!(magic), POOL_MAGIC);
        r.write_u32(off!(version), POOL_LAYOUT_VERSION);
        r.write_u32(off!(header_size), HEADER_SIZE as u32);
        r.write_u32(off!(min_block_shift), geo.shift);
        r.write_u64(off!(region_size), region.len() as u64);
        r.write_u64(off!(pool_uid), cfg.uid);
        r.write_u32(off!(n_blocks), geo.n_blocks);
        r.write_u32(off!(max_records), geo.max_records);
        r.write_u32(off!(table_off), geo.table_off as u32);
        r.write_u32(off!(records_off), geo.records_off as u32);
        r.write_u32(off!(data_off), geo.data_off as u32);
        r.write_u32(off!(max_order), geo.max_order);
        r.init_atomic(off!(lock), 0);
        EventWords::init(*r, off!(free_event));
        r.init_atomic(off!(lock_epoch), 0);
        let pool = Self {
            region,
            geo,
            owner,
            uid: cfg.uid,
        };
        pool.rebuild_all(true)?;
        r.write_u32(off!(rebuilds), 0);
        // SYNC: publish pool (Release) <-> attach (Acquire load of `initialized`).
        pool.hdr_atomic(off!(initialized))
            .store(POOL_MAGIC, Ordering::Release);
        Ok(pool)
    }

    /// Attaches to a pool that [`Pool::init`] created in `region` (by this or another party),
    /// validating magic, layout version, region size, the initialized flag and the geometry.
    ///
    /// # Errors
    /// [`PoolError::NotInitialized`], [`PoolError::BadMagic`],
    /// [`PoolError::VersionMismatch`], [`PoolError::SizeMismatch`], [`PoolError::Corrupt`],
    /// [`PoolError::BadOwner`].
    pub fn attach(region: Region, owner: u32) -> Result<Self, PoolError> {
        check_owner(owner)?;
        if region.len() < HEADER_SIZE {
            return Err(PoolError::RegionTooSmall {
                need: HEADER_SIZE,
                have: region.len(),
            });
        }
        let r = &region;
        if r.read_u32(off!(magic)) != POOL_MAGIC {
            return Err(PoolError::BadMagic);
        }
        let version = r.read_u32(off!(version));
        if version != POOL_LAYOUT_VERSION {
            return Err(PoolError::VersionMismatch {
                found: version,
                expected: POOL_LAYOUT_VERSION,
            });
        }
        // SAFETY: `initialized` is at a fixed offset inside the header, which is in bounds; the
        // creator constructed it. A region whose creator never got that far reads as 0 or junk
        // (then refused) because the magic check above already passed.
        let init = unsafe { r.atomic(off!(initialized)) };
        // SYNC: attach (Acquire) <-> publish pool (Release store in `init`).
        if init.load(Ordering::Acquire) != POOL_MAGIC {
            return Err(PoolError::NotInitialized);
        }
        let size = r.read_u64(off!(region_size));
        if size != region.len() as u64 {
            return Err(PoolError::SizeMismatch {
                found: size,
                expected: region.len() as u64,
            });
        }
        let shift = r.read_u32(off!(min_block_shift));
        if !(4..=30).contains(&shift) || r.read_u32(off!(header_size)) as usize != HEADER_SIZE {
            return Err(PoolError::Corrupt("pool header geometry"));
        }
        let n = r.read_u32(off!(n_blocks));
        let recs = r.read_u32(off!(max_records));
        let Some((geo, total)) = Geometry::with_blocks(shift, n, Some(recs)) else {
            return Err(PoolError::Corrupt("pool header geometry"));
        };
        if n == 0
            || total > region.len()
            || r.read_u32(off!(table_off)) as usize != geo.table_off
            || r.read_u32(off!(records_off)) as usize != geo.records_off
            || r.read_u32(off!(data_off)) as usize != geo.data_off
            || r.read_u32(off!(max_order)) != geo.max_order
        {
            return Err(PoolError::Corrupt("pool header geometry"));
        }
        let uid = r.read_u64(off!(pool_uid));
        Ok(Self {
            region,
            geo,
            owner,
            uid,
        })
    }

    /// This handle's owner id.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// The same pool with another owner id (e.g. for another thread that should be tracked
    /// separately).
    ///
    /// # Errors
    /// [`PoolError::BadOwner`] when `owner` is 0 or above [`MAX_PARTY_OWNER`].
    pub fn with_owner(&self, owner: u32) -> Result<Self, PoolError> {
        check_owner(owner)?;
        Ok(Self { owner, ..*self })
    }

    /// The pool's uid (given at creation).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// The region the pool lives in.
    pub fn region(&self) -> Region {
        self.region
    }

    /// Minimum block size in bytes.
    pub fn min_block(&self) -> usize {
        1 << self.geo.shift
    }

    /// Bytes of the data area.
    pub fn total_size(&self) -> usize {
        (self.geo.n_blocks as usize) << self.geo.shift
    }

    /// Largest single allocation possible (when the pool is empty).
    pub fn max_alloc(&self) -> usize {
        1usize << (self.geo.max_order + self.geo.shift)
    }

    /// Bytes of metadata (header, order table, records and padding) in front of the data.
    pub fn metadata_size(&self) -> usize {
        self.geo.data_off
    }

    /// Try-once allocation of at least `size` bytes, rounded up to a power of two no smaller
    /// than the minimum block. A zero-byte request gets a minimum block (a unique, freeable
    /// allocation, like `malloc(0)`).
    ///
    /// # Errors
    /// [`PoolError::TooLarge`] if the request can never fit, [`PoolError::OutOfSpace`] if it
    /// does not fit now (or all allocation records are in use), [`PoolError::Stalled`] if the
    /// lock holder does not let go, [`PoolError::Corrupt`] if the metadata is damaged.
    pub fn alloc(&self, size: usize, kind: AllocKind) -> Result<Alloc, PoolError> {
        let order = self.order_for(size)?;
        let g = self.lock()?;
        let r = self.alloc_locked(order, kind, self.owner);
        g.finish(r)
    }

    /// Frees an allocation.
    ///
    /// # Errors
    /// [`PoolError::BadDescriptor`] for a descriptor that names no allocation of this pool,
    /// [`PoolError::Stale`] for one whose allocation was already freed (double or stale
    /// free). Neither changes the pool.
    pub fn free(&self, a: Alloc) -> Result<(), PoolError> {
        let g = self.lock()?;
        self.check_live(&a)?;
        g.finish(self.free_locked(&a))
    }

    /// Checks that `a` names a live allocation of this pool and returns its byte offset and
    /// block size.
    ///
    /// # Errors
    /// [`PoolError::BadDescriptor`] or [`PoolError::Stale`].
    pub fn resolve(&self, a: &Alloc) -> Result<(usize, usize), PoolError> {
        let _g = self.lock()?;
        self.check_live(a)?;
        Ok(self.span(a))
    }

    /// Records `new_owner` as the owner of `a` (ownership moves with a transferred message).
    ///
    /// # Errors
    /// As [`Pool::resolve`], and [`PoolError::BadOwner`] for owner 0.
    pub fn set_owner(&self, a: &Alloc, new_owner: u32) -> Result<(), PoolError> {
        if new_owner == 0 {
            return Err(PoolError::BadOwner);
        }
        let _g = self.lock()?;
        self.check_live(a)?;
        self.region
            .write_u32(self.rec_off(a.record) + R_OWNER, new_owner);
        Ok(())
    }

    /// The owner id recorded for `a`.
    ///
    /// # Errors
    /// As [`Pool::resolve`].
    pub fn owner_of(&self, a: &Alloc) -> Result<u32, PoolError> {
        let _g = self.lock()?;
        self.check_live(a)?;
        Ok(self.region.read_u32(self.rec_off(a.record) + R_OWNER))
    }

    /// Byte offset (from the region start) and block size of `a`, without checking that it is
    /// live. Returns `None` when the descriptor cannot be inside this pool.
    pub fn span_unchecked(&self, a: &Alloc) -> Option<(usize, usize)> {
        if a.pool_tag != self.uid as u32
            || u32::from(a.order) > self.geo.max_order
            || a.block >= self.geo.n_blocks
            || (self.geo.n_blocks - a.block) >> a.order == 0
        {
            return None;
        }
        Some(self.span(a))
    }

    /// Statistics: total, free, live allocations.
    ///
    /// # Errors
    /// [`PoolError::Stalled`].
    pub fn stats(&self) -> Result<PoolStats, PoolError> {
        let _g = self.lock()?;
        let r = &self.region;
        Ok(PoolStats {
            total: self.total_size(),
            free: (r.read_u32(off!(free_min_blocks)) as usize) << self.geo.shift,
            live: r.read_u32(off!(live)),
            max_allocations: self.geo.max_records,
            rebuilds: r.read_u32(off!(rebuilds)),
        })
    }

    /// Free bytes.
    ///
    /// # Errors
    /// [`PoolError::Stalled`].
    pub fn free_space(&self) -> Result<usize, PoolError> {
        self.stats().map(|s| s.free)
    }

    /// Used share of the data area, in percent.
    ///
    /// # Errors
    /// [`PoolError::Stalled`].
    pub fn utilization(&self) -> Result<f64, PoolError> {
        self.stats().map(|s| s.utilization())
    }

    /// Free blocks per size class: `out[k]` is the number of free blocks of
    /// `min_block << k` bytes. Returns how many classes the pool has.
    ///
    /// # Errors
    /// [`PoolError::Stalled`].
    pub fn free_blocks(&self, out: &mut [u32; MAX_ORDERS]) -> Result<usize, PoolError> {
        let _g = self.lock()?;
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.region.read_u32(off!(free_counts) + 4 * k);
        }
        Ok(self.geo.max_order as usize + 1)
    }

    /// Iterates over the live allocations (each step takes the lock briefly, so the view is
    /// not a snapshot when others allocate concurrently).
    pub fn allocations(&self) -> Allocations<'_> {
        Allocations {
            pool: self,
            next: 0,
        }
    }

    /// The owner id of the current lock holder, if any.
    pub fn lock_holder(&self) -> Option<u32> {
        match self.hdr_atomic(off!(lock)).load(Ordering::Relaxed) {
            0 => None,
            o => Some(o),
        }
    }

    /// The event blocked allocators sleep on. The core never notifies it: whoever frees
    /// memory (the std adapter, after every operation that may free) calls
    /// [`Event::notify`] and wakes sleepers when it says so.
    pub fn free_event(&self) -> Event<'_> {
        // SAFETY: `init` constructed the event words at this fixed header offset; the region
        // outlives `self`.
        unsafe { Event::at(self.region, off!(free_event)) }
    }

    /// Reclaims what dead parties left: takes over the lock if a dead party holds it (and
    /// rebuilds the metadata from the order table), then frees every allocation whose owner
    /// `is_alive` reports dead. Owner ids with [`STRUCT_OWNER_BIT`] are never asked about.
    ///
    /// # Errors
    /// [`PoolError::Stalled`] when a live party holds the lock for too long,
    /// [`PoolError::Corrupt`] when the order table itself is damaged.
    pub fn recover(&self, is_alive: &dyn Fn(u32) -> bool) -> Result<PoolRecovery, PoolError> {
        let memo = Memo::new(is_alive);
        let is_alive = |o| memo.is_alive(o);
        let mut rep = PoolRecovery::default();
        let lock = self.hdr_atomic(off!(lock));
        let holder = lock.load(Ordering::Relaxed);
        if holder != 0 && holder != self.owner && !is_alive(holder) {
            // SYNC: take over lock (CAS Acquire) <-> release lock (store Release); the dead
            // holder's plain writes before it died are ordered by its own earlier releases at
            // best, so everything derived is rebuilt from the table below.
            if lock
                .compare_exchange(holder, self.owner, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                let g = Guard { pool: self };
                rep.orphans = self.rebuild_all(false)?;
                let rb = self.region.read_u32(off!(rebuilds));
                self.region.write_u32(off!(rebuilds), rb.wrapping_add(1));
                rep.lock_taken_over = true;
                drop(g);
            }
        }
        let g = self.lock()?;
        for rec in 0..self.geo.max_records {
            if let Some(info) = self.record_info(rec)
                && info.owner & STRUCT_OWNER_BIT == 0
                && !is_alive(info.owner)
            {
                self.free_locked(&info.alloc)?;
                rep.freed += 1;
            }
        }
        drop(g);
        Ok(rep)
    }

    /// Frees every allocation owned by `owner` (a structure id or a party that is known to be
    /// gone), except `keep`. Returns how many were freed.
    ///
    /// # Errors
    /// [`PoolError::Stalled`], [`PoolError::Corrupt`].
    pub fn free_all_of(&self, owner: u32, keep: Option<&Alloc>) -> Result<u32, PoolError> {
        let g = self.lock()?;
        let mut n = 0;
        for rec in 0..self.geo.max_records {
            if let Some(info) = self.record_info(rec)
                && info.owner == owner
                && Some(&info.alloc) != keep
            {
                self.free_locked(&info.alloc)?;
                n += 1;
            }
        }
        drop(g);
        Ok(n)
    }

    // ----- crate-internal API for the channel -----

    fn scan<T>(&self, kind: AllocKind, f: &mut impl FnMut(&AllocInfo) -> Option<T>) -> Option<T> {
        (0..self.geo.max_records)
            .filter_map(|rec| self.record_info(rec))
            .filter(|i| i.kind == kind)
            .find_map(|i| f(&i))
    }

    /// Under one lock hold: if no live allocation of `kind` satisfies `exists`, allocate
    /// `size` bytes and run `init` on it before releasing the lock (used for uid-unique
    /// channel creation).
    pub(crate) fn alloc_unique(
        &self,
        size: usize,
        kind: AllocKind,
        owner: u32,
        mut exists: impl FnMut(&AllocInfo) -> bool,
        init: impl FnOnce(&Alloc, usize),
    ) -> Result<Option<Alloc>, PoolError> {
        let order = self.order_for(size)?;
        let g = self.lock()?;
        if self.scan(kind, &mut |i| exists(i).then_some(())).is_some() {
            return Ok(None);
        }
        let a = g.finish(self.alloc_locked(order, kind, owner))?;
        init(&a, self.span(&a).0);
        Ok(Some(a))
    }

    // ----- internals -----

    fn hdr_atomic(&self, off: usize) -> &AtomicU32 {
        // SAFETY: header atomics sit at fixed in-bounds offsets of a region that `init`
        // constructed (or that `attach` validated); the region outlives `self`.
        unsafe { self.region.atomic(off) }
    }

    fn lock(&self) -> Result<Guard<'_>, PoolError> {
        let lock = self.hdr_atomic(off!(lock));
        let epoch = self.hdr_atomic(off!(lock_epoch));
        let mut spins = 0u32;
        let mut seen = epoch.load(Ordering::Relaxed);
        loop {
            // SYNC: acquire lock (CAS Acquire) <-> release lock (store Release in Guard::drop).
            match lock.compare_exchange_weak(0, self.owner, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    // Exclusive under the lock: a plain increment suffices.
                    epoch.store(
                        epoch.load(Ordering::Relaxed).wrapping_add(1),
                        Ordering::Relaxed,
                    );
                    return Ok(Guard { pool: self });
                }
                Err(holder) => {
                    let now = epoch.load(Ordering::Relaxed);
                    if now != seen {
                        // The lock changed hands meanwhile: contention, not a stall.
                        seen = now;
                        spins = 0;
                    }
                    spins += 1;
                    if spins >= STALL_SPINS {
                        return Err(PoolError::Stalled { owner: holder });
                    }
                    spin_hint();
                }
            }
        }
    }

    fn order_for(&self, size: usize) -> Result<u32, PoolError> {
        let blocks = size.div_ceil(self.min_block()).max(1);
        let order = blocks.next_power_of_two().trailing_zeros();
        if blocks > (1usize << self.geo.max_order) {
            return Err(PoolError::TooLarge {
                requested: size,
                max: self.max_alloc(),
            });
        }
        Ok(order)
    }

    fn span(&self, a: &Alloc) -> (usize, usize) {
        (
            self.geo.data_off + ((a.block as usize) << self.geo.shift),
            1usize << (u32::from(a.order) + self.geo.shift),
        )
    }

    fn block_off(&self, block: u32) -> usize {
        self.geo.data_off + ((block as usize) << self.geo.shift)
    }

    fn tget(&self, block: u32) -> u8 {
        debug_assert!(block < self.geo.n_blocks);
        self.region.read_u8(self.geo.table_off + block as usize)
    }

    fn tset(&self, block: u32, v: u8) {
        debug_assert!(block < self.geo.n_blocks);
        self.region.write_u8(self.geo.table_off + block as usize, v);
    }

    fn rec_off(&self, rec: u32) -> usize {
        debug_assert!(rec < self.geo.max_records);
        self.geo.records_off + rec as usize * RECORD_SIZE
    }

    fn hget(&self, field: usize, k: u32) -> u32 {
        self.region.read_u32(field + 4 * k as usize)
    }

    fn hset(&self, field: usize, k: u32, v: u32) {
        self.region.write_u32(field + 4 * k as usize, v);
    }

    fn add_u32(&self, off: usize, delta: i64) {
        let v = self.region.read_u32(off);
        self.region.write_u32(off, (i64::from(v) + delta) as u32);
    }

    /// Whether `block` can be the head of a block of `order` in this pool.
    fn valid_head(&self, block: u32, order: u32) -> bool {
        order <= self.geo.max_order
            && block < self.geo.n_blocks
            && block & ((1u32 << order) - 1) == 0
            && (self.geo.n_blocks - block) >> order != 0
    }

    /// Decoded record `rec` if it is live and consistent with the order table.
    fn record_info(&self, rec: u32) -> Option<AllocInfo> {
        let o = self.rec_off(rec);
        let block = self.region.read_u32(o + R_BLOCK);
        let owner = self.region.read_u32(o + R_OWNER);
        let Meta {
            live,
            generation: gen_,
            order,
            kind,
        } = Meta::unpack(self.region.read_u32(o + R_META));
        if !live || !self.valid_head(block, order) || self.tget(block) != T_USED | order as u8 {
            return None;
        }
        let alloc = Alloc {
            block,
            record: rec,
            gen_,
            order: order as u8,
            pool_tag: self.uid as u32,
        };
        let (offset, size) = self.span(&alloc);
        Some(AllocInfo {
            alloc,
            offset,
            size,
            owner,
            kind: AllocKind::from_u8(kind)?,
        })
    }

    /// Validates `a` against its record and the table (lock held).
    fn check_live(&self, a: &Alloc) -> Result<(), PoolError> {
        if a.pool_tag != self.uid as u32
            || a.record >= self.geo.max_records
            || !self.valid_head(a.block, u32::from(a.order))
        {
            return Err(PoolError::BadDescriptor);
        }
        let o = self.rec_off(a.record);
        let Meta {
            live,
            generation: gen_,
            order,
            ..
        } = Meta::unpack(self.region.read_u32(o + R_META));
        if !live || gen_ != a.gen_ {
            return Err(PoolError::Stale);
        }
        if self.region.read_u32(o + R_BLOCK) != a.block
            || order != u32::from(a.order)
            || self.tget(a.block) != T_USED | a.order
        {
            return Err(PoolError::BadDescriptor);
        }
        Ok(())
    }

    fn alloc_locked(&self, order: u32, kind: AllocKind, owner: u32) -> Result<Alloc, PoolError> {
        // A second pass runs only when the first found damaged links and rebuilt the lists.
        for _ in 0..2 {
            let rec = self.region.read_u32(off!(rec_free));
            if rec == NIL {
                return Err(PoolError::OutOfSpace);
            }
            if rec >= self.geo.max_records
                || Meta::unpack(self.region.read_u32(self.rec_off(rec) + R_META)).live
            {
                self.rebuild_all(false)?;
                continue;
            }
            // Find the smallest non-empty order >= `order`.
            let mut k = order;
            while k <= self.geo.max_order && self.hget(off!(free_heads), k) == NIL {
                k += 1;
            }
            if k > self.geo.max_order {
                return Err(PoolError::OutOfSpace);
            }
            let block = self.hget(off!(free_heads), k);
            if !self.list_remove(block, k)? {
                continue;
            }
            return self.carve(block, k, order, rec, kind, owner);
        }
        Err(PoolError::Corrupt(
            "free lists damaged again right after a rebuild",
        ))
    }

    /// Splits the free block `(block, k)`, already off its list, down to `order` and claims
    /// record `rec` for it.
    fn carve(
        &self,
        block: u32,
        mut k: u32,
        order: u32,
        rec: u32,
        kind: AllocKind,
        owner: u32,
    ) -> Result<Alloc, PoolError> {
        // Split down: each step publishes the upper half as a free head first, then shrinks
        // the lower head, so the table is a valid tiling after every store.
        while k > order {
            k -= 1;
            let upper = block + (1 << k);
            self.tset(upper, T_FREE | k as u8);
            self.tset(block, T_FREE | k as u8);
            self.list_push(upper, k);
        }
        if fault::dies(owner, Step::PoolAllocSplit) {
            return Err(PoolError::Died);
        }
        // Claim the record, then publish the block as used (the commit point).
        let o = self.rec_off(rec);
        let next_free = self.region.read_u32(o + R_BLOCK);
        let old_gen = Meta::unpack(self.region.read_u32(o + R_META)).generation;
        let gen_ = old_gen.wrapping_add(1);
        self.region.write_u32(off!(rec_free), next_free);
        self.region.write_u32(o + R_BLOCK, block);
        self.region.write_u32(o + R_OWNER, owner);
        self.region.write_u32(
            o + R_META,
            Meta {
                live: true,
                generation: gen_,
                order,
                kind: kind as u8,
            }
            .pack(),
        );
        if fault::dies(owner, Step::PoolAllocRecorded) {
            return Err(PoolError::Died);
        }
        self.tset(block, T_USED | order as u8);
        self.add_u32(off!(live), 1);
        self.add_u32(off!(free_min_blocks), -(1i64 << order));
        Ok(Alloc {
            block,
            record: rec,
            gen_,
            order: order as u8,
            pool_tag: self.uid as u32,
        })
    }

    /// Frees a validated allocation (lock held).
    fn free_locked(&self, a: &Alloc) -> Result<(), PoolError> {
        let order = u32::from(a.order);
        // Commit point: the block is free from here on.
        self.tset(a.block, T_FREE | a.order);
        if fault::dies(self.owner, Step::PoolFreeCommitted) {
            return Err(PoolError::Died);
        }
        self.release_record(a.record);
        self.add_u32(off!(live), -1);
        self.add_u32(off!(free_min_blocks), 1i64 << order);
        self.coalesce_push(a.block, order, false)
    }

    fn release_record(&self, rec: u32) {
        let o = self.rec_off(rec);
        let gen_ = Meta::unpack(self.region.read_u32(o + R_META)).generation;
        self.region.write_u32(o + R_META, Meta::free(gen_).pack());
        self.region
            .write_u32(o + R_BLOCK, self.region.read_u32(off!(rec_free)));
        self.region.write_u32(off!(rec_free), rec);
    }

    /// Merges the free block `(block, k)` with free buddies and pushes the result. While
    /// rebuilding, only buddies below `block` are on the lists yet.
    fn coalesce_push(&self, mut block: u32, mut k: u32, rebuilding: bool) -> Result<(), PoolError> {
        while k < self.geo.max_order {
            let buddy = block ^ (1 << k);
            if buddy >= self.geo.n_blocks
                || (self.geo.n_blocks - buddy) >> k == 0
                || (rebuilding && buddy > block)
                || self.tget(buddy) != T_FREE | k as u8
            {
                break;
            }
            if !self.list_remove(buddy, k)? {
                if rebuilding {
                    return Err(PoolError::Corrupt("free lists inconsistent during rebuild"));
                }
                // The lists were rebuilt from the table, which already shows `block` free.
                return Ok(());
            }
            block = block.min(buddy);
            k += 1;
            // One store merges: the lower head grows; the upper head becomes interior.
            self.tset(block, T_FREE | k as u8);
        }
        self.list_push(block, k);
        Ok(())
    }

    fn link(&self, block: u32) -> usize {
        self.block_off(block)
    }

    fn list_push(&self, block: u32, k: u32) {
        let head = self.hget(off!(free_heads), k);
        let l = self.link(block);
        self.region.write_u32(l + L_NEXT, head);
        self.region.write_u32(l + L_PREV, NIL);
        if head != NIL && self.valid_head(head, k) {
            self.region.write_u32(self.link(head) + L_PREV, block);
        }
        self.hset(off!(free_heads), k, block);
        let c = self.hget(off!(free_counts), k);
        self.hset(off!(free_counts), k, c.wrapping_add(1));
    }

    /// Unlinks a free block from list `k`, validating its links (they live in free memory
    /// that a buggy party may have scribbled over). On damage the lists are rebuilt from the
    /// order table and `Ok(false)` is returned: the caller starts over on fresh lists.
    fn list_remove(&self, block: u32, k: u32) -> Result<bool, PoolError> {
        if !self.valid_head(block, k) || self.tget(block) != T_FREE | k as u8 {
            self.rebuild_all(false)?;
            return Ok(false);
        }
        let l = self.link(block);
        let next = self.region.read_u32(l + L_NEXT);
        let prev = self.region.read_u32(l + L_PREV);
        let ok_link =
            |b: u32| b == NIL || (self.valid_head(b, k) && self.tget(b) == T_FREE | k as u8);
        let head = self.hget(off!(free_heads), k);
        let consistent = ok_link(next)
            && ok_link(prev)
            && (prev != NIL || head == block)
            && (prev == NIL || self.region.read_u32(self.link(prev) + L_NEXT) == block)
            && (next == NIL || self.region.read_u32(self.link(next) + L_PREV) == block);
        if !consistent {
            self.rebuild_all(false)?;
            let rb = self.region.read_u32(off!(rebuilds));
            self.region.write_u32(off!(rebuilds), rb.wrapping_add(1));
            return Ok(false);
        }
        if prev == NIL {
            self.hset(off!(free_heads), k, next);
        } else {
            self.region.write_u32(self.link(prev) + L_NEXT, next);
        }
        if next != NIL {
            self.region.write_u32(self.link(next) + L_PREV, prev);
        }
        let c = self.hget(off!(free_counts), k);
        self.hset(off!(free_counts), k, c.wrapping_sub(1));
        Ok(true)
    }

    /// Rebuilds free lists, counters and the record list from the order table and the
    /// records (lock held, or the pool not yet published). With `fresh`, lays out an empty
    /// pool instead. Returns how many orphaned `USED` blocks (no record) were freed.
    fn rebuild_all(&self, fresh: bool) -> Result<u32, PoolError> {
        let n = self.geo.n_blocks;
        let r = &self.region;
        for k in 0..MAX_ORDERS as u32 {
            self.hset(off!(free_heads), k, NIL);
            self.hset(off!(free_counts), k, 0);
        }
        if fresh {
            // Tile the data area with the largest aligned blocks that fit.
            let mut i = 0u32;
            while i < n {
                let mut k = if i == 0 { 31 } else { i.trailing_zeros() };
                while (n - i) >> k == 0 {
                    k -= 1;
                }
                self.tset(i, T_FREE | k as u8);
                i += 1 << k;
            }
            for rec in 0..self.geo.max_records {
                let o = self.rec_off(rec);
                r.write_u32(o + R_OWNER, 0);
                r.write_u32(o + R_META, Meta::free(0).pack());
            }
        }
        // 1. Validate the tiling.
        let mut i = 0u32;
        while i < n {
            let e = self.tget(i) & !T_MARK;
            let k = u32::from(e & T_ORDER);
            if (e & (T_FREE | T_USED)) == 0
                || (e & T_FREE != 0 && e & T_USED != 0)
                || !self.valid_head(i, k)
            {
                return Err(PoolError::Corrupt("order table"));
            }
            self.tset(i, e);
            i += 1 << k;
        }
        // 2. Keep records that name a USED head (once); mark those heads.
        let mut free_rec = NIL;
        let mut live = 0u32;
        for rec in (0..self.geo.max_records).rev() {
            let o = self.rec_off(rec);
            let block = r.read_u32(o + R_BLOCK);
            let Meta {
                live: is_live,
                generation: gen_,
                order,
                kind,
            } = Meta::unpack(r.read_u32(o + R_META));
            let keep = is_live
                && AllocKind::from_u8(kind).is_some()
                && self.valid_head(block, order)
                && self.tget(block) == T_USED | order as u8;
            if keep {
                self.tset(block, T_USED | T_MARK | order as u8);
                live += 1;
            } else {
                r.write_u32(o + R_META, Meta::free(gen_).pack());
                r.write_u32(o + R_BLOCK, free_rec);
                free_rec = rec;
            }
        }
        // Records were walked in reverse, so the list comes out in ascending order.
        r.write_u32(off!(rec_free), free_rec);
        // 3. Walk the tiling: unmark kept heads, free orphans, rebuild the lists.
        let mut orphans = 0u32;
        let mut free_blocks = 0u32;
        let mut i = 0u32;
        while i < n {
            let e = self.tget(i);
            let k = u32::from(e & T_ORDER);
            let next = i + (1 << k);
            if e & T_USED != 0 && e & T_MARK != 0 {
                self.tset(i, T_USED | k as u8);
            } else {
                if e & T_USED != 0 {
                    orphans += 1;
                    self.tset(i, T_FREE | k as u8);
                }
                free_blocks += 1 << k;
                self.coalesce_push(i, k, true)?;
            }
            i = next;
        }
        r.write_u32(off!(live), live);
        r.write_u32(off!(free_min_blocks), free_blocks);
        Ok(orphans)
    }
}

fn check_owner(owner: u32) -> Result<(), PoolError> {
    if owner == 0 || owner > MAX_PARTY_OWNER {
        return Err(PoolError::BadOwner);
    }
    Ok(())
}

/// Iterator over live allocations; see [`Pool::allocations`].
pub struct Allocations<'a> {
    pool: &'a Pool,
    next: u32,
}

impl Iterator for Allocations<'_> {
    type Item = Result<AllocInfo, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Done (or stopped by a lock error, reported once): end without touching the lock, so
        // a stalled lock does not make the iteration endless.
        if self.next >= self.pool.geo.max_records {
            return None;
        }
        let g = match self.pool.lock() {
            Ok(g) => g,
            Err(e) => {
                self.next = self.pool.geo.max_records;
                return Some(Err(e));
            }
        };
        while self.next < self.pool.geo.max_records {
            let rec = self.next;
            self.next += 1;
            if let Some(info) = self.pool.record_info(rec) {
                drop(g);
                return Some(Ok(info));
            }
        }
        None
    }
}
