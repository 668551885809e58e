//! The pool file in `/dev/shm`: name rules, exclusive creation with reserved space, mapping,
//! and the adapter header in front of the core's region.
//!
//! # File layout
//! ```text
//! [adapter header, 16 KiB][core pool region: Pool::required_size(size) bytes]
//!  0   magic "DRSM"      u32    written once by the creator
//!  4   version           u32
//!  8   state             atomic 0 = being created, READY, DESTROYED
//! 12   name length       u32
//! 16   pool uid          u64    (as two u32 halves, low first, like every u64 here)
//! 24   nonce             u64    differs for every pool ever created (stale-descriptor check)
//! 32   region length     u64
//! 40   region offset     u64    = 16 KiB
//! 48   recovery lock     atomic owner id of the party running recovery, 0 when free
//! 52   creator pid       u32    written first, with the creator's start time (see below)
//! 56   creator start     u64    field 22 of /proc/<pid>/stat: clock ticks since boot
//! 64   name              32 B
//! 256  party table       16 B per entry (see `party`)
//! ```
//! [`FileHeader`] is this layout as a `#[repr(C)]` struct; the `O_*` offsets are its
//! `offset_of!`s, pinned to the numbers above by const asserts. The header is never accessed
//! through a reference to that struct: [`Header`] is a core [`Region`] over the header bytes,
//! so the adapter's words are read and written with the same volatile and atomic accessors
//! as the core's.
//! The header is the adapter's own; the region after it is the core's and is only touched
//! through `dragon_channels_core`. Fixed fields are written by the creator before it publishes
//! `state = READY` (Release); attachers read `state` (Acquire) first and validate every field,
//! because another process may have written anything there.
//!
//! The file is created with `O_CREAT | O_EXCL` and mode 0600. Its first act is to write the
//! creation stamp, the first [`STAMP_LEN`] bytes of the header (magic, version, state 0 and
//! the creator's pid and start time) in one `pwrite`, so that from then on anyone can tell
//! whose file it is and whether that process still runs: a file whose creator died before
//! publishing `READY` is recognised as abandoned while being created (`probe`) instead of
//! being waited for forever. Only an empty file has no stamp (its creator died between the
//! `open` and the `pwrite`). The space is reserved with `posix_fallocate` after the stamp and
//! before the file is mapped, so a full tmpfs gives an error here instead of a `SIGBUS` on
//! first touch. Files made before the stamp existed have zeros there and are judged by age.

use core::marker::PhantomData;
use core::mem::{offset_of, size_of};
use core::ops::Deref;
use core::ptr::NonNull;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use dragon_channels_core::Region;
use dragon_channels_core::descriptor::Reader;
use memmap2::{MmapMut, MmapOptions};

use crate::error::MemoryPoolError;
use crate::sync::AtomicU32;

/// Directory pool files live in.
pub const SHM_DIR: &str = "/dev/shm";
/// Longest pool name in bytes. With the leading `/` of a POSIX shared-memory name this stays
/// within the 31 characters macOS allows, so the same names work on every OS.
pub const MAX_NAME_LEN: usize = 29;

/// Bytes of the adapter header in front of the core region (a multiple of the page size and
/// of the region alignment).
pub(crate) const HEADER_LEN: usize = 16 * 1024;
/// `"DRSM"`: marks a pool file of this library.
pub(crate) const FILE_MAGIC: u32 = 0x4D53_5244;
/// Layout version of the adapter header and of serialized pool descriptors.
pub(crate) const FILE_VERSION: u32 = 1;
/// `state` value once the creator has finished.
pub(crate) const STATE_READY: u32 = 0x5944_4552;
/// `state` value after `destroy`.
pub(crate) const STATE_DESTROYED: u32 = 0x4454_5344;

/// Entries in a pool's party table: the most processes that can be attached at once (the
/// table fills the rest of the header).
pub const MAX_PARTIES: usize = 1008;
/// Bytes of the name field (a name and its padding).
const NAME_FIELD: usize = 32;

/// The adapter header, as laid out in the file (see the module docs). Only its layout is
/// used (`offset_of!`, `size_of`): the bytes are accessed through [`Header`].
#[repr(C)]
struct FileHeader {
    /// [`FILE_MAGIC`].
    magic: u32,
    /// [`FILE_VERSION`].
    version: u32,
    /// 0 while the creator writes the header, then [`STATE_READY`], then [`STATE_DESTROYED`].
    state: AtomicU32,
    /// Bytes of `name` in use, 1 to [`MAX_NAME_LEN`].
    name_len: u32,
    /// The pool uid.
    uid: [u32; 2],
    /// Creation nonce, never 0: differs for every pool ever created.
    nonce: [u32; 2],
    /// Bytes of the core region after the header.
    region_len: [u32; 2],
    /// Offset of the core region: [`HEADER_LEN`].
    region_off: [u32; 2],
    /// Owner id of the party running recovery, 0 when free.
    recovery_lock: AtomicU32,
    /// Pid of the creator, written in the creation stamp (0 in files of earlier versions).
    creator_pid: u32,
    /// Start time of the creator (`/proc/<pid>/stat` field 22), low half first.
    creator_start: [u32; 2],
    /// The pool name (ASCII), zero-padded.
    name: [u8; NAME_FIELD],
    _reserved1: [u8; 160],
    /// The party table (see `party`).
    parties: [PartyEntry; MAX_PARTIES],
}

