//! The buddy allocator's steps, all under the pool lock: carving a block of an order
//! (splitting a larger free block as far as needed), freeing one (merging it with its free
//! buddies), the doubly linked free lists kept inside the free blocks themselves, and
//! rebuilding the lists, counters and record list from the order table (the ground truth)
//! after a lock holder died. The module docs of [`super`] say what a death at each step
//! leaves behind.

use super::*;

/// The free-list links kept inside a free block.
#[repr(C)]
pub(super) struct Links {
    next: u32,
    prev: u32,
}

/// Offsets of a free block's links.
pub(super) const L_NEXT: usize = core::mem::offset_of!(Links, next);
pub(super) const L_PREV: usize = core::mem::offset_of!(Links, prev);

impl Pool {
    /// Allocates a block of `order` (lock held) for `owner`, named by the free slot record
    /// `slot` of the caller's magazine (`magazine.rs`) or, without one, by a pool record.
    pub(super) fn alloc_in(
        &self,
        order: u32,
        kind: AllocKind,
        owner: u32,
        slot: Option<u32>,
    ) -> Result<Alloc, PoolError> {
        // A second pass runs only when the first found damaged links and rebuilt the lists.
        for _ in 0..2 {
            let rec = self.rd(off!(rec_free));
            let used = self.records_used();
            let rec = if let Some(s) = slot {
                s
            } else if rec != NIL {
                if rec >= used || Meta::unpack(self.rec_get(rec, R_META)).live {
                    self.rebuild_all(false)?;
                    continue;
                }
                rec
            } else if used < self.geo.max_records {
                // No freed record: the first never-used one, constructed now (the region
                // may hold anything above `rec_fresh`); `carve` counts it used.
                let o = self.rec_off(used);
                self.region.init_atomic(o + R_BLOCK, NIL);
                self.region.init_atomic(o + R_OWNER, 0);
                self.region.init_atomic(o + R_META, Meta::free(0).pack());
                used
            } else {
                return Err(PoolError::OutOfSpace);
            };
            // Find the smallest non-empty order >= `order`.
            let mut k = order;
            while k <= self.geo.max_order && self.hget(off!(free_heads), k) == NIL {
                k += 1;
            }
            if k > self.geo.max_order {
                if self.rd(off!(unmerged)) == 0 {
                    return Err(PoolError::OutOfSpace);
                }
                // Free buddies left unmerged may make up a block large enough.
                self.coalesce_lazy()?;
                continue;
            }
            let Some(block) = self.list_pop(k)? else {
                continue;
            };
            return self.carve(block, k, order, rec, kind, owner);
        }
        Err(PoolError::Corrupt(
            "free lists damaged again right after a rebuild",
        ))
    }

