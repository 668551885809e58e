//! Inspection: what is in `/dev/shm` and what is inside a pool, for tools and people that
//! run programs on pools (the `dragon-channels` command is built on this and nothing else).
//!
//! Two ways to look, chosen so that looking never changes what is seen:
//! - [`MemoryPool::probe`] and [`MemoryPool::list`] read a file's header and party table
//!   with `pread`: no mapping, no party registered, no byte written. They tell a live pool
//!   from an abandoned one (every party dead), one being created from one abandoned while
//!   being created (its creator died first), and a pool from a file that is not one
//!   ([`PoolState`]).
//! - [`MemoryPool::observe`] attaches as an *observer*: it maps the pool and registers in
//!   its party table with the observer role (`party`), so that it may take the pool lock to
//!   read the metadata (a lock holder must be a party whose liveness others can check), but
//!   it is never counted as a user of the pool, it never runs recovery by itself (a query
//!   that meets a dead lock holder says so: [`MemoryPoolError::NeedsRecovery`]), and it
//!   frees its entry when its last handle goes. Through it: [`MemoryPool::channels`],
//!   [`MemoryPool::parties`], and the pool queries ([`MemoryPool::stats`],
//!   [`MemoryPool::allocations`], [`MemoryPool::free_blocks`]); [`MemoryPool::recover`] and
//!   [`Channel::recover`] repair on request.

use core::fmt;
use core::time::Duration;

use dragon_channels_core::{AllocKind, Channel as CoreChannel, ChannelError as CoreChannelError};

use crate::channel::Channel;
use crate::error::MemoryPoolError;
use crate::party;
use crate::pool::MemoryPool;
use crate::probe::{self, Kind};
use crate::shm::{self, MAX_PARTIES, O_PARTIES, PARTY_ENTRY, SHM_DIR};

/// What a file in `/dev/shm` is, as [`MemoryPool::probe`] tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolState {
    /// A pool with at least one live party.
    Ok,
    /// A pool whose every party is dead (or that has none): nobody uses it. Attaching takes
    /// it over; removing it frees its memory and name.
    Abandoned,
    /// Its creator, still running, is initializing it.
    Creating,
    /// Abandoned while being created: its creator died before finishing (or has hung past
    /// [`crate::CREATE_LIMIT`]). Nothing will ever finish it; remove it.
    HalfCreated,
    /// A destroyed pool whose file is still there (a destroy that did not finish).
    Destroyed,
    /// Not a pool of this library: too short, zero-filled, foreign bytes, another layout
    /// version, or a header that does not hold together.
    NotAPool,
}

impl PoolState {
    /// The state's name as the `dragon-channels` command prints it: `ok`, `abandoned`,
    /// `creating`, `half-created`, `destroyed`, `not-a-pool`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Abandoned => "abandoned",
            Self::Creating => "creating",
            Self::HalfCreated => "half-created",
            Self::Destroyed => "destroyed",
            Self::NotAPool => "not-a-pool",
        }
    }

    /// Whether nothing will ever use the file again, so that removing it loses nothing a
    /// live process needs: abandoned, half-created or destroyed.
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::Abandoned | Self::HalfCreated | Self::Destroyed)
    }
}

impl fmt::Display for PoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a pool's party table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartyInfo {
    /// The owner id (`pid | generation << 22`) its allocations and claims are recorded under.
    pub id: u32,
    /// The process id.
    pub pid: u32,
    /// The process's start time (`/proc/<pid>/stat` field 22, clock ticks since boot).
    pub start_time: u64,
    /// Whether that process still runs (checked when the table was read).
    pub alive: bool,
    /// An inspecting tool rather than a user of the pool (see the module docs).
    pub observer: bool,
}

/// The creator recorded in a file that is being (or was being) created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreatorInfo {
    /// The creator's pid.
    pub pid: u32,
    /// Whether it still runs.
    pub alive: bool,
}

/// What [`MemoryPool::probe`] found in `/dev/shm/<name>`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PoolFile {
    /// The file name (= pool name).
    pub name: String,
    /// What the file is.
    pub state: PoolState,
    /// Why it is [`PoolState::NotAPool`] (empty otherwise).
    pub why: &'static str,
    /// The file starts with this library's magic (false for foreign, zero-filled, short and
    /// empty files).
    pub ours: bool,
    /// The file holds nothing: it is empty, or zeros as far as a pool header would reach
    /// (what a creator killed before writing anything leaves, or a file nobody wrote yet).
    pub blank: bool,
    /// File length in bytes.
    pub file_len: u64,
    /// Bytes of memory the file occupies in `/dev/shm` (`st_blocks * 512`): what it costs
    /// now, which a sparse pool keeps below its length.
    pub reserved: u64,
    /// Time since the file was last written.
    pub age: Duration,
    /// The user id that owns the file.
    pub file_uid: u32,
    /// The file's permission bits (pools are made 0600).
    pub mode: u32,
    /// The pool uid, for a published (or destroyed) pool.
    pub pool_uid: Option<u64>,
    /// The creator of a file being created or abandoned while being created, when recorded.
    pub creator: Option<CreatorInfo>,
    /// The party table of a published pool, liveness checked when it was read.
    pub parties: Vec<PartyInfo>,
}