/// One party-table entry (see `party` for the protocol).
#[repr(C)]
struct PartyEntry {
    /// 0 when free, the owner id when valid, the owner id with bit 31 set while written.
    key: AtomicU32,
    /// Start time of the process (`/proc/<pid>/stat` field 22), low half first.
    start: [AtomicU32; 2],
    /// `party::ROLE_PARTY` or `party::ROLE_OBSERVER` (a spare word, 0, in earlier writers).
    role: AtomicU32,
}

pub(crate) const O_MAGIC: usize = offset_of!(FileHeader, magic);
pub(crate) const O_VERSION: usize = offset_of!(FileHeader, version);
pub(crate) const O_STATE: usize = offset_of!(FileHeader, state);
pub(crate) const O_NAME_LEN: usize = offset_of!(FileHeader, name_len);
pub(crate) const O_UID: usize = offset_of!(FileHeader, uid);
pub(crate) const O_NONCE: usize = offset_of!(FileHeader, nonce);
pub(crate) const O_REGION_LEN: usize = offset_of!(FileHeader, region_len);
pub(crate) const O_REGION_OFF: usize = offset_of!(FileHeader, region_off);
pub(crate) const O_RECOVERY_LOCK: usize = offset_of!(FileHeader, recovery_lock);
pub(crate) const O_CREATOR_PID: usize = offset_of!(FileHeader, creator_pid);
pub(crate) const O_CREATOR_START: usize = offset_of!(FileHeader, creator_start);
pub(crate) const O_NAME: usize = offset_of!(FileHeader, name);
pub(crate) const O_PARTIES: usize = offset_of!(FileHeader, parties);
/// Bytes of one party-table entry.
pub(crate) const PARTY_ENTRY: usize = size_of::<PartyEntry>();

// The file layout of FILE_VERSION 1: these numbers are the format, not just today's layout.
const _: () = {
    assert!(size_of::<FileHeader>() == HEADER_LEN);
    assert!(O_MAGIC == 0 && O_VERSION == 4 && O_STATE == 8 && O_NAME_LEN == 12);
    assert!(O_UID == 16 && O_NONCE == 24 && O_REGION_LEN == 32 && O_REGION_OFF == 40);
    assert!(O_RECOVERY_LOCK == 48 && O_NAME == 64 && O_PARTIES == 256);
    assert!(O_CREATOR_PID == 52 && O_CREATOR_START == 56 && STAMP_LEN == O_NAME);
    // `party` reads the start time at +4 and +8 of an entry and the role at +12.
    assert!(PARTY_ENTRY == 16 && offset_of!(PartyEntry, start) == 4);
    assert!(offset_of!(PartyEntry, role) == 12);
    assert!(MAX_NAME_LEN <= NAME_FIELD);
    assert!(HEADER_LEN.is_multiple_of(dragon_channels_core::region::REGION_ALIGN));
};

