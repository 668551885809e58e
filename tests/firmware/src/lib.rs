//! Harness of the dragon-channels firmware tests: result counting, output, exit status and
//! fault handling over semihosting, host file access, and the test batteries the binaries run.
//!
//! Every binary ends by printing `N passed, N failed` on its own line and exiting through
//! semihosting with success only when nothing failed and something passed. A panic or a
//! HardFault prints what happened, counts one more failure, prints the same summary line and
//! exits with failure, so a broken firmware never hangs the run (QEMU also runs under
//! `timeout 60`).
//!
//! Output goes to the host's stdout through semihosting `SYS_WRITE` (no critical section, so it
//! works from either core of the dual-core machine). With the `defmt-log` feature the same
//! macros log through defmt instead, and `defmt-print` decodes the stream on the host.
#![no_std]

use core::ffi::CStr;
use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU32, Ordering};

// Links cortex-m's critical-section implementation where one is configured (thumbv6m, v7em).
use cortex_m as _;
#[cfg(feature = "defmt-log")]
use defmt_semihosting as _;
use dragon_channels_core::Region;

pub mod battery;
pub mod host;
pub mod image;
pub mod wait;

pub use image::{read_alloc, write_alloc};

// `image.rs` is shared with the host program, which has no defmt: the impl lives here.
#[cfg(feature = "defmt-log")]
impl defmt::Format for image::ImageError {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Self::Pool(e) => defmt::write!(f, "pool: {}", e),
            Self::Channel(e) => defmt::write!(f, "channel: {}", e),
            Self::Mismatch => defmt::write!(f, "value differs from what the sender put in"),
        }
    }
}

#[doc(hidden)]
pub use cortex_m_semihosting as __semihosting;
#[cfg(feature = "defmt-log")]
#[doc(hidden)]
pub use defmt as __defmt;

/// Bytes of the battery's main region: the micro:bit has 16 KiB of RAM in all.
pub const BATTERY_REGION_LEN: usize = if cfg!(fw_machine = "microbit") {
    8 * 1024
} else {
    16 * 1024
};

/// Memory for a region: 64-byte aligned as [`Region::new`] requires. Use it as a `static mut`
/// and hand it to [`region_of`].
#[repr(C, align(64))]
pub struct Mem<const N: usize>(pub [u8; N]);

/// The first `len` bytes of `mem` as a region.
///
/// # Safety
/// `mem` points to a `static` that is only ever accessed through regions made from it (and
/// through the raw-pointer helpers of this crate), and `len <= N`.
pub unsafe fn region_of<const N: usize>(mem: *mut Mem<N>, len: usize) -> Region {
    assert!(len <= N, "region of {len} bytes does not fit {N}");
    // SAFETY: `mem` is a live static of N >= len bytes, 64-byte aligned by `Mem`'s repr, and
    // the caller promises it is only used through regions.
    match unsafe { Region::new(mem.cast::<u8>(), len) } {
        Ok(r) => r,
        Err(e) => panic!("Region::new: {}", e),
    }
}

// ----- results -----

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
/// Set once a panic or fault handler runs, so a fault inside one exits at once.
static DYING: AtomicU32 = AtomicU32::new(0);

// Only one core counts (load + store: thumbv6m has no read-modify-write atomics).
fn bump(counter: &AtomicU32) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Counts one passed check.
pub fn pass() {
    bump(&PASSED);
}

/// Counts one failed check (the caller has printed why).
pub fn fail() {
    bump(&FAILED);
}

/// Checks passed so far.
pub fn passed() -> u32 {
    PASSED.load(Ordering::Relaxed)
}

/// Checks failed so far.
pub fn failed() -> u32 {
    FAILED.load(Ordering::Relaxed)
}

/// Records a boolean check; prints where it failed.
pub fn record(ok: bool, file: &'static str, line: u32, what: &'static str) -> bool {
    if ok {
        pass();
    } else {
        say!("FAIL {}:{}: {}", file, line, what);
        fail();
    }
    ok
}

/// Prints the summary line and exits: success only if something passed and nothing failed.
pub fn finish() -> ! {
    let (p, f) = (passed(), failed());
    if p == 0 && f == 0 {
        say!("FAIL: no check ran");
    }
    say!("{} passed, {} failed", p, f);
    exit(f == 0 && p > 0)
}

