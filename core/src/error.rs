//! Error types of the core: one enum per operation family, plain data.
//!
//! `Display` strings are lowercase without a final period and say what to do where there is
//! something to do.

use core::fmt;

/// Errors of pool operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PoolError {
    /// A creation parameter is out of range.
    BadConfig(&'static str),
    /// An owner id of 0 or above `MAX_PARTY_OWNER`.
    BadOwner,
    /// The region cannot hold even a minimal pool.
    RegionTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The region does not start with a pool header.
    BadMagic,
    /// The pool was made by an incompatible layout version.
    VersionMismatch {
        /// Version in the region.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// The region's recorded size differs from the mapped size.
    SizeMismatch {
        /// Size recorded in the header.
        found: u64,
        /// Size of the mapping.
        expected: u64,
    },
    /// The creator has not finished initializing the pool.
    NotInitialized,
    /// Shared metadata failed validation.
    Corrupt(&'static str),
    /// No block of the requested size is free now (or all allocation records are in use).
    OutOfSpace,
    /// The request can never be satisfied by this pool.
    TooLarge {
        /// Bytes requested.
        requested: usize,
        /// Largest possible allocation.
        max: usize,
    },
    /// A blocking allocation's deadline passed.
    Timeout,
    /// The memory the allocation needs could not be backed (a sparse pool's file system is
    /// full, or this party set no backing function); nothing was allocated.
    NoBacking,
    /// The descriptor names no allocation of this pool (forged, corrupt or from another pool).
    BadDescriptor,
    /// The descriptor's allocation was already freed (double free, or a stale descriptor).
    Stale,
    /// The pool lock has been held for a long time by `owner`; if that party is dead, call
    /// `Pool::recover`.
    Stalled {
        /// Owner id of the lock holder.
        owner: u32,
    },
    /// Fault injection stopped this party here (test builds only).
    Died,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadConfig(why) => write!(f, "bad pool configuration: {why}"),
            Self::BadOwner => f.write_str("owner id must be in 1..=2^30-1"),
            Self::RegionTooSmall { need, have } => {
                write!(
                    f,
                    "region of {have} bytes is too small: at least {need} bytes are needed"
                )
            }
            Self::BadMagic => f.write_str("region holds no pool (bad magic)"),
            Self::VersionMismatch { found, expected } => write!(
                f,
                "pool layout version {found} is not supported (this build reads version {expected})"
            ),
            Self::SizeMismatch { found, expected } => write!(
                f,
                "pool header says {found} bytes but {expected} bytes are mapped: map the whole pool"
            ),
            Self::NotInitialized => {
                f.write_str("pool is not initialized yet: retry once its creator has finished")
            }
            Self::Corrupt(what) => write!(f, "pool metadata is corrupt: {what}"),
            Self::OutOfSpace => {
                f.write_str("no block of that size is free now: free memory or wait for it")
            }
            Self::TooLarge { requested, max } => write!(
                f,
                "allocation of {requested} bytes can never fit (largest possible is {max} bytes)"
            ),
            Self::Timeout => f.write_str("timed out waiting for pool memory"),
            Self::NoBacking => f.write_str(
                "no storage for the pool's memory (its file system is full): free space there or use a smaller pool",
            ),
            Self::BadDescriptor => f.write_str("descriptor names no allocation of this pool"),
            Self::Stale => f.write_str("allocation was already freed (double or stale free)"),
            Self::Stalled { owner } => write!(
                f,
                "pool lock held too long by owner {owner}: if it died, run recovery"
            ),
            Self::Died => f.write_str("stopped by fault injection"),
        }
    }
}

impl core::error::Error for PoolError {}

/// Errors of channel operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ChannelError {
    /// Try-once send found no free slot.
    Full,
    /// Try-once receive found no message.
    Empty,
    /// A blocking call's deadline passed.
    Timeout,
    /// The channel was destroyed (stale handle).
    Destroyed,
    /// A channel with this uid already exists in the pool.
    UidInUse(u64),
    /// A channel attribute is out of range.
    BadAttr(&'static str),
    /// The destination is smaller than the message; the message stays queued.
    DestinationTooSmall {
        /// Bytes of the message.
        needed: usize,
        /// Bytes of the destination.
        capacity: usize,
    },
    /// A serialized descriptor was malformed, truncated, for another pool, or stale.
    BadDescriptor(&'static str),
    /// Shared channel state failed validation.
    Corrupt(&'static str),
    /// A slot has been claimed for a long time by `owner`; if it died, run recovery.
    Stalled {
        /// Owner id of the claimant.
        owner: u32,
    },
    /// The message names an allocation the channel cannot take (wrong pool, stale).
    BadMessage,
    /// A pool operation failed.
    Pool(PoolError),
    /// A poll's condition does not hold yet: wait for the operations named, then try again.
    NotReady(crate::poll::Awaits),
    /// The operation does not apply to this kind of channel (a semaphore poll on a message
    /// channel, a send on a semaphore channel...).
    BadOperation(&'static str),
    /// The barrier is broken (aborted, or an arrival timed out): reset it to use it again.
    BarrierBroken,
    /// A semaphore V would take the value past `bound` (a bounded semaphore's initial value).
    SemaphoreBound {
        /// The largest value the semaphore may hold.
        bound: u32,
    },
    /// Fault injection stopped this party here (test builds only).
    Died,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("channel is full"),
            Self::Empty => f.write_str("channel is empty"),
            Self::Timeout => f.write_str("timed out waiting on the channel"),
            Self::Destroyed => f.write_str("channel was destroyed: this handle is stale"),
            Self::UidInUse(uid) => {
                write!(f, "a channel with uid {uid} already exists in this pool")
            }
            Self::BadAttr(why) => write!(f, "bad channel attribute: {why}"),
            Self::DestinationTooSmall { needed, capacity } => write!(
                f,
                "message of {needed} bytes does not fit the {capacity}-byte destination; it stays queued"
            ),
            Self::BadDescriptor(why) => write!(f, "bad serialized channel descriptor: {why}"),
            Self::Corrupt(what) => write!(f, "channel state is corrupt: {what}"),
            Self::Stalled { owner } => write!(
                f,
                "a slot has been claimed too long by owner {owner}: if it died, run recovery"
            ),
            Self::BadMessage => f.write_str("message memory is not a live allocation of this pool"),
            Self::Pool(e) => write!(f, "pool: {e}"),
            Self::NotReady(_) => f.write_str("the polled condition does not hold yet"),
            Self::BadOperation(why) => write!(f, "operation not supported here: {why}"),
            Self::BarrierBroken => f.write_str(
                "the barrier is broken (aborted or timed out): reset it before using it again",
            ),
            Self::SemaphoreBound { bound } => write!(
                f,
                "semaphore V refused: the value would exceed its bound of {bound} (more V than P)"
            ),
            Self::Died => f.write_str("stopped by fault injection"),
        }
    }
}

impl core::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Pool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PoolError> for ChannelError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Timeout => Self::Timeout,
            PoolError::Stalled { owner } => Self::Stalled { owner },
            PoolError::Died => Self::Died,
            e => Self::Pool(e),
        }
    }
}
