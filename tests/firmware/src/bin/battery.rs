//! The pool and channel battery (`battery.rs` of the lib) on one core, printed over
//! semihosting. Runs on thumbv7em (mps2-an386) and thumbv6m (micro:bit).
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use dragon_channels_firmware_tests::{self as fw, BATTERY_REGION_LEN, Mem, battery};

static mut MAIN: Mem<BATTERY_REGION_LEN> = Mem([0; BATTERY_REGION_LEN]);
static mut OTHER: Mem<2048> = Mem([0; 2048]);

#[entry]
fn main() -> ! {
    // SAFETY: each static is used only through the regions made here.
    let (main, other) = unsafe {
        (
            fw::region_of(addr_of_mut!(MAIN), BATTERY_REGION_LEN),
            fw::region_of(addr_of_mut!(OTHER), 2048),
        )
    };
    fw::say!("battery: region of {} bytes", main.len());
    battery::run(main, other);
    fw::finish()
}
