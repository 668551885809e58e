//! [`MemoryPool`]: a named managed-memory pool in `/dev/shm`, shared by every process that
//! attaches to it.
//!
//! A pool is one file: the adapter header (identity, party table, see [`crate::shm`] and
//! `party`) followed by the core's [`dragon_channels_core::Pool`] region. Each process maps it
//! once: a process-wide registry hands the same mapping to every `attach` of the same pool
//! (matched by name and creation nonce), so a process has one party id per pool.
//!
//! Dropping the last handle of a process only unmaps; [`MemoryPool::destroy`] unlinks the
//! file (processes that still map it keep working on their mapping).

use core::time::Duration;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use dragon_channels_core::channel::ChannelRecovery;
use dragon_channels_core::descriptor::{DescriptorError, Reader, Writer};
use dragon_channels_core::pool::{DEFAULT_MIN_BLOCK, PoolRecovery, SIZE_CLASSES};
use dragon_channels_core::{
    Alloc, AllocInfo, AllocKind, Channel as CoreChannel, ChannelError as CoreChannelError,
    Pool as CorePool, PoolConfig, PoolError as CorePoolError, PoolStats, Region, RegionError,
};

use crate::error::MemoryPoolError;
use crate::party::{self, Parties, ROLE_OBSERVER, ROLE_PARTY};
use crate::probe::{self, Kind};
use crate::shm::{
    self, FILE_MAGIC, FILE_VERSION, HEADER_LEN, Header, MAX_NAME_LEN, Mapped, O_MAGIC, O_NONCE,
    O_RECOVERY_LOCK, O_REGION_LEN, O_REGION_OFF, O_STATE, O_UID, O_VERSION, STATE_DESTROYED,
    STATE_READY,
};
use crate::sync::{AtomicU32, Ordering, fence};
use crate::{cache, wait};

/// `"DRMP"`: marks a serialized pool descriptor.
const SER_MAGIC: u32 = 0x504D_5244;
/// Layout version of serialized pool descriptors: 2 added the host id (version 1, which had
/// none, is refused with its own message).
pub(crate) const SER_VERSION: u32 = 2;
/// Fixed part of a serialized pool descriptor, before the name and the checksum: magic,
/// version, host id, uid, nonce, mapping length, name length.
const SER_FIXED: usize = 4 + 4 + 8 + 8 + 8 + 8 + 1;
/// How long `attach` waits for a creator that is still initializing the pool.
const ATTACH_WAIT: Duration = Duration::from_secs(2);

/// The fields of a serialized pool descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PoolDescriptor {
    /// The host the pool lives on.
    pub(crate) host: u64,
    pub(crate) name: String,
    pub(crate) uid: u64,
    pub(crate) nonce: u64,
}

/// The layout version field of sealed descriptor bytes (after the magic), if there is one.
pub(crate) fn descriptor_version(b: &[u8]) -> Option<u32> {
    let mut r = Reader::new(b);
    r.u32();
    let v = r.u32();
    r.finish().ok().map(|()| v)
}

/// Creation attributes of a pool beyond its size, name and uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolAttrs {
    /// Minimum block size in bytes (a power of two, at least 16); every allocation rounds up
    /// to a power of two no smaller than this. Default 64.
    pub min_block: u32,
    /// Most live allocations at once; `None`: one per 16 minimum blocks (at least 16).
    pub max_allocations: Option<u32>,
    /// When the pool's file gets its storage. Default [`Reserve::Sparse`].
    pub reserve: Reserve,
}

/// When a pool's file gets its storage in `/dev/shm`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reserve {
    /// As the allocator first hands out (or links) each 256 KiB chunk of the data area
    /// (`MADV_POPULATE_WRITE` on the chunk, which fails with an error instead of raising
    /// `SIGBUS` when the file system is full). Creating a pool of any size is immediate and
    /// uses only its metadata; a full file system makes the allocation that needs a new chunk
    /// fail (the core's `PoolError::NoBacking`), never a write.
    #[default]
    Sparse,
    /// All of it at creation (`posix_fallocate`): creation fails at once when it does not
    /// fit, and no allocation ever needs more storage.
    UpFront,
}

impl Default for PoolAttrs {
    fn default() -> Self {
        Self {
            min_block: DEFAULT_MIN_BLOCK,
            max_allocations: None,
            reserve: Reserve::Sparse,
        }
    }
}

/// The core's backing function for sparse pools: gives the pages of `len` bytes at `offset`
/// of `region` their storage with `MADV_POPULATE_WRITE` (Linux 5.14), which reports a full
/// file system as an error instead of a `SIGBUS`. Populated pages belong to the file, so every
/// process that maps the pool finds them there.
fn populate(region: Region, offset: usize, len: usize) -> bool {
    let page = rustix::param::page_size();
    let start = region.base() as usize + offset;
    let aligned = start & !(page - 1);
    let len = len + (start - aligned);
    // SAFETY: the range lies inside the region's mapping (the core passes offsets of its
    // data area; rounding down to the page start stays inside the mapping, whose base is
    // page aligned); MADV_POPULATE_WRITE changes no contents, only allocates and maps pages.
    let r = unsafe {
        rustix::mm::madvise(
            aligned as *mut core::ffi::c_void,
            len,
            rustix::mm::Advice::LinuxPopulateWrite,
        )
    };
    r.is_ok()
}

