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
//! [PoolHeader 384 B][order table: 1 B per minimum block][records: 12 B each]
//! [backing bitmap: 1 bit per 256 KiB of data][magazines: 192 B each, 64-aligned]
//! [data, 64-aligned]
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
//! Metadata overhead: 384 B + 1 B per minimum block + 12 B per record + 192 B per magazine
//! (one per 2,048 minimum blocks, at most 32; `magazine.rs`). For a 1 MiB region with
//! 64-byte minimum blocks that is 28.6 KiB, 2.8 % (`metadata_overhead` test).
//!
//! # Backing: sparse pools that never fault
//! A pool over a file (the std adapter's `/dev/shm` pools) need not have storage behind all of
//! its data area: on a full tmpfs, the first write to a page the file system cannot provide
//! raises `SIGBUS`. The **backing bitmap** has one bit per [`CHUNK_BYTES`] of the data area, set
//! once that chunk is backed. [`Pool::init`] marks everything backed (memory that is simply
//! there: RAM, a fully reserved file). [`Pool::init_sparse`] marks nothing, and every party
//! gives the pool a *backing function* ([`Pool::set_backing`]) that reserves a byte range of
//! the region (`fallocate`). The allocator is the only writer to memory nobody owns (the
//! free-list links at the head of each free block) and the only one that hands memory out,
//! so it backs memory before either: before splitting, the links' bytes at the head of every
//! upper half it will link (the backing function rounds them to a page; the chunk is not
//! marked) and the chunks of the block it will hand out (marked); at init, the links of every
//! first free block.
//! If the backing function fails, the allocation fails with [`PoolError::NoBacking`] having
//! changed nothing (the block goes back on its list). Chunks stay backed. The bitmap changes
//! only under the lock.
//!
//! # Lazy coalescing: the fast path
//! A free of a small block (order at most [`LAZY_MAX_ORDER`]) whose free list is short (fewer
//! than [`LAZY_LIMIT`] blocks) puts it on its list without merging it with a free buddy, and
//! an allocation takes an exact-size block from its list before splitting a larger one. A
//! program that allocates and frees small blocks then costs one list pop and one push per
//! pair instead of a split and a merge per order (up to ~16 of each in a large pool with
//! 64-byte blocks: 2,895 instructions per 64 B alloc + free before, see the README's
//! Performance section for after). The order table stays a valid tiling: two free buddies of
//! the same order are two valid free heads, merely not merged. Unmerged blocks count as free
//! space. When an allocation finds no block large enough and some frees were left unmerged
//! (the `unmerged` counter), it merges every free buddy pair of the small orders and tries
//! again; the free-block query ([`Pool::free_blocks`]) merges first too, so what it reports is
//! the fully merged picture. Recovery's rebuild merges everything, as before; a death between
//! a lazy free's steps leaves what a death in an eager free leaves, minus the merges.
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

use crate::bell::{Bell, Side};
use crate::error::PoolError;
use crate::event::{Event, EventWords};
use crate::fault::{self, Step};
use crate::liveness::Memo;
use crate::region::Region;
use crate::sync::{AtomicU32, Ordering, fence, spin_hint};

/// `"DRPL"`: marks a pool header.
pub const POOL_MAGIC: u32 = 0x4C50_5244;
/// Version of the pool layout; attach refuses any other.
pub const POOL_LAYOUT_VERSION: u32 = 4;
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
const DATA_ALIGN: usize = 64;
/// Tries of a lock held by the same holder before [`PoolError::Stalled`] is reported, with
/// the caller's back-off between tries ([`Pool::set_lock_backoff`]): a few hundred
/// microseconds of spinning by default; with the std adapter's back-off (64 spins, then a
/// `yield` each) long enough for a preempted holder to run again, and short enough that a
/// dead one is noticed within milliseconds.
#[cfg(not(loom))]
const STALL_SPINS: u32 = 1 << 12;
/// Under loom every spin is a scheduling branch: give up quickly.
#[cfg(loom)]
const STALL_SPINS: u32 = 4;

/// Bytes of data area per bit of the backing bitmap (see "Backing" in the module docs).
pub const CHUNK_BYTES: usize = 256 * 1024;
const CHUNK_SHIFT: u32 = CHUNK_BYTES.trailing_zeros();

/// Reserves storage for `len` bytes at `offset` of the region (see [`Pool::set_backing`]).
/// Returns whether the range is now backed.
pub type BackingFn = fn(region: Region, offset: usize, len: usize) -> bool;

