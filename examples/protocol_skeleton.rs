//! Where the channel's ping-pong latency goes: two threads exchange 64-byte messages through
//!
//! - `floor`: a flag word and a 64-byte buffer per direction (copy in, store the flag; spin on
//!   the flag, copy out), the least a shared-memory handoff can do;
//! - `skeleton`: the channel's protocol with nothing else: per direction a tail and a head word
//!   on lines of their own and one slot laid out like the core's (sequence and claim words,
//!   header, payload from byte 48); the sender claims the slot with a CAS, advances the tail,
//!   writes, publishes the sequence and releases the claim, the receiver the same on its side;
//! - `skeleton, no claims`: the same without the two claim CASes (what crash recovery costs);
//! - `core queue`: the real `dragon-channels-core` channel in a heap region (`try_send` /
//!   `try_recv_into`, polling `may_recv` while waiting).
//!
//! The variants run in turns (several rounds each) so that all see the same machine state; the
//! table gives the median over rounds of each round's p50 and p99 half round trip. Run with
//! `cargo run --release --example protocol_skeleton [-- rounds iterations]`.

#![allow(clippy::disallowed_types)] // raw atomics on purpose: this is the baseline

use core::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use dragon_channels_core::{Channel, ChannelAttrs, ChannelError, Pool, PoolConfig, Region};

const LINE: usize = 64;
/// Per direction: tail line, head line, slot (header line + payload line).
const DIR: usize = 4 * LINE;
const TAIL: usize = 0;
const HEAD: usize = LINE;
const SLOT: usize = 2 * LINE;
const SEQ: usize = SLOT;
const CLAIM: usize = SLOT + 4;
const LEN: usize = SLOT + 8;
const PAYLOAD: usize = SLOT + 48;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Floor,
    Skeleton,
    NoClaims,
    Core,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor (flag + copy)",
            Self::Skeleton => "skeleton (claims, tail/head)",
            Self::NoClaims => "skeleton, no claims",
            Self::Core => "core queue",
        }
    }
}

/// Owned, line-aligned shared memory for the hand-written variants.
struct Shm {
    buf: Vec<u64>,
}

impl Shm {
    fn new() -> Self {
        Self {
            buf: vec![0; (2 * DIR + LINE) / 8],
        }
    }

    fn base(&self) -> *mut u8 {
        let p = self.buf.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: the buffer has a spare line, so aligning up stays inside it.
        unsafe { p.add(p.align_offset(LINE)) }
    }

    fn atomic(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is 4-aligned and inside the buffer; zeroed memory is a valid AtomicU32;
        // all concurrent access to these words goes through atomics.
        unsafe { &*self.base().add(off).cast::<AtomicU32>() }
    }

    /// Copies `msg` in at `off`; the sequence or flag protocol orders the accesses.
    fn copy_in(&self, off: usize, msg: &[u8; 64]) {
        // SAFETY: `off + 64` is inside the buffer; the other thread reads these bytes only
        // after the Release store that follows this copy.
        unsafe { core::ptr::copy_nonoverlapping(msg.as_ptr(), self.base().add(off), 64) }
    }

    /// Copies 64 bytes out at `off` into `out` (see [`Shm::copy_in`]).
    fn copy_out(&self, off: usize, out: &mut [u8; 64]) {
        // SAFETY: `off + 64` is inside the buffer; the writer finished before the Release
        // store this thread acquired.
        unsafe { core::ptr::copy_nonoverlapping(self.base().add(off), out.as_mut_ptr(), 64) }
    }
}

// SAFETY: all shared accesses are atomics or copies ordered by them (see `Shm::copy`).
unsafe impl Sync for Shm {}

fn send(m: &Shm, dir: usize, i: u32, msg: &[u8; 64], v: Variant) {
    let d = dir * DIR;
    if v == Variant::Floor {
        m.copy_in(d + PAYLOAD, msg);
        // SYNC: Release <-> the receiver's Acquire spin in `recv`.
        m.atomic(d + SEQ).store(2 * i - 1, Ordering::Release);
        return;
    }
    let _ = m.atomic(d + TAIL).load(Ordering::Relaxed);
    // SYNC: Acquire <-> the receiver's release of the slot.
    while m.atomic(d + SEQ).load(Ordering::Acquire) != 2 * (i - 1) {
        core::hint::spin_loop();
    }
    if v == Variant::Skeleton {
        let _ = m
            .atomic(d + CLAIM)
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed);
    }
    m.atomic(d + TAIL).store(i, Ordering::Release);
    m.copy_in(d + PAYLOAD, msg);
    m.atomic(d + LEN).store(64, Ordering::Relaxed);
    // SYNC: publish (Release) <-> the receiver's Acquire spin.
    m.atomic(d + SEQ).store(2 * i - 1, Ordering::Release);
    if v == Variant::Skeleton {
        m.atomic(d + CLAIM).store(0, Ordering::Release);
    }
}