/// What [`MemoryPool::recover`] (or the automatic recovery after a stall) reclaimed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// What the pool gave back: a lock taken over, allocations of dead processes freed.
    pub pool: PoolRecovery,
    /// What the stalled channel gave back, when recovery ran for one.
    pub channel: Option<ChannelRecovery>,
}

/// A named managed-memory pool in `/dev/shm`.
///
/// Cheap to clone (the clones share one mapping). `Send` and `Sync`.
///
/// # Examples
/// ```
/// use dragon_channels::MemoryPool;
/// # let name = format!("doc-pool-{}", std::process::id());
/// let pool = MemoryPool::create(1 << 20, &name, 7)?;
/// let other = MemoryPool::attach(&name)?; // as another process would
/// assert_eq!(other.uid(), 7);
/// assert!(pool.free_space()? >= 1 << 20);
/// pool.destroy()?;
/// # Ok::<(), dragon_channels::MemoryPoolError>(())
/// ```
#[derive(Clone)]
pub struct MemoryPool {
    pub(crate) inner: Arc<PoolInner>,
}

impl core::fmt::Debug for MemoryPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryPool")
            .field("name", &self.inner.name)
            .field("uid", &self.inner.uid)
            .field("party_id", &self.inner.core.owner())
            .finish_non_exhaustive()
    }
}

/// One mapping of a pool in this process.
pub(crate) struct PoolInner {
    /// The core handle; its region lies inside `map`.
    pub(crate) core: CorePool,
    name: String,
    uid: u64,
    nonce: u64,
    /// The process that mapped it (a `fork`ed child must not reuse its parent's party id).
    pid: u32,
    /// Registered as an observer (see `party`): queries never run recovery, and the party
    /// entry is freed when the mapping goes.
    pub(crate) observer: bool,
    /// This mapping's id in this process (keys the thread caches, `cache.rs`).
    pub(crate) id: u64,
    /// Keeps the file mapped; declared last so it is unmapped after everything else.
    map: Mapped,
}

/// Pools this process has mapped, so that attaching twice reuses the mapping (and the party
/// id). Holding this lock also serializes party registration within the process.
static REGISTRY: Mutex<Vec<Weak<PoolInner>>> = Mutex::new(Vec::new());

/// This process's live mapping with id `id` (see `cache.rs`).
pub(crate) fn mapped_by_id(id: u64) -> Option<Arc<PoolInner>> {
    registry()
        .iter()
        .filter_map(Weak::upgrade)
        .find(|p| p.id == id)
}

