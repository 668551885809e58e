//! `dragon-channels-core`: the `no_std`, allocation-free core of dragon-channels.
//!
//! A managed-memory [`Pool`] and MPMC [`Channel`]s that live entirely inside one
//! caller-supplied memory region, so threads, processes and CPU cores that map the same bytes
//! exchange messages through it.
//!
//! ```
//! use dragon_channels_core::{Pool, PoolConfig, Region, Channel, ChannelAttrs};
//! # #[repr(C, align(64))] struct Mem([u8; 64 * 1024]);
//! # let mut mem = Box::new(Mem([0; 64 * 1024]));
//! // SAFETY: `mem` outlives every handle and is only used through this crate.
//! let region = unsafe { Region::new(mem.0.as_mut_ptr(), mem.0.len())? };
//! let pool = Pool::init(region, &PoolConfig::default(), 1)?;
//! let ch = Channel::create(&pool, 7, &ChannelAttrs { capacity: 4, block_size: 64, ..Default::default() })?;
//! ch.try_send(b"Hello", 0, 0)?;
//! let mut buf = [0u8; 64];
//! let got = ch.try_recv_into(&mut buf)?;
//! assert_eq!(&buf[..got.len], b"Hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Memory layout
//! Everything in the region is an offset from its start; all shared structures are
//! `#[repr(C)]` with fixed-width fields, and shared atomics are 32 bits wide, so a Cortex-M
//! core and an x86-64 process can share one region. See [`pool`] and [`channel`].
//!
//! # Blocking and timeouts
//! The core never waits: every operation tries once and reports `Full`, `Empty`,
//! `OutOfSpace`, or `Stalled { owner }` when another party is in the middle of the step it
//! needs. Waiting is the caller's one wait layer, built on three things the core offers: the
//! try-once operations, cheap readiness hints ([`Channel::may_recv`], [`Channel::may_send`])
//! to poll, and [`Event`]s to sleep on (the std adapter sleeps on them with futexes; firmware
//! spins with a `spin::RelaxStrategy`). See [`event`] for the protocol. The one place the
//! core itself waits is the pool lock, whose critical sections last microseconds: a bounded
//! number of tries with the caller's back-off between them ([`Pool::set_lock_backoff`]).
//!
//! # Process crashes
//! Every in-region lock and every claimed channel slot records the owner id of the party
//! holding it. [`Pool::recover`] and [`Channel::recover`], given a liveness test, reclaim what
//! dead parties left; the module docs say what a death at each step leaves behind.
//!
//! # Feature flags
//! - `defmt`: derive `defmt::Format` for errors and descriptors.
//! - `portable-atomic`: take atomics from `portable-atomic` (targets without CAS).
//! - `critical-section`: `portable-atomic` through a critical section (single-core only).
//! - `fault-injection`: test-only hooks that stop a party at a named step ([`fault`]).
#![cfg_attr(not(any(test, loom)), no_std)]

pub mod bell;
pub mod channel;
pub mod descriptor;
pub mod error;
pub mod event;
pub mod fault;
mod liveness;
pub mod message;
pub mod poll;
pub mod pool;
mod queue;
pub mod region;
pub(crate) mod sync;

pub use bell::{Bell, MAX_WATCHERS, Rings, Side, TooManyWatchers};
pub use channel::{Channel, ChannelAttrs, ChannelDescriptor, Notice, SemaphoreAttrs};
pub use descriptor::{DescriptorError, checksum};
pub use error::{ChannelError, PoolError};
pub use event::{Event, Waiter, Wake};
pub use message::{Received, RecvBuf, SendMode};
pub use poll::{Awaits, Poll, Polled};
pub use pool::{Alloc, AllocInfo, AllocKind, Pool, PoolCache, PoolConfig, PoolStats};
pub use region::{Region, RegionError};