impl PoolFile {
    /// Live parties (observers left out).
    pub fn live_parties(&self) -> usize {
        self.parties
            .iter()
            .filter(|p| p.alive && !p.observer)
            .count()
    }

    /// Dead parties (observers left out).
    pub fn dead_parties(&self) -> usize {
        self.parties
            .iter()
            .filter(|p| !p.alive && !p.observer)
            .count()
    }

    /// The error that explains this state and says what to do: `None` for
    /// [`PoolState::Ok`], [`MemoryPoolError::Abandoned`], [`MemoryPoolError::HalfCreated`],
    /// [`MemoryPoolError::NotReady`], [`MemoryPoolError::Destroyed`] or
    /// [`MemoryPoolError::NotAPool`] otherwise.
    pub fn problem(&self) -> Option<MemoryPoolError> {
        let name = self.name.clone();
        Some(match self.state {
            PoolState::Ok => return None,
            PoolState::Abandoned => MemoryPoolError::Abandoned {
                name,
                dead: self.dead_parties(),
            },
            PoolState::Creating => MemoryPoolError::NotReady {
                name,
                creator: self.creator.map(|c| c.pid),
            },
            PoolState::HalfCreated => MemoryPoolError::HalfCreated {
                name,
                creator: self.creator.map(|c| c.pid),
                creator_alive: self.creator.is_some_and(|c| c.alive),
                age: self.age,
            },
            PoolState::Destroyed => MemoryPoolError::Destroyed(name),
            PoolState::NotAPool => MemoryPoolError::NotAPool {
                name,
                why: self.why,
            },
        })
    }
}

/// What an inspection found about one channel of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// The channel's uid (`c_uid`).
    pub cuid: u64,
    /// Messages it holds at most (1 for a semaphore channel).
    pub capacity: usize,
    /// Payload bytes stored inline per message.
    pub block_size: usize,
    /// Messages queued now.
    pub queued: usize,
    /// Receivers sleeping on it now.
    pub blocked_receivers: u32,
    /// The semaphore's value, for a semaphore channel.
    pub semaphore: Option<u32>,
    /// The owner id the channel's own allocation and its in-flight side allocations are
    /// recorded under (as [`MemoryPool::allocations`] reports them).
    pub struct_owner: u32,
}

impl Channel {
    /// A snapshot of this channel for inspection (what `dragon-channels inspect` prints).
    pub fn info(&self) -> ChannelInfo {
        let sem = self.core.is_semaphore();
        ChannelInfo {
            cuid: self.core.uid(),
            capacity: self.core.capacity(),
            block_size: self.core.block_size(),
            queued: if sem { 0 } else { self.core.len() },
            blocked_receivers: self.blocked_receivers(),
            semaphore: sem.then(|| self.core.semaphore_value()),
            struct_owner: dragon_channels_core::pool::STRUCT_OWNER_BIT | self.core.alloc().id(),
        }
    }
}

impl MemoryPool {
    /// Looks at the file `/dev/shm/<name>` without attaching: reads its header and party
    /// table, checks whether the processes it names still run, maps nothing and writes
    /// nothing.
    ///
    /// # Examples
    /// ```
    /// use dragon_channels::{MemoryPool, PoolState};
    /// # let name = format!("doc-probe-{}", std::process::id());
    /// let pool = MemoryPool::create(1 << 20, &name, 0)?;
    /// let file = MemoryPool::probe(&name)?;
    /// assert_eq!(file.state, PoolState::Ok);
    /// assert_eq!(file.live_parties(), 1);
    /// pool.destroy()?;
    /// # Ok::<(), dragon_channels::MemoryPoolError>(())
    /// ```
    ///
    /// # Errors
    /// [`MemoryPoolError::BadName`], [`MemoryPoolError::NotFound`], [`MemoryPoolError::Io`]
    /// (e.g. another user's file, which this user may not read).
    pub fn probe(name: &str) -> Result<PoolFile, MemoryPoolError> {
        shm::validate_name(name)?;
        let file = shm::open_read(name)?;
        let p = probe::probe(&file, name)?;
        let parties = probe::parties(&p);
        let state = match p.kind {
            Kind::Ready { .. } if probe::abandoned(&parties) => PoolState::Abandoned,
            Kind::Ready { .. } => PoolState::Ok,
            Kind::Destroyed => PoolState::Destroyed,
            Kind::Creating { .. } => PoolState::Creating,
            Kind::HalfCreated { .. } => PoolState::HalfCreated,
            Kind::NotAPool { .. } => PoolState::NotAPool,
        };
        let creator = match p.kind {
            Kind::Creating { creator: Some(pid) } => Some(CreatorInfo { pid, alive: true }),
            Kind::HalfCreated {
                creator: Some(pid),
                creator_alive,
            } => Some(CreatorInfo {
                pid,
                alive: creator_alive,
            }),
            _ => None,
        };
        Ok(PoolFile {
            name: name.to_owned(),
            state,
            why: match p.kind {
                Kind::NotAPool { why } => why,
                _ => "",
            },
            ours: p.ours,
            blank: p.head.iter().all(|&b| b == 0),
            file_len: p.len,
            reserved: p.reserved,
            age: p.age,
            file_uid: p.file_uid,
            mode: p.mode,
            pool_uid: probe::pool_uid(&p),
            creator,
            parties,
        })
    }