fn registry() -> std::sync::MutexGuard<'static, Vec<Weak<PoolInner>>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The core pool lock's back-off: spin briefly, then give the CPU away, so that a holder
/// preempted on a busy machine runs again before the lock is called stalled (a receive that
/// meets a stalled lock must leave its free to the slot's next sender).
fn lock_backoff(tries: u32) {
    if tries < 64 {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn new_nonce() -> u64 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = u64::from(COUNTER.fetch_add(1, Ordering::Relaxed));
    let v = t ^ (u64::from(std::process::id()) << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    v.max(1)
}

fn region_err(e: RegionError, name: &str) -> MemoryPoolError {
    match e {
        RegionError::TooLarge => MemoryPoolError::TooLarge(usize::MAX),
        _ => MemoryPoolError::NotAPool {
            name: name.to_owned(),
            why: "the mapping is not aligned for a region",
        },
    }
}

impl MemoryPool {
    /// Creates a pool named `name` with `size` bytes of data capacity and identity `uid`,
    /// with default [`PoolAttrs`].
    ///
    /// The file `/dev/shm/<name>` is created exclusively with mode 0600 and its space is
    /// reserved before use. `name`: 1 to 29 bytes of ASCII letters, digits, `_`, `-`, `.`,
    /// not starting with `.`.
    ///
    /// # Process crashes
    /// The first thing written to the new file is a stamp with this process's pid and start
    /// time; the pool is published last. A creator that dies in between leaves a file that
    /// `attach`, `create` and [`MemoryPool::probe`] report at once as abandoned while being
    /// created ([`MemoryPoolError::HalfCreated`]), never as a pool to wait for; it is removed
    /// with `dragon-channels rm <name>` or `gc` (or `rm /dev/shm/<name>`).
    ///
    /// # Errors
    /// [`MemoryPoolError::BadName`]; when the name is taken: [`MemoryPoolError::AlreadyExists`]
    /// (a pool in use, or being created), [`MemoryPoolError::Abandoned`] (a pool whose every
    /// party is dead), [`MemoryPoolError::HalfCreated`], [`MemoryPoolError::Destroyed`] (a
    /// destroyed pool's file left behind), [`MemoryPoolError::NotAPool`] (another file);
    /// [`MemoryPoolError::NoSpace`] when `/dev/shm` is full, [`MemoryPoolError::Pool`] for a
    /// size the core cannot lay out, [`MemoryPoolError::Io`].
    pub fn create(size: usize, name: &str, uid: u64) -> Result<Self, MemoryPoolError> {
        Self::create_with_attrs(size, name, uid, &PoolAttrs::default())
    }

    /// Like [`MemoryPool::create`], with explicit attributes.
    ///
    /// # Errors
    /// As [`MemoryPool::create`].
    pub fn create_with_attrs(
        size: usize,
        name: &str,
        uid: u64,
        attrs: &PoolAttrs,
    ) -> Result<Self, MemoryPoolError> {
        shm::validate_name(name)?;
        let cfg = PoolConfig {
            min_block: attrs.min_block,
            max_allocations: attrs.max_allocations,
            uid,
        };
        let region_len = CorePool::required_size(size, &cfg)?;
        let file_len = HEADER_LEN
            .checked_add(region_len)
            .filter(|&l| isize::try_from(l).is_ok())
            .ok_or(MemoryPoolError::TooLarge(size))?;
        // A sparse pool reserves its headers and the core's metadata now, the data later.
        let reserve_len = match attrs.reserve {
            Reserve::UpFront => file_len,
            Reserve::Sparse => HEADER_LEN + CorePool::data_offset(region_len, &cfg)?,
        };
        let mut reg = registry();
        let file = match shm::create_file(name, file_len, reserve_len) {
            Err(MemoryPoolError::AlreadyExists(_)) => return Err(Self::taken_by(name)),
            other => other?,
        };
        let made = (|| {
            let map = Mapped::map(&file, file_len, name)?;
            let nonce = new_nonce();
            let hdr = map.header();
            hdr.write_u32(O_MAGIC, FILE_MAGIC);
            hdr.write_u32(O_VERSION, FILE_VERSION);
            hdr.write_name(name);
            hdr.write_u64(O_UID, uid);
            hdr.write_u64(O_NONCE, nonce);
            hdr.write_u64(O_REGION_LEN, region_len as u64);
            hdr.write_u64(O_REGION_OFF, HEADER_LEN as u64);
            let (pid, start) = party::me();
            let owner = Parties::new(hdr).register(pid, start, ROLE_PARTY)?;
            // SAFETY: `map` is at least HEADER_LEN + region_len bytes (the file was sized to
            // that), page aligned, and lives in the returned PoolInner as long as the core
            // pool; the region is only accessed through the core.
            let region = unsafe { Region::new(map.base().add(HEADER_LEN), region_len) }
                .map_err(|e| region_err(e, name))?;
            let mut core = match attrs.reserve {
                Reserve::UpFront => CorePool::init(region, &cfg, owner)?,
                Reserve::Sparse => CorePool::init_sparse(region, &cfg, owner, populate)?,
            };
            core.set_lock_backoff(lock_backoff);
            // SYNC: publish pool file (Release) <-> attach's state load (Acquire).
            hdr.atomic(O_STATE).store(STATE_READY, Ordering::Release);
            Ok(PoolInner {
                core,
                name: name.to_owned(),
                uid,
                nonce,
                pid,
                observer: false,
                id: cache::new_mapping_id(),
                map,
            })
        })();
        match made {
            Ok(inner) => {
                let inner = Arc::new(inner);
                reg.retain(|w| w.strong_count() > 0);
                reg.push(Arc::downgrade(&inner));
                Ok(Self { inner })
            }
            Err(e) => {
                let _ = shm::unlink(name);
                Err(e)
            }
        }
    }

    /// The error for a `create` that found `name` taken: says what holds the name when the
    /// file can be read (a live pool, an abandoned one, a half-created or foreign file).
    fn taken_by(name: &str) -> MemoryPoolError {
        let taken = || MemoryPoolError::AlreadyExists(name.to_owned());
        let Ok(file) = shm::open_read(name) else {
            return taken();
        };
        let Ok(p) = probe::probe(&file, name) else {
            return taken();
        };
        match p.kind {
            Kind::Ready { .. } => {
                let parties = probe::parties(&p);
                if probe::abandoned(&parties) {
                    MemoryPoolError::Abandoned {
                        name: name.to_owned(),
                        dead: parties.iter().filter(|q| !q.observer).count(),
                    }
                } else {
                    taken()
                }
            }
            Kind::Creating { .. } => taken(),
            _ => p.error(name).unwrap_or_else(taken),
        }
    }

    /// Attaches to the pool named `name` (created by this or another process). Within one
    /// process, attaching to a pool that is already mapped returns the same mapping.
    ///
    /// Attaching to an abandoned pool (every party dead) succeeds: that is how a restarted
    /// program takes over what its predecessor left queued. [`MemoryPool::probe`] tells an
    /// abandoned pool without attaching.
    ///
    /// # Errors
    /// [`MemoryPoolError::NotFound`] when no such pool exists, [`MemoryPoolError::NotAPool`]
    /// when the file is not a pool of this library (too short, zero-filled, foreign bytes),
    /// [`MemoryPoolError::HalfCreated`] when its creator died before finishing it (or hangs
    /// past [`crate::CREATE_LIMIT`]), [`MemoryPoolError::NotReady`] when its creator still
    /// runs and has not finished within 2 s, [`MemoryPoolError::Destroyed`],
    /// [`MemoryPoolError::BadName`], [`MemoryPoolError::Io`].
    pub fn attach(name: &str) -> Result<Self, MemoryPoolError> {
        shm::validate_name(name)?;
        Self::attach_checked(name, None)
    }

    /// Attaches to a pool from bytes made by [`MemoryPool::serialize`] (possibly in another
    /// process).
    ///
    /// # Errors
    /// [`MemoryPoolError::BadDescriptor`] for malformed, truncated or corrupt bytes (and for
    /// descriptors of layout version 1, which name no host),
    /// [`MemoryPoolError::RemoteHost`] when the pool lives on another host (see
    /// [`crate::host`]), [`MemoryPoolError::Stale`] when the named pool was destroyed and
    /// created again since, and the errors of [`MemoryPool::attach`].
    pub fn attach_serialized(bytes: &[u8]) -> Result<Self, MemoryPoolError> {
        let d = Self::parse_serialized(bytes)?;
        let here = crate::host::host_id();
        if d.host != here {
            return Err(MemoryPoolError::RemoteHost {
                name: d.name,
                host: d.host,
                here,
            });
        }
        Self::attach_checked(&d.name, Some((d.uid, d.nonce)))
    }

    /// The host id of the host this pool lives on ([`crate::host::host_id`] of the process
    /// that made the descriptor; for a pool this process mapped, its own).
    pub fn host_id(&self) -> u64 {
        crate::host::host_id()
    }

    /// The serialized descriptor: versioned bytes naming this pool (host, name, uid and
    /// creation nonce) for [`MemoryPool::attach_serialized`].
    ///
    /// A sealed descriptor (`dragon_channels_core::descriptor`): `[magic "DRMP" u32]
    /// [version 2 u32][host id u64][uid u64][nonce u64][mapping length u64][name length u8]
    /// [name][checksum u32]`, little endian.
    pub fn serialize(&self) -> Vec<u8> {
        let name = self.inner.name.as_bytes();
        let mut b = vec![0u8; SER_FIXED + name.len() + 4];
        let mut w = Writer::sealed(&mut b, SER_MAGIC, SER_VERSION);
        w.u64(crate::host::host_id())
            .u64(self.inner.uid)
            .u64(self.inner.nonce)
            .u64(self.inner.map.len() as u64)
            .u8(name.len() as u8)
            .bytes(name);
        let n = w.seal();
        debug_assert_eq!(n, b.len());
        b
    }

    /// Length of the serialized descriptor that starts `bytes`, from its name length; `None`
    /// when they do not start with a pool descriptor's magic. Bytes too short to hold the name
    /// length give a length longer than themselves.
    pub(crate) fn serialized_len(bytes: &[u8]) -> Option<usize> {
        let mut r = Reader::new(bytes);
        if r.u32() != SER_MAGIC {
            return None;
        }
        // Version, host, uid, nonce and mapping length; a short reader yields a 0 name length.
        r.bytes(SER_FIXED - 4 - 1);
        Some(SER_FIXED + usize::from(r.u8()) + 4)
    }

    /// Parses a serialized pool descriptor (any host's).
    pub(crate) fn parse_serialized(b: &[u8]) -> Result<PoolDescriptor, MemoryPoolError> {
        let bad = MemoryPoolError::BadDescriptor;
        let open_err = |e| {
            bad(match e {
                DescriptorError::Magic => "not a pool descriptor (bad magic)",
                DescriptorError::Version if descriptor_version(b) == Some(1) => {
                    "made by an older dragon-channels (layout 1, which names no host): \
                     serialize the pool again with this version"
                }
                e => e.as_str(),
            })
        };
        // Without the magic there is no expected length: `open` then says what is wrong.
        let mut r =
            Reader::open(b, Self::serialized_len(b), SER_MAGIC, SER_VERSION).map_err(open_err)?;
        let (host, uid, nonce, _map_len) = (r.u64(), r.u64(), r.u64(), r.u64());
        let n = usize::from(r.u8());
        let name = r.bytes(n);
        r.finish().map_err(open_err)?;
        if n == 0 || n > MAX_NAME_LEN {
            return Err(bad("name length out of range"));
        }
        let name = core::str::from_utf8(name).map_err(|_| bad("name is not UTF-8"))?;
        shm::validate_name(name).map_err(|_| bad("name is not a valid pool name"))?;
        Ok(PoolDescriptor {
            host,
            name: name.to_owned(),
            uid,
            nonce,
        })
    }

    /// Waits until the file `name` holds a published pool (its creator still running) and
    /// returns its creation nonce; what else the file is, is an error at once.
    fn wait_ready(file: &std::fs::File, name: &str) -> Result<u64, MemoryPoolError> {
        let waited = Instant::now();
        loop {
            let p = probe::probe(file, name)?;
            match p.kind {
                Kind::Ready { nonce } => return Ok(nonce),
                Kind::Creating { .. } if waited.elapsed() < ATTACH_WAIT => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => {
                    return Err(p
                        .error(name)
                        .unwrap_or(MemoryPoolError::Destroyed(name.to_owned())));
                }
            }
        }
    }

    /// Attaches to `name` as an inspection tool (see `party`): the party entry is an
    /// observer's, so the attachment never makes the pool look used, and queries report a
    /// dead lock holder instead of repairing. A mapping this process already has (of either
    /// kind) is reused.
    pub(crate) fn attach_observer(name: &str) -> Result<Self, MemoryPoolError> {
        shm::validate_name(name)?;
        let file = shm::open_file(name)?;
        let nonce = Self::wait_ready(&file, name)?;
        let mut reg = registry();
        let inner = match Self::find_mapped(&reg, name, nonce, true) {
            Some(p) => p,
            None => {
                let inner = Arc::new(Self::map_existing(&file, name, nonce, ROLE_OBSERVER)?);
                reg.retain(|w| w.strong_count() > 0);
                reg.push(Arc::downgrade(&inner));
                inner
            }
        };
        Ok(Self { inner })
    }

    /// This process's mapping of the published pool `name` with this nonce, if it has one;
    /// an observer's mapping only when `observers` (a party must register as one).
    fn find_mapped(
        reg: &[Weak<PoolInner>],
        name: &str,
        nonce: u64,
        observers: bool,
    ) -> Option<Arc<PoolInner>> {
        reg.iter().filter_map(Weak::upgrade).find(|p| {
            p.name == name
                && p.nonce == nonce
                && p.pid == std::process::id()
                && (observers || !p.observer)
                && p.map.header().atomic(O_STATE).load(Ordering::Relaxed) == STATE_READY
        })
    }

    fn attach_checked(name: &str, expect: Option<(u64, u64)>) -> Result<Self, MemoryPoolError> {
        let file = shm::open_file(name)?;
        let nonce = Self::wait_ready(&file, name)?;
        if let Some((_, want)) = expect
            && want != nonce
        {
            return Err(MemoryPoolError::Stale(name.to_owned()));
        }
        let mut reg = registry();
        let inner = match Self::find_mapped(&reg, name, nonce, false) {
            Some(p) => p,
            None => {
                let inner = Arc::new(Self::map_existing(&file, name, nonce, ROLE_PARTY)?);
                reg.retain(|w| w.strong_count() > 0);
                reg.push(Arc::downgrade(&inner));
                inner
            }
        };
        drop(reg);
        if let Some((uid, _)) = expect
            && uid != inner.uid
        {
            return Err(MemoryPoolError::BadDescriptor(
                "uid does not match the named pool",
            ));
        }
        Ok(Self { inner })
    }

    /// Maps an existing, ready pool file, validates its header and registers this process in
    /// `role` (registry lock held).
    fn map_existing(
        file: &std::fs::File,
        name: &str,
        nonce: u64,
        role: u32,
    ) -> Result<PoolInner, MemoryPoolError> {
        let not_a_pool = |why| MemoryPoolError::NotAPool {
            name: name.to_owned(),
            why,
        };
        let len = shm::file_len(file, name)?;
        let len = usize::try_from(len).map_err(|_| MemoryPoolError::TooLarge(usize::MAX))?;
        if len < HEADER_LEN {
            return Err(not_a_pool("file shorter than a pool header"));
        }
        let map = Mapped::map(file, len, name)?;
        let hdr = map.header();
        // SYNC: Acquire <-> publish pool file (Release) in `create_with_attrs`.
        let state = hdr.atomic(O_STATE).load(Ordering::Acquire);
        if hdr.read_u32(O_MAGIC) != FILE_MAGIC {
            return Err(not_a_pool("bad magic"));
        }
        if hdr.read_u32(O_VERSION) != FILE_VERSION {
            return Err(not_a_pool("unsupported layout version"));
        }
        match state {
            STATE_READY => {}
            STATE_DESTROYED => return Err(MemoryPoolError::Destroyed(name.to_owned())),
            _ => {
                return Err(MemoryPoolError::NotAPool {
                    name: name.to_owned(),
                    why: "its state word changed back from published",
                });
            }
        }
        let region_len = hdr.read_u64(O_REGION_LEN);
        if hdr.read_u64(O_REGION_OFF) != HEADER_LEN as u64
            || region_len.checked_add(HEADER_LEN as u64) != Some(len as u64)
        {
            return Err(not_a_pool("file size does not match its header"));
        }
        if hdr.read_name().as_deref() != Some(name) {
            return Err(not_a_pool(
                "name in the header does not match the file name",
            ));
        }
        if hdr.read_u64(O_NONCE) != nonce {
            return Err(MemoryPoolError::Stale(name.to_owned()));
        }
        let uid = hdr.read_u64(O_UID);
        let (pid, start) = party::me();
        let owner = Parties::new(hdr).register(pid, start, role)?;
        let observer = role == ROLE_OBSERVER;
        // From here on an observer's entry is freed if anything fails (its Drop does it).
        let unregister = |e| {
            if observer {
                Parties::new(hdr).unregister_observer(owner);
            }
            e
        };
        // SAFETY: the mapping holds HEADER_LEN + region_len bytes (checked against the file
        // size above), is page aligned, and lives in the returned PoolInner as long as the
        // core pool; the region is only accessed through the core.
        let region = unsafe { Region::new(map.base().add(HEADER_LEN), region_len as usize) }
            .map_err(|e| unregister(region_err(e, name)))?;
        let mut core =
            CorePool::attach(region, owner).map_err(|e| unregister(MemoryPoolError::Pool(e)))?;
        core.set_lock_backoff(lock_backoff);
        // A sparse pool's unbacked chunks get their storage from whoever needs them first.
        core.set_backing(populate);
        if core.uid() != uid {
            return Err(unregister(not_a_pool(
                "pool uid in the region does not match the header",
            )));
        }
        Ok(PoolInner {
            core,
            name: name.to_owned(),
            uid,
            nonce,
            pid,
            observer,
            id: cache::new_mapping_id(),
            map,
        })
    }

    /// Destroys the pool: marks it destroyed and unlinks its file. Processes that still map
    /// it keep their mapping until they drop it; new attaches fail with
    /// [`MemoryPoolError::NotFound`] (or [`MemoryPoolError::Destroyed`]).
    ///
    /// # Errors
    /// [`MemoryPoolError::Destroyed`] when it was already destroyed, [`MemoryPoolError::Io`]
    /// when unlinking fails.
    pub fn destroy(self) -> Result<(), MemoryPoolError> {
        cache::let_go(&self);
        let name = &self.inner.name;
        // SYNC: destroy (AcqRel CAS, Acquire on failure) <-> attach's state load (Acquire)
        // and the creator's publish (Release).
        self.inner
            .header()
            .atomic(O_STATE)
            .compare_exchange(
                STATE_READY,
                STATE_DESTROYED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map_err(|_| MemoryPoolError::Destroyed(name.clone()))?;
        // Unlink only our own file: the name may already belong to a newer pool.
        if let Ok(file) = shm::open_file(name)
            && shm::peek_identity(&file, name).is_ok_and(|(n, _)| n == self.inner.nonce)
        {
            return match shm::unlink(name) {
                Err(MemoryPoolError::NotFound(_)) => Ok(()),
                other => other,
            };
        }
        Ok(())
    }

    /// Detaches: drops this handle (the mapping goes when the process's last handle, channel
    /// or message of this pool goes, and the references that a thread which last made or
    /// dropped [`Message`](crate::Message)s of this pool keeps for its next ones, until it
    /// ends or moves on to another pool). Also lets go of this thread's references.
    pub fn detach(self) {
        cache::let_go(&self);
    }

    /// The pool name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The uid given at creation.
    pub fn uid(&self) -> u64 {
        self.inner.uid
    }

    /// Bytes of the data area (at least the `size` given at creation).
    pub fn size(&self) -> usize {
        self.inner.core.total_size()
    }

    /// Largest single allocation possible when the pool is empty.
    pub fn max_alloc(&self) -> usize {
        self.inner.core.max_alloc()
    }

    /// This process's owner id in the pool (`pid | generation << 22`); allocations and
    /// channel slots it holds are recorded under it.
    pub fn party_id(&self) -> u32 {
        self.inner.core.owner()
    }

    /// Whether the party with owner id `id` is a live process.
    pub fn is_alive(&self, id: u32) -> bool {
        self.inner.is_alive(id)
    }

    /// Owner ids of the live processes registered in the pool's party table.
    pub fn live_parties(&self) -> Vec<u32> {
        Parties::new(self.inner.header()).live()
    }

    /// Statistics: data bytes, free bytes, live allocations.
    ///
    /// # Errors
    /// [`MemoryPoolError::Pool`] when the metadata is corrupt.
    pub fn stats(&self) -> Result<PoolStats, MemoryPoolError> {
        self.inner.retry(|| self.inner.core.stats())
    }

    /// Free bytes.
    ///
    /// # Errors
    /// As [`MemoryPool::stats`].
    pub fn free_space(&self) -> Result<usize, MemoryPoolError> {
        self.stats().map(|s| s.free)
    }

    /// Used share of the data area in percent.
    ///
    /// # Errors
    /// As [`MemoryPool::stats`].
    pub fn utilization(&self) -> Result<f64, MemoryPoolError> {
        self.stats().map(|s| s.utilization())
    }

    /// Free blocks per size class: `(block size in bytes, free blocks of that size)`, smallest
    /// first.
    ///
    /// # Errors
    /// As [`MemoryPool::stats`].
    pub fn free_blocks(&self) -> Result<Vec<(usize, u32)>, MemoryPoolError> {
        let mut out = [0u32; SIZE_CLASSES];
        let n = self.inner.retry(|| self.inner.core.free_blocks(&mut out))?;
        let min = self.inner.core.min_block();
        Ok(out[..n]
            .iter()
            .enumerate()
            .map(|(k, &c)| (min << k, c))
            .collect())
    }

    /// The live allocations (owner, kind, offset, size of each).
    ///
    /// # Errors
    /// As [`MemoryPool::stats`].
    pub fn allocations(&self) -> Result<Vec<AllocInfo>, MemoryPoolError> {
        self.inner.retry(|| self.inner.core.allocations().collect())
    }

    /// An allocation of `size` bytes of `kind` from the pool itself (Dragon's
    /// `dragon_memory_alloc_blocking`), waiting for space as `timeout` says
    /// ([`crate::Timeout::Default`] blocks): the pool lock's path with the pool's records, so
    /// ids follow the records (a fresh pool's first allocation has id 0), never a thread's
    /// cache. It belongs to this process until freed or handed on
    /// ([`CorePool::set_owner`]); messages allocate through [`crate::Message::create_alloc`].
    ///
    /// # Errors
    /// As [`crate::Message::create_alloc_blocking`]: the pool's error for a size that can
    /// never fit, or for no room with a try-once timeout; [`crate::Error::ChannelTimeout`]
    /// when `timeout` passes.
    pub fn alloc_blocking(
        &self,
        size: usize,
        kind: AllocKind,
        timeout: crate::Timeout,
    ) -> Result<Alloc, crate::Error> {
        let ctx = wait::Ctx::pool_op(&self.inner);
        ctx.block(timeout, crate::Timeout::Block, |_| {
            self.inner
                .core
                .alloc(size, kind)
                .map_err(CoreChannelError::from)
        })
    }

    /// Frees an allocation by descriptor, e.g. one that [`crate::Message::destroy`] was asked
    /// not to free.
    ///
    /// # Errors
    /// [`MemoryPoolError::Pool`] with `Stale` or `BadDescriptor` for a descriptor that names
    /// no live allocation of this pool.
    pub fn free(&self, alloc: Alloc) -> Result<(), MemoryPoolError> {
        self.inner.free(alloc)
    }

    /// Reclaims what dead processes left in the pool: a pool lock they held, and their
    /// allocations. Runs by itself when an operation stalls on a dead party; call it to
    /// reclaim memory of processes that died while holding only allocations.
    ///
    /// # Errors
    /// [`MemoryPoolError::Pool`] when the metadata is corrupt.
    pub fn recover(&self) -> Result<Recovery, MemoryPoolError> {
        self.inner.recover(None)
    }

    /// The core pool handle (for diagnostics and tests; its owner id is this process's).
    pub fn core_pool(&self) -> &CorePool {
        &self.inner.core
    }

    /// Whether two handles share one mapping (the same pool, mapped by this process).
    pub fn same_pool(&self, other: &MemoryPool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl PoolInner {
    pub(crate) fn header(&self) -> Header<'_> {
        self.map.header()
    }

    /// Liveness of an owner id; this process is alive by definition.
    pub(crate) fn is_alive(&self, owner: u32) -> bool {
        owner == self.core.owner() || Parties::new(self.header()).is_alive(owner)
    }

    /// Runs a pool operation, recovering from dead lock holders; a live holder is simply
    /// waited for. An observer never recovers (it reports [`MemoryPoolError::NeedsRecovery`])
    /// and waits for a live holder at most [`ATTACH_WAIT`].
    pub(crate) fn retry<T>(
        &self,
        mut op: impl FnMut() -> Result<T, CorePoolError>,
    ) -> Result<T, MemoryPoolError> {
        let since = Instant::now();
        loop {
            match op() {
                Err(CorePoolError::Stalled { owner }) => {
                    if owner != 0 && !self.is_alive(owner) {
                        if self.observer {
                            return Err(MemoryPoolError::NeedsRecovery {
                                name: self.name.clone(),
                                owner,
                            });
                        }
                        self.recover(None)?;
                    } else if self.observer && since.elapsed() >= ATTACH_WAIT {
                        return Err(MemoryPoolError::Pool(CorePoolError::Stalled { owner }));
                    } else {
                        // A live holder (preempted, on a busy machine): let it run.
                        std::thread::yield_now();
                    }
                }
                other => return other.map_err(MemoryPoolError::Pool),
            }
        }
    }

    /// Allocates `size` bytes of `kind`, through this thread's cache when it has one
    /// (`cache.rs`), try-once.
    #[inline]
    pub(crate) fn alloc(&self, size: usize, kind: AllocKind) -> Result<Alloc, CorePoolError> {
        cache::alloc(self, size, kind)
    }

    /// Frees `a` and wakes parties waiting for pool space.
    #[inline]
    pub(crate) fn free(&self, a: Alloc) -> Result<(), MemoryPoolError> {
        // The fast path: this thread's cache (no lock, no fence: `Wake` says whom to wake).
        match cache::free(self, a) {
            Some(Ok(w)) => {
                wait::notify_freed(self.core.free_event(), w);
                Ok(())
            }
            Some(Err(e)) => self.free_slow(a, Some(e)),
            None => self.free_slow(a, None),
        }
    }

    /// [`PoolInner::free`] after the thread's cache did not free `a`: `cache_err` is what its
    /// free said (`None`: no cache, so the pool lock's path).
    #[cold]
    pub(crate) fn free_slow(
        &self,
        a: Alloc,
        cache_err: Option<CorePoolError>,
    ) -> Result<(), MemoryPoolError> {
        match cache_err {
            None => self.free_locked(a)?,
            Some(CorePoolError::Stalled { .. }) => self.free_stalled(a)?,
            Some(e) => return Err(MemoryPoolError::Pool(e)),
        }
        self.wake_free_waiters();
        Ok(())
    }

    /// [`PoolInner::free`] through the pool lock.
    fn free_locked(&self, a: Alloc) -> Result<(), MemoryPoolError> {
        match self.core.free(a) {
            Ok(()) => Ok(()),
            Err(CorePoolError::Stalled { .. }) => self.free_stalled(a),
            Err(e) => Err(MemoryPoolError::Pool(e)),
        }
    }

    /// [`PoolInner::free`] after the lock was held too long: waits for a live holder,
    /// recovers a dead one.
    #[cold]
    #[inline(never)]
    fn free_stalled(&self, a: Alloc) -> Result<(), MemoryPoolError> {
        self.retry(|| self.core.free(a))
    }

    /// Wakes parties sleeping on the pool's free event, if any registered.
    pub(crate) fn wake_free_waiters(&self) {
        // SYNC: fence (SeqCst) <-> a sleeper's SeqCst register (`Event` protocol): either its
        // re-check sees our free, or we see it registered here.
        fence(Ordering::SeqCst);
        wait::notify_freed_fenced(self.core.free_event());
    }

    /// Recovery: under the pool file's recovery lock (so that no two parties repair the same
    /// slot at once), frees what dead parties hold in the pool and, if given, in `channel`.
    pub(crate) fn recover(
        &self,
        channel: Option<&CoreChannel>,
    ) -> Result<Recovery, MemoryPoolError> {
        // Each core recovery pass asks about each owner once (the core memoizes per pass);
        // across the retries below the answer must be fresh: a holder may die meanwhile.
        let alive = |o: u32| self.is_alive(o);
        let _guard = RecoveryLock::acquire(self, &alive);
        let mut rep = Recovery::default();
        loop {
            match self.core.recover(&alive) {
                Ok(p) => {
                    rep.pool = p;
                    break;
                }
                // A live party holds the lock for a long time: wait for it.
                Err(CorePoolError::Stalled { .. }) => std::thread::yield_now(),
                Err(e) => return Err(MemoryPoolError::Pool(e)),
            }
        }
        if let Some(ch) = channel {
            loop {
                match ch.recover(&alive) {
                    Ok(c) => {
                        rep.channel = Some(c);
                        break;
                    }
                    Err(CoreChannelError::Destroyed) => break,
                    // The pool lock is busy (a repair's free must wait for it): if its holder
                    // died meanwhile, take the lock over first; otherwise let it run.
                    Err(CoreChannelError::Stalled { owner }) => {
                        if owner != 0 && !alive(owner) {
                            self.core.recover(&alive).map_err(MemoryPoolError::Pool)?;
                        } else {
                            std::thread::yield_now();
                        }
                    }
                    Err(CoreChannelError::Pool(e)) => return Err(MemoryPoolError::Pool(e)),
                    Err(_) => break,
                }
            }
            // Sleepers re-check: positions may have become tombstones or free slots.
            wait::notify_all_of(ch);
        }
        self.wake_free_waiters();
        Ok(rep)
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // This party's threads can no longer use their caches of this mapping: their
        // magazines go back to the pool (`cache.rs`). One try: a lock that stays held leaves
        // them to recovery once this process is gone.
        if !self.observer && self.pid == std::process::id() {
            let _ = self.core.release_caches_of_party();
        }
        // An observer holds nothing once its last handle goes: its entry is freed so that it
        // never shows as a dead party (a `fork`ed child's copy leaves the parent's alone).
        if self.observer && self.pid == std::process::id() {
            Parties::new(self.map.header()).unregister_observer(self.core.owner());
        }
    }
}

/// The recovery lock in the pool file header: the owner id of the party recovering, 0 when
/// free. A dead holder's lock is taken over.
struct RecoveryLock<'a> {
    word: &'a AtomicU32,
}

impl<'a> RecoveryLock<'a> {
    fn acquire(pool: &'a PoolInner, alive: &dyn Fn(u32) -> bool) -> Self {
        let word = pool.header().atomic(O_RECOVERY_LOCK);
        let me = pool.core.owner();
        loop {
            // SYNC: acquire (CAS Acquire) <-> release (store Release) in `Drop`.
            match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Self { word },
                Err(holder) if holder != me && !alive(holder) => {
                    // SYNC: take over (CAS Acquire) <-> the dead holder's last release.
                    if word
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Self { word };
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }
}

impl Drop for RecoveryLock<'_> {
    fn drop(&mut self) {
        // SYNC: release (Release) <-> acquire (CAS Acquire) in `RecoveryLock::acquire`.
        self.word.store(0, Ordering::Release);
    }
}
