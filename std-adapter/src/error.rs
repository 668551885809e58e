//! Errors of the adapter: one enum per operation family.
//!
//! - [`MemoryPoolError`]: creating, attaching, destroying and querying a [`MemoryPool`].
//! - [`Error`]: everything about channels, messages and their handles. Its variants carry the
//!   seed's exception names (`ChannelError`, `ChannelFull`, `ChannelEmpty`, `ChannelTimeout`,
//!   `ChannelSendError`, `ChannelHandleNotOpen`, ...), so a caller matches on the same names
//!   Python code catches.
//!
//! `Display` strings are lowercase without a final period and say what to do where there is
//! something to do.
//!
//! [`MemoryPool`]: crate::MemoryPool

use core::fmt;
use core::time::Duration;
use std::io;

use dragon_channels_core as dcore;

use crate::shm::MAX_PARTIES;

/// Errors of pool operations: create, attach, destroy, queries.
#[derive(Debug)]
#[non_exhaustive]
pub enum MemoryPoolError {
    /// The pool name cannot be used.
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A file of this name already exists in `/dev/shm`.
    AlreadyExists(String),
    /// No pool of this name exists.
    NotFound(String),
    /// `/dev/shm` has no room for the pool (reserving its space failed).
    NoSpace {
        /// The pool name.
        name: String,
        /// Bytes the file needed.
        bytes: u64,
    },
    /// An OS call failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The pool name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// The file exists but is not a pool of this library (or of another layout version):
    /// too short, zero-filled, foreign bytes, or a header that does not hold together.
    NotAPool {
        /// The pool name.
        name: String,
        /// What did not match.
        why: &'static str,
    },
    /// The pool's creator, still running, has not finished initializing it (attach waited
    /// 2 s for it).
    NotReady {
        /// The pool name.
        name: String,
        /// Pid of the creator, when its file records one.
        creator: Option<u32>,
    },
    /// The file was abandoned while being created: its creator died before it published the
    /// pool (or has not finished in [`crate::CREATE_LIMIT`]), so nothing will ever finish
    /// it. Remove the file and create the pool again.
    HalfCreated {
        /// The pool name.
        name: String,
        /// Pid of the creator, when the file records one (an empty file records none).
        creator: Option<u32>,
        /// Whether the creator still runs (it has hung past [`crate::CREATE_LIMIT`]).
        creator_alive: bool,
        /// Time since the file was last written.
        age: Duration,
    },
    /// `create` found a pool of this name whose every party is dead. Attaching to it takes
    /// it over (what is queued in its channels is kept); removing it frees the name.
    Abandoned {
        /// The pool name.
        name: String,
        /// Dead parties registered in it.
        dead: usize,
    },
    /// A query of an inspecting handle ([`crate::MemoryPool::observe`]) found the pool lock
    /// held by a dead party; inspection never repairs, so run recovery first.
    NeedsRecovery {
        /// The pool name.
        name: String,
        /// Owner id of the dead holder (its pid is the low 22 bits).
        owner: u32,
    },
    /// The pool was destroyed.
    Destroyed(String),
    /// Serialized pool bytes are malformed or truncated.
    BadDescriptor(&'static str),
    /// Serialized pool bytes name an earlier pool of this name that was destroyed since.
    Stale(String),
    /// The descriptor names a pool on another host ([`crate::host`]): its memory is not
    /// here. A channel in it is reached through this node's gateway (set `DRAGON_GW1`).
    RemoteHost {
        /// The pool name (on that host).
        name: String,
        /// The host id the descriptor names.
        host: u64,
        /// This process's host id.
        here: u64,
    },
    /// The pool's party table is full: too many live processes are attached.
    TooManyParties,
    /// The requested size cannot be mapped on this platform.
    TooLarge(usize),
    /// A core pool operation failed.
    Pool(dcore::PoolError),
}

impl fmt::Display for MemoryPoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadName { name, why } => write!(f, "bad pool name {name:?}: {why}"),
            Self::AlreadyExists(name) => write!(
                f,
                "pool {name:?} already exists in /dev/shm: attach to it, destroy it or pick another name"
            ),
            Self::NotFound(name) => write!(
                f,
                "no pool named {name:?} exists in /dev/shm: create it first or check the name"
            ),
            Self::NoSpace { name, bytes } => write!(
                f,
                "no room in /dev/shm for pool {name:?} ({bytes} bytes): free space there or ask for a smaller pool"
            ),
            Self::Io { op, name, source } if source.kind() == io::ErrorKind::PermissionDenied => {
                write!(
                    f,
                    "{op} of pool {name:?} failed: {source}: pool files are mode 0600, private \
                     to the user that created them; attach as that user"
                )
            }
            Self::Io { op, name, source } => write!(f, "{op} of pool {name:?} failed: {source}"),
            Self::NotAPool { name, why } => write!(
                f,
                "/dev/shm/{name} is not a dragon-channels pool: {why}; if no other program \
                 uses that file, remove it with `dragon-channels rm {name}` (or \
                 `rm /dev/shm/{name}`) or pick another name"
            ),
            Self::NotReady {
                name,
                creator: Some(pid),
            } => write!(
                f,
                "pool {name:?} is still being created by process {pid}: retry shortly"
            ),
            Self::NotReady {
                name,
                creator: None,
            } => write!(f, "pool {name:?} is still being created: retry shortly"),
            Self::HalfCreated {
                name,
                creator,
                creator_alive,
                age,
            } => {
                write!(f, "pool {name:?} was abandoned while being created: ")?;
                match (creator, creator_alive) {
                    (Some(pid), false) => {
                        write!(f, "its creator, process {pid}, died before finishing it")?
                    }
                    (Some(pid), true) => write!(
                        f,
                        "its creator, process {pid}, still runs but has not finished it in \
                         {} s (stop that process if it hangs)",
                        age.as_secs()
                    )?,
                    (None, _) => write!(
                        f,
                        "the file has held no finished pool for {} s and records no creator",
                        age.as_secs()
                    )?,
                }
                write!(
                    f,
                    "; remove it with `dragon-channels rm {name}` (or `rm /dev/shm/{name}`), \
                     then create the pool again"
                )
            }
            Self::Abandoned { name, dead } => write!(
                f,
                "pool {name:?} already exists but is abandoned: no process that used it is \
                 alive ({dead} registered, all dead); attach to it to take it over (its queued messages are \
                 kept), or remove it with `dragon-channels rm {name}` (or \
                 `rm /dev/shm/{name}`) and create it again"
            ),
            Self::NeedsRecovery { name, owner } => write!(
                f,
                "pool {name:?}: dead process {pid} holds the pool lock (it died in the \
                 middle of an allocation or free); run `dragon-channels recover {name}` \
                 (or MemoryPool::recover) first",
                pid = owner & ((1 << crate::party::PID_BITS) - 1)
            ),
            Self::Destroyed(name) => {
                write!(
                    f,
                    "pool {name:?} was destroyed: create it again to use the name (a file \
                     left behind by a destroy that did not finish goes with \
                     `dragon-channels rm {name}`)"
                )
            }
            Self::BadDescriptor(why) => write!(f, "bad serialized pool descriptor: {why}"),
            Self::Stale(name) => write!(
                f,
                "serialized descriptor names an earlier pool {name:?} that was destroyed: get a fresh descriptor"
            ),
            Self::RemoteHost { name, host, here } => write!(
                f,
                "pool {name:?} lives on another host ({host:#x}; this is {here:#x}): its memory \
                 is not reachable here; reach channels in it through this node's gateway \
                 (run the job with one dragon-gateway per node, which sets DRAGON_GW1 for its \
                 clients), or attach the descriptor on its own host"
            ),
            Self::TooManyParties => write!(
                f,
                "the pool's party table is full ({MAX_PARTIES} live processes): detach some processes"
            ),
            Self::TooLarge(n) => write!(f, "a pool of {n} bytes cannot be mapped on this platform"),
            Self::Pool(e) => write!(f, "pool: {e}"),
        }
    }
}