/// Largest order a free leaves unmerged (see "Lazy coalescing" in the module docs).
pub const LAZY_MAX_ORDER: u32 = 6;
/// A free stays unmerged only while its order's free list is shorter than this.
pub const LAZY_LIMIT: u32 = 64;

/// Order-table entries: `FREE|k`, `USED|k`, with `MARK` used only while rebuilding.
const T_FREE: u8 = 0x40;
const T_USED: u8 = 0x80;
const T_MARK: u8 = 0x20;
const T_ORDER: u8 = 0x1F;

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
    /// The doorbell's watcher counts (see `bell.rs` for the encoding). On the header's first
    /// line, which holds only values fixed at creation otherwise: every notifier reads it,
    /// and only a poller that starts or stops watching writes it.
    bell_watch: AtomicU32,
    _reserved: u32,
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
    /// Free blocks put on their lists without merging with a free buddy since the last
    /// coalescing pass (see "Lazy coalescing" in the module docs).
    unmerged: u32,
    /// Records ever handed out: records from here on were never used (a new pool hands
    /// them out in order before reusing freed ones, so creating it writes no records).
    /// Written under the lock.
    rec_fresh: AtomicU32,
    _reserved2: u32,
    /// Head block index of each order's free list (`NIL` when empty).
    free_heads: [u32; MAX_ORDERS],
    /// Length of each order's free list.
    free_counts: [u32; MAX_ORDERS],
    _pad: [u32; 4],
    /// The doorbell channel-set pollers sleep on (see `bell.rs`), on a line of its own: rings
    /// write it on every watched change, and neither the watch word's readers nor the pool's
    /// allocators should meet those writes.
    doorbell: AtomicU32,
    _doorbell_line: [u32; 15],
}

#[cfg(not(loom))]
const _: () = assert!(
    core::mem::size_of::<PoolHeader>() == 448 && core::mem::offset_of!(PoolHeader, doorbell) == 384
);

macro_rules! off {
    ($f:ident) => {
        core::mem::offset_of!(PoolHeader, $f)
    };
}

mod alloc;
mod buddy;
mod magazine;
mod records;
mod recovery;

pub use alloc::{Alloc, AllocInfo, AllocKind};
pub use magazine::{
    BLOCKS_PER_MAGAZINE, MAG_BUDGET, MAG_MAX_ORDER, MAG_SLOTS, MAX_MAGAZINES, PoolCache,
};
pub use records::Allocations;
use records::{KIND_CACHED, Meta, R_BLOCK, R_META, R_OWNER, RECORD_SIZE, Record};
pub use recovery::PoolRecovery;

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
    /// The backing bitmap: one bit per chunk, in 32-bit words.
    bitmap_off: usize,
    n_chunks: u32,
    /// The thread magazines (`magazine.rs`), 64-aligned.
    mags_off: usize,
    n_mags: u32,
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
        let bitmap_off = align_up(
            records_off.checked_add((max_records as usize).checked_mul(RECORD_SIZE)?)?,
            4,
        )?;
        let data_bytes = (n_blocks as usize).checked_mul(1usize << shift)?;
        let n_chunks = u32::try_from(data_bytes.div_ceil(CHUNK_BYTES)).ok()?;
        let mags_off = align_up(
            bitmap_off.checked_add(4 * n_chunks.div_ceil(32) as usize)?,
            DATA_ALIGN,
        )?;
        let n_mags = magazine::magazines_for(n_blocks, max_records);
        let data_off = align_up(
            mags_off.checked_add(n_mags as usize * magazine::MAGAZINE_BYTES)?,
            DATA_ALIGN,
        )?;
        let total = data_off.checked_add(data_bytes)?;
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
                bitmap_off,
                n_chunks,
                mags_off,
                n_mags,
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

/// A handle on a pool in a region. Cheap to copy between threads of one process; every party
/// (thread, process or core) holds its own, made by [`Pool::init`] or [`Pool::attach`].
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    region: Region,
    geo: Geometry,
    owner: u32,
    uid: u64,
    /// What a waiter for the pool lock does between two tries (see [`Pool::set_lock_backoff`]).
    backoff: fn(u32),
    /// Reserves storage for unbacked chunks (see [`Pool::set_backing`]); `None`: nothing can
    /// be backed (an unbacked chunk gives [`PoolError::NoBacking`]).
    backing: Option<BackingFn>,
}

