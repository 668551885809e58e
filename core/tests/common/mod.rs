//! Shared helpers for the core's integration tests: an aligned owned region.
#![allow(dead_code)]

use dragon_channels_core::{Pool, PoolConfig, Region};

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

pub fn pool(mem: &mut Mem, min_block: u32) -> Pool {
    Pool::init(
        mem.region(),
        &PoolConfig {
            min_block,
            ..Default::default()
        },
        1,
    )
    .unwrap()
}