impl core::error::Error for MemoryPoolError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Pool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<dcore::PoolError> for MemoryPoolError {
    fn from(e: dcore::PoolError) -> Self {
        Self::Pool(e)
    }
}

/// Errors of channel, message and handle operations. The variants carry the seed's exception
/// names.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// `ChannelError`: the operation failed; the reason says why.
    ChannelError(Reason),
    /// `ChannelFull`: a try-once send (timeout zero or `blocking=False`) found no free slot
    /// and no receiver asleep on the channel to hand its message to ([`crate::Timeout::Try`]).
    ChannelFull,
    /// `ChannelEmpty`: a try-once receive found no message.
    ChannelEmpty,
    /// `ChannelTimeout`: a blocking call's timeout expired.
    ChannelTimeout,
    /// `ChannelSendError`: the message cannot be sent as given.
    ChannelSendError(Reason),
    /// `ChannelRecvError`: the message cannot be received as asked (it stays queued).
    ChannelRecvError(Reason),
    /// `ChannelHandleNotOpenError`: the send or receive handle is not open.
    ChannelHandleNotOpen,
    /// `ChannelDestroyed`: the channel was destroyed.
    ChannelDestroyed,
    /// The channel's memory pool could not be used (attach, allocation).
    MemoryPool(MemoryPoolError),
    /// `ChannelBarrierBroken`: the barrier was aborted (or an arrival timed out); reset it
    /// before using it again.
    ChannelBarrierBroken,
    /// A remote channel's operation met what only remote operations meet: a dead gateway
    /// or node, a host outside the job, a local-only operation (see [`crate::remote`]).
    Remote(crate::remote::RemoteError),
}