/// Checks a pool name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `_`, `-` and `.`,
/// not starting with `.`.
pub(crate) fn validate_name(name: &str) -> Result<(), MemoryPoolError> {
    let bad = |why| {
        Err(MemoryPoolError::BadName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("the name is longer than 29 bytes (the portable shared-memory limit)");
    }
    if name.contains('/') {
        return bad("the name may not contain '/'");
    }
    if name.starts_with('.') {
        return bad("the name may not start with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return bad("use only ASCII letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

/// Path of the pool file for `name` (already validated).
pub(crate) fn path_of(name: &str) -> PathBuf {
    let mut p = PathBuf::from(SHM_DIR);
    p.push(name);
    p
}

fn io_err(op: &'static str, name: &str, source: io::Error) -> MemoryPoolError {
    MemoryPoolError::Io {
        op,
        name: name.to_owned(),
        source,
    }
}

/// Bytes of the creation stamp: the header up to the name (see the module docs).
pub(crate) const STAMP_LEN: usize = 64;

/// The creation stamp of a file being created by this process: magic, version, state 0 and
/// the creator's pid and start time, at their header offsets, in native byte order as the
/// mapping's accessors read them.
fn stamp() -> [u8; STAMP_LEN] {
    let mut b = [0u8; STAMP_LEN];
    let (pid, start) = crate::party::me();
    let mut put = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    put(O_MAGIC, FILE_MAGIC);
    put(O_VERSION, FILE_VERSION);
    put(O_CREATOR_PID, pid);
    put(O_CREATOR_START, start as u32);
    put(O_CREATOR_START + 4, (start >> 32) as u32);
    b
}

/// Creates the pool file exclusively (mode 0600), `len` bytes long, writes the creation stamp
/// and reserves tmpfs storage for its first `reserve` bytes (all of it, or the headers of a
/// sparse pool, whose data gets storage as the allocator needs it). On failure nothing is
/// left behind.
///
/// # Errors
/// [`MemoryPoolError::AlreadyExists`] when the name is taken (the caller says by what),
/// [`MemoryPoolError::NoSpace`], [`MemoryPoolError::Io`].
pub(crate) fn create_file(name: &str, len: usize, reserve: usize) -> Result<File, MemoryPoolError> {
    let path = path_of(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => MemoryPoolError::AlreadyExists(name.to_owned()),
            _ => io_err("create", name, e),
        })?;
    // One write: a reader sees the file empty or with the whole stamp (tmpfs updates the size
    // after copying the bytes).
    if let Err(e) = file.write_all_at(&stamp(), 0) {
        let _ = std::fs::remove_file(&path);
        return Err(io_err("writing the creation stamp", name, e));
    }
    let reserved = rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::empty(),
        0,
        reserve as u64,
    );
    let result = match reserved {
        Ok(()) if reserve < len => file
            .set_len(len as u64)
            .map_err(|e| io_err("sizing", name, e)),
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) | Err(rustix::io::Errno::FBIG) => {
            Err(MemoryPoolError::NoSpace {
                name: name.to_owned(),
                bytes: len as u64,
            })
        }
        // A file system without fallocate (not tmpfs): size the file without reserving.
        Err(rustix::io::Errno::OPNOTSUPP) => file
            .set_len(len as u64)
            .map_err(|e| io_err("sizing", name, e)),
        Err(e) => Err(io_err("reserving space", name, e.into())),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// Opens an existing pool file for reading and writing.
pub(crate) fn open_file(name: &str) -> Result<File, MemoryPoolError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path_of(name))
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => MemoryPoolError::NotFound(name.to_owned()),
            _ => io_err("open", name, e),
        })
}

/// Header bytes [`peek_identity`] reads: up to the end of the nonce.
const PEEK_LEN: usize = O_NONCE + 8;
const _: () = assert!(O_MAGIC + 4 <= PEEK_LEN && O_STATE + 4 <= PEEK_LEN);

/// Reads the nonce and state of a pool file without mapping it (both 0 when the file is too
/// short to hold a header yet).
///
/// # Errors
/// [`MemoryPoolError::NotAPool`] when the file starts with something other than a pool
/// header (or zeros, which a creator that is still writing leaves).
pub(crate) fn peek_identity(file: &File, name: &str) -> Result<(u64, u32), MemoryPoolError> {
    let mut b = [0u8; PEEK_LEN];
    let got = read_head(file, name, &mut b)?;
    let field = |off: usize| Reader::new(&b[off..]);
    let magic = field(O_MAGIC).u32();
    if got >= 4 && magic != 0 && magic != FILE_MAGIC {
        return Err(MemoryPoolError::NotAPool {
            name: name.to_owned(),
            why: "bad magic",
        });
    }
    if got < b.len() {
        return Ok((0, 0));
    }
    // The two u32 halves, low first, in a little-endian file are one little-endian u64.
    Ok((field(O_NONCE).u64(), field(O_STATE).u32()))
}

/// Reads up to `buf.len()` bytes from the start of `file`; returns how many it got (fewer at
/// the end of the file).
pub(crate) fn read_head(file: &File, name: &str, buf: &mut [u8]) -> Result<usize, MemoryPoolError> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("reading the header", name, e)),
        }
    }
    Ok(got)
}

/// Opens an existing file in `/dev/shm` for reading only (to look at it without changing it).
pub(crate) fn open_read(name: &str) -> Result<File, MemoryPoolError> {
    File::open(path_of(name)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => MemoryPoolError::NotFound(name.to_owned()),
        _ => io_err("open", name, e),
    })
}

/// Length of the pool file `name` (open as `file`).
pub(crate) fn file_len(file: &File, name: &str) -> Result<u64, MemoryPoolError> {
    Ok(file
        .metadata()
        .map_err(|e| MemoryPoolError::Io {
            op: "stat",
            name: name.to_owned(),
            source: e,
        })?
        .len())
}

