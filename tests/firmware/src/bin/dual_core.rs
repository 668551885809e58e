//! Two cores, one region: on QEMU's mps2-an521 (SSE-200, two Cortex-M33), core 0 creates a
//! pool and a channel in shared SRAM and sends; core 1 attaches through the serialized
//! descriptor and receives. Every message carries its sequence number and a checksum; every
//! seventh is larger than the block size, so both cores also contend for the pool lock
//! (side allocations are allocated by core 0 and freed by core 1).
//!
//! Core 1 is held in reset by the SSE-200's CPUWAIT register until core 0 has set INITSVTOR1
//! to a vector table of its own (its stack and `cpu1_main`) and clears CPUWAIT. Core 1 never
//! runs cortex-m-rt's reset code, so it does not re-initialize `.data`/`.bss` under core 0.
//! Only core 0 reports; core 1 publishes its counts in shared atomics.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_rt::entry;
use dragon_channels_core::{Channel, ChannelAttrs, Pool, PoolConfig, Region, checksum};
use dragon_channels_firmware_tests::{self as fw, Mem, check, check_ok};
use spin::relax::Spin;

/// Messages core 0 sends to core 1.
const MESSAGES: u32 = 2000;
/// Spins either core waits for the other before it reports a hang.
const PATIENCE: u32 = 50_000_000;
const REGION_LEN: usize = 16 * 1024;
const ATTRS: ChannelAttrs = ChannelAttrs {
    capacity: 4,
    block_size: 32,
};

/// SSE-200 system control registers (secure only).
const SYSCTL_INITSVTOR1: *mut u32 = 0x5002_1114 as *mut u32;
const SYSCTL_CPUWAIT: *mut u32 = 0x5002_1118 as *mut u32;
/// SSE-200 CPU_IDENTITY.CPUID: which core is reading (0 or 1).
const CPU_IDENTITY: *const u32 = 0x4001_F000 as *const u32;

static mut REGION: Mem<REGION_LEN> = Mem([0; REGION_LEN]);
/// The channel descriptor core 0 hands to core 1 (valid once `READY` is set).
static mut DESC: Mem<64> = Mem([0; 64]);
/// SYNC: core 0 publishes `DESC` and the region (Release) <-> core 1 reads them (Acquire).
static READY: AtomicU32 = AtomicU32::new(0);
/// Messages core 1 received intact.
static RECEIVED: AtomicU32 = AtomicU32::new(0);
/// Messages core 1 found wrong (order, length or checksum).
static BAD: AtomicU32 = AtomicU32::new(0);
/// What stopped core 1: 0 running, 1 done, 2 attach failed, 3 receive error, 4 hang.
/// SYNC: core 1 publishes its counts (Release) <-> core 0 reads them (Acquire).
static CPU1_STATE: AtomicU32 = AtomicU32::new(0);
/// CPUID core 1's code read (u32::MAX until it runs).
static CPU1_ID: AtomicU32 = AtomicU32::new(u32::MAX);
/// Times core 1 found the channel empty and waited.
static CPU1_WAITS: AtomicU32 = AtomicU32::new(0);

/// Core 1's vector table: initial stack pointer, reset handler, then fault handlers.
#[repr(C, align(128))]
struct VectorTable([u32; 16]);
static mut CPU1_VECTORS: VectorTable = VectorTable([0; 16]);
static mut CPU1_STACK: Mem<4096> = Mem([0; 4096]);

#[entry]
fn main() -> ! {
    // SAFETY: REGION is used only through this region (by both cores).
    let region = unsafe { fw::region_of(addr_of_mut!(REGION), REGION_LEN) };
    let cfg = PoolConfig {
        min_block: 32,
        max_allocations: Some(32),
        uid: 0x0A52_1000_0000_0001,
    };
    let Some(pool) = check_ok!(Pool::init(region, &cfg, 1)) else {
        fw::finish()
    };
    let Some(ch) = check_ok!(Channel::create(&pool, 521, &ATTRS)) else {
        fw::finish()
    };
    let Ok(live0) = pool.stats().map(|s| s.live) else {
        fw::finish()
    };
    let desc = ch.serialize();
    // SAFETY: core 1 is still held in reset, so nothing else accesses DESC.
    unsafe {
        core::ptr::copy_nonoverlapping(desc.as_ptr(), addr_of_mut!(DESC).cast::<u8>(), desc.len())
    };
    READY.store(1, Ordering::Release);

    // SAFETY: reads a secure system-control register of this machine.
    let waiting = unsafe { SYSCTL_CPUWAIT.read_volatile() };
    check!(cpu_id() == 0);
    check!(waiting & 2 != 0); // core 1 is held until we release it
    start_cpu1();

    let mut buf = [0u8; 100];
    let mut sent = 0u32;
    let mut full_waits = 0u32;
    while sent < MESSAGES {
        let len = make(sent, &mut buf);
        let r = fw::wait::until_done::<_, Spin>(
            PATIENCE,
            || ch.try_send(&buf[..len], u64::from(sent), 0),
            |_| {
                full_waits = full_waits.saturating_add(1);
                CPU1_STATE.load(Ordering::Relaxed) <= 1
            },
        );
        if let Err(e) = r {
            fw::say!("FAIL send {}: {}", sent, e);
            break;
        }
        sent += 1;
    }
    check!(sent == MESSAGES);
    let mut spins = 0u32;
    while CPU1_STATE.load(Ordering::Acquire) == 0 && spins < PATIENCE {
        spins += 1;
        core::hint::spin_loop();
    }
    let state = CPU1_STATE.load(Ordering::Acquire);
    let (received, bad) = (
        RECEIVED.load(Ordering::Relaxed),
        BAD.load(Ordering::Relaxed),
    );
    fw::say!(
        "dual_core: core 0 sent {}, core 1 received {} intact and {} bad (state {})",
        sent,
        received,
        bad,
        state
    );
    fw::say!(
        "dual_core: core 0 got Full {} times, core 1 waited on an empty channel {} times",
        full_waits,
        CPU1_WAITS.load(Ordering::Relaxed)
    );
    check!(state == 1);
    check!(CPU1_ID.load(Ordering::Relaxed) == 1);
    check!(received == MESSAGES && bad == 0);
    check!(ch.is_empty());
    // Every side allocation core 0 made, core 1 freed.
    check!(pool.stats().is_ok_and(|s| s.live == live0));
    check_ok!(ch.destroy());
    check!(pool.stats().is_ok_and(|s| s.live == 0 && s.free == s.total));
    fw::finish()
}