/// Why a `ChannelError`, `ChannelSendError` or `ChannelRecvError` happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A core channel operation failed.
    Core(dcore::ChannelError),
    /// A core pool operation failed.
    Pool(dcore::PoolError),
    /// A channel with this uid already exists in the pool.
    UidInUse(u64),
    /// Serialized channel bytes are malformed, truncated or corrupt.
    BadDescriptor(&'static str),
    /// The message has no memory.
    EmptyMessage,
    /// The message's memory is not from the channel's pool, so it cannot be transferred.
    ForeignMemory,
    /// The destination message is smaller than the payload.
    DestinationTooSmall {
        /// Payload bytes.
        needed: usize,
        /// Bytes the destination holds.
        capacity: usize,
    },
    /// `send_bytes` was given a `msg_len` shorter than the bytes.
    MsgLenTooShort {
        /// Bytes given.
        bytes: usize,
        /// The `msg_len` given.
        msg_len: usize,
    },
    /// `open` was called on an open handle.
    AlreadyOpen,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Core(e) => write!(f, "{e}"),
            Self::Pool(e) => write!(f, "pool: {e}"),
            Self::UidInUse(uid) => write!(
                f,
                "a channel with uid {uid} already exists in this pool: use another uid or attach to it"
            ),
            Self::BadDescriptor(why) => write!(f, "bad serialized channel descriptor: {why}"),
            Self::EmptyMessage => {
                f.write_str("message has no memory: make it with Message::create_alloc")
            }
            Self::ForeignMemory => f.write_str(
                "message memory is not from the channel's pool: send it by copy instead",
            ),
            Self::DestinationTooSmall { needed, capacity } => write!(
                f,
                "payload of {needed} bytes does not fit the {capacity}-byte destination message: use a larger one"
            ),
            Self::MsgLenTooShort { bytes, msg_len } => write!(
                f,
                "msg_len {msg_len} is shorter than the {bytes} bytes to send: pass at least their length"
            ),
            Self::AlreadyOpen => f.write_str("handle is already open: close it first"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChannelError(r) => write!(f, "channel operation failed: {r}"),
            Self::ChannelFull => f.write_str(
                "channel is full: send with a timeout to wait for a receiver, or retry later",
            ),
            Self::ChannelEmpty => f.write_str(
                "channel is empty: receive with a timeout to wait for a sender, or retry later",
            ),
            Self::ChannelTimeout => {
                f.write_str("timed out waiting on the channel: retry or give a longer timeout")
            }
            Self::ChannelSendError(r) => write!(f, "send failed: {r}"),
            Self::ChannelRecvError(r) => write!(f, "receive failed, the message stays queued: {r}"),
            Self::ChannelHandleNotOpen => {
                f.write_str("channel handle is not open: call open() on it first")
            }
            Self::ChannelDestroyed => {
                f.write_str("channel was destroyed: this handle is stale, attach to a live channel")
            }
            Self::MemoryPool(e) => write!(f, "{e}"),
            Self::ChannelBarrierBroken => f.write_str(
                "the barrier is broken (aborted or an arrival timed out): poll Reset on it before using it again",
            ),
            Self::Remote(e) => write!(f, "remote channel: {e}"),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::MemoryPool(e) => Some(e),
            Self::ChannelError(Reason::Core(e))
            | Self::ChannelSendError(Reason::Core(e))
            | Self::ChannelRecvError(Reason::Core(e)) => Some(e),
            Self::ChannelError(Reason::Pool(e))
            | Self::ChannelSendError(Reason::Pool(e))
            | Self::ChannelRecvError(Reason::Pool(e)) => Some(e),
            _ => None,
        }
    }
}

impl From<MemoryPoolError> for Error {
    fn from(e: MemoryPoolError) -> Self {
        Self::MemoryPool(e)
    }
}

/// Which kind of operation a core error came from (picks the seed's exception name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Send,
    Recv,
    /// A poll operation (its waiters register as the operation says).
    Poll(dcore::Poll),
    Other,
}

/// Maps a core channel error to the seed's exception names.
pub(crate) fn from_core(e: dcore::ChannelError, op: Op) -> Error {
    use dcore::ChannelError as C;
    match e {
        C::Full => Error::ChannelFull,
        C::Empty => Error::ChannelEmpty,
        C::Timeout => Error::ChannelTimeout,
        C::Destroyed => Error::ChannelDestroyed,
        C::UidInUse(uid) => Error::ChannelError(Reason::UidInUse(uid)),
        C::BadDescriptor(why) => Error::ChannelError(Reason::BadDescriptor(why)),
        C::DestinationTooSmall { needed, capacity } => {
            Error::ChannelRecvError(Reason::DestinationTooSmall { needed, capacity })
        }
        C::BadMessage => Error::ChannelSendError(Reason::Core(e)),
        C::Pool(p) => match op {
            Op::Send => Error::ChannelSendError(Reason::Pool(p)),
            Op::Recv => Error::ChannelRecvError(Reason::Pool(p)),
            Op::Other | Op::Poll(_) => Error::ChannelError(Reason::Pool(p)),
        },
        C::BarrierBroken => Error::ChannelBarrierBroken,
        C::NotReady(_) => Error::ChannelTimeout,
        e => match op {
            Op::Send => Error::ChannelSendError(Reason::Core(e)),
            Op::Recv => Error::ChannelRecvError(Reason::Core(e)),
            Op::Other | Op::Poll(_) => Error::ChannelError(Reason::Core(e)),
        },
    }
}
