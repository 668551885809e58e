//! Magazines: per-thread caches of freed small allocations, handed out again without the pool
//! lock and without a lock of their own, so a thread that allocates and frees pays one
//! compare-and-swap per operation on a cache line nobody else writes.
//!
//! # What a magazine is
//! A few cache lines in the pool's metadata: the `owner` word (the party whose thread holds
//! it, 0 while free), two budget counters, and [`MAG_SLOTS`] **slot records**: allocation
//! records exactly like the pool's (block, owner, meta), numbered after the pool's records
//! (`max_records + magazine * MAG_SLOTS + slot`). One thread of a party claims a magazine
//! ([`Pool::claim_cache`]) and holds it as a [`PoolCache`]: a small allocation that the
//! cache makes through the pool lock gets one of its free slot records (the pool's records
//! otherwise), and freeing such an allocation through the cache leaves it allocated in the
//! pool's eyes with the kind [`KIND_CACHED`]: the block stays `USED` in the order table, the
//! record stays live, and the next allocation of that order through the cache flips it back
//! to live. So every pool invariant, query and recovery step holds unchanged, with three
//! additions: the descriptor of a cached allocation is refused as stale (its kind is
//! `CACHED`); the statistics count cached blocks as free (they scan the slots); and an
//! allocation that finds no room drains every magazine back into the pool before it gives
//! up, so cached memory stays allocatable by everyone.
//!
//! Slot records live in the magazine's own lines, so two threads (or processes) that
//! allocate and free at once touch no common line on their fast paths; the pool's records
//! are 12 bytes and neighbours belong to anyone.
//!
//! Each operation comes in two halves: the lock-free one ([`PoolCache::alloc_cached`],
//! [`PoolCache::free_cached`]), small enough to inline into a caller's fast path, and the one
//! through the pool lock ([`PoolCache::alloc_uncached`], [`PoolCache::free_uncached`]), kept
//! out of line; [`PoolCache::alloc`] and [`PoolCache::free`] run one after the other. A
//! cached allocation comes with its block's span, from what `take` has just checked, so a
//! caller that maps the block does not check the descriptor again.
//!
//! # Concurrency: one word decides
//! A slot's meta word moves `live -> CACHED` (the owner thread's free), `CACHED -> live` (the
//! owner thread's allocation) and `live or CACHED -> free` (a free through the pool lock, a
//! drain, recovery), each by a compare-and-swap from the value its caller validated. So of
//! two parties that race for one slot exactly one wins: an owner's allocation against a
//! drainer, an owner's free against another party's free of the same descriptor (a buggy
//! double free). The owner thread needs no lock: nobody else moves a slot into or out of
//! `CACHED` except drainers, and they only take (`CACHED -> free`). A free slot (meta not
//! live) becomes live only through the pool lock (`carve`), so picking one under the lock is
//! safe even if two threads misuse one cache. The budget counters are the owner's estimate
//! of what it holds (`put`, written by the owner) and what drainers took (`stolen`, written
//! under the pool lock); they only bound how much a cache keeps. Statistics scan the slots.
//!
//! # Waking blocked allocators without a fence
//! A free into a magazine publishes the cached block with a `SeqCst` compare-and-swap and
//! then reads the free event's waiter count with a `SeqCst` load
//! ([`Event::notify_after_seqcst`]). A blocked allocator registers with a read-modify-write
//! of that count, re-tries, and the drain of its re-try starts with a `SeqCst` fence. If the
//! free's load precedes that fence in the single total order `S` of `SeqCst` operations, so
//! does the free's swap (sequenced before the load), and every load after the fence sees
//! the swap or a later value (C++20 [atomics.order]: a load sequenced after a `SeqCst` fence
//! sees the last `SeqCst` modification before the fence in `S`, or a later one): the drain
//! finds the block cached (or taken back by its holder) and frees it. If the fence precedes
//! the load, the load sees the registration (sequenced before the fence) and the free wakes
//! the waiter. No fence is needed on the fast path; the slow path pays one.
//!
//! # What a death at each step leaves
//! - A thread's party dies holding a magazine: the `owner` word names a dead party.
//!   [`Pool::recover`] frees every cached slot of that magazine, then every live record of
//!   the dead party (slots included), then frees the magazine for a new claimer.
//! - Inside a cache allocation, after its swap to live: a live record of the dead party,
//!   freed by recovery like any other. Before it: the allocation is still cached.
//! - Inside a cache free, after its swap to `CACHED` and before the budget update: a cached
//!   slot (freed by recovery); the budget is reset when the magazine is claimed again.
//! - Inside an allocation through the pool lock with a slot record: what the locked path
//!   leaves (the pool's module docs); the rebuild treats slot records like the pool's,
//!   except that a slot it releases stays in its magazine instead of going on the free-record
//!   list.

