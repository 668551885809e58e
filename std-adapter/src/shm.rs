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
//! 16   pool uid          u64
//! 24   nonce             u64    differs for every pool ever created (stale-descriptor check)
//! 32   region length     u64
//! 40   region offset     u64    = 16 KiB
//! 48   recovery lock     atomic owner id of the party running recovery, 0 when free
//! 64   name              32 B
//! 256  party table       16 B per entry (see `party`)
//! ```
//! The header is the adapter's own; the region after it is the core's and is only touched
//! through `dragon_channels_core`. Fixed fields are written by the creator before it publishes
//! `state = READY` (Release); attachers read `state` (Acquire) first and validate every field,
//! because another process may have written anything there.
//!
//! The file is created with `O_CREAT | O_EXCL` and mode 0600, and its space is reserved with
//! `posix_fallocate` before it is mapped, so a full tmpfs gives an error here instead of a
//! `SIGBUS` on first touch.

use core::marker::PhantomData;
use core::ptr::NonNull;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

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

pub(crate) const O_MAGIC: usize = 0;
pub(crate) const O_VERSION: usize = 4;
pub(crate) const O_STATE: usize = 8;
pub(crate) const O_NAME_LEN: usize = 12;
pub(crate) const O_UID: usize = 16;
pub(crate) const O_NONCE: usize = 24;
pub(crate) const O_REGION_LEN: usize = 32;
pub(crate) const O_REGION_OFF: usize = 40;
pub(crate) const O_RECOVERY_LOCK: usize = 48;
pub(crate) const O_NAME: usize = 64;
pub(crate) const O_PARTIES: usize = 256;
/// Bytes of one party-table entry.
pub(crate) const PARTY_ENTRY: usize = 16;
/// Entries in a pool's party table: the most processes that can be attached at once.
pub const MAX_PARTIES: usize = (HEADER_LEN - O_PARTIES) / PARTY_ENTRY;

const _: () = assert!(O_NAME + MAX_NAME_LEN < O_PARTIES);
const _: () = assert!(HEADER_LEN.is_multiple_of(dragon_channels_core::region::REGION_ALIGN));

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

/// Creates the pool file exclusively (mode 0600) and reserves `len` bytes of tmpfs for it.
/// On failure nothing is left behind.
pub(crate) fn create_file(name: &str, len: usize) -> Result<File, MemoryPoolError> {
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
    let reserved = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len as u64);
    let result = match reserved {
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

/// Reads the nonce and state of a pool file without mapping it (both 0 when the file is too
/// short to hold a header yet).
///
/// # Errors
/// [`MemoryPoolError::NotAPool`] when the file starts with something other than a pool
/// header (or zeros, which a creator that is still writing leaves).
pub(crate) fn peek_identity(file: &File, name: &str) -> Result<(u64, u32), MemoryPoolError> {
    let mut b = [0u8; 32];
    let mut got = 0;
    while got < b.len() {
        match file.read_at(&mut b[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("reading the header", name, e)),
        }
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let magic = u32_at(O_MAGIC);
    if got >= 4 && magic != 0 && magic != FILE_MAGIC {
        return Err(MemoryPoolError::NotAPool {
            name: name.to_owned(),
            why: "bad magic",
        });
    }
    if got < b.len() {
        return Ok((0, 0));
    }
    let nonce = u64::from(u32_at(O_NONCE)) | u64::from(u32_at(O_NONCE + 4)) << 32;
    Ok((nonce, u32_at(O_STATE)))
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
        Header {
            base: self.base,
            _map: PhantomData,
        }
    }
}

/// Accessor for the adapter header of a mapping that is at least [`HEADER_LEN`] bytes long.
#[derive(Clone, Copy)]
pub(crate) struct Header<'a> {
    base: NonNull<u8>,
    _map: PhantomData<&'a Mapped>,
}

impl<'a> Header<'a> {
    /// The atomic word at `off` (4-aligned, inside the header).
    pub(crate) fn atomic(&self, off: usize) -> &'a AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= HEADER_LEN,
            "header offset {off}"
        );
        // SAFETY: in bounds and aligned (asserted; the mapping is page aligned and at least
        // HEADER_LEN long); the mapping outlives 'a. The file was zero-filled by fallocate,
        // and a zeroed u32 is a valid AtomicU32, which has the same layout as u32.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Volatile read of a plain `u32` at `off`.
    pub(crate) fn read_u32(&self, off: usize) -> u32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= HEADER_LEN,
            "header offset {off}"
        );
        // SAFETY: in bounds and aligned (asserted); volatile because other processes may
        // write the header at any time.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().read_volatile() }
    }

    /// Volatile write of a plain `u32` at `off` (creator only, before publishing).
    pub(crate) fn write_u32(&self, off: usize, v: u32) {
        assert!(
            off.is_multiple_of(4) && off + 4 <= HEADER_LEN,
            "header offset {off}"
        );
        // SAFETY: in bounds and aligned (asserted); only the creator writes plain fields,
        // before it publishes the pool.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().write_volatile(v) }
    }

    /// Reads a `u64` stored as two `u32` halves, low first.
    pub(crate) fn read_u64(&self, off: usize) -> u64 {
        u64::from(self.read_u32(off)) | (u64::from(self.read_u32(off + 4)) << 32)
    }

    /// Writes a `u64` as two `u32` halves, low first.
    pub(crate) fn write_u64(&self, off: usize, v: u64) {
        self.write_u32(off, v as u32);
        self.write_u32(off + 4, (v >> 32) as u32);
    }

    /// Copies `name` into the name field (creator only).
    pub(crate) fn write_name(&self, name: &str) {
        assert!(name.len() <= MAX_NAME_LEN);
        self.write_u32(O_NAME_LEN, name.len() as u32);
        let mut buf = [0u8; 32];
        buf[..name.len()].copy_from_slice(name.as_bytes());
        for (i, chunk) in buf.chunks_exact(4).enumerate() {
            let w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            self.write_u32(O_NAME + 4 * i, w);
        }
    }

    /// The name field, if it holds a valid name.
    pub(crate) fn read_name(&self) -> Option<String> {
        let n = self.read_u32(O_NAME_LEN) as usize;
        if n == 0 || n > MAX_NAME_LEN {
            return None;
        }
        let mut buf = [0u8; 32];
        for i in 0..8 {
            buf[4 * i..4 * i + 4].copy_from_slice(&self.read_u32(O_NAME + 4 * i).to_le_bytes());
        }
        let s = core::str::from_utf8(&buf[..n]).ok()?;
        validate_name(s).ok()?;
        Some(s.to_owned())
    }
}
