//! Negative control of the harness: one check passes, one fails, then a bus fault. The run
//! script expects the FAIL and HARDFAULT lines, `1 passed, 2 failed` and exit status 1, which
//! proves that failures and faults reach the summary line and the exit status.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use dragon_channels_firmware_tests::{self as fw, check};

#[entry]
fn main() -> ! {
    let two = core::hint::black_box(2);
    check!(two == 2);
    check!(two == 3);
    // Nothing is mapped at the top of the address space on mps2: the read faults (the
    // micro:bit does not fault there, so the script runs this on mps2-an386 only).
    // SAFETY: a read of an unmapped address; the point is the fault it raises.
    let _ = unsafe { core::ptr::read_volatile(0xFFFF_FFF0 as *const u32) };
    fw::say!("not reached: the read did not fault");
    fw::finish()
}