use core::cell::Cell;
use core::marker::PhantomData;

use super::*;
use crate::event::Wake;

/// Slot records of one magazine.
pub const MAG_SLOTS: usize = 14;
/// Largest order a magazine caches (4 KiB at 64-byte minimum blocks, the lazy frees' limit).
pub const MAG_MAX_ORDER: u32 = 6;
/// Most minimum blocks a magazine keeps cached (2 of each order up to 4, one of orders 5
/// and 6: about 10 KiB at 64-byte minimum blocks).
pub const MAG_BUDGET: u32 = 2 * 31 + 32 + 64;
/// Most magazines in a pool; a pool has one per [`BLOCKS_PER_MAGAZINE`] minimum blocks up to
/// this.
pub const MAX_MAGAZINES: u32 = 32;
/// Minimum blocks of data per magazine (128 KiB at 64-byte blocks: a magazine's 192 bytes
/// are 0.15 % of that).
pub const BLOCKS_PER_MAGAZINE: u32 = 2048;
/// Record indices (pool records and slot records) must stay far from `u32::MAX`.
const MAG_MAX_RECORDS: u32 = 1 << 27;

/// One magazine: three cache lines that only its thread writes in the steady state.
#[repr(C, align(64))]
pub(super) struct Magazine {
    /// The party whose thread holds the magazine; 0 while free. SYNC: claim (CAS Acquire)
    /// <-> release (store Release in `release_magazine`).
    owner: AtomicU32,
    /// Minimum blocks the holder cached minus those it took back (its budget; holder only).
    put: AtomicU32,
    /// Minimum blocks drainers took (under the pool lock).
    stolen: AtomicU32,
    _spare: AtomicU32,
    /// The slot records.
    slots: [Record; MAG_SLOTS],
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Magazine>() == 192);
const M_OWNER: usize = core::mem::offset_of!(Magazine, owner);
const M_PUT: usize = core::mem::offset_of!(Magazine, put);
const M_STOLEN: usize = core::mem::offset_of!(Magazine, stolen);
const M_SPARE: usize = core::mem::offset_of!(Magazine, _spare);
const M_SLOTS: usize = core::mem::offset_of!(Magazine, slots);

/// How many magazines a pool of `n_blocks` minimum blocks with `max_records` records has.
pub(super) const fn magazines_for(n_blocks: u32, max_records: u32) -> u32 {
    let n = n_blocks / BLOCKS_PER_MAGAZINE;
    if max_records >= MAG_MAX_RECORDS || n == 0 {
        0
    } else if n < MAX_MAGAZINES {
        n
    } else {
        MAX_MAGAZINES
    }
}

/// Bytes of one magazine.
pub(super) const MAGAZINE_BYTES: usize = core::mem::size_of::<Magazine>();

/// A magazine claimed by one thread of a party: the allocation and free fast paths.
///
/// Made by [`Pool::claim_cache`]; give it back with [`PoolCache::release`] (a cache that is
/// never released stays claimed until its party is found dead by [`Pool::recover`]). It is
/// `Send` but not `Sync`: one thread uses it at a time (see the module docs of `magazine`
/// for why that is a matter of efficiency, never of correctness).
#[derive(Debug)]
pub struct PoolCache {
    pool: Pool,
    mag: u32,
    /// Record index of the magazine's first slot.
    first: u32,
    /// Region offset of the magazine's first slot.
    slots_off: usize,
    _one_thread: PhantomData<Cell<()>>,
}

impl Pool {
    /// Word `field` of magazine `m` (`m < n_mags`).
    fn mag(&self, m: u32, field: usize) -> &AtomicU32 {
        debug_assert!(m < self.geo.n_mags);
        // SAFETY: magazine `m` lies inside the magazine area of the validated geometry; its
        // words were constructed at init (`init_magazines`); the region outlives `self`.
        unsafe {
            self.region
                .atomic(self.geo.mags_off + m as usize * MAGAZINE_BYTES + field)
        }
    }

    /// Record index of slot `i` of magazine `m`.
    fn slot_rec(&self, m: u32, i: usize) -> u32 {
        self.geo.max_records + m * MAG_SLOTS as u32 + i as u32
    }

