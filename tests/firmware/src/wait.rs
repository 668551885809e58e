//! The firmware's wait layer. The core never waits: its operations try once and report a busy
//! state (full, empty, no pool memory now, or `Stalled` while another party is in the middle of
//! the step they need). A firmware that wants to wait retries, relaxing between tries with a
//! `spin::RelaxStrategy` of its choice (a CPU spin hint here; an RTOS would yield). This is the
//! firmware's counterpart of the std adapter's `wait.rs`, which sleeps on the core's events
//! with futexes instead.

use dragon_channels_core::{ChannelError, PoolError};
use spin::relax::RelaxStrategy;

/// Whether `e` only says "not now": retrying may succeed.
pub fn is_busy(e: &ChannelError) -> bool {
    matches!(
        e,
        ChannelError::Full
            | ChannelError::Empty
            | ChannelError::Stalled { .. }
            | ChannelError::Pool(PoolError::OutOfSpace | PoolError::Stalled { .. })
    )
}

/// Runs `op` until it succeeds, fails with an error that is not [`is_busy`], or has been busy
/// `patience` times in a row (then its last busy error is returned). Before each retry,
/// `keep_waiting(busy_tries_so_far)` may give up (for example when the peer reported a
/// failure), and `R::relax()` runs.
pub fn until_done<T, R: RelaxStrategy>(
    patience: u32,
    mut op: impl FnMut() -> Result<T, ChannelError>,
    mut keep_waiting: impl FnMut(u32) -> bool,
) -> Result<T, ChannelError> {
    let mut busy = 0u32;
    loop {
        match op() {
            Err(e) if is_busy(&e) => {
                busy += 1;
                if busy >= patience || !keep_waiting(busy) {
                    return Err(e);
                }
                R::relax();
            }
            other => return other,
        }
    }
}
