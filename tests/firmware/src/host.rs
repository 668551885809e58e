//! Host file access through semihosting (`SYS_OPEN`, `SYS_WRITE`, `SYS_READ`, `SYS_FLEN`,
//! `SYS_CLOSE`). Relative names resolve against QEMU's working directory.

use core::ffi::CStr;

use cortex_m_semihosting::{nr, syscall};
use dragon_channels_core::Region;

/// A semihosting call failed (`what` names the call).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "defmt-log", derive(defmt::Format))]
pub struct HostError(pub &'static str);

impl core::fmt::Display for HostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "semihosting {} failed", self.0)
    }
}

/// Opens `name` with an `nr::open` mode; returns the host handle.
///
/// # Errors
/// When the host refuses (no such file, no permission).
pub fn open(name: &CStr, mode: usize) -> Result<usize, HostError> {
    let len = name.to_bytes().len();
    // SAFETY: SYS_OPEN reads `len` bytes of the NUL-terminated name, which lives for the call.
    match unsafe { syscall!(OPEN, name.as_ptr(), mode, len) } as isize {
        -1 => Err(HostError("open")),
        fd => Ok(fd as usize),
    }
}

/// Closes a handle.
pub fn close(fd: usize) {
    // SAFETY: SYS_CLOSE takes a handle value only.
    let _ = unsafe { syscall!(CLOSE, fd) };
}

/// Writes `len` bytes starting at `ptr`.
///
/// # Safety
/// `ptr..ptr + len` is readable for the duration of the call and nobody writes it meanwhile.
///
/// # Errors
/// When the host wrote fewer bytes.
pub unsafe fn write_raw(fd: usize, ptr: *const u8, len: usize) -> Result<(), HostError> {
    // SAFETY: the caller guarantees the source range; SYS_WRITE returns the bytes NOT written.
    match unsafe { syscall!(WRITE, fd, ptr, len) } {
        0 => Ok(()),
        _ => Err(HostError("write")),
    }
}

/// Writes `bytes`.
///
/// # Errors
/// When the host wrote fewer bytes.
pub fn write(fd: usize, bytes: &[u8]) -> Result<(), HostError> {
    // SAFETY: a slice is readable for its length and borrowed for the call.
    unsafe { write_raw(fd, bytes.as_ptr(), bytes.len()) }
}

/// Reads exactly `len` bytes into `ptr`.
///
/// # Safety
/// `ptr..ptr + len` is writable and nobody else reads or writes it during the call.
///
/// # Errors
/// When the host returned fewer bytes (short file) or failed.
pub unsafe fn read_raw(fd: usize, ptr: *mut u8, len: usize) -> Result<(), HostError> {
    // SAFETY: the caller guarantees the destination range; SYS_READ returns the bytes NOT read.
    match unsafe { syscall!(READ, fd, ptr, len) } {
        0 => Ok(()),
        _ => Err(HostError("read")),
    }
}

/// Length of the open file.
///
/// # Errors
/// When the host cannot tell.
pub fn flen(fd: usize) -> Result<usize, HostError> {
    // SAFETY: SYS_FLEN takes a handle value only.
    match unsafe { syscall!(FLEN, fd) } as isize {
        -1 => Err(HostError("flen")),
        n => Ok(n as usize),
    }
}

/// Writes `bytes` to the host file `name` (created or truncated).
///
/// # Errors
/// When the file cannot be opened or written.
pub fn write_file(name: &CStr, bytes: &[u8]) -> Result<(), HostError> {
    let fd = open(name, nr::open::W_TRUNC_BINARY)?;
    let r = write(fd, bytes);
    close(fd);
    r
}

/// Writes the whole region to the host file `name` (created or truncated).
///
/// Call it only while no party operates on the region: the bytes are read as they are.
///
/// # Errors
/// When the file cannot be opened or written.
pub fn write_region(name: &CStr, region: &Region) -> Result<(), HostError> {
    let fd = open(name, nr::open::W_TRUNC_BINARY)?;
    // SAFETY: the region's bytes are mapped for its whole length (Region's contract) and the
    // caller runs no operation on it meanwhile, so nothing writes them during the call.
    let r = unsafe { write_raw(fd, region.base(), region.len()) };
    close(fd);
    r
}

/// Reads the host file `name` into `dst` (whole file); returns its length.
///
/// # Errors
/// When the file cannot be read or is longer than `dst`.
pub fn read_file(name: &CStr, dst: &mut [u8]) -> Result<usize, HostError> {
    let fd = open(name, nr::open::R_BINARY)?;
    let r = flen(fd).and_then(|n| {
        if n > dst.len() {
            return Err(HostError("read (file larger than the buffer)"));
        }
        // SAFETY: `dst` is an exclusive slice of at least `n` bytes.
        unsafe { read_raw(fd, dst.as_mut_ptr(), n) }.map(|()| n)
    });
    close(fd);
    r
}

/// Reads the host file `name` into the memory at `dst` (at most `cap` bytes); returns its
/// length.
///
/// # Safety
/// `dst..dst + cap` is writable and not accessed by anyone else during the call.
///
/// # Errors
/// When the file cannot be read or is longer than `cap`.
pub unsafe fn read_file_raw(name: &CStr, dst: *mut u8, cap: usize) -> Result<usize, HostError> {
    let fd = open(name, nr::open::R_BINARY)?;
    let r = flen(fd).and_then(|n| {
        if n > cap {
            return Err(HostError("read (file larger than the buffer)"));
        }
        // SAFETY: `n <= cap` and the caller guarantees `dst..dst + cap`.
        unsafe { read_raw(fd, dst, n) }.map(|()| n)
    });
    close(fd);
    r
}
