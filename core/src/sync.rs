//! The one place atomics and the relax hint come from.
//!
//! Production builds use `core::sync::atomic`; `--features portable-atomic` swaps in
//! `portable_atomic` for targets without compare-and-swap (thumbv6m, through a critical
//! section: single-core only); `--cfg loom` swaps in loom's model-checked atomics. Nothing else
//! in the crate imports atomics directly (a `clippy.toml` `disallowed-types` keeps it so).
//!
//! Only 32-bit atomics are used for shared state: thumbv7em has no 64-bit atomics and the
//! region layout must be the same on 32- and 64-bit targets.
#![allow(clippy::disallowed_types)]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, Ordering, fence};

#[cfg(all(not(loom), feature = "portable-atomic"))]
pub(crate) use portable_atomic::{AtomicU32, Ordering, fence};

#[cfg(all(not(loom), not(feature = "portable-atomic")))]
pub(crate) use core::sync::atomic::{Ordering, fence};

/// The shared 32-bit atomic (an alias, so the `disallowed-types` rule that keeps other
/// modules from importing atomics directly does not flag this one sanctioned path).
#[cfg(all(not(loom), not(feature = "portable-atomic")))]
pub(crate) type AtomicU32 = core::sync::atomic::AtomicU32;

/// A busy-wait hint for one spin round.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