    /// Region offset of slot record `rec` (`max_records <= rec < rec_end()`).
    pub(super) fn slot_off(&self, rec: u32) -> usize {
        let s = (rec - self.geo.max_records) as usize;
        self.geo.mags_off
            + (s / MAG_SLOTS) * MAGAZINE_BYTES
            + M_SLOTS
            + (s % MAG_SLOTS) * RECORD_SIZE
    }

    /// One past the last record index (slot records included).
    pub(super) fn rec_end(&self) -> u32 {
        self.geo.max_records + self.geo.n_mags * MAG_SLOTS as u32
    }

    /// Every record index that may be in use: the pool's records ever handed out, then every
    /// slot record.
    pub(super) fn records_in_use(&self) -> impl Iterator<Item = u32> + use<> {
        (0..self.records_used()).chain(self.geo.max_records..self.rec_end())
    }

    /// Whether `rec` names a record that may be in use.
    pub(super) fn rec_valid(&self, rec: u32) -> bool {
        rec < self.records_used() || (rec >= self.geo.max_records && rec < self.rec_end())
    }

    /// Constructs every magazine empty, its slots free (creator, before publishing).
    pub(super) fn init_magazines(&self) {
        for m in 0..self.geo.n_mags {
            let base = self.geo.mags_off + m as usize * MAGAZINE_BYTES;
            // Field by field: under loom an atomic is larger than its four bytes.
            for f in [M_OWNER, M_PUT, M_STOLEN, M_SPARE] {
                self.region.init_atomic(base + f, 0);
            }
            for i in 0..MAG_SLOTS {
                let o = self.slot_off(self.slot_rec(m, i));
                self.region.init_atomic(o + R_BLOCK, NIL);
                self.region.init_atomic(o + R_OWNER, 0);
                self.region.init_atomic(o + R_META, Meta::free(0).pack());
            }
        }
    }

    /// Claims a free magazine for one thread of this party. `None`: the pool has no
    /// magazines, all are held, or this handle names a structure; the thread then allocates
    /// through the pool lock ([`Pool::alloc`], [`Pool::free`]).
    pub fn claim_cache(&self) -> Option<PoolCache> {
        if self.geo.n_mags == 0 || self.owner & STRUCT_OWNER_BIT != 0 {
            return None;
        }
        // Start at a place of the party's own, so parties seldom try the same words.
        let start = self.owner.wrapping_mul(0x9E37_79B9) >> 16;
        (0..self.geo.n_mags).find_map(|j| {
            let m = (start + j) % self.geo.n_mags;
            // SYNC: claim (CAS Acquire) <-> release (store Release in `release_magazine`):
            // the last holder's and drainers' writes to the slots are visible to us.
            self.mag(m, M_OWNER)
                .compare_exchange(0, self.owner, Ordering::Acquire, Ordering::Relaxed)
                .ok()?;
            // Nothing is cached in a free magazine: the budget starts at zero.
            let stolen = self.mag(m, M_STOLEN).load(Ordering::Relaxed);
            self.mag(m, M_PUT).store(stolen, Ordering::Relaxed);
            let first = self.slot_rec(m, 0);
            Some(PoolCache {
                pool: *self,
                mag: m,
                first,
                slots_off: self.slot_off(first),
                _one_thread: PhantomData,
            })
        })
    }

    /// [`Pool::claim_cache`], and when every magazine is held, first frees those whose holder
    /// `is_alive` reports dead (what [`Pool::recover`] does for them: their cached
    /// allocations go back to the pool; their live ones stay until a recovery frees them).
    ///
    /// # Errors
    /// [`PoolError::Stalled`], [`PoolError::Corrupt`].
    pub fn claim_cache_reclaiming(
        &self,
        is_alive: &dyn Fn(u32) -> bool,
    ) -> Result<Option<PoolCache>, PoolError> {
        if let Some(c) = self.claim_cache() {
            return Ok(Some(c));
        }
        if self.geo.n_mags == 0 || self.owner & STRUCT_OWNER_BIT != 0 {
            return Ok(None);
        }
        let g = self.lock()?;
        let freed = self.recover_magazines(is_alive);
        g.finish(freed)?;
        Ok(self.claim_cache())
    }

    /// A slot of magazine `m` that names no allocation (lock held).
    pub(super) fn free_slot(&self, m: u32) -> Option<u32> {
        (0..MAG_SLOTS)
            .map(|i| self.slot_rec(m, i))
            .find(|&rec| !Meta::unpack(self.rec_get(rec, R_META)).live)
    }

