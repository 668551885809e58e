//! Shared helpers for the core's integration tests: an aligned owned region, a watchdog.
#![allow(dead_code)]

use dragon_channels_core::{Pool, PoolConfig, PoolError, Region};

mod watchdog;
#[allow(unused_imports)] // each test binary uses a different part
pub use watchdog::{Failed, watchdog};

/// Owned, 64-byte-aligned memory standing in for a shared region.
pub struct Mem {
    buf: Vec<u64>,
    off: usize,
    len: usize,
}

impl Mem {
    pub fn new(len: usize) -> Self {
        let buf = vec![0u64; len / 8 + 16];
        let off = (buf.as_ptr() as *const u8).align_offset(64);
        Self { buf, off, len }
    }

    pub fn region(&mut self) -> Region {
        // SAFETY: `buf` lives as long as `self`, which every test keeps alive while handles
        // are in use; the range `off..off+len` is inside the allocation.
        unsafe { Region::new(self.buf.as_mut_ptr().cast::<u8>().add(self.off), self.len).unwrap() }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the range is inside `buf`; callers use this only while no handle operates.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.buf.as_mut_ptr().cast::<u8>().add(self.off),
                self.len,
            )
        }
    }
}

/// A pool of `min_block`-byte minimum blocks over `mem`, created by owner 1, whose lock
/// waiters yield after a few spins as the std adapter's do: with more threads than cores a
/// preempted lock holder must get to run before the lock is called stalled.
pub fn pool(mem: &mut Mem, min_block: u32) -> Pool {
    let cfg = PoolConfig {
        min_block,
        ..Default::default()
    };
    let mut p = Pool::init(mem.region(), &cfg, 1).unwrap();
    p.set_lock_backoff(yielding_backoff);
    p
}

/// The pool-lock back-off of the tests: 64 spins, then a yield per try (as the adapter's).
pub fn yielding_backoff(tries: u32) {
    if tries < 64 {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Runs a pool operation until it does not report `Stalled`, yielding in between: the core
/// never waits for a lock holder that was preempted (with more threads than cores, it is); its
/// caller's wait layer does, as this does for the tests.
pub fn waited<T>(mut op: impl FnMut() -> Result<T, PoolError>) -> Result<T, PoolError> {
    loop {
        match op() {
            Err(PoolError::Stalled { .. }) => std::thread::yield_now(),
            other => return other,
        }
    }
}

/// A deterministic xorshift64 generator for the corruption tests.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
