//! The battery again, logging through defmt over semihosting (decode with `defmt-print`), plus
//! the core's errors and descriptors logged with their derived `defmt::Format`.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use dragon_channels_core::{
    AllocKind, Channel, ChannelAttrs, ChannelError, Pool, PoolConfig, PoolError,
};
use dragon_channels_firmware_tests::{
    self as fw, BATTERY_REGION_LEN, Mem, battery, check, check_ok,
};

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
    defmt::println!("defmt battery: region of {=usize} bytes", main.len());
    battery::run(main, other);
    log_core_types(main);
    fw::finish()
}

/// Logs a value of each derived type; the run script looks for the decoded text.
fn log_core_types(main: dragon_channels_core::Region) {
    let cfg = PoolConfig {
        uid: 0x00DE_F417,
        ..PoolConfig::default()
    };
    let Some(pool) = check_ok!(Pool::init(main, &cfg, 1)) else {
        return;
    };
    defmt::println!("config: {}", cfg);
    let attrs = ChannelAttrs {
        capacity: 3,
        block_size: 40,
    };
    defmt::println!("attrs: {}", attrs);
    let Some(ch) = check_ok!(Channel::create(&pool, 77, &attrs)) else {
        return;
    };
    let dup = Channel::create(&pool, 77, &attrs);
    check!(dup.is_err());
    if let Err(e) = dup {
        defmt::println!("duplicate uid: {}", e);
    }
    check_ok!(ch.try_send(b"defmt", 11, 22));
    let mut buf = [0u8; 8];
    if let Some(got) = check_ok!(ch.try_recv_into(&mut buf)) {
        defmt::println!("received: {}", got);
    }
    defmt::println!("empty: {}", ch.try_recv_into(&mut buf));
    if let Some(a) = check_ok!(pool.alloc(10, AllocKind::Data)) {
        defmt::println!("alloc: {}", a);
        check_ok!(pool.free(a));
        let again: Result<(), PoolError> = pool.free(a);
        defmt::println!("double free: {}", again);
    }
    if let Some(stats) = check_ok!(pool.stats()) {
        defmt::println!("stats: {}", stats);
    }
    check_ok!(ch.destroy());
    let gone: Result<(), ChannelError> = ch.try_send(b"x", 0, 0);
    defmt::println!("after destroy: {}", gone);
}
