//! The one place the adapter takes atomics from.
//!
//! The adapter's own shared words (the pool file header and its party table, see
//! [`crate::shm`]) are 32-bit atomics, like the core's, so that the layout is the same on every
//! target. Nothing else in the crate names `core::sync::atomic`; the workspace `clippy.toml`
//! (`disallowed-types`) keeps it so, and this module's alias is the sanctioned way in.
#![allow(clippy::disallowed_types)]

pub(crate) use core::sync::atomic::{Ordering, fence};

/// The shared 32-bit atomic word (the same type the core's event and lock words have).
pub(crate) type AtomicU32 = core::sync::atomic::AtomicU32;

/// A process-local signed counter (the wait layer's spin score).
pub(crate) type AtomicI32 = core::sync::atomic::AtomicI32;

/// A process-local id counter (the ids of pool mappings, which key the thread caches).
pub(crate) type AtomicU64 = core::sync::atomic::AtomicU64;