/// Points core 1 at its own vector table and lets it run.
fn start_cpu1() {
    let stack_top = addr_of_mut!(CPU1_STACK) as usize + 4096;
    let vectors = addr_of_mut!(CPU1_VECTORS);
    // SAFETY: core 1 is held in reset, so nobody reads the table while it is written; the
    // table lives in secure SRAM for the whole run; the registers are this machine's.
    unsafe {
        let t = vectors.cast::<u32>();
        t.write_volatile(stack_top as u32);
        t.add(1).write_volatile(cpu1_main as *const () as u32);
        for i in 2..16 {
            t.add(i).write_volatile(cpu1_fault as *const () as u32);
        }
        cortex_m::asm::dsb();
        SYSCTL_INITSVTOR1.write_volatile(vectors as u32);
        SYSCTL_CPUWAIT.write_volatile(0);
    }
}

/// Message `seq`: `[seq u32][bytes][checksum u32]`, 20 bytes, or 80 (a side allocation) for
/// every seventh.
fn make(seq: u32, buf: &mut [u8; 100]) -> usize {
    let len = if seq % 7 == 3 { 80 } else { 20 };
    buf[..4].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf[4..len - 4].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8).wrapping_mul(31);
    }
    let sum = checksum(&buf[..len - 4]);
    buf[len - 4..len].copy_from_slice(&sum.to_le_bytes());
    len
}

/// Core 1: attaches and receives every message, then publishes its counts.
extern "C" fn cpu1_main() -> ! {
    let mut spins = 0u32;
    // SYNC: Acquire <-> core 0's Release store of READY after the region and DESC.
    while READY.load(Ordering::Acquire) == 0 && spins < PATIENCE {
        spins += 1;
    }
    let state = consume();
    // SYNC: Release <-> core 0's Acquire load of CPU1_STATE before it reads the counts.
    CPU1_STATE.store(state, Ordering::Release);
    loop {
        cortex_m::asm::wfi();
    }
}

fn cpu_id() -> u32 {
    // SAFETY: reads this core's CPU_IDENTITY register of the SSE-200.
    unsafe { CPU_IDENTITY.read_volatile() }
}

fn consume() -> u32 {
    CPU1_ID.store(cpu_id(), Ordering::Relaxed);
    // SAFETY: REGION is only used through regions, by both cores, as the core allows.
    let region: Region = unsafe { fw::region_of(addr_of_mut!(REGION), REGION_LEN) };
    let Ok(pool) = Pool::attach(region, 2) else {
        return 2;
    };
    let mut desc = [0u8; Channel::DESCRIPTOR_LEN];
    // SAFETY: core 0 wrote DESC before its Release store of READY, which we acquired, and
    // never writes it again; the copy stays inside the 64-byte static.
    unsafe {
        core::ptr::copy_nonoverlapping(
            addr_of_mut!(DESC).cast::<u8>(),
            desc.as_mut_ptr(),
            desc.len(),
        )
    };
    let Ok(ch) = Channel::attach(&pool, &desc, None) else {
        return 2;
    };
    let mut buf = [0u8; 100];
    let mut want = [0u8; 100];
    let mut next = 0u32;
    while next < MESSAGES {
        let got = fw::wait::until_done::<_, Spin>(
            PATIENCE,
            || ch.try_recv_into(&mut buf),
            |busy| {
                if busy == 1 {
                    CPU1_WAITS.fetch_add(1, Ordering::Relaxed);
                }
                true
            },
        );
        match got {
            Ok(got) => {
                let len = make(next, &mut want);
                if got.len == len && buf[..len] == want[..len] && got.hints == u64::from(next) {
                    RECEIVED.fetch_add(1, Ordering::Relaxed);
                } else {
                    BAD.fetch_add(1, Ordering::Relaxed);
                }
                next += 1;
            }
            Err(e) if fw::wait::is_busy(&e) => return 4,
            Err(_) => return 3,
        }
    }
    1
}

/// Any fault on core 1.
extern "C" fn cpu1_fault() -> ! {
    fw::say!("CPU1 FAULT");
    fw::fail();
    fw::finish()
}