fn recv(m: &Shm, dir: usize, i: u32, out: &mut [u8; 64], v: Variant) {
    let d = dir * DIR;
    // SYNC: Acquire <-> the sender's publishing Release store.
    while m.atomic(d + SEQ).load(Ordering::Acquire) != 2 * i - 1 {
        core::hint::spin_loop();
    }
    if v == Variant::Floor {
        m.copy_out(d + PAYLOAD, out);
        return;
    }
    if v == Variant::Skeleton {
        let _ = m
            .atomic(d + CLAIM)
            .compare_exchange(0, 2, Ordering::Acquire, Ordering::Relaxed);
    }
    m.atomic(d + HEAD).store(i, Ordering::Release);
    let _ = m.atomic(d + LEN).load(Ordering::Relaxed);
    m.copy_out(d + PAYLOAD, out);
    // SYNC: release the slot (Release) <-> the next sender's Acquire spin.
    m.atomic(d + SEQ).store(2 * i, Ordering::Release);
    if v == Variant::Skeleton {
        m.atomic(d + CLAIM).store(0, Ordering::Release);
    }
}

/// Busy-retries a core try-once operation while the channel is full or empty.
fn spin<T>(mut op: impl FnMut() -> Result<T, ChannelError>) -> Result<T, ChannelError> {
    loop {
        match op() {
            Err(ChannelError::Full | ChannelError::Empty) => core::hint::spin_loop(),
            r => return r,
        }
    }
}

/// Core receive into `out`: polls the readiness hint, then tries.
fn core_recv(ch: &Channel, out: &mut [u8; 64]) -> Result<(), ChannelError> {
    spin(|| {
        while !ch.may_recv() {
            core::hint::spin_loop();
        }
        ch.try_recv_into(out)
    })
    .map(|_| ())
}

/// One round of `n` round trips; returns (p50, p99) half round trips in ns.
fn round(v: Variant, n: u32, ping: &Channel, pong: &Channel) -> Result<(u64, u64), ChannelError> {
    let shm = Shm::new();
    let mut lat = Vec::with_capacity(n as usize);
    std::thread::scope(|s| -> Result<(), ChannelError> {
        let peer = s.spawn(|| -> Result<(), ChannelError> {
            let mut b = [0u8; 64];
            for i in 1..=n {
                if v == Variant::Core {
                    core_recv(ping, &mut b)?;
                    spin(|| pong.try_send(&b, 0, 0))?;
                } else {
                    recv(&shm, 0, i, &mut b, v);
                    send(&shm, 1, i, &b, v);
                }
            }
            Ok(())
        });
        let mut b = [0u8; 64];
        for i in 1..=n {
            b[..4].copy_from_slice(&i.to_le_bytes());
            let t0 = Instant::now();
            if v == Variant::Core {
                spin(|| ping.try_send(&b, 0, 0))?;
                core_recv(pong, &mut b)?;
            } else {
                send(&shm, 0, i, &b, v);
                recv(&shm, 1, i, &mut b, v);
            }
            lat.push(t0.elapsed().as_nanos() as u64 / 2);
            assert_eq!(b[..4], i.to_le_bytes(), "{}: wrong echo", v.name());
        }
        peer.join().unwrap_or(Ok(()))
    })?;
    lat.sort_unstable();
    Ok((lat[lat.len() / 2], lat[lat.len() * 99 / 100]))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn core::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let rounds = args.next().transpose()?.unwrap_or(9).max(1);
    let n = args.next().transpose()?.unwrap_or(50_000).max(100);
    // The core queue's region: a heap buffer, like the core's tests.
    let mut mem = vec![0u64; (1 << 20) / 8 + 8];
    let off = mem.as_ptr().cast::<u8>().align_offset(64);
    // SAFETY: the buffer outlives every handle below and is only accessed through them.
    let region = unsafe { Region::new(mem.as_mut_ptr().cast::<u8>().add(off), 1 << 20)? };
    let pool = Pool::init(region, &PoolConfig::default(), 1)?;
    let attrs = ChannelAttrs {
        capacity: 16,
        block_size: 256,
    };
    let ping = Channel::create(&pool, 1, &attrs)?;
    let pong = Channel::create(&pool, 2, &attrs)?;
    let variants = [
        Variant::Floor,
        Variant::NoClaims,
        Variant::Skeleton,
        Variant::Core,
    ];
    let mut res: Vec<(Vec<u64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); variants.len()];
    for _ in 0..rounds {
        for (k, &v) in variants.iter().enumerate() {
            let (p50, p99) = round(v, n, &ping, &pong)?;
            res[k].0.push(p50);
            res[k].1.push(p99);
        }
    }
    println!("two threads, 64 B ping-pong, {rounds} rounds of {n} round trips per variant");
    println!("| variant | p50 ns | p99 ns |\n|---|---:|---:|");
    for (k, v) in variants.iter().enumerate() {
        let (p50, p99) = (median(res[k].0.clone()), median(res[k].1.clone()));
        println!("| {} | {p50} | {p99} |", v.name());
    }
    Ok(())
}
