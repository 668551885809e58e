//! The caller-supplied memory region and the only raw accesses made to it.
//!
//! A [`Region`] is a byte range handed in by the caller: a `static` array in firmware, an
//! mmap of a `/dev/shm` file on Linux, or SRAM shared by two cores. Everything stored in it is
//! an offset from its start, never a pointer, so every party may map it at a different address.
//!
//! Accesses go through raw pointers only (no `&`/`&mut` to bytes another party may write at
//! the same time). Plain metadata that the pool lock protects is read and written with volatile
//! accesses, so that a value that was validated is the value that is used, even when a buggy or
//! hostile party writes the region concurrently. Every accessor checks its bounds with a real
//! check where the offset came from the region, and with a `debug_assert!` where it was derived
//! from validated geometry.

use core::mem::MaybeUninit;
use core::ptr::NonNull;

use crate::sync::AtomicU32;

/// Alignment the region start must have (one cache line).
pub const REGION_ALIGN: usize = 64;

/// A shared memory region: a base address and a length.
///
/// `Region` is `Copy`; it does not own the memory. Whoever created it through
/// [`Region::new`] promised that the memory stays mapped and is only accessed through this
/// crate while any copy is in use.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is an address range; all accesses through it are raw-pointer accesses that
// are atomic or protected by an in-region lock, so sharing it between threads is sound.
unsafe impl Send for Region {}
// SAFETY: see `Send`; `&Region` gives no more access than `Region`.
unsafe impl Sync for Region {}

