//! Recovery of a channel after a party died in the middle of a send or receive: the queue
//! finds the dead party's claims and says what step it died in; this module repairs the
//! message part of the slot (a tombstone for a position a sender took, freeing the side
//! allocation a half-taken message still owns) and reports what it did. A repair that needs
//! the pool lock while another party holds it is left for a later pass, so nothing leaks.

use super::*;

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

impl Channel {
    /// Finishes or undoes the steps of dead parties: releases their claims, turns positions a
    /// dead sender took into tombstones, frees side allocations that would otherwise leak.
    /// `is_alive` answers for party owner ids.
    ///
    /// # Errors
    /// [`ChannelError::Destroyed`]; [`ChannelError::Stalled`] when a repair needed the pool
    /// lock and its holder (the owner named) did not let go: what could be repaired was, the
    /// rest is left as it was for the next call (run it again, after recovering the pool if
    /// that holder is dead).
    pub fn recover(&self, is_alive: &dyn Fn(u32) -> bool) -> Result<ChannelRecovery, ChannelError> {
        self.check_ready()?;
        let memo = Memo::new(is_alive);
        let mut freed = 0;
        // A repair that meets a busy pool lock is left for a later pass (the caller retries
        // on `Stalled`): giving up the free would leak the allocation for good.
        let ([claims, sends, receives], deferred) =
            self.queue.recover(&|o| memo.is_alive(o), |s, what| {
                match what {
                    Abandoned::Send => {
                        self.free_side_if_ours(s)?;
                        self.msg(s).set(F_TOMBSTONE, 0);
                    }
                    Abandoned::Recv => {
                        if self.msg(s).head().flags & F_SIDE != 0 && self.free_side_if_ours(s)? {
                            freed += 1;
                        }
                    }
                    Abandoned::Claim => {}
                }
                Ok(())
            });
        if sends + receives > 0 {
            // The word changes, so a sleeper's next re-check sees it; the adapter that ran
            // recovery wakes sleepers itself (the core makes no system calls).
            let _ = self.recv_event().notify();
            let _ = self.send_event().notify();
        }
        if let Some(owner) = deferred {
            return Err(ChannelError::Stalled { owner });
        }
        Ok(ChannelRecovery {
            claims_released: claims,
            tombstones: sends,
            lost_in_receive: receives,
            freed,
        })
    }

    /// Frees the slot's side allocation if the channel still owns it. Returns whether it did,
    /// or `Err(holder)` when the pool lock was busy (nothing was decided).
    pub(super) fn free_side_if_ours(&self, s: usize) -> Result<bool, u32> {
        let Some(a) = self.msg(s).side_desc() else {
            return Ok(false);
        };
        let sp = self.side_pool();
        let busy = |e| match e {
            PoolError::Stalled { owner } => Err(owner),
            _ => Ok(false),
        };
        match sp.owner_of(&a) {
            Ok(o) if o == self.struct_owner => match sp.free(a) {
                Ok(()) => Ok(true),
                Err(e) => busy(e),
            },
            Ok(_) => Ok(false),
            Err(e) => busy(e),
        }
    }
}