    /// Splits the free block `(block, k)`, already off its list, down to `order` and claims
    /// record `rec` for it.
    pub(super) fn carve(
        &self,
        block: u32,
        mut k: u32,
        order: u32,
        rec: u32,
        kind: AllocKind,
        owner: u32,
    ) -> Result<Alloc, PoolError> {
        // Back what this carve writes to or hands out before changing anything (module docs,
        // "Backing"): the head of each upper half it will link, and the block itself. On
        // failure the block goes back on its list, as it was.
        if k > order || !self.small_block_backed(block, order) {
            let backed = (order..k)
                .try_for_each(|j| self.back_head(block + (1 << j)))
                .and_then(|()| self.back(block, 1 << order));
            if let Err(e) = backed {
                self.list_push(block, k);
                return Err(e);
            }
        }
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
        let old_gen = Meta::unpack(self.rec_get(rec, R_META)).generation;
        let gen_ = old_gen.wrapping_add(1);
        if rec >= self.geo.max_records {
            // A magazine's slot record: free slots are on no list.
        } else if rec == self.records_used() {
            // A never-used record (the free list was empty).
            self.hdr_atomic(off!(rec_fresh))
                .store(rec + 1, Ordering::Relaxed);
        } else {
            self.wr(off!(rec_free), self.rec_get(rec, R_BLOCK));
        }
        self.rec_set(rec, R_BLOCK, block);
        self.rec_set(rec, R_OWNER, owner);
        self.rec_set(
            rec,
            R_META,
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

    /// Frees a validated allocation (lock held). `cached` says which records qualify: a
    /// user's allocation (`Some(false)`), one in a magazine (`Some(true)`: draining), or
    /// either (`None`: recovery of a dead owner).
    ///
    /// # Errors
    /// [`PoolError::Stale`] when the record is not what was validated: a party's magazine
    /// took the same allocation meanwhile (two frees of one descriptor racing).
    pub(super) fn free_locked(&self, a: &Alloc, cached: Option<bool>) -> Result<(), PoolError> {
        let order = u32::from(a.order);
        // Release the record first: of this free and a magazine's free of the same
        // allocation (which swap the same word without the pool lock), exactly one wins. The
        // value checked is the value swapped: an earlier validation (`check_live`) may have
        // read the word before a magazine's swap.
        // SYNC: CAS (AcqRel) <-> a magazine's CAS on the meta word (`magazine.rs`).
        let meta = self.rec_word(a.record, R_META);
        let cur = meta.load(Ordering::Acquire);
        let m = Meta::unpack(cur);
        if !m.live
            || cached.is_some_and(|c| c != (m.kind == KIND_CACHED))
            || m.generation != a.gen_
            || meta
                .compare_exchange(
                    cur,
                    Meta::free(a.gen_).pack(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
        {
            return Err(PoolError::Stale);
        }
        // Commit point: the block is free from here on (a death between the two stores
        // leaves a USED block without a live record: an orphan the rebuild frees).
        self.tset(a.block, T_FREE | a.order);
        if fault::dies(self.owner, Step::PoolFreeCommitted) {
            return Err(PoolError::Died);
        }
        self.release_record(a.record);
        self.add_u32(off!(live), -1);
        self.add_u32(off!(free_min_blocks), 1i64 << order);
        if order <= LAZY_MAX_ORDER && self.hget(off!(free_counts), order) < LAZY_LIMIT {
            // The fast path: no merge (module docs, "Lazy coalescing").
            self.list_push(a.block, order);
            self.add_u32(off!(unmerged), 1);
            return Ok(());
        }
        self.coalesce_push(a.block, order, false)
    }

    /// Merges every pair of free buddies among the small orders' free lists (lock held):
    /// what lazy frees left unmerged. Each list is at most about [`LAZY_LIMIT`] long, and a
    /// walk starts over after each merge, so this costs at most a few thousand steps per
    /// order; it runs only when an allocation found nothing large enough, or for a query.
    pub(super) fn coalesce_lazy(&self) -> Result<(), PoolError> {
        if self.rd(off!(unmerged)) == 0 {
            return Ok(());
        }
        for k in 0..=LAZY_MAX_ORDER.min(self.geo.max_order) {
            let mut block = self.hget(off!(free_heads), k);
            let mut steps = 0u32;
            while block != NIL {
                steps += 1;
                if !self.valid_head(block, k)
                    || self.tget(block) != T_FREE | k as u8
                    || steps > 4 * self.geo.n_blocks.max(LAZY_LIMIT)
                {
                    // Damaged links (scribbled free memory): the table is the truth.
                    self.rebuild_all(false)?;
                    return Ok(());
                }
                let buddy = block ^ (1 << k);
                let mergeable = k < self.geo.max_order
                    && buddy < self.geo.n_blocks
                    && (self.geo.n_blocks - buddy) >> k != 0
                    && self.tget(buddy) == T_FREE | k as u8;
                if mergeable {
                    if !self.list_remove(block, k)? {
                        // The lists were rebuilt (and so merged) from the table.
                        return Ok(());
                    }
                    self.coalesce_push(block, k, false)?;
                    block = self.hget(off!(free_heads), k);
                } else {
                    block = self.rd(self.link(block) + L_NEXT);
                }
            }
        }
        self.wr(off!(unmerged), 0);
        Ok(())
    }

    /// Puts a record whose meta word is already free on the free-record list.
    pub(super) fn release_record(&self, rec: u32) {
        if rec >= self.geo.max_records {
            // A magazine's slot record stays in its magazine, free.
            self.rec_set(rec, R_BLOCK, NIL);
            return;
        }
        self.rec_set(rec, R_BLOCK, self.rd(off!(rec_free)));
        self.wr(off!(rec_free), rec);
    }

    /// Merges the free block `(block, k)` with free buddies and pushes the result. While
    /// rebuilding, only buddies below `block` are on the lists yet.
    pub(super) fn coalesce_push(
        &self,
        mut block: u32,
        mut k: u32,
        rebuilding: bool,
    ) -> Result<(), PoolError> {
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

    pub(super) fn link(&self, block: u32) -> usize {
        self.block_off(block)
    }

    pub(super) fn list_push(&self, block: u32, k: u32) {
        let head = self.hget(off!(free_heads), k);
        let l = self.link(block);
        self.wr(l + L_NEXT, head);
        self.wr(l + L_PREV, NIL);
        if head != NIL && self.valid_head(head, k) {
            self.wr(self.link(head) + L_PREV, block);
        }
        self.hset(off!(free_heads), k, block);
        let c = self.hget(off!(free_counts), k);
        self.hset(off!(free_counts), k, c.wrapping_add(1));
    }

    /// Takes the first block off the non-empty list `k`: [`Pool::list_remove`] of the head,
    /// with the checks a head needs (its own entry and links, its successor's), on the
    /// allocation fast path. `Ok(None)` when they found damage and the lists were rebuilt.
    #[inline]
    pub(super) fn list_pop(&self, k: u32) -> Result<Option<u32>, PoolError> {
        let block = self.hget(off!(free_heads), k);
        let free_k = |b: u32| self.valid_head(b, k) && self.tget(b) == T_FREE | k as u8;
        if !free_k(block) {
            self.rebuild_all(false)?;
            return Ok(None);
        }
        let l = self.link(block);
        let next = self.rd(l + L_NEXT);
        let consistent = self.rd(l + L_PREV) == NIL
            && (next == NIL || (free_k(next) && self.rd(self.link(next) + L_PREV) == block));
        if !consistent {
            self.rebuild_all(false)?;
            let rb = self.rd(off!(rebuilds));
            self.wr(off!(rebuilds), rb.wrapping_add(1));
            return Ok(None);
        }
        self.hset(off!(free_heads), k, next);
        if next != NIL {
            self.wr(self.link(next) + L_PREV, NIL);
        }
        let c = self.hget(off!(free_counts), k);
        self.hset(off!(free_counts), k, c.wrapping_sub(1));
        Ok(Some(block))
    }

    /// Unlinks a free block from list `k`, validating its links (they live in free memory
    /// that a buggy party may have scribbled over). On damage the lists are rebuilt from the
    /// order table and `Ok(false)` is returned: the caller starts over on fresh lists.
    pub(super) fn list_remove(&self, block: u32, k: u32) -> Result<bool, PoolError> {
        if !self.valid_head(block, k) || self.tget(block) != T_FREE | k as u8 {
            self.rebuild_all(false)?;
            return Ok(false);
        }
        let l = self.link(block);
        let next = self.rd(l + L_NEXT);
        let prev = self.rd(l + L_PREV);
        let ok_link =
            |b: u32| b == NIL || (self.valid_head(b, k) && self.tget(b) == T_FREE | k as u8);
        let head = self.hget(off!(free_heads), k);
        let consistent = ok_link(next)
            && ok_link(prev)
            && (prev != NIL || head == block)
            && (prev == NIL || self.rd(self.link(prev) + L_NEXT) == block)
            && (next == NIL || self.rd(self.link(next) + L_PREV) == block);
        if !consistent {
            self.rebuild_all(false)?;
            let rb = self.rd(off!(rebuilds));
            self.wr(off!(rebuilds), rb.wrapping_add(1));
            return Ok(false);
        }
        if prev == NIL {
            self.hset(off!(free_heads), k, next);
        } else {
            self.wr(self.link(prev) + L_NEXT, next);
        }
        if next != NIL {
            self.wr(self.link(next) + L_PREV, prev);
        }
        let c = self.hget(off!(free_counts), k);
        self.hset(off!(free_counts), k, c.wrapping_sub(1));
        Ok(true)
    }

    /// Rebuilds free lists, counters and the record list from the order table and the
    /// records (lock held, or the pool not yet published). With `fresh`, lays out an empty
    /// pool instead. Returns how many orphaned `USED` blocks (no record) were freed.
    pub(super) fn rebuild_all(&self, fresh: bool) -> Result<u32, PoolError> {
        let n = self.geo.n_blocks;
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
                // The tile's head will hold its free-list links.
                self.back_head(i)?;
                self.tset(i, T_FREE | k as u8);
                i += 1 << k;
            }
            // No record is used yet: each is constructed when first handed out.
            self.hdr_atomic(off!(rec_fresh)).store(0, Ordering::Relaxed);
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
        // Slot records first (a released one stays in its magazine), then the pool's records
        // in reverse.
        let slots = self.geo.max_records..self.rec_end();
        for rec in slots.chain((0..self.records_used()).rev()) {
            let block = self.rec_get(rec, R_BLOCK);
            let Meta {
                live: is_live,
                generation: gen_,
                order,
                kind,
            } = Meta::unpack(self.rec_get(rec, R_META));
            // Cached allocations (in a party's magazine) stay allocated.
            let keep = is_live
                && (AllocKind::from_u8(kind).is_some() || kind == KIND_CACHED)
                && self.valid_head(block, order)
                && self.tget(block) == T_USED | order as u8;
            if keep {
                self.tset(block, T_USED | T_MARK | order as u8);
                live += 1;
            } else if rec >= self.geo.max_records {
                self.rec_set(rec, R_META, Meta::free(gen_).pack());
                self.rec_set(rec, R_BLOCK, NIL);
            } else {
                self.rec_set(rec, R_META, Meta::free(gen_).pack());
                self.rec_set(rec, R_BLOCK, free_rec);
                free_rec = rec;
            }
        }
        // Records were walked in reverse, so the list comes out in ascending order.
        self.wr(off!(rec_free), free_rec);
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
        self.wr(off!(live), live);
        self.wr(off!(free_min_blocks), free_blocks);
        self.wr(off!(unmerged), 0);
        Ok(orphans)
    }
}