/// The default lock back-off: a CPU spin hint.
fn spin_backoff(_tries: u32) {
    spin_hint();
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
        Self::init_backed(region, cfg, owner, None)
    }

    /// [`Pool::init`] for a region whose data area is not backed yet (a sparse file): chunks
    /// are backed with `backing` as the allocator first needs them (module docs, "Backing").
    /// The metadata in front of the data (see [`Pool::data_offset`]) must be backed already.
    ///
    /// # Errors
    /// As [`Pool::init`], and [`PoolError::NoBacking`] when `backing` fails for the first
    /// free blocks.
    pub fn init_sparse(
        region: Region,
        cfg: &PoolConfig,
        owner: u32,
        backing: BackingFn,
    ) -> Result<Self, PoolError> {
        Self::init_backed(region, cfg, owner, Some(backing))
    }

    /// Where the data area of a pool with `cfg` in a region of `region_len` bytes starts:
    /// the bytes before it are metadata, written at init.
    ///
    /// # Errors
    /// As [`Pool::init`] for a configuration or size that cannot hold a pool.
    pub fn data_offset(region_len: usize, cfg: &PoolConfig) -> Result<usize, PoolError> {
        Geometry::for_region(region_len, cfg).map(|g| g.data_off)
    }

    fn init_backed(
        region: Region,
        cfg: &PoolConfig,
        owner: u32,
        sparse: Option<BackingFn>,
    ) -> Result<Self, PoolError> {
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
        r.init_atomic(off!(doorbell), 0);
        r.init_atomic(off!(bell_watch), 0);
        EventWords::init(*r, off!(free_event));
        r.init_atomic(off!(lock_epoch), 0);
        r.init_atomic(off!(rec_fresh), 0);
        let pool = Self {
            region,
            geo,
            owner,
            uid: cfg.uid,
            backoff: spin_backoff,
            backing: sparse,
        };
        // Everything backed, or nothing yet.
        let fill = if sparse.is_some() { 0 } else { u32::MAX };
        for w in 0..geo.n_chunks.div_ceil(32) {
            r.write_u32(geo.bitmap_off + 4 * w as usize, fill);
        }
        pool.rebuild_all(true)?;
        pool.init_magazines();
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
            backoff: spin_backoff,
            backing: None,
        })
    }

    /// Sets how this party backs chunks of a sparse pool's data area (module docs,
    /// "Backing"): every party of a pool made by [`Pool::init_sparse`] sets it after
    /// [`Pool::attach`]. A party without one can still allocate from chunks that are backed.
    pub fn set_backing(&mut self, backing: BackingFn) {
        self.backing = Some(backing);
    }

    /// Bytes of the data area that are backed (chunks whose bit is set, each
    /// [`CHUNK_BYTES`]; the last one may be shorter).
    ///
    /// # Errors
    /// [`PoolError::Stalled`].
    pub fn backed_bytes(&self) -> Result<usize, PoolError> {
        let _g = self.lock()?;
        let data = self.total_size();
        Ok((0..self.geo.n_chunks)
            .filter(|&c| self.chunk_backed(c))
            .map(|c| (data - ((c as usize) << CHUNK_SHIFT)).min(CHUNK_BYTES))
            .sum())
    }

    /// Sets what a waiter for the pool lock does between two tries (`backoff(tries_so_far)`;
    /// the default is a CPU spin hint). The pool lock guards critical sections of a few
    /// microseconds, and it is the one place the core waits: an operation cannot give the
    /// lock back to its caller half-way (a receive that must free a side allocation, say), so
    /// it spins up to a bound and then reports [`PoolError::Stalled`]. A caller on an
    /// operating system lets a preempted holder run: the std adapter yields after a few
    /// spins. The bound counts tries, not time, so a yielding back-off waits longer for a
    /// holder before calling it stalled.
    pub fn set_lock_backoff(&mut self, backoff: fn(u32)) {
        self.backoff = backoff;
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
    /// allocation, like `malloc(0)`). Takes the pool lock; a thread that allocates often
    /// holds a cache instead ([`Pool::claim_cache`]), whose fast path takes no lock.
    ///
    /// # Errors
    /// [`PoolError::TooLarge`] if the request can never fit, [`PoolError::OutOfSpace`] if it
    /// does not fit now (or all allocation records are in use), [`PoolError::Stalled`] if the
    /// lock holder does not let go, [`PoolError::Corrupt`] if the metadata is damaged.
    pub fn alloc(&self, size: usize, kind: AllocKind) -> Result<Alloc, PoolError> {
        let order = self.order_for(size)?;
        let g = self.lock()?;
        let r = match self.alloc_in(order, kind, self.owner, None) {
            // Magazines hold free memory too: give it back and try once more.
            Err(PoolError::OutOfSpace) if self.drain_magazines().is_ok_and(|n| n > 0) => {
                self.alloc_in(order, kind, self.owner, None)
            }
            r => r,
        };
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
        g.finish(self.free_locked(&a, Some(false)))
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
        self.rec_set(a.record, R_OWNER, new_owner);
        Ok(())
    }

    /// The owner id recorded for `a`.
    ///
    /// # Errors
    /// As [`Pool::resolve`].
    pub fn owner_of(&self, a: &Alloc) -> Result<u32, PoolError> {
        let _g = self.lock()?;
        self.check_live(a)?;
        Ok(self.rec_get(a.record, R_OWNER))
    }

    /// What the live allocation `a` is for.
    ///
    /// # Errors
    /// As [`Pool::resolve`].
    pub fn kind_of(&self, a: &Alloc) -> Result<AllocKind, PoolError> {
        let _g = self.lock()?;
        self.check_live(a)?;
        self.record_info(a.record)
            .map(|i| i.kind)
            .ok_or(PoolError::BadDescriptor)
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
        // Allocations in magazines are free memory (`magazine.rs`).
        let (cached_blocks, cached) = self.cached_totals();
        let free_blocks = r
            .read_u32(off!(free_min_blocks))
            .wrapping_add(cached_blocks);
        Ok(PoolStats {
            total: self.total_size(),
            free: (free_blocks as usize) << self.geo.shift,
            live: r.read_u32(off!(live)).wrapping_sub(cached),
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
        let g = self.lock()?;
        // The merged picture: magazines emptied, lazy frees merged.
        let r = self.drain_magazines().and_then(|_| self.coalesce_lazy());
        if r.is_ok() {
            // Read under the lock: the counts are plain words its holders write.
            for (k, o) in out.iter_mut().enumerate() {
                *o = self.rd(off!(free_counts) + 4 * k);
            }
        }
        g.finish(r)?;
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

    /// The pool's doorbell, as a channel-set poller watches it (see `bell.rs`).
    #[inline]
    pub fn bell(&self) -> Bell<'_> {
        self.bell_for(0)
    }

    /// The doorbell as the channel whose header is at region offset `base` rings it.
    #[inline]
    pub(crate) fn bell_for(&self, base: usize) -> Bell<'_> {
        Bell::new(
            self.hdr_atomic(off!(doorbell)),
            self.hdr_atomic(off!(bell_watch)),
            Bell::hint_of(base),
            Side::Arrived,
        )
    }

    /// The count bits of pollers watching `side` of the pool's doorbell (non-zero: watched;
    /// see `Channel::ring`).
    #[inline(always)]
    pub(crate) fn bell_watchers(&self, side: Side) -> u32 {
        Bell::watchers_of(self.hdr_atomic(off!(bell_watch)), side)
    }

    // ----- crate-internal API for the channel -----

    fn scan<T>(&self, kind: AllocKind, f: &mut impl FnMut(&AllocInfo) -> Option<T>) -> Option<T> {
        self.records_in_use()
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
        let a = g.finish(self.alloc_in(order, kind, owner, None))?;
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
                    (self.backoff)(spins);
                }
            }
        }
    }

    #[inline]
    fn order_for(&self, size: usize) -> Result<u32, PoolError> {
        // Blocks needed, minus one (0 for a request of at most one block, also for 0 bytes);
        // the order is the bit length of that. Sizes near `usize::MAX` give a large order
        // rather than overflow.
        let below = size.saturating_sub(1) >> self.geo.shift;
        let order = usize::BITS - below.leading_zeros();
        if order > self.geo.max_order {
            return Err(PoolError::TooLarge {
                requested: size,
                max: self.max_alloc(),
            });
        }
        Ok(order)
    }

    #[inline]
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

    /// Offset of record `rec`: one of the pool's records, or a magazine's slot record
    /// (`magazine.rs`).
    #[inline]
    fn rec_off(&self, rec: u32) -> usize {
        debug_assert!(rec < self.rec_end());
        if rec < self.geo.max_records {
            self.geo.records_off + rec as usize * RECORD_SIZE
        } else {
            self.slot_off(rec)
        }
    }

    /// A metadata word at `off`: a header field, a record field or a free block's links,
    /// always at an offset derived from the geometry validated at init/attach and from an
    /// index its caller checked (`valid_head`, `rec < max_records`), never from a raw value
    /// read from shared memory. The bounds are `debug_assert!`ed (the allocator's hot path
    /// pays no check per word; Miri and the corruption tests run the debug build).
    #[inline(always)]
    fn rd(&self, off: usize) -> u32 {
        self.region.read_u32_validated(off)
    }

    /// Writes a metadata word (see [`Pool::rd`]); the caller holds the lock.
    #[inline(always)]
    fn wr(&self, off: usize, v: u32) {
        self.region.write_u32_validated(off, v);
    }

    /// Records ever used: the free-record list and the rebuild cover these; the ones above
    /// were never written (zero in a new sparse file, anything in other memory).
    fn records_used(&self) -> u32 {
        // Relaxed: read without the pool lock only to bound record indices.
        self.hdr_atomic(off!(rec_fresh))
            .load(Ordering::Relaxed)
            .min(self.geo.max_records)
    }

    /// Entry `k` (an order, at most 31) of a per-order header array.
    fn hget(&self, field: usize, k: u32) -> u32 {
        debug_assert!((k as usize) < MAX_ORDERS);
        self.rd(field + 4 * k as usize)
    }

    fn hset(&self, field: usize, k: u32, v: u32) {
        debug_assert!((k as usize) < MAX_ORDERS);
        self.wr(field + 4 * k as usize, v);
    }

    fn add_u32(&self, off: usize, delta: i64) {
        let v = self.rd(off);
        self.wr(off, (i64::from(v) + delta) as u32);
    }

    /// Whether the block `(block, order)` lies in one chunk that is backed (the allocation
    /// fast path's whole check: an aligned block no larger than a chunk never straddles two).
    #[inline]
    fn small_block_backed(&self, block: u32, order: u32) -> bool {
        order + self.geo.shift <= CHUNK_SHIFT
            && self.chunk_backed(block >> (CHUNK_SHIFT - self.geo.shift))
    }

    fn chunk_backed(&self, chunk: u32) -> bool {
        debug_assert!(chunk < self.geo.n_chunks);
        self.rd(self.geo.bitmap_off + 4 * (chunk / 32) as usize) & (1 << (chunk % 32)) != 0
    }

    /// Backs the chunks of `blocks` blocks from `block` (lock held), calling the backing
    /// function for each run of unbacked chunks; sets their bits.
    ///
    /// # Errors
    /// [`PoolError::NoBacking`] when there is no backing function or it fails (the bits of
    /// the chunks it backed before stay set: they are backed).
    fn back(&self, block: u32, blocks: u32) -> Result<(), PoolError> {
        let start = (block as usize) << self.geo.shift;
        let end = start + ((blocks as usize) << self.geo.shift);
        let (first, last) = (
            (start >> CHUNK_SHIFT) as u32,
            ((end - 1) >> CHUNK_SHIFT) as u32,
        );
        let mut c = first;
        while c <= last {
            if self.chunk_backed(c) {
                c += 1;
                continue;
            }
            // One call for each run of unbacked chunks.
            let mut end_c = c + 1;
            while end_c <= last && !self.chunk_backed(end_c) {
                end_c += 1;
            }
            let off = (c as usize) << CHUNK_SHIFT;
            let len = (self.total_size().min((end_c as usize) << CHUNK_SHIFT)) - off;
            self.call_backing(off, len)?;
            for b in c..end_c {
                let w = self.geo.bitmap_off + 4 * (b / 32) as usize;
                self.wr(w, self.rd(w) | (1 << (b % 32)));
            }
            c = end_c;
        }
        Ok(())
    }

    /// Backs the free-list links at the head of `block` (lock held): only their bytes (the
    /// backing function rounds to its pages), so splitting a large block links its upper
    /// halves without backing whole chunks; the chunk's bit stays as it was.
    ///
    /// # Errors
    /// [`PoolError::NoBacking`].
    fn back_head(&self, block: u32) -> Result<(), PoolError> {
        let off = (block as usize) << self.geo.shift;
        if self.chunk_backed((off >> CHUNK_SHIFT) as u32) {
            return Ok(());
        }
        self.call_backing(off, size_of::<buddy::Links>())
    }

    /// Backs `len` bytes at `off` of the data area with the backing function.
    ///
    /// # Errors
    /// [`PoolError::NoBacking`] without one, or when it fails.
    fn call_backing(&self, off: usize, len: usize) -> Result<(), PoolError> {
        match self.backing {
            Some(f) if f(self.region, self.geo.data_off + off, len) => Ok(()),
            _ => Err(PoolError::NoBacking),
        }
    }

    /// Whether `block` can be the head of a block of `order` in this pool.
    fn valid_head(&self, block: u32, order: u32) -> bool {
        order <= self.geo.max_order
            && block < self.geo.n_blocks
            && block & ((1u32 << order) - 1) == 0
            && (self.geo.n_blocks - block) >> order != 0
    }
}

fn check_owner(owner: u32) -> Result<(), PoolError> {
    if owner == 0 || owner > MAX_PARTY_OWNER {
        return Err(PoolError::BadOwner);
    }
    Ok(())
}