impl Region {
    /// Wraps `len` bytes at `base`.
    ///
    /// # Errors
    /// [`RegionError::Misaligned`] when `base` is not aligned to [`REGION_ALIGN`].
    ///
    /// # Safety
    /// - `base..base + len` is valid for reads and writes for as long as this `Region` or any
    ///   copy of it (or any handle built on it) is used;
    /// - the bytes are only accessed through this crate's handles (other processes or cores
    ///   running this crate are fine: that is the point), never through Rust references.
    pub unsafe fn new(base: *mut u8, len: usize) -> Result<Self, RegionError> {
        let base = NonNull::new(base).ok_or(RegionError::Misaligned)?;
        if !(base.as_ptr() as usize).is_multiple_of(REGION_ALIGN) {
            return Err(RegionError::Misaligned);
        }
        if isize::try_from(len).is_err() {
            return Err(RegionError::TooLarge);
        }
        Ok(Self { base, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Base address (for the adapter's diagnostics and for lending exclusively owned payload).
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Whether `off..off + len` lies inside the region (without overflow for any inputs).
    ///
    /// # Examples
    /// ```
    /// # use dragon_channels_core::Region;
    /// # #[repr(C, align(64))] struct Mem([u8; 64]);
    /// # let mut mem = Mem([0; 64]);
    /// // SAFETY: `mem` outlives `r` and is only accessed through it.
    /// let r = unsafe { Region::new(mem.0.as_mut_ptr(), 64) }?;
    /// assert!(r.contains(60, 4));
    /// assert!(!r.contains(61, 4));
    /// assert!(!r.contains(usize::MAX, 2));
    /// # Ok::<(), dragon_channels_core::RegionError>(())
    /// ```
    #[inline]
    pub fn contains(&self, off: usize, len: usize) -> bool {
        off <= self.len && len <= self.len - off
    }

    /// Raw pointer to `off`.
    #[inline]
    pub(crate) fn ptr(&self, off: usize) -> *mut u8 {
        debug_assert!(
            off <= self.len,
            "offset {off} outside region of {}",
            self.len
        );
        // SAFETY: `off <= len` (checked by every caller through geometry validated at attach),
        // so the result stays inside or one past the mapped range.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// Volatile read of a plain `u32` at `off`, in native byte order (exactly one access, so
    /// a value that was validated is the value that is used).
    ///
    /// # Panics
    /// When `off..off + 4` is not inside the region or `off` is not 4-aligned (a caller bug,
    /// like an out-of-range slice index: callers pass offsets of fixed layouts or of validated
    /// geometry, never raw offsets read from shared memory).
    #[inline]
    pub fn read_u32(&self, off: usize) -> u32 {
        self.check_word(off, 4);
        self.read_u32_validated(off)
    }

    /// Volatile write of a plain `u32` at `off`, in native byte order. Plain words are for
    /// data that a lock or a claim protects, or that the creator writes before it publishes.
    ///
    /// # Panics
    /// As [`Region::read_u32`].
    #[inline]
    pub fn write_u32(&self, off: usize, v: u32) {
        self.check_word(off, 4);
        self.write_u32_validated(off, v);
    }

    /// The bounds every public word accessor checks in every build.
    #[inline]
    fn check_word(&self, off: usize, len: usize) {
        assert!(
            self.contains(off, len) && off.is_multiple_of(4),
            "{len}-byte word at offset {off} is outside the {}-byte region or not 4-aligned",
            self.len
        );
    }

    /// [`Region::read_u32`] for an offset derived from validated geometry on a hot path:
    /// checked by a `debug_assert!` only.
    #[inline]
    pub(crate) fn read_u32_validated(&self, off: usize) -> u32 {
        debug_assert!(self.contains(off, 4) && off.is_multiple_of(4));
        // SAFETY: in bounds and aligned (checked by the public caller, or derived by the
        // crate from validated geometry); volatile so the value is read exactly once.
        unsafe { self.ptr(off).cast::<u32>().read_volatile() }
    }

    /// [`Region::write_u32`] for an offset derived from validated geometry on a hot path.
    #[inline]
    pub(crate) fn write_u32_validated(&self, off: usize, v: u32) {
        debug_assert!(self.contains(off, 4) && off.is_multiple_of(4));
        // SAFETY: as in `read_u32_validated`; the caller holds the lock or claim that
        // protects this word.
        unsafe { self.ptr(off).cast::<u32>().write_volatile(v) }
    }

    /// Volatile read of a byte at `off`.
    #[inline]
    pub(crate) fn read_u8(&self, off: usize) -> u8 {
        debug_assert!(off < self.len);
        // SAFETY: in bounds (asserted; derived from validated geometry).
        unsafe { self.ptr(off).read_volatile() }
    }

    /// Volatile write of a byte at `off`.
    #[inline]
    pub(crate) fn write_u8(&self, off: usize, v: u8) {
        debug_assert!(off < self.len);
        // SAFETY: in bounds; the caller holds the lock that protects this byte.
        unsafe { self.ptr(off).write_volatile(v) }
    }

    /// Reads a plain `u64` stored as two `u32` halves, low half first (a `[u32; 2]` field), so
    /// the layout needs no 64-bit alignment on any target. Two accesses: not atomic.
    ///
    /// # Panics
    /// When `off..off + 8` is not inside the region or `off` is not 4-aligned.
    #[inline]
    pub fn read_u64(&self, off: usize) -> u64 {
        self.check_word(off, 8);
        u64::from(self.read_u32_validated(off))
            | (u64::from(self.read_u32_validated(off + 4)) << 32)
    }

    /// Volatile read of a plain little-endian `u64` at an 8-aligned `off` (the same bytes as
    /// [`Region::read_u64`], in one access where the target has one).
    #[inline]
    pub(crate) fn read_u64_aligned(&self, off: usize) -> u64 {
        debug_assert!(self.contains(off, 8) && off.is_multiple_of(8));
        // SAFETY: in bounds and 8-aligned (asserted; the region base is 64-aligned and
        // callers pass offsets of 8-aligned fields of validated structures).
        u64::from_le(unsafe { self.ptr(off).cast::<u64>().read_volatile() })
    }

    /// Volatile write of a little-endian `u64` at an 8-aligned `off` (see
    /// [`Region::read_u64_aligned`]).
    #[inline]
    pub(crate) fn write_u64_aligned(&self, off: usize, v: u64) {
        debug_assert!(self.contains(off, 8) && off.is_multiple_of(8));
        // SAFETY: as in `read_u64_aligned`; the caller holds the claim that protects it.
        unsafe { self.ptr(off).cast::<u64>().write_volatile(v.to_le()) }
    }

    /// Writes a `u64` as two `u32` halves, low half first (see [`Region::read_u64`]).
    ///
    /// # Panics
    /// As [`Region::read_u64`].
    #[inline]
    pub fn write_u64(&self, off: usize, v: u64) {
        self.check_word(off, 8);
        self.write_u32_validated(off, v as u32);
        self.write_u32_validated(off + 4, (v >> 32) as u32);
    }

    /// The 32-bit atomic at `off` (4-aligned, inside the region).
    ///
    /// # Safety
    /// An `AtomicU32` was constructed at `off` (by the core's `init_atomic`; outside loom
    /// builds, any initialized 4-aligned word is one, zeroed memory included), `off..off + 4`
    /// lies inside the region, and the region outlives `'a`.
    ///
    /// # Panics
    /// In debug builds, when `off` is out of range or misaligned.
    #[inline]
    pub unsafe fn atomic<'a>(&self, off: usize) -> &'a AtomicU32 {
        debug_assert!(
            self.contains(off, core::mem::size_of::<AtomicU32>())
                && off.is_multiple_of(core::mem::align_of::<AtomicU32>())
        );
        // SAFETY: the caller guarantees an atomic lives at `off` and that the mapping outlives
        // `'a`; atomics may be shared between threads and processes.
        unsafe { &*self.ptr(off).cast::<AtomicU32>() }
    }

    /// Constructs an atomic with value `v` in place at `off` (loom atomics are objects, not
    /// bytes), for the creator before it publishes the region.
    pub(crate) fn init_atomic(&self, off: usize, v: u32) {
        debug_assert!(
            self.contains(off, core::mem::size_of::<AtomicU32>())
                && off.is_multiple_of(core::mem::align_of::<AtomicU32>())
        );
        // SAFETY: in bounds and aligned; called by the creator before the region is published.
        unsafe { self.ptr(off).cast::<AtomicU32>().write(AtomicU32::new(v)) }
    }

    /// Hint: bring the cache line holding `off` into this CPU's cache for writing
    /// (x86-64 `PREFETCHW`). No effect on other targets; not built
    /// under Miri or loom, whose builds leave the callers' hints out.
    #[cfg(not(any(loom, miri)))]
    #[inline(always)]
    pub(crate) fn prefetch_write(&self, off: usize) {
        debug_assert!(off < self.len);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: PREFETCHW is a hint: it never faults, and changes no register, flag or
            // memory contents (callers pass offsets inside the region anyway).
            unsafe {
                core::arch::asm!(
                    "prefetchw [{0}]",
                    in(reg) self.ptr(off),
                    options(nostack, preserves_flags, readonly)
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// Copies `src` into the region at `off` (a plain, non-volatile copy).
    ///
    /// Returns `false` (and copies nothing) when the range is outside the region: the bounds
    /// are checked in every build, so `off` may come from anywhere.
    #[inline]
    pub fn copy_in(&self, off: usize, src: &[u8]) -> bool {
        if !self.contains(off, src.len()) {
            return false;
        }
        // SAFETY: the destination range is inside the region (checked); `src` is a Rust slice
        // that cannot overlap bytes we only access through raw pointers.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr(off), src.len()) };
        true
    }

    /// Copies `src` into the region at `off`, a range derived from validated geometry (a
    /// slot's inline bytes): checked by a `debug_assert!` only.
    #[inline]
    pub(crate) fn copy_in_validated(&self, off: usize, src: &[u8]) {
        debug_assert!(self.contains(off, src.len()));
        // SAFETY: the caller derived the range from validated geometry, so it is inside the
        // region (asserted in debug builds); `src` cannot overlap region bytes.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr(off), src.len()) };
    }

    /// Copies region bytes at `off` into `dst` (which need not be initialized), a range
    /// derived from validated geometry: checked by a `debug_assert!` only. Every byte of `dst`
    /// is initialized afterwards.
    #[inline]
    pub(crate) fn copy_out_validated(&self, off: usize, dst: &mut [MaybeUninit<u8>]) {
        debug_assert!(self.contains(off, dst.len()));
        // SAFETY: as in `copy_in_validated`; `dst` is exclusive, and writing bytes into
        // `MaybeUninit` memory is always allowed.
        unsafe {
            core::ptr::copy_nonoverlapping(self.ptr(off), dst.as_mut_ptr().cast(), dst.len());
        }
    }

    /// [`Region::copy_out`] into memory that need not be initialized; every byte of `dst` is
    /// initialized when it returns `true`.
    #[inline]
    pub(crate) fn copy_out_uninit(&self, off: usize, dst: &mut [MaybeUninit<u8>]) -> bool {
        if !self.contains(off, dst.len()) {
            return false;
        }
        // SAFETY: the source range is inside the region (checked); `dst` is exclusive, and
        // writing bytes into `MaybeUninit` memory is always allowed.
        unsafe {
            core::ptr::copy_nonoverlapping(self.ptr(off), dst.as_mut_ptr().cast(), dst.len());
        }
        true
    }

    /// Copies region bytes at `off` into `dst` (a plain, non-volatile copy: validate the
    /// copy, not the region).
    ///
    /// Returns `false` (and copies nothing) when the range is outside the region: the bounds
    /// are checked in every build, so `off` may come from anywhere.
    #[inline]
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool {
        if !self.contains(off, dst.len()) {
            return false;
        }
        // SAFETY: the source range is inside the region (checked) and `dst` is exclusive.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr(off), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `len` bytes inside the region from `src` to `dst` (ranges may not overlap).
    pub(crate) fn copy_within(&self, src: usize, dst: usize, len: usize) -> bool {
        if !self.contains(src, len) || !self.contains(dst, len) {
            return false;
        }
        if src < dst + len && dst < src + len {
            return false;
        }
        // SAFETY: both ranges are inside the region and disjoint (checked above).
        unsafe { core::ptr::copy_nonoverlapping(self.ptr(src), self.ptr(dst), len) };
        true
    }

    /// Copies `len` bytes from `src_region` at `src` into this region at `dst` (the regions
    /// may be the same mapping; ranges must not overlap). Silently does nothing out of range.
    pub(crate) fn copy_within_from(&self, src_region: Region, src: usize, dst: usize, len: usize) {
        if src_region.base() == self.base() {
            self.copy_within(src, dst, len);
            return;
        }
        if !src_region.contains(src, len) || !self.contains(dst, len) {
            return;
        }
        // SAFETY: both ranges are inside their regions (checked) and the regions are distinct
        // mappings, so they do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(src_region.ptr(src), self.ptr(dst), len) };
    }
}

/// Why a memory range cannot be used as a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RegionError {
    /// The base is null or not aligned to [`REGION_ALIGN`] bytes.
    Misaligned,
    /// The length does not fit in `isize`.
    TooLarge,
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Misaligned => write!(f, "region base is null or not {REGION_ALIGN}-byte aligned"),
            Self::TooLarge => f.write_str("region length does not fit in isize"),
        }
    }
}

impl core::error::Error for RegionError {}