/// Unlinks the pool file of `name`.
pub(crate) fn unlink(name: &str) -> Result<(), MemoryPoolError> {
    std::fs::remove_file(path_of(name)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => MemoryPoolError::NotFound(name.to_owned()),
        _ => io_err("unlink", name, e),
    })
}

/// A shared (`MAP_SHARED`) mapping of a whole pool file.
pub(crate) struct Mapped {
    /// Unmapped on drop.
    _map: MmapMut,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics, volatile accesses and
// the core's raw-pointer accessors (never through references to bytes others may write), so
// moving or sharing the handle between threads is sound.
unsafe impl Send for Mapped {}
// SAFETY: see `Send`.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `len` bytes of `file` shared and writable.
    pub(crate) fn map(file: &File, len: usize, name: &str) -> Result<Self, MemoryPoolError> {
        // SAFETY: the file is a pool file in /dev/shm that other processes map and change
        // concurrently; that is its purpose. This crate never forms Rust references to bytes
        // another party may write: everything goes through atomics, volatile or raw copies,
        // except payloads this process owns exclusively (see `Message::bytes_memview`).
        let mut map = unsafe { MmapOptions::new().len(len).map_mut(file) }
            .map_err(|e| io_err("mmap", name, e))?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| {
            io_err(
                "mmap",
                name,
                io::Error::other("mapping returned a null address"),
            )
        })?;
        Ok(Self {
            _map: map,
            base,
            len,
        })
    }

    /// Mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Base address of the mapping (page aligned).
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The adapter header at the start of the mapping.
    ///
    /// # Panics
    /// When the mapping is shorter than a header (callers check the file size first).
    pub(crate) fn header(&self) -> Header<'_> {
        assert!(self.len >= HEADER_LEN, "mapping shorter than a pool header");
        // SAFETY: the first HEADER_LEN bytes of the mapping (asserted long enough) stay mapped
        // while `self` lives, which the returned Header borrows; they are only accessed
        // through Region accessors (raw, volatile and atomic), never through references.
        let region = unsafe { Region::new(self.base(), HEADER_LEN) };
        Header {
            region: region.expect("mappings are page aligned"),
            _map: PhantomData,
        }
    }
}

/// The adapter header of a mapping: a core [`Region`] over its [`HEADER_LEN`] bytes (plain
/// fields through the region's accessors at the `O_*` offsets), plus safe access to its
/// atomic words.
#[derive(Clone, Copy)]
pub(crate) struct Header<'a> {
    region: Region,
    _map: PhantomData<&'a Mapped>,
}

impl Deref for Header<'_> {
    type Target = Region;

    fn deref(&self) -> &Region {
        &self.region
    }
}

impl<'a> Header<'a> {
    /// The atomic word at `off`: `state`, `recovery_lock`, or a word of the party table.
    ///
    /// # Panics
    /// When `off` is not the offset of one of those words.
    pub(crate) fn atomic(&self, off: usize) -> &'a AtomicU32 {
        assert!(
            off == O_STATE
                || off == O_RECOVERY_LOCK
                || ((O_PARTIES..HEADER_LEN).contains(&off) && off.is_multiple_of(4)),
            "header offset {off} is not an atomic word"
        );
        // SAFETY: `off` is an AtomicU32 field of `FileHeader` (asserted), 4-aligned inside the
        // page-aligned header. The file was zero-filled when its space was reserved, and a
        // zeroed word is a valid AtomicU32 (same layout as u32). The mapping outlives 'a.
        unsafe { self.region.atomic(off) }
    }

    /// Writes `name` (at most [`MAX_NAME_LEN`] bytes) into the name fields (creator only).
    pub(crate) fn write_name(&self, name: &str) {
        assert!(name.len() <= MAX_NAME_LEN);
        self.write_u32(O_NAME_LEN, name.len() as u32);
        let mut buf = [0u8; NAME_FIELD];
        buf[..name.len()].copy_from_slice(name.as_bytes());
        let copied = self.copy_in(O_NAME, &buf);
        debug_assert!(copied, "the name field lies inside the header");
    }

    /// The name field, if it holds a valid name.
    pub(crate) fn read_name(&self) -> Option<String> {
        let n = self.read_u32(O_NAME_LEN) as usize;
        if n == 0 || n > MAX_NAME_LEN {
            return None;
        }
        let mut buf = [0u8; NAME_FIELD];
        // One copy: what is validated below is what is returned.
        self.copy_out(O_NAME, &mut buf).then_some(())?;
        let s = core::str::from_utf8(&buf[..n]).ok()?;
        validate_name(s).ok()?;
        Some(s.to_owned())
    }
}
