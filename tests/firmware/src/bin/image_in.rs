//! One layout across word sizes, host to firmware: loads the region image and descriptors that
//! `host-check make` wrote on 64-bit x86 (semihosting file reads), attaches pool and channel
//! and receives and checks every message.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use dragon_channels_firmware_tests::image::{self, DESC_FILE_LEN, IMAGE_LEN, Side};
use dragon_channels_firmware_tests::{self as fw, Mem, check_ok, host};

static mut IMAGE: Mem<IMAGE_LEN> = Mem([0; IMAGE_LEN]);

/// Owner id of the firmware receiver.
const OWNER: u32 = 33;

#[entry]
fn main() -> ! {
    let buf = addr_of_mut!(IMAGE).cast::<u8>();
    // SAFETY: the static is not used by anything else yet; the read stays within IMAGE_LEN.
    let loaded = unsafe { host::read_file_raw(c"host2fw.img", buf, IMAGE_LEN) };
    let mut desc = [0u8; DESC_FILE_LEN + 1];
    let desc_len = check_ok!(host::read_file(c"host2fw.desc", &mut desc));
    if let (Some(len), Some(desc_len)) = (check_ok!(loaded), desc_len) {
        fw::say!("image_in: loaded {} + {} bytes", len, desc_len);
        // The region is exactly as long as the file: the pool checks its recorded size.
        // SAFETY: the static is used only through this region from here on.
        let region = unsafe { fw::region_of(addr_of_mut!(IMAGE), len) };
        image::receive(region, &desc[..desc_len], Side::Host, OWNER, &mut report);
    }
    fw::finish()
}

fn report(what: &'static str, outcome: image::Outcome) {
    match outcome {
        Ok(()) => fw::pass(),
        Err(e) => {
            fw::say!("FAIL image_in: {}: {}", what, e);
            fw::fail();
        }
    }
}
