//! `dragon-channels`: the Dragon Channels API over shared memory.
//!
//! Named managed-memory pools in `/dev/shm` ([`MemoryPool`]), MPMC message channels inside
//! them ([`Channel`]), messages ([`Message`]) and send/receive handles ([`ChannelSendH`],
//! [`ChannelRecvH`]), with the names and verbs of Dragon's Python `dragon.channels` API. Any
//! number of threads and processes on one machine attach to the same pool and pass messages
//! at memory speed; blocked callers sleep on shared futexes.
//!
//! The seed's example, in Rust:
//! ```
//! use dragon_channels::{Channel, MemoryPool, Message, Timeout};
//! # let pool_name = format!("example_pool-{}", std::process::id());
//! // Create a pool and a channel in it. (The seed asks for a 32 KiB pool, but a channel with
//! // Dragon's default attributes, 100 slots of 1024 bytes, needs a 128 KiB block of it.)
//! let mpool = MemoryPool::create(1 << 20, &pool_name, 0)?;
//! let ch = Channel::create(&mpool, 1, None)?;
//!
//! // Open a send handle and a receive handle.
//! let mut sendh = ch.sendh()?;
//! sendh.open()?;
//! let mut recvh = ch.recvh()?;
//! recvh.open()?;
//!
//! // Explicitly allocate a message and populate its payload.
//! let mut msg = Message::create_alloc(&mpool, 512)?;
//! msg.bytes_memview()?[0..5].copy_from_slice(b"Hello");
//!
//! // Send the message (a copy; we keep `msg`), then receive it.
//! sendh.send(&msg, None, Timeout::Default)?;
//! let recv_msg = recvh.recv(Timeout::Default)?;
//! assert_eq!(&recv_msg.bytes()?[0..5], &msg.bytes()?[0..5]);
//! # drop((msg, recv_msg, sendh, recvh));
//! # ch.destroy()?;
//! # mpool.destroy()?;
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! # Memory layout
//! A pool is the file `/dev/shm/<name>`: a 16 KiB adapter header (identity, creation nonce,
//! the party table of attached processes, a recovery lock) followed by the region of the
//! `no_std` core, [`dragon_channels_core`]: a buddy allocator whose allocations each record
//! their owner, and channels that live in pool allocations. Everything in the file is an
//! offset, so each process maps it at its own address. Every process maps a pool once
//! (attaching again reuses the mapping); [`MemoryPool::destroy`] unlinks the file and dropping
//! the last handle unmaps it.
//!
//! # Blocking and timeouts
//! Every send and receive takes a [`Timeout`]: the handle's default ([`Timeout::Default`],
//! set when the handle is made; block unless set otherwise), block forever, try once (a full
//! or empty channel gives [`Error::ChannelFull`] / [`Error::ChannelEmpty`]), or a duration
//! ([`Error::ChannelTimeout`] when it expires). The deadline is `Instant::now() + timeout`,
//! computed once per call, after the first try failed (so a wait never ends before the
//! caller's deadline). A blocked call spins for about [`SPIN_FOR`], keeps trying between
//! `yield`s until [`YIELD_FOR`] has passed, then sleeps on a shared futex word inside the pool
//! (`FUTEX_WAIT` without `FUTEX_PRIVATE`), so a blocked receiver uses no CPU; it re-checks at
//! least every [`SLEEP_SLICE`]. Senders and receivers make the wake system call only when a
//! sleeper is registered.
//!
//! # Process crashes
//! Each process has one owner id per pool, `pid | generation << 22`, recorded in the pool's
//! party table with the process's start time (field 22 of `/proc/<pid>/stat`), so a reused
//! pid is not mistaken for the dead process. Every allocation, pool-lock hold and claimed
//! channel slot in the core records its owner. When a try meets a slot or lock that another
//! party holds in the middle of a step (the core reports it after a few microseconds), the
//! adapter checks that party at once, then at most every 200 us: if its process is gone (or a
//! zombie, or a different process with the same pid) it runs the core's `Pool::recover` and
//! `Channel::recover` (freeing the dead party's allocations, releasing its claims, turning a
//! position it took but never filled into a tombstone receivers skip) and retries; a live
//! holder is waited for ([`HOLDER_WAIT`] at most before a try-once call reports the channel
//! busy), and a sleeper re-checks every [`STALL_SLICE`] while it waits on one. A message the dead process had sent is delivered; one it was
//! sending is not; one it was receiving is lost with it. [`MemoryPool::recover`] reclaims
//! the allocations of processes that died holding nothing else.
//!
//! Files left in `/dev/shm` are told apart without attaching ([`MemoryPool::probe`]): a pool
//! whose every party is dead (abandoned: attaching takes it over), a file whose creator died
//! before publishing the pool (half-created: every creator stamps its file with its pid and
//! start time first), and a file that is not a pool; `attach` and `create` give each its own
//! error, which names the command that removes the file. The `dragon-channels` command
//! (package `dragon-channels-cli`) lists, inspects, recovers and removes pools.
//!
//! # Platforms
//! Linux: `/dev/shm`, `posix_fallocate`, futexes and `/proc` are used directly. Pool names are
//! 1 to 29 bytes of ASCII letters, digits, `_`, `-` and `.` (see [`MAX_NAME_LEN`]).
//!
//! # Async
//! Every send and receive form has an `*_async` twin returning a future
//! ([`ChannelSendH::send_async`], [`ChannelRecvH::recv_async`], ...; [`ChannelSet::poll_async`])
//! that works on any executor; one background thread per process ([`AsyncWaiter`]) sleeps on
//! every event word the process's futures wait on. Timeouts come from the executor's timers;
//! a dropped future did nothing (see [`ChannelFuture`]).
//!
//! # Feature flags
//! - `futures`: `futures::Stream` for [`RecvStream`] and `futures::Sink` for [`SendSink`].
#![warn(missing_docs)]

mod cache;
mod channel;
mod error;
mod future;
mod handle;
pub mod host;
mod inspect;
mod message;
mod party;
mod poll;
mod pool;
mod probe;
mod reactor;
pub mod remote;
mod set;
mod shm;
mod stream;
mod sync;
mod wait;

pub use channel::Channel;
pub use error::{Error, MemoryPoolError, Reason};
pub use future::{ASYNC_SPIN_FOR, AsyncWait, ChannelFuture, SetPollFuture, TransferFuture};
pub use handle::{
    BytesOrMessage, ChannelRecvH, ChannelSendH, Direction, Handle, Receiving, Sending,
    TransferError,
};
pub use inspect::{ChannelInfo, CreatorInfo, PartyInfo, PoolFile, PoolState};
pub use message::Message;
pub use pool::{MemoryPool, PoolAttrs, Recovery, Reserve};
pub use probe::{CREATE_LIMIT, EMPTY_LIMIT};
pub use reactor::{AsyncWaiter, LINGER};
pub use remote::{RemoteError, ReturnMode};
pub use set::{ChannelSet, FUTEX_WAITV_MAX, SetEvent, SetEventKind};
pub use shm::{MAX_NAME_LEN, MAX_PARTIES, SHM_DIR};
pub use stream::{RecvStream, SendSink};
pub use wait::{
    DRAIN_FOR, HANDOFF_WAIT, HOLDER_WAIT, SLEEP_SLICE, SPIN_FOR, STALL_SLICE, Timeout, WaitMode,
    YIELD_FOR,
};

pub use dragon_channels_core;
pub use dragon_channels_core::{
    Alloc, AllocInfo, AllocKind, ChannelAttrs, Poll, Polled, PoolStats, SemaphoreAttrs,
};