/// Exits QEMU through semihosting with success or failure.
pub fn exit(success: bool) -> ! {
    use cortex_m_semihosting::debug;
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached when a debugger resumes the program.
    loop {
        cortex_m::asm::nop();
    }
}

/// Checks a condition: `check!(cond)` counts it and prints the failing expression.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        $crate::record($cond, file!(), line!(), stringify!($cond))
    };
}

/// Checks that a `Result` is `Ok`; yields `Some(value)` or prints the error and yields `None`.
#[macro_export]
macro_rules! check_ok {
    ($e:expr) => {
        match $e {
            Ok(v) => {
                $crate::pass();
                Some(v)
            }
            Err(e) => {
                $crate::say!("FAIL {}:{}: {} -> {}", file!(), line!(), stringify!($e), e);
                $crate::fail();
                None
            }
        }
    };
}

/// Checks that a `Result` is an `Err` matching a pattern.
#[macro_export]
macro_rules! check_err {
    ($e:expr, $p:pat $(if $guard:expr)?) => {
        match $e {
            Err($p) $(if $guard)? => $crate::pass(),
            #[allow(unreachable_patterns)]
            Err(e) => {
                $crate::say!(
                    "FAIL {}:{}: {} -> unexpected error {}",
                    file!(),
                    line!(),
                    stringify!($e),
                    e
                );
                $crate::fail();
            }
            Ok(_) => {
                $crate::say!(
                    "FAIL {}:{}: {} -> Ok, expected {}",
                    file!(),
                    line!(),
                    stringify!($e),
                    stringify!($p)
                );
                $crate::fail();
            }
        }
    };
}

/// Prints one line: semihosting stdout, or a defmt frame with the `defmt-log` feature.
#[cfg(not(feature = "defmt-log"))]
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

/// Prints one line: semihosting stdout, or a defmt frame with the `defmt-log` feature.
#[cfg(feature = "defmt-log")]
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::__defmt::println!($($arg)*)
    };
}

// ----- plain output -----

/// Host stdout as `fd + 1` (0: not opened yet).
static STDOUT: AtomicU32 = AtomicU32::new(0);

fn stdout_fd() -> Option<usize> {
    match STDOUT.load(Ordering::Relaxed) {
        0 => {
            // Two cores racing here each open their own handle on the console: harmless.
            let fd = host::open(c":tt", cortex_m_semihosting::nr::open::W_TRUNC).ok()?;
            STDOUT.store(fd as u32 + 1, Ordering::Relaxed);
            Some(fd)
        }
        v => Some(v as usize - 1),
    }
}

/// A line buffer, written to the host in one semihosting call per 128 bytes.
struct LineOut {
    buf: [u8; 128],
    len: usize,
}

impl LineOut {
    fn flush(&mut self) {
        if self.len > 0 {
            if let Some(fd) = stdout_fd() {
                let _ = host::write(fd, &self.buf[..self.len]);
            }
            self.len = 0;
        }
    }
}

impl fmt::Write for LineOut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints `args` and a newline on the host's stdout.
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut out = LineOut {
        buf: [0; 128],
        len: 0,
    };
    let _ = out.write_fmt(args);
    let _ = out.write_str("\n");
    out.flush();
}

/// Prints on the host's stdout without a newline or defmt (for the panic path).
fn print_raw(s: &CStr) {
    if let Some(fd) = stdout_fd() {
        let _ = host::write(fd, s.to_bytes());
    }
}

// ----- panics and faults -----

/// Announces a fatal event once; a second one (a fault while reporting) exits at once.
fn dying() {
    if DYING.load(Ordering::Relaxed) != 0 {
        print_raw(c"FATAL while reporting a fatal error\n");
        exit(false);
    }
    DYING.store(1, Ordering::Relaxed);
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    dying();
    #[cfg(not(feature = "defmt-log"))]
    say!("PANIC: {}", info);
    #[cfg(feature = "defmt-log")]
    say!("PANIC: {}", defmt::Display2Format(info));
    fail();
    finish()
}

#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    dying();
    say!(
        "HARDFAULT: pc={:#x} lr={:#x} xpsr={:#x}",
        frame.pc(),
        frame.lr(),
        frame.xpsr()
    );
    fail();
    finish()
}
