//! The floor: a raw `AtomicU32` ping-pong on a `/dev/shm` file both processes map with
//! memmap2 (the same kind of `MAP_SHARED` mapping as a pool), with and without the payload
//! copied in before each flag store and out after each load; and memcpy bandwidth.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use memmap2::MmapMut;

use crate::util::{Lat, Res, hist, lat, map_file, reap, record, spawn};

const FLAG_A: usize = 0;
const FLAG_B: usize = 64;
const BUF: usize = 4096;
const STOP: u32 = u32::MAX;

fn len_for(size: usize) -> usize {
    BUF + 2 * stride(size)
}

/// Bytes from one direction's buffer to the other's: whole 128-byte line pairs. (The two
/// buffers used to be adjacent: at 64 B they shared a line pair that the CPU's adjacent-line
/// prefetcher moves as one, which made this floor ~100 ns slower than the raw hardware and
/// flattered every ratio against it.)
fn stride(size: usize) -> usize {
    size.max(1).next_multiple_of(128)
}

fn flag(map: &MmapMut, off: usize) -> &AtomicU32 {
    // SAFETY: `off` is 4-aligned inside the page-aligned mapping; a zeroed u32 is a valid
    // AtomicU32; the reference lives no longer than the mapping.
    unsafe { &*map.as_ptr().add(off).cast::<AtomicU32>() }
}

fn copy_in(map: &MmapMut, off: usize, src: &[u8]) {
    assert!(off + src.len() <= map.len());
    // SAFETY: in bounds (checked); the other side reads these bytes only after the flag
    // store that follows (Release/Acquire).
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), map.as_ptr().add(off).cast_mut(), src.len());
    }
}

fn copy_out(map: &MmapMut, off: usize, dst: &mut [u8]) {
    assert!(off + dst.len() <= map.len());
    // SAFETY: in bounds (checked); the writer stored the flag we acquired after its copy.
    unsafe { core::ptr::copy_nonoverlapping(map.as_ptr().add(off), dst.as_mut_ptr(), dst.len()) }
}

fn wait_for(f: &AtomicU32, want: u32) -> u32 {
    loop {
        // SYNC: Acquire <-> the other side's Release store after its copy.
        let v = f.load(Ordering::Acquire);
        if v == want || v == STOP {
            return v;
        }
        // No `spin_loop()` (PAUSE) here: under KVM, pause-loop exiting deschedules a vCPU
        // that spins on PAUSE for long (measured: 4 ms stalls at 64 KiB and 1 MiB); plain
        // loads are the floor a spinning waiter can reach.
    }
}

/// Raw ping-pong; `size` 0 means flags only (no payload copies).
pub fn pingpong(size: usize, n: usize) -> Res<Lat> {
    let warm = (n / 10).max(100);
    let path = format!("/dev/shm/dcb-{}-floor", std::process::id());
    let map = map_file(&path, len_for(size), true)?;
    let child = spawn("floor", &format!("{path}:{size}"));
    let (a, b) = (flag(&map, FLAG_A), flag(&map, FLAG_B));
    let mut h = hist();
    if child.is_ok() {
        let mut msg = vec![0u8; size];
        let mut back = vec![0u8; size];
        for i in 1..=(warm + n) as u32 {
            if size >= 4 {
                msg[..4].copy_from_slice(&i.to_le_bytes());
            }
            let t0 = Instant::now();
            copy_in(&map, BUF, &msg);
            // SYNC: Release <-> peer's Acquire in `wait_for`.
            a.store(i, Ordering::Release);
            wait_for(b, i);
            copy_out(&map, BUF + stride(size), &mut back);
            let dt = t0.elapsed();
            if size >= 4 && back[..4] != i.to_le_bytes() {
                let _ = std::fs::remove_file(&path);
                return Err("floor: wrong echo".into());
            }
            if i as usize > warm {
                record(&mut h, dt);
            }
        }
        // SYNC: Release <-> peer's Acquire in `wait_for`.
        a.store(STOP, Ordering::Release);
    }
    let _ = std::fs::remove_file(&path);
    reap(child?, "floor")?;
    Ok(lat(&h))
}

/// The floor's peer.
pub fn peer(arg: &str) -> Res<()> {
    let (path, size) = arg.split_once(':').ok_or("bad argument")?;
    let size: usize = size.parse()?;
    let map = map_file(path, len_for(size), false)?;
    let (a, b) = (flag(&map, FLAG_A), flag(&map, FLAG_B));
    let mut msg = vec![0u8; size];
    let mut i = 1u32;
    loop {
        if wait_for(a, i) == STOP {
            return Ok(());
        }
        copy_out(&map, BUF, &mut msg);
        copy_in(&map, BUF + stride(size), &msg);
        // SYNC: Release <-> parent's Acquire in `wait_for`.
        b.store(i, Ordering::Release);
        i += 1;
    }
}

/// memcpy bandwidth, GB/s, from a heap buffer into a shared `/dev/shm` mapping, `size`
/// bytes per copy, for about `total` bytes.
pub fn memcpy_gbps(size: usize, total: usize) -> Res<f64> {
    let path = format!("/dev/shm/dcb-{}-memcpy", std::process::id());
    let map = map_file(&path, size, true);
    let _ = std::fs::remove_file(&path);
    let mut map = map?;
    let src = vec![0x5Au8; size];
    map.copy_from_slice(&src);
    let reps = (total / size).max(10);
    let t0 = Instant::now();
    for _ in 0..reps {
        map.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut map);
    }
    let dt = t0.elapsed().as_secs_f64();
    Ok((reps * size) as f64 / dt / 1e9)
}