    /// Minimum blocks and allocations cached in all magazines now (a snapshot).
    pub(super) fn cached_totals(&self) -> (u32, u32) {
        let (mut blocks, mut count) = (0u32, 0u32);
        for rec in self.geo.max_records..self.rec_end() {
            let m = Meta::unpack(self.rec_get(rec, R_META));
            if m.live && m.kind == KIND_CACHED {
                blocks = blocks.wrapping_add(1 << m.order.min(31));
                count += 1;
            }
        }
        (blocks, count)
    }

    /// Frees every allocation cached in every magazine (pool lock held). Returns how many
    /// went back.
    pub(super) fn drain_magazines(&self) -> Result<u32, PoolError> {
        // SYNC: fence (SeqCst) <-> a cache free's SeqCst CAS and SeqCst load of the waiter
        // count (module docs, "Waking blocked allocators without a fence").
        fence(Ordering::SeqCst);
        let mut n = 0;
        for m in 0..self.geo.n_mags {
            n += self.empty_magazine(m)?;
        }
        Ok(n)
    }

    /// Frees every allocation cached in magazine `m` (pool lock held). A slot its holder
    /// takes back meanwhile is left to it. Returns how many.
    fn empty_magazine(&self, m: u32) -> Result<u32, PoolError> {
        let mut n = 0;
        for i in 0..MAG_SLOTS {
            let rec = self.slot_rec(m, i);
            // Relaxed: ordered by the fence in `drain_magazines` (or by the lock of a
            // recovery); the free below swaps from exactly this value or fails.
            let meta = Meta::unpack(self.rec_get(rec, R_META));
            let block = self.rec_get(rec, R_BLOCK);
            if !meta.live || meta.kind != KIND_CACHED || !self.valid_head(block, meta.order) {
                continue;
            }
            let a = Alloc {
                block,
                record: rec,
                gen_: meta.generation,
                order: meta.order as u8,
                pool_tag: self.uid as u32,
            };
            if self.tget(block) != T_USED | meta.order as u8 {
                continue;
            }
            match self.free_locked(&a, Some(true)) {
                Ok(()) => {
                    let s = self.mag(m, M_STOLEN);
                    s.store(
                        s.load(Ordering::Relaxed).wrapping_add(1 << meta.order),
                        Ordering::Relaxed,
                    );
                    n += 1;
                }
                // Its holder took it back first.
                Err(PoolError::Stale) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Empties magazine `m` and frees it for a new claimer (pool lock held).
    fn release_magazine(&self, m: u32) -> Result<u32, PoolError> {
        let n = self.empty_magazine(m)?;
        // SYNC: release (Release) <-> the next claim's CAS (Acquire).
        self.mag(m, M_OWNER).store(0, Ordering::Release);
        Ok(n)
    }

    /// Recovery's part (pool lock held): empties and frees the magazines of dead parties.
    /// Their live slot records are freed with the dead parties' other allocations.
    pub(super) fn recover_magazines(
        &self,
        is_alive: &dyn Fn(u32) -> bool,
    ) -> Result<u32, PoolError> {
        let mut n = 0;
        for m in 0..self.geo.n_mags {
            let owner = self.mag(m, M_OWNER).load(Ordering::Acquire);
            if owner != 0 && !is_alive(owner) {
                n += self.release_magazine(m)?;
            }
        }
        Ok(n)
    }

    /// Gives back every magazine this party's threads hold (a process letting go of its
    /// mapping, whose threads can no longer use their caches). Returns how many cached
    /// allocations went back to the pool.
    ///
    /// # Errors
    /// [`PoolError::Stalled`], [`PoolError::Corrupt`].
    pub fn release_caches_of_party(&self) -> Result<u32, PoolError> {
        let g = self.lock()?;
        let mut n = 0;
        for m in 0..self.geo.n_mags {
            if self.mag(m, M_OWNER).load(Ordering::Relaxed) == self.owner {
                match self.release_magazine(m) {
                    Ok(k) => n += k,
                    Err(e) => return g.finish(Err(e)),
                }
            }
        }
        drop(g);
        Ok(n)
    }
}

impl PoolCache {
    /// The pool this cache belongs to.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Allocates like [`Pool::alloc`]: from this cache when it holds an allocation of the
    /// right order (no lock), through the pool lock otherwise (with one of the cache's slot
    /// records when one is free, so that the allocation can come back to it). The two halves
    /// are [`PoolCache::alloc_cached`] and [`PoolCache::alloc_uncached`].
    ///
    /// # Errors
    /// As [`Pool::alloc`].
    #[inline(always)]
    pub fn alloc(&mut self, size: usize, kind: AllocKind) -> Result<Alloc, PoolError> {
        match self.alloc_cached(size, kind) {
            Some((a, ..)) => Ok(a),
            None => self.alloc_uncached(size, kind),
        }
    }

    /// The lock-free half of [`PoolCache::alloc`]: an allocation of `size` bytes from this
    /// cache, with where its block lies (byte offset from the region start and size, what
    /// [`Pool::span_unchecked`] would say, from what the allocation has just checked: a
    /// caller that maps the block need not check the descriptor again). `None` when the
    /// cache holds no allocation of that size; [`PoolCache::alloc_uncached`] then allocates.
    #[inline(always)]
    pub fn alloc_cached(&mut self, size: usize, kind: AllocKind) -> Option<(Alloc, usize, usize)> {
        let order = self.pool.order_for(size).ok()?;
        if order > MAG_MAX_ORDER {
            return None;
        }
        let a = self.take(order, kind)?;
        // `take` checked the block's head against the geometry.
        debug_assert_eq!(self.pool.span_unchecked(&a), Some(self.pool.span(&a)));
        let (off, len) = self.pool.span(&a);
        Some((a, off, len))
    }

    /// The other half of [`PoolCache::alloc`], for when [`PoolCache::alloc_cached`] found
    /// nothing: through the pool lock.
    ///
    /// # Errors
    /// As [`Pool::alloc`].
    #[cold]
    #[inline(never)]
    pub fn alloc_uncached(&mut self, size: usize, kind: AllocKind) -> Result<Alloc, PoolError> {
        let p = &self.pool;
        let order = p.order_for(size)?;
        let g = p.lock()?;
        let slot = if order <= MAG_MAX_ORDER {
            p.free_slot(self.mag)
        } else {
            None
        };
        let r = match p.alloc_in(order, kind, p.owner, slot) {
            // Magazines hold free memory too: give it back and try once more.
            Err(PoolError::OutOfSpace) if p.drain_magazines().is_ok_and(|n| n > 0) => {
                p.alloc_in(order, kind, p.owner, slot)
            }
            r => r,
        };
        g.finish(r)
    }

    /// Word `field` of slot `i` of this cache's magazine (`i < MAG_SLOTS`).
    #[inline]
    fn slot_word(&self, i: usize, field: usize) -> &AtomicU32 {
        debug_assert!(i < MAG_SLOTS);
        // SAFETY: slot `i` of a magazine of the validated geometry (`claim_cache` computed
        // `slots_off`); its words were constructed at init; the region outlives `self.pool`.
        unsafe {
            self.pool
                .region
                .atomic(self.slots_off + i * RECORD_SIZE + field)
        }
    }

    /// A cached allocation of `order`, made live with `kind` and a new generation.
    #[inline(always)]
    fn take(&mut self, order: u32, kind: AllocKind) -> Option<Alloc> {
        // The top half of a cached allocation's meta word: live, `CACHED`, `order`.
        let want = Meta {
            live: true,
            generation: 0,
            order,
            kind: KIND_CACHED,
        }
        .pack()
            >> 16;
        for i in 0..MAG_SLOTS {
            let word = self.slot_word(i, R_META);
            let cur = word.load(Ordering::Relaxed);
            if cur >> 16 != want {
                continue;
            }
            let block = self.slot_word(i, R_BLOCK).load(Ordering::Relaxed);
            if !self.pool.valid_head(block, order) {
                continue;
            }
            let gen_ = (cur as u16).wrapping_add(1);
            let live = Meta {
                live: true,
                generation: gen_,
                order,
                kind: kind as u8,
            };
            // SYNC: CAS (Acquire) <-> this cache's free (SeqCst CAS) and a drainer's CAS of
            // the same word: exactly one takes a cached slot.
            if word
                .compare_exchange(cur, live.pack(), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let put = self.pool.mag(self.mag, M_PUT);
            put.store(
                put.load(Ordering::Relaxed).wrapping_sub(1 << order),
                Ordering::Relaxed,
            );
            return Some(Alloc {
                block,
                record: self.first + i as u32,
                gen_,
                order: order as u8,
                pool_tag: self.pool.uid as u32,
            });
        }
        None
    }

    /// Frees like [`Pool::free`]: an allocation with one of this cache's slot records stays
    /// cached while the cache's budget allows (no lock); any other goes back to the pool.
    /// Returns whom the caller must wake on the pool's free event
    /// ([`Pool::free_event`]): this call has already bumped its word when anyone waits. The
    /// two halves are [`PoolCache::free_cached`] and [`PoolCache::free_uncached`].
    ///
    /// # Errors
    /// As [`Pool::free`]; [`PoolError::Died`] from fault injection only.
    #[inline(always)]
    pub fn free(&mut self, a: Alloc) -> Result<Wake, PoolError> {
        match self.free_cached(&a)? {
            Some(w) => Ok(w),
            None => self.free_uncached(a),
        }
    }

    /// The lock-free half of [`PoolCache::free`]: keeps `a` in this cache if it is live in
    /// one of the cache's slots and the budget allows, and says whom to wake. `None`: not
    /// kept (not this cache's, over budget, or stale, forged or cached already: the other
    /// half, [`PoolCache::free_uncached`], frees it or says which).
    ///
    /// # Errors
    /// [`PoolError::Died`] from fault injection only.
    #[inline(always)]
    pub fn free_cached(&mut self, a: &Alloc) -> Result<Option<Wake>, PoolError> {
        Ok(if self.keep(a)? {
            Some(self.pool.free_event().notify_after_seqcst())
        } else {
            None
        })
    }

    /// The other half of [`PoolCache::free`], for an allocation
    /// [`PoolCache::free_cached`] did not keep: through the pool lock.
    ///
    /// # Errors
    /// As [`Pool::free`].
    #[cold]
    #[inline(never)]
    pub fn free_uncached(&mut self, a: Alloc) -> Result<Wake, PoolError> {
        self.pool.free(a)?;
        Ok(self.pool.free_event().notify())
    }

    /// Caches `a` if it is live in one of this cache's slots and the budget allows.
    #[inline(always)]
    fn keep(&mut self, a: &Alloc) -> Result<bool, PoolError> {
        let p = &self.pool;
        let order = u32::from(a.order);
        let i = a.record.wrapping_sub(self.first) as usize;
        if i >= MAG_SLOTS || order > MAG_MAX_ORDER || a.pool_tag != p.uid as u32 {
            return Ok(false);
        }
        let (put, stolen) = (p.mag(self.mag, M_PUT), p.mag(self.mag, M_STOLEN));
        let held = put
            .load(Ordering::Relaxed)
            .wrapping_sub(stolen.load(Ordering::Relaxed));
        if held.saturating_add(1 << order) > MAG_BUDGET {
            return Ok(false);
        }
        let word = self.slot_word(i, R_META);
        let cur = word.load(Ordering::Relaxed);
        let mt = Meta::unpack(cur);
        if !mt.live
            || mt.generation != a.gen_
            || mt.order != order
            || AllocKind::from_u8(mt.kind).is_none()
            || self.slot_word(i, R_BLOCK).load(Ordering::Relaxed) != a.block
            || !p.valid_head(a.block, order)
        {
            // Stale, forged or cached already: the locked path says which.
            return Ok(false);
        }
        // The cached allocation is this party's (it may have come back by transfer).
        let owner = self.slot_word(i, R_OWNER);
        if owner.load(Ordering::Relaxed) != p.owner {
            owner.store(p.owner, Ordering::Relaxed);
        }
        let cached = Meta {
            kind: KIND_CACHED,
            ..mt
        };
        // SYNC: CAS (SeqCst) <-> a free through the pool lock and a drainer (their CAS of
        // the same word: one wins), and a drainer's SeqCst load after a blocked allocator
        // registered (module docs, "Waking blocked allocators without a fence").
        if word
            .compare_exchange(cur, cached.pack(), Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return Ok(false);
        }
        if fault::dies(p.owner, Step::PoolFreeCommitted) {
            return Err(PoolError::Died);
        }
        put.store(
            put.load(Ordering::Relaxed).wrapping_add(1 << order),
            Ordering::Relaxed,
        );
        Ok(true)
    }

    /// Gives the magazine back: its cached allocations return to the pool, and another
    /// thread may claim it.
    ///
    /// # Errors
    /// [`PoolError::Stalled`], [`PoolError::Corrupt`] (the magazine is then still claimed;
    /// recovery frees it once this party is dead).
    pub fn release(self) -> Result<(), PoolError> {
        let p = &self.pool;
        let g = p.lock()?;
        g.finish(p.release_magazine(self.mag).map(|_| ()))
    }
}
