//! Test-only fault injection: stop a party at a named step, exactly as if it died there.
//!
//! With the `fault-injection` feature, a process-wide hook is asked at each [`Step`] whether
//! the calling party (by owner id) dies there. If it answers `true` the operation returns
//! `Died` at once and leaves everything as a crashed party would: locks held, slots claimed,
//! nothing released. Tests then declare the owner dead and run recovery. Without the feature
//! the checks compile to nothing. Never enable it in production builds.

/// The points where a party can be stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Step {
    /// Pool `alloc`: lock held, a block taken off its list and split; no record yet.
    PoolAllocSplit,
    /// Pool `alloc`: record written, block not yet marked used.
    PoolAllocRecorded,
    /// Pool `free`: block marked free, record not yet released, not merged; or, for a free
    /// into a thread's cache (`PoolCache::free`), the slot record swapped to cached and the
    /// cache's budget not yet counted.
    PoolFreeCommitted,
    /// Send: `tail` and its slot's sequence read, claim not tried (a party stopped here holds
    /// nothing; a paused one may find the slot moved on when it resumes).
    SendRead,
    /// Send: slot claimed, `tail` not advanced.
    SendClaimed,
    /// Send: `tail` advanced, payload not written.
    SendAdvanced,
    /// Send: payload (and side allocation) written, not published.
    SendWritten,
    /// Send: published, claim not released.
    SendPublished,
    /// Receive: `head` and its slot's sequence read, claim not tried (as [`Step::SendRead`]).
    RecvRead,
    /// Receive: slot claimed, `head` not advanced.
    RecvClaimed,
    /// Receive: `head` advanced, payload not taken.
    RecvAdvanced,
    /// Receive: payload taken, slot not released.
    RecvTaken,
}

/// A hook: `(owner id, step) -> dies here`.
pub type Hook = fn(u32, Step) -> bool;

#[cfg(feature = "fault-injection")]
#[allow(clippy::disallowed_types)]
static HOOK: core::sync::atomic::AtomicPtr<()> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Installs (or with `None` removes) the process-wide hook.
#[cfg(feature = "fault-injection")]
pub fn set_hook(hook: Option<Hook>) {
    let p = hook.map_or(core::ptr::null_mut(), |h| h as *mut ());
    HOOK.store(p, core::sync::atomic::Ordering::SeqCst);
}

/// Whether `owner` dies at `step`.
#[inline(always)]
pub(crate) fn dies(owner: u32, step: Step) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        let h = HOOK.load(core::sync::atomic::Ordering::SeqCst);
        if !h.is_null() {
            // SAFETY: the only non-null values stored are `Hook` function pointers cast to
            // `*mut ()` by `set_hook`, so transmuting back yields that same valid pointer.
            let f: Hook = unsafe { core::mem::transmute::<*mut (), Hook>(h) };
            return f(owner, step);
        }
    }
    let _ = (owner, step);
    false
}
