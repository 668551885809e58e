//! One layout across word sizes, firmware to host: builds a pool, a channel and messages in a
//! region and writes the region image and descriptors to host files (semihosting) for
//! `host-check` to attach to on 64-bit x86.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use dragon_channels_firmware_tests::image::{self, IMAGE_LEN, Side};
use dragon_channels_firmware_tests::{self as fw, Mem, check_ok, host};

static mut IMAGE: Mem<IMAGE_LEN> = Mem([0; IMAGE_LEN]);

#[entry]
fn main() -> ! {
    // SAFETY: the static is used only through this region.
    let region = unsafe { fw::region_of(addr_of_mut!(IMAGE), IMAGE_LEN) };
    if let Some(desc) = check_ok!(image::build(region, Side::Firmware)) {
        // Nothing operates on the region any more: its bytes are the image.
        check_ok!(host::write_region(c"fw2host.img", &region));
        check_ok!(host::write_file(c"fw2host.desc", &desc));
        fw::say!("image_out: wrote {} + {} bytes", region.len(), desc.len());
    }
    fw::finish()
}
