//! Negative control of the harness: one check passes, then a panic. The run script expects the
//! PANIC line, `1 passed, 1 failed` and exit status 1.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use dragon_channels_firmware_tests::{self as fw, check};

#[entry]
fn main() -> ! {
    check!(u32::MAX.checked_add(0).is_some());
    let limit = core::hint::black_box(3usize);
    let v = [1u8, 2, 3];
    let _ = core::hint::black_box(v[limit]);
    fw::say!("not reached: no panic");
    fw::finish()
}
