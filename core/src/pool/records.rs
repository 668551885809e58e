//! Allocation records: the manifest that names every live allocation (head block, owner id,
//! generation, order and kind), and the checks that a descriptor names a live one. A stale,
//! forged or double free is refused here, before the allocator is touched.

use super::*;

/// One allocation record (the manifest entry of a live allocation, or a free record). Its
/// words are atomics: a party's magazine reads and swaps them without the pool lock.
#[repr(C)]
pub(super) struct Record {
    /// Head block index of the allocation; of a free record, the next free record.
    block: AtomicU32,
    /// Owner id.
    owner: AtomicU32,
    /// [`Meta`], packed.
    meta: AtomicU32,
}

pub(super) const RECORD_SIZE: usize = core::mem::size_of::<Record>();
#[cfg(not(loom))]
const _: () = assert!(RECORD_SIZE == 12);
/// Offsets of a record's fields.
pub(super) const R_BLOCK: usize = core::mem::offset_of!(Record, block);
pub(super) const R_OWNER: usize = core::mem::offset_of!(Record, owner);
pub(super) const R_META: usize = core::mem::offset_of!(Record, meta);

/// The `kind` of a record whose allocation sits in a party's magazine (see `magazine.rs`):
/// allocated from the pool's point of view, free from its party's.
pub(super) const KIND_CACHED: u8 = 0x7F;

/// A record's meta word, unpacked (packed: `live:1 | kind:7 | order:8 | generation:16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) live: bool,
    pub(super) generation: u16,
    pub(super) order: u32,
    pub(super) kind: u8,
}

impl Meta {
    /// The meta word of a free record whose last allocation had `generation`.
    pub(super) const fn free(generation: u16) -> Self {
        Self {
            live: false,
            generation,
            order: 0,
            kind: 0,
        }
    }

    pub(super) const fn pack(self) -> u32 {
        ((self.live as u32) << 31)
            | (((self.kind & 0x7F) as u32) << 24)
            | ((self.order & 0xFF) << 16)
            | self.generation as u32
    }

    pub(super) const fn unpack(m: u32) -> Self {
        Self {
            live: m >> 31 == 1,
            generation: m as u16,
            order: (m >> 16) & 0xFF,
            kind: ((m >> 24) & 0x7F) as u8,
        }
    }
}

impl Pool {
    /// A word of record `rec` (`R_BLOCK`, `R_OWNER` or `R_META`; `rec < max_records`, checked
    /// by the caller). Record words are atomics: a party's magazine reads and swaps them
    /// without the pool lock (`magazine.rs`); under the lock, Relaxed accesses suffice.
    #[inline]
    pub(super) fn rec_word(&self, rec: u32, field: usize) -> &AtomicU32 {
        // SAFETY: `rec < max_records` (the caller checked it; `rec_off` debug-asserts it), so
        // the word lies inside the record table of a region validated at init/attach; the
        // creator constructed the record words (`rebuild_all(true)`); the region outlives
        // `self`.
        unsafe { self.region.atomic(self.rec_off(rec) + field) }
    }

    #[inline]
    pub(super) fn rec_get(&self, rec: u32, field: usize) -> u32 {
        self.rec_word(rec, field).load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn rec_set(&self, rec: u32, field: usize, v: u32) {
        self.rec_word(rec, field).store(v, Ordering::Relaxed);
    }

    /// Decoded record `rec` if it is live and consistent with the order table.
    pub(super) fn record_info(&self, rec: u32) -> Option<AllocInfo> {
        let block = self.rec_get(rec, R_BLOCK);
        let owner = self.rec_get(rec, R_OWNER);
        let Meta {
            live,
            generation: gen_,
            order,
            kind,
        } = Meta::unpack(self.rec_get(rec, R_META));
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

    /// Record `rec` as a descriptor and its owner, if it is live (cached or not) and its
    /// block is `USED` in the table (lock held).
    pub(super) fn live_record(&self, rec: u32) -> Option<(Alloc, u32)> {
        let block = self.rec_get(rec, R_BLOCK);
        let meta = Meta::unpack(self.rec_get(rec, R_META));
        if !meta.live
            || !self.valid_head(block, meta.order)
            || self.tget(block) != T_USED | meta.order as u8
        {
            return None;
        }
        let a = Alloc {
            block,
            record: rec,
            gen_: meta.generation,
            order: meta.order as u8,
            pool_tag: self.uid as u32,
        };
        Some((a, self.rec_get(rec, R_OWNER)))
    }

    /// Validates `a` against its record and the table (lock held).
    pub(super) fn check_live(&self, a: &Alloc) -> Result<(), PoolError> {
        if a.pool_tag != self.uid as u32
            || !self.rec_valid(a.record)
            || !self.valid_head(a.block, u32::from(a.order))
        {
            return Err(PoolError::BadDescriptor);
        }
        let Meta {
            live,
            generation: gen_,
            order,
            kind,
        } = Meta::unpack(self.rec_get(a.record, R_META));
        // A cached allocation was freed (into a magazine): its descriptor is stale.
        if !live || gen_ != a.gen_ || kind == KIND_CACHED {
            return Err(PoolError::Stale);
        }
        if self.rec_get(a.record, R_BLOCK) != a.block
            || order != u32::from(a.order)
            || self.tget(a.block) != T_USED | a.order
        {
            return Err(PoolError::BadDescriptor);
        }
        Ok(())
    }
}

/// Iterator over live allocations; see [`Pool::allocations`].
pub struct Allocations<'a> {
    pub(super) pool: &'a Pool,
    pub(super) next: u32,
}

impl Iterator for Allocations<'_> {
    type Item = Result<AllocInfo, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Done (or stopped by a lock error, reported once): end without touching the lock, so
        // a stalled lock does not make the iteration endless. Index `j` walks the magazines'
        // slot records (a fixed number), then the pool's records ever used.
        let used = self.pool.records_used();
        let slots = self.pool.rec_end() - self.pool.geo.max_records;
        let end = used + slots;
        let rec_at = |j: u32| {
            if j < slots {
                self.pool.geo.max_records + j
            } else {
                j - slots
            }
        };
        if self.next >= end {
            return None;
        }
        let g = match self.pool.lock() {
            Ok(g) => g,
            Err(e) => {
                self.next = end;
                return Some(Err(e));
            }
        };
        while self.next < end {
            let rec = rec_at(self.next);
            self.next += 1;
            if let Some(info) = self.pool.record_info(rec) {
                drop(g);
                return Some(Ok(info));
            }
        }
        None
    }
}