    /// [`MemoryPool::probe`] of every regular file in `/dev/shm` whose name is a valid pool
    /// name, sorted by name; files this user may not read are left out. Most of them may be
    /// other programs' ([`PoolFile::ours`] tells).
    ///
    /// # Errors
    /// [`MemoryPoolError::Io`] when `/dev/shm` cannot be read.
    pub fn list() -> Result<Vec<PoolFile>, MemoryPoolError> {
        let io = |source| MemoryPoolError::Io {
            op: "listing",
            name: SHM_DIR.to_owned(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(SHM_DIR).map_err(io)? {
            let entry = entry.map_err(io)?;
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if shm::validate_name(&name).is_err() {
                continue;
            }
            // Gone meanwhile, or not ours to read: not listed.
            if let Ok(f) = Self::probe(&name) {
                out.push(f);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Attaches to the pool `name` as an observer (see the module docs): for looking inside
    /// a pool without becoming one of its parties. Queries through it never run recovery;
    /// [`MemoryPool::recover`] still does when called.
    ///
    /// # Examples
    /// ```
    /// use dragon_channels::{Channel, MemoryPool};
    /// # let name = format!("doc-observe-{}", std::process::id());
    /// # let pool = MemoryPool::create(1 << 20, &name, 0)?;
    /// # let _ch = Channel::create(&pool, 5, None)?;
    /// let seen = MemoryPool::observe(&name)?;
    /// for ch in seen.channels()? {
    ///     println!("channel {}: {} queued", ch.cuid(), ch.num_msgs());
    /// }
    /// # drop(seen);
    /// # pool.destroy()?;
    /// # Ok::<(), Box<dyn core::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`MemoryPool::attach`].
    pub fn observe(name: &str) -> Result<Self, MemoryPoolError> {
        Self::attach_observer(name)
    }

    /// Whether this handle is an observer's ([`MemoryPool::observe`]) rather than a party's.
    pub fn is_observer(&self) -> bool {
        self.inner.observer
    }

    /// The channels of this pool, found by walking its allocations: handles on each live
    /// one, in allocation order. A channel destroyed meanwhile is left out.
    ///
    /// # Errors
    /// As [`MemoryPool::allocations`]; [`MemoryPoolError::Pool`] with a corrupt-channel
    /// error when a channel's header does not hold together.
    pub fn channels(&self) -> Result<Vec<Channel>, MemoryPoolError> {
        let mut out = Vec::new();
        for info in self.allocations()? {
            if info.kind != AllocKind::Channel {
                continue;
            }
            let attached = self.inner.retry(|| {
                match CoreChannel::attach_alloc(&self.inner.core, &info.alloc, None) {
                    Err(CoreChannelError::Pool(e)) => Err(e),
                    other => Ok(other),
                }
            })?;
            match attached {
                Ok(core) => out.push(Channel {
                    pool: self.clone(),
                    core,
                    remote: None,
                }),
                // Destroyed, or being created: not a channel (yet).
                Err(CoreChannelError::Destroyed) => {}
                // A channel with a buffer pool (the adapter makes none): not ours to show.
                Err(CoreChannelError::BadDescriptor(_)) => {}
                Err(_) => {
                    return Err(MemoryPoolError::Pool(
                        dragon_channels_core::PoolError::Corrupt("channel header"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The party table: every registered process, with its liveness checked now.
    pub fn parties(&self) -> Vec<PartyInfo> {
        let mut table = vec![0u8; MAX_PARTIES * PARTY_ENTRY];
        let copied = self.inner.header().copy_out(O_PARTIES, &mut table);
        debug_assert!(copied, "the party table lies inside the header");
        party::census(&table)
    }
}
