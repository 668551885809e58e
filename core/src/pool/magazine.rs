//! Party magazines: each party keeps a few of its own freed small allocations and hands them
//! out again without the pool lock, so parties that allocate and free at once do not fight
//! over the lock and the header's lines (a magazine is one cache line that only its party
//! touches in the steady state).
//!
//! # What a magazine holds
//! [`MAG_ENTRIES`] record indices (`record + 1`, 0 = empty): two per order up to 4, one for
//! each of orders 5 and 6 ([`MAG_MAX_ORDER`]). A cached allocation stays allocated from the pool's point of view: its
//! block is `USED` in the order table and its record is live with the kind [`KIND_CACHED`]
//! and the magazine's party as owner. So every pool invariant, query and recovery step holds
//! unchanged, with three additions: the descriptor of a cached allocation is refused as stale
//! (its kind is `CACHED`); the statistics count cached blocks as free (each magazine keeps the
//! number and size of what it holds); and an allocation that finds no room drains every
//! magazine it can lock back into the pool before it gives up, so cached memory stays
//! allocatable by everyone.
//!
//! # Concurrency
//! A magazine's `lock` word (the owner id of its holder, 0 when free) orders the threads of
//! its party and the drainers. The fast paths take only that lock, never the pool lock, and
//! give it back before falling back to the locked path; drainers hold the pool lock and only
//! *try* magazine locks. So there is no lock-order cycle.
//!
//! A magazine free races, at worst, with a pool free of the same descriptor (a buggy double
//! free from two parties): both swap the record's meta word with a compare-and-swap from the
//! value they validated, so exactly one wins and the other reports `Stale`. A magazine
//! allocation changes only a record its own magazine holds, which nobody else changes while
//! the magazine is locked.
//!
//! # What a party that dies leaves
//! Its magazine and the `CACHED` records it owns. [`Pool::recover`] frees every live record of
//! a dead owner, `CACHED` ones included, then empties and releases the magazines of dead
//! owners (and the lock of a dead holder). A death between a free's swap and its entry store
//! leaves a `CACHED` record that no magazine lists: it is freed with its owner's other
//! allocations when that owner is found dead.

use super::*;

/// Entries of one magazine: two per order up to 4, one for each of orders 5 and 6.
pub const MAG_ENTRIES: usize = 12;
/// Largest order a magazine caches (4 KiB at 64-byte minimum blocks, the lazy frees' limit).
pub const MAG_MAX_ORDER: u32 = 6;
/// Most magazines in a pool; a pool has one per 512 minimum blocks up to this.
pub const MAX_MAGAZINES: u32 = 32;
/// Record indices must fit the entries' encoding.
const MAG_MAX_RECORDS: u32 = 1 << 27;

/// One party's magazine: one cache line.
#[repr(C, align(64))]
pub(super) struct Magazine {
    /// Owner id of the thread or drainer holding it; 0 when free. SYNC: lock (CAS Acquire)
    /// <-> unlock (store Release).
    lock: AtomicU32,
    /// The party the magazine belongs to; 0 while unclaimed.
    owner: AtomicU32,
    /// Minimum blocks held (for the statistics).
    blocks: AtomicU32,
    /// Allocations held.
    count: AtomicU32,
    /// `record + 1` of each cached allocation; 0 when empty.
    entries: [AtomicU32; MAG_ENTRIES],
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Magazine>() == 64);
const M_LOCK: usize = core::mem::offset_of!(Magazine, lock);
const M_OWNER: usize = core::mem::offset_of!(Magazine, owner);
const M_BLOCKS: usize = core::mem::offset_of!(Magazine, blocks);
const M_COUNT: usize = core::mem::offset_of!(Magazine, count);
const M_ENTRIES: usize = core::mem::offset_of!(Magazine, entries);

/// How many magazines a pool of `n_blocks` minimum blocks with `max_records` records has.
/// A power of two (or 0), so that a party's magazine is its owner id masked, not divided.
pub(super) const fn magazines_for(n_blocks: u32, max_records: u32) -> u32 {
    let n = n_blocks / 512;
    if max_records >= MAG_MAX_RECORDS || n == 0 {
        0
    } else if n < MAX_MAGAZINES {
        1 << (31 - n.leading_zeros())
    } else {
        MAX_MAGAZINES
    }
}

/// Bytes of one magazine.
pub(super) const MAGAZINE_BYTES: usize = core::mem::size_of::<Magazine>();

