//! Recovery after a party died: taking the pool lock over from a dead holder (and rebuilding
//! everything derived from the order table), and freeing the allocations dead parties or a
//! destroyed structure still own.

use super::*;

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

impl Pool {
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
        // Magazines of dead parties first (what they cache), then every live record of a
        // dead owner, slot records included.
        rep.freed += self.recover_magazines(&is_alive)?;
        for rec in self.records_in_use() {
            if let Some((a, owner)) = self.live_record(rec)
                && owner & STRUCT_OWNER_BIT == 0
                && !is_alive(owner)
            {
                self.free_locked(&a, None)?;
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
        for rec in self.records_in_use() {
            if let Some(info) = self.record_info(rec)
                && info.owner == owner
                && Some(&info.alloc) != keep
            {
                self.free_locked(&info.alloc, Some(false))?;
                n += 1;
            }
        }
        drop(g);
        Ok(n)
    }
}