/// The entries of `order`'s allocations.
fn entries_of(order: u32) -> core::ops::Range<usize> {
    match order {
        0..=4 => {
            let i = 2 * order as usize;
            i..i + 2
        }
        5 => 10..11,
        _ => 11..12,
    }
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

    fn mag_entry(&self, m: u32, i: usize) -> &AtomicU32 {
        self.mag(m, M_ENTRIES + i * core::mem::size_of::<AtomicU32>())
    }

    /// Constructs every magazine empty (creator, before publishing).
    pub(super) fn init_magazines(&self) {
        // Field by field: under loom an atomic is larger than its four bytes.
        let entries = (0..MAG_ENTRIES).map(|i| M_ENTRIES + i * core::mem::size_of::<AtomicU32>());
        for m in 0..self.geo.n_mags {
            let base = self.geo.mags_off + m as usize * MAGAZINE_BYTES;
            for f in [M_LOCK, M_OWNER, M_BLOCKS, M_COUNT]
                .into_iter()
                .chain(entries.clone())
            {
                self.region.init_atomic(base + f, 0);
            }
        }
    }

    /// This party's magazine, locked, if it has one and can lock it now.
    fn my_magazine(&self) -> Option<u32> {
        if self.geo.n_mags == 0 || self.owner & STRUCT_OWNER_BIT != 0 {
            return None;
        }
        let m = self.owner & (self.geo.n_mags - 1);
        if self.mag(m, M_OWNER).load(Ordering::Relaxed) != self.owner {
            return None;
        }
        // SYNC: lock (CAS Acquire) <-> unlock (Release store in `mag_unlock`).
        self.mag(m, M_LOCK)
            .compare_exchange(0, self.owner, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(m)
    }

    /// Adds to magazine `m`'s statistics (magazine held: a load and a store, no locked
    /// instruction; readers take a snapshot).
    fn mag_count(&self, m: u32, blocks: i32, count: i32) {
        let (b, c) = (self.mag(m, M_BLOCKS), self.mag(m, M_COUNT));
        b.store(
            b.load(Ordering::Relaxed).wrapping_add_signed(blocks),
            Ordering::Relaxed,
        );
        c.store(
            c.load(Ordering::Relaxed).wrapping_add_signed(count),
            Ordering::Relaxed,
        );
    }

    fn mag_unlock(&self, m: u32) {
        // SYNC: unlock (Release) <-> the next holder's lock CAS (Acquire).
        self.mag(m, M_LOCK).store(0, Ordering::Release);
    }

    /// Claims this party's magazine if it is free (pool lock held; from the locked paths, so
    /// a party that allocates gets one after its first locked operation).
    pub(super) fn claim_magazine(&self) {
        if self.geo.n_mags == 0 || self.owner & STRUCT_OWNER_BIT != 0 {
            return;
        }
        let m = self.owner & (self.geo.n_mags - 1);
        // Another party's magazine (ids that collide): this party goes without one.
        let _ = self.mag(m, M_OWNER).compare_exchange(
            0,
            self.owner,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The allocation fast path: one of this party's cached allocations of `order`, given
    /// `kind` and a new generation. `None`: nothing cached (or no magazine); take the locked
    /// path.
    #[inline]
    pub(super) fn mag_alloc(&self, order: u32, kind: AllocKind) -> Option<Alloc> {
        if order > MAG_MAX_ORDER {
            return None;
        }
        let m = self.my_magazine()?;
        let mut found = None;
        for i in entries_of(order) {
            let e = self.mag_entry(m, i).load(Ordering::Relaxed);
            if e == 0 {
                continue;
            }
            // Taken off either way: an entry that fails the checks names nothing usable.
            self.mag_entry(m, i).store(0, Ordering::Relaxed);
            let rec = e - 1;
            if rec >= self.records_used() {
                continue;
            }
            let cur = self.rec_get(rec, R_META);
            let meta = Meta::unpack(cur);
            let block = self.rec_get(rec, R_BLOCK);
            if !meta.live
                || meta.kind != KIND_CACHED
                || meta.order != order
                || self.rec_get(rec, R_OWNER) != self.owner
                || !self.valid_head(block, order)
            {
                continue;
            }
            let gen_ = meta.generation.wrapping_add(1);
            // SYNC: Release <-> a validating load (Acquire) of the next user of this word.
            self.rec_word(rec, R_META).store(
                Meta {
                    live: true,
                    generation: gen_,
                    order,
                    kind: kind as u8,
                }
                .pack(),
                Ordering::Release,
            );
            self.mag_count(m, -(1 << order), -1);
            found = Some(Alloc {
                block,
                record: rec,
                gen_,
                order: order as u8,
                pool_tag: self.uid as u32,
            });
            break;
        }
        self.mag_unlock(m);
        found
    }

    /// The free fast path: keeps `a` in this party's magazine. `false`: no room, no
    /// magazine, or `a` does not check out (the locked path then says why).
    ///
    /// # Errors
    /// [`PoolError::Died`] from fault injection only (the magazine stays locked, as a death
    /// there would leave it).
    #[inline]
    pub(super) fn mag_free(&self, a: &Alloc) -> Result<bool, PoolError> {
        let order = u32::from(a.order);
        if order > MAG_MAX_ORDER
            || a.pool_tag != self.uid as u32
            || a.record >= self.records_used()
            || !self.valid_head(a.block, order)
        {
            return Ok(false);
        }
        let Some(m) = self.my_magazine() else {
            return Ok(false);
        };
        let kept = self.mag_keep(m, a)?;
        self.mag_unlock(m);
        Ok(kept)
    }

    fn mag_keep(&self, m: u32, a: &Alloc) -> Result<bool, PoolError> {
        let order = u32::from(a.order);
        let Some(slot) =
            entries_of(order).find(|&i| self.mag_entry(m, i).load(Ordering::Relaxed) == 0)
        else {
            return Ok(false);
        };
        let meta = self.rec_word(a.record, R_META);
        let cur = meta.load(Ordering::Acquire);
        let mt = Meta::unpack(cur);
        if !mt.live
            || mt.generation != a.gen_
            || mt.order != order
            || AllocKind::from_u8(mt.kind).is_none()
            || self.rec_get(a.record, R_BLOCK) != a.block
        {
            return Ok(false);
        }
        let cached = Meta {
            kind: KIND_CACHED,
            ..mt
        };
        // SYNC: CAS (AcqRel) <-> a pool free's CAS of the same word (`free_locked`).
        if meta
            .compare_exchange(cur, cached.pack(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(false);
        }
        if fault::dies(self.owner, Step::PoolFreeCommitted) {
            return Err(PoolError::Died);
        }
        self.rec_set(a.record, R_OWNER, self.owner);
        self.mag_entry(m, slot)
            .store(a.record + 1, Ordering::Relaxed);
        self.mag_count(m, 1 << order, 1);
        Ok(true)
    }

    /// Minimum blocks and allocations held by all magazines now (a snapshot).
    pub(super) fn cached_totals(&self) -> (u32, u32) {
        (0..self.geo.n_mags).fold((0, 0), |(b, c), m| {
            (
                b.wrapping_add(self.mag(m, M_BLOCKS).load(Ordering::Relaxed)),
                c.wrapping_add(self.mag(m, M_COUNT).load(Ordering::Relaxed)),
            )
        })
    }

    /// Frees what every magazine it can lock holds back into the pool (pool lock held).
    /// Returns how many allocations went back.
    pub(super) fn drain_magazines(&self) -> Result<u32, PoolError> {
        let mut n = 0;
        for m in 0..self.geo.n_mags {
            // Only a try: the holder is a thread of its party mid-operation (it gives the
            // lock back without waiting for us) or a drainer that holds the pool lock, i.e.
            // nobody else now.
            if self
                .mag(m, M_LOCK)
                .compare_exchange(0, self.owner, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let r = self.empty_magazine(m);
            self.mag_unlock(m);
            n += r?;
        }
        Ok(n)
    }

    /// Frees every allocation magazine `m` holds (pool lock and magazine held, or its party
    /// dead). Returns how many.
    pub(super) fn empty_magazine(&self, m: u32) -> Result<u32, PoolError> {
        let mut n = 0;
        for i in 0..MAG_ENTRIES {
            let e = self.mag_entry(m, i).swap(0, Ordering::Relaxed);
            let Some(rec) = e.checked_sub(1).filter(|&r| r < self.records_used()) else {
                continue;
            };
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
            if self.tget(block) == T_USED | meta.order as u8 {
                self.free_locked(&a, Some(true))?;
                n += 1;
            }
        }
        self.mag(m, M_BLOCKS).store(0, Ordering::Relaxed);
        self.mag(m, M_COUNT).store(0, Ordering::Relaxed);
        Ok(n)
    }

    /// Recovery's part (pool lock held): empties and releases the magazines of dead owners,
    /// and frees magazine locks held by dead parties.
    pub(super) fn recover_magazines(
        &self,
        is_alive: &dyn Fn(u32) -> bool,
    ) -> Result<u32, PoolError> {
        let mut n = 0;
        for m in 0..self.geo.n_mags {
            let holder = self.mag(m, M_LOCK).load(Ordering::Acquire);
            if holder != 0 && holder != self.owner && !is_alive(holder) {
                self.mag(m, M_LOCK).store(0, Ordering::Release);
            }
            let owner = self.mag(m, M_OWNER).load(Ordering::Relaxed);
            if owner != 0 && !is_alive(owner) {
                n += self.empty_magazine(m)?;
                self.mag(m, M_OWNER).store(0, Ordering::Relaxed);
            }
        }
        Ok(n)
    }
}
