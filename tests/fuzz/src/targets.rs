//! Bodies of the fuzz targets, shared by the cargo-fuzz binaries (`tests/fuzz/fuzz_targets/`) and the
//! stable-toolchain corpus replay (`core/tests/fuzz_replay.rs`, which includes this file with
//! `#[path]`, so it uses nothing but the core, `spin` and std).
//!
//! - [`attach_bytes`]: untrusted bytes as a channel descriptor, an allocation descriptor and a
//!   pool header; patches to a valid descriptor (its FNV-1a checksum recomputed, so the bytes
//!   get past it), to a live channel's memory and to a valid pool's metadata before attaching.
//! - [`adversary_region`]: a script of pool and channel operations by several parties,
//!   interleaved with writes of arbitrary bytes anywhere in the region, metadata included.
//! - [`api_model`]: call sequences checked against a model: FIFO, exactly once, capacity,
//!   `Full`/`Empty`, sizes, pool statistics back to the baseline after draining and freeing.
//!
//! Every target owns an exactly sized heap region, so AddressSanitizer (cargo-fuzz's default)
//! reports any access outside it; the core's `debug_assert!`s on every region access (on in
//! fuzz builds and in debug tests) report it too. The library may only return errors: a panic
//! is a finding. Every loop here is bounded, and the pools' relax hook does nothing, so a
//! corrupt lock word costs one bounded spin (`Stalled`) per call.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run <target> -- -max_total_time=600 -rss_limit_mb=2048 -jobs=1
//! cargo test -p dragon-channels-core --test fuzz_replay
//! ```

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::collections::VecDeque;

use dragon_channels_core::channel::ChannelRecovery;
use dragon_channels_core::pool::{PoolRecovery, SIZE_CLASSES, STRUCT_OWNER_BIT};
use dragon_channels_core::region::REGION_ALIGN;
use dragon_channels_core::{
    Alloc, AllocKind, Channel, ChannelAttrs, ChannelError, Poll, Pool, PoolConfig, PoolError,
    Received, Region, SendMode, Waiter,
};

/// Uid of the fuzzed pools.
const POOL_UID: u64 = 0x0DD5_EED5_F00D_CAFE;
/// Uid of the buffer pool in [`attach_bytes`].
const BUF_UID: u64 = 0x0B0F_FE25_0000_0002;
/// Most operations one input runs.
const MAX_OPS: usize = 256;
/// Parties (owner ids `1..=PARTIES`) in [`adversary_region`].
const PARTIES: u32 = 4;
/// Every poll operation.
const POLLS: [Poll; 8] = [
    Poll::In,
    Poll::Out,
    Poll::InOut,
    Poll::Empty,
    Poll::Full,
    Poll::Size,
    Poll::Capacity,
    Poll::BlockedReceivers,
];

// ----- input and memory -----

/// The fuzz input, read front to back; once it runs out every read returns zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer when the input runs out).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }

    /// An index below `n` (0 when `n` is 0).
    fn pick(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::from(self.u8()) % n
        }
    }
}

/// An exactly sized, zeroed, 64-byte-aligned heap allocation standing in for shared memory.
struct Mem {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

impl Mem {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), REGION_ALIGN).expect("region layout");
        // SAFETY: the layout's size is at least 1.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, len, layout }
    }

    fn region(&self) -> Region {
        // SAFETY: the allocation is `len` bytes (or 1 when `len` is 0), 64-aligned, and outlives
        // every handle a target makes on it (each target drops its handles first); the bytes are
        // only touched through the core and through `write`/`read` between calls.
        unsafe { Region::new(self.ptr.as_ptr(), self.len) }.expect("aligned region")
    }

    /// The adversary: writes `bytes` at `off` (clipped to the region).
    fn write(&self, off: usize, bytes: &[u8]) {
        let off = off.min(self.len);
        let n = bytes.len().min(self.len - off);
        // SAFETY: `off..off + n` is inside the allocation; no core call runs meanwhile (one
        // thread) and the core holds no Rust references to region bytes.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(off), n) };
    }

    /// Reads `out.len()` bytes at `off` (clipped to the region; the rest of `out` is zeroed).
    fn read(&self, off: usize, out: &mut [u8]) {
        out.fill(0);
        let off = off.min(self.len);
        let n = out.len().min(self.len - off);
        // SAFETY: as in `write`.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), out.as_mut_ptr(), n) };
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Recomputes the checksum of a patched channel descriptor (bytes `0..44`, stored in
/// `44..48`), so that it reaches the checks behind the checksum.
fn seal(d: &mut [u8; Channel::DESCRIPTOR_LEN]) {
    let sum = dragon_channels_core::checksum(&d[..44]);
    d[44..].copy_from_slice(&sum.to_le_bytes());
}

fn descriptor(ch: &Channel) -> [u8; Channel::DESCRIPTOR_LEN] {
    let mut d = [0u8; Channel::DESCRIPTOR_LEN];
    d.copy_from_slice(&ch.serialize());
    d
}

fn attrs(capacity: u32, block_size: u32) -> ChannelAttrs {
    ChannelAttrs {
        capacity,
        block_size,
    }
}

fn new_pool(mem: &Mem, uid: u64, min_block: u32, owner: u32) -> Option<Pool> {
    let cfg = PoolConfig {
        min_block,
        max_allocations: None,
        uid,
    };
    Pool::init(mem.region(), &cfg, owner).ok()
}

/// Offsets and sizes of the live channel allocations of `pool` (bounded scan).
fn channel_spans(pool: &Pool) -> Vec<(usize, usize)> {
    pool.allocations()
        .take(4096)
        .filter_map(Result::ok)
        .filter(|i| i.kind == AllocKind::Channel)
        .map(|i| (i.offset, i.size))
        .collect()
}

/// A fixed round of every channel call; only errors may come back.
fn exercise(ch: &Channel) {
    let _ = (ch.capacity(), ch.block_size(), ch.uid(), ch.len());
    let _ = (ch.is_empty(), ch.is_full(), ch.claims());
    // Every operation, barrier and semaphore ones included (they refuse or act on the
    // queue: only errors may come back).
    for op in Poll::ALL {
        let _ = ch.try_poll(op);
    }
    let big = [0x5Au8; 300];
    let _ = ch.try_send(b"fuzz", 1, 2);
    let _ = ch.try_send(&big, 3, 4);
    let mut buf = [0u8; 512];
    let _ = ch.try_recv_into(&mut buf[..1]);
    let _ = ch.try_recv_into(&mut buf);
    if let Ok((a, _)) = ch.try_recv_alloc() {
        let _ = ch.side_pool().free(a);
    }
    if let Ok(a) = ch.side_pool().alloc(100, AllocKind::Data)
        && ch
            .try_send_mode(SendMode::Transfer { alloc: a, len: 50 }, 5, 6)
            .is_err()
    {
        let _ = ch.side_pool().free(a);
    }
    let _ = ch.try_recv_into(&mut buf);
    let _ = ch.recover(&|_| true);
    let _ = ch.recover(&|o| o != 1);
}

/// A fixed round of every pool call; only errors may come back.
fn pool_ops(pool: Pool) {
    let _ = (pool.min_block(), pool.total_size(), pool.max_alloc());
    let _ = (
        pool.metadata_size(),
        pool.lock_holder(),
        pool.uid(),
        pool.owner(),
    );
    let _ = pool.stats().map(|s| s.utilization());
    let _ = (pool.free_space(), pool.utilization());
    let mut out = [0u32; SIZE_CLASSES];
    let _ = pool.free_blocks(&mut out);
    for info in pool.allocations().take(4096).flatten() {
        let _ = pool.resolve(&info.alloc);
        let _ = pool.owner_of(&info.alloc);
        let _ = pool.span_unchecked(&info.alloc);
    }
    let mut got = Vec::new();
    for size in [0, 1, 64, 100, 1000, 5000] {
        if let Ok(a) = pool.alloc(size, AllocKind::Data) {
            let _ = pool.set_owner(&a, 2);
            got.push(a);
        }
    }
    let _ = pool.recover(&|o| o == 1);
    for a in got {
        let _ = pool.free(a);
    }
    let _ = pool.free_all_of(pool.owner(), None);
    if let Ok(ch) = Channel::create(&pool, 1, &attrs(2, 32)) {
        exercise(&ch);
        let _ = ch.destroy();
    }
    let _ = pool.recover(&|_| false);
}

// ----- attach_bytes -----

/// Untrusted bytes at every entry point that parses them: [`Channel::peek_descriptor`],
/// [`Alloc::from_bytes`], [`Channel::attach`] (raw bytes, and patched valid descriptors
/// resealed with their checksum), a channel whose memory was patched before attaching, and
/// [`Pool::attach`] on a header from the input or on a valid pool with patched metadata.
pub fn attach_bytes(data: &[u8]) {
    let _ = Channel::peek_descriptor(data);
    let _ = Alloc::from_bytes(data);
    let mut inp = Input::new(data);
    match inp.u8() % 4 {
        0 => descriptor_bytes(&mut inp),
        1 => patched_channel(&mut inp),
        2 => raw_pool_header(&mut inp),
        _ => patched_pool(&mut inp),
    }
}

/// Attaches with `bytes`; a channel that attaches must work (or fail with errors).
fn try_attach(pool: &Pool, bytes: &[u8], buffer_pool: Option<&Pool>) {
    let _ = Channel::peek_descriptor(bytes);
    if let Ok(ch) = Channel::attach(pool, bytes, buffer_pool) {
        exercise(&ch);
        // A second handle outlives the destroyed channel: it must only see `Destroyed`.
        if let Ok(other) = Channel::attach(pool, bytes, buffer_pool) {
            let _ = ch.destroy();
            exercise(&other);
        }
    }
}

fn descriptor_bytes(inp: &mut Input<'_>) {
    let (mem, bmem) = (Mem::new(64 << 10), Mem::new(16 << 10));
    let (Some(pool), Some(bpool)) = (
        new_pool(&mem, POOL_UID, 64, 1),
        new_pool(&bmem, BUF_UID, 64, 1),
    ) else {
        return;
    };
    let (Ok(plain), Ok(buffered)) = (
        Channel::create(&pool, 7, &attrs(4, 64)),
        Channel::create_with_buffer_pool(&pool, 8, &attrs(2, 16), Some(&bpool)),
    ) else {
        return;
    };
    let _ = plain.try_send(b"queued", 1, 2);
    let _ = buffered.try_send(&[1; 100], 3, 4);
    let choice = inp.u8();
    let bp = match choice % 3 {
        0 => None,
        1 => Some(&bpool),
        _ => Some(&pool),
    };
    if choice & 0x80 == 0 {
        try_attach(&pool, inp.rest(), bp);
        return;
    }
    let mut d = descriptor(if choice & 0x40 == 0 {
        &plain
    } else {
        &buffered
    });
    for _ in 0..inp.u8() % 8 {
        let at = inp.pick(44);
        d[at] = inp.u8();
    }
    if choice & 0x20 != 0 {
        // Point the descriptor at another live allocation of the pool.
        if let Ok(a) = pool.alloc(usize::from(inp.u16()), AllocKind::Data) {
            d[16..32].copy_from_slice(&a.to_bytes());
        }
    }
    seal(&mut d);
    try_attach(&pool, &d, bp);
}

fn patched_channel(inp: &mut Input<'_>) {
    let mem = Mem::new(64 << 10);
    let Some(pool) = new_pool(&mem, POOL_UID, 64, 1) else {
        return;
    };
    let a = attrs(1 + u32::from(inp.u8() % 4), [0, 16, 64][inp.pick(3)]);
    let Ok(ch) = Channel::create(&pool, 9, &a) else {
        return;
    };
    let _ = ch.try_send(b"abc", 1, 2);
    let _ = ch.try_send(&[7; 150], 3, 4);
    let Some(&(off, size)) = channel_spans(&pool).first() else {
        return;
    };
    let mut d = descriptor(&ch);
    let (toff, tsize) = if inp.u8() & 1 == 1 {
        // A copy of the channel's bytes in a data allocation, named by a resealed descriptor.
        let Ok(copy) = pool.alloc(size, AllocKind::Data) else {
            return;
        };
        let Ok((coff, csize)) = pool.resolve(&copy) else {
            return;
        };
        let mut bytes = vec![0u8; size.min(csize)];
        mem.read(off, &mut bytes);
        mem.write(coff, &bytes);
        d[16..32].copy_from_slice(&copy.to_bytes());
        if inp.u8() & 1 == 1 {
            // Its owner word names the copy, as a real channel's does.
            let own = (STRUCT_OWNER_BIT | copy.id()).to_le_bytes();
            mem.write(coff + 36, &own);
        }
        seal(&mut d);
        (coff, csize)
    } else {
        (off, size)
    };
    for _ in 0..inp.u8() % 16 {
        let at = usize::from(inp.u16());
        let at = if at & 1 == 0 { at % 384 } else { at % tsize };
        let n = 1 + usize::from(inp.u8() % 4);
        mem.write(
            toff + at.min(tsize),
            inp.bytes(n.min(tsize - at.min(tsize))),
        );
    }
    try_attach(&pool, &d, None);
    exercise(&ch);
    pool_ops(pool);
}

fn raw_pool_header(inp: &mut Input<'_>) {
    let sel = inp.u8();
    let len = if sel & 1 == 0 {
        usize::from(inp.u16()) % 1024
    } else {
        usize::from(inp.u16()) % (32 << 10)
    };
    let owner = if sel & 2 == 0 { 1 } else { inp.u32() };
    let mem = Mem::new(len);
    mem.write(0, inp.rest());
    if let Ok(p) = Pool::attach(mem.region(), owner) {
        pool_ops(p);
    }
}

fn patched_pool(inp: &mut Input<'_>) {
    let len = [4 << 10, 16 << 10, 64 << 10][inp.pick(3)];
    let mem = Mem::new(len);
    let Some(pool) = new_pool(&mem, POOL_UID, [16, 64, 256][inp.pick(3)], 1) else {
        return;
    };
    for size in [1, 200, 1000] {
        let _ = pool.alloc(size, AllocKind::Data);
    }
    let _ = Channel::create(&pool, 3, &attrs(2, 16));
    let meta = pool.metadata_size();
    for _ in 0..inp.u8() % 16 {
        let at = inp.u32() as usize;
        let at = if at & 1 == 0 { at % meta } else { at % len };
        let n = 1 + usize::from(inp.u8() % 4);
        mem.write(at, inp.bytes(n));
    }
    let owner = 1 + u32::from(inp.u8() % 3);
    if let Ok(p) = Pool::attach(mem.region(), owner) {
        pool_ops(p);
    }
}

// ----- adversary_region -----

/// A pool and channels in one region, used by [`PARTIES`] parties through a script from the
/// input, while an adversary writes arbitrary bytes anywhere in the region (pool metadata,
/// channel headers and slots, free blocks). Every call must return `Ok` or an error.
pub fn adversary_region(data: &[u8]) {
    let mut inp = Input::new(data);
    let len = [8 << 10, 16 << 10, 64 << 10][inp.pick(3)];
    let min_block = [16, 64, 256][inp.pick(3)];
    let max_allocations = match inp.u8() {
        m if m & 1 == 1 => Some(1 + u32::from(m >> 1) % 32),
        _ => None,
    };
    let cfg = PoolConfig {
        min_block,
        max_allocations,
        uid: POOL_UID,
    };
    let mem = Mem::new(len);
    let Ok(creator) = Pool::init(mem.region(), &cfg, 1) else {
        return;
    };
    let mut pools: Vec<Pool> = (1..=PARTIES)
        .filter_map(|o| creator.with_owner(o).ok())
        .collect();
    let attrs0 = attrs(1 + u32::from(inp.u8() % 8), [0, 16, 64, 200][inp.pick(4)]);
    let mut chans: Vec<Channel> = Vec::new();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    if let Ok(ch) = Channel::create(&creator, 1, &attrs0) {
        chans.push(ch);
        spans = channel_spans(&creator);
    }
    let mut allocs: Vec<Alloc> = Vec::new();
    let mut buf = vec![0u8; 1024];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = i as u8;
    }
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        let op = inp.u8();
        let p = pools[usize::from(op >> 5) % pools.len()];
        let ch = match chans.len() {
            0 => None,
            n => Some(chans[inp.pick(n)]),
        };
        match op % 18 {
            0 => {
                let kind = [AllocKind::Data, AllocKind::ChannelBuffer][inp.pick(2)];
                if let Ok(a) = p.alloc(usize::from(inp.u16()) % 5000, kind) {
                    if allocs.len() < 64 {
                        allocs.push(a);
                    } else {
                        let _ = p.free(a);
                    }
                }
            }
            1 if !allocs.is_empty() => {
                let i = inp.pick(allocs.len());
                // Sometimes keep it: a later free of it is a double free.
                let a = if inp.u8() & 1 == 0 {
                    allocs.swap_remove(i)
                } else {
                    allocs[i]
                };
                let _ = p.free(a);
            }
            2 => {
                if let Some(ch) = ch {
                    let n = usize::from(inp.u16()) % 700;
                    let _ = ch.try_send(&buf[..n], u64::from(inp.u8()), 0);
                }
            }
            3 if !allocs.is_empty() => {
                if let Some(ch) = ch {
                    let i = inp.pick(allocs.len());
                    let len = usize::from(inp.u16()) % 2048;
                    let mode = SendMode::Transfer {
                        alloc: allocs[i],
                        len,
                    };
                    if ch.try_send_mode(mode, 0, 0).is_ok() {
                        allocs.swap_remove(i);
                    }
                }
            }
            4 => {
                if let Some(ch) = ch {
                    let n = usize::from(inp.u16()) % 1024;
                    let _ = ch.try_recv_into(&mut buf[..n]);
                }
            }
            5 => {
                if let Some(ch) = ch
                    && let Ok((a, _)) = ch.try_recv_alloc()
                {
                    if allocs.len() < 64 {
                        allocs.push(a);
                    } else {
                        let _ = p.free(a);
                    }
                }
            }
            6 => {
                if let Some(ch) = ch {
                    for op in Poll::ALL {
                        let _ = ch.try_poll(op);
                    }
                    let _ = (ch.len(), ch.is_empty(), ch.is_full(), ch.claims());
                    let _ = (ch.capacity(), ch.block_size(), ch.uid());
                    let _ = (
                        ch.barrier_count(),
                        ch.barrier_broken(),
                        ch.semaphore_value(),
                    );
                    let ev = ch.recv_event();
                    for how in [Waiter::One, Waiter::All] {
                        let _ = ev.register(how);
                        ev.unregister(how);
                        let _ = (ev.notify(), ch.send_event().notify(), ev.waiters(how));
                    }
                }
            }
            7 => {
                let _ = p.stats().map(|s| s.utilization());
                let _ = (p.free_space(), p.utilization(), p.lock_holder());
                let mut out = [0u32; SIZE_CLASSES];
                let _ = p.free_blocks(&mut out);
                let _ = p.allocations().take(4096).count();
                if let Some(a) = allocs.get(inp.pick(allocs.len())) {
                    let _ = (p.resolve(a), p.owner_of(a), p.span_unchecked(a));
                    let _ = p.set_owner(a, 1 + u32::from(inp.u8()) % PARTIES);
                }
            }
            8 => {
                let dead = inp.u8();
                let alive = |o: u32| o == 0 || o > PARTIES || dead & (1 << (o - 1)) == 0;
                let _ = p.recover(&alive);
            }
            9 => {
                let dead = inp.u8();
                let alive = |o: u32| o == 0 || o > PARTIES || dead & (1 << (o - 1)) == 0;
                if let Some(ch) = ch {
                    let _ = ch.recover(&alive);
                }
            }
            10 => {
                if let Some(ch) = ch {
                    let mut d = descriptor(&ch);
                    let flip = inp.u8();
                    if flip & 0x80 != 0 {
                        d[usize::from(flip) % 44] ^= inp.u8();
                        seal(&mut d);
                    }
                    if let Ok(c) = Channel::attach(&p, &d, None)
                        && chans.len() < 8
                    {
                        chans.push(c);
                    }
                }
            }
            11 => {
                if let Some(ch) = ch {
                    // Other copies of the handle stay in `chans`, stale.
                    let _ = ch.destroy();
                    if inp.u8() & 1 == 0 {
                        chans.retain(|c| c.uid() != ch.uid());
                    }
                }
            }
            12 => {
                let a = attrs(1 + u32::from(inp.u8() % 8), [0, 16, 64, 200][inp.pick(4)]);
                if let Ok(c) = Channel::create(&p, u64::from(inp.u8() % 4), &a)
                    && chans.len() < 8
                {
                    chans.push(c);
                    spans = channel_spans(&p);
                }
            }
            13 => {
                let off = inp.u32() as usize % len;
                let n = 1 + usize::from(inp.u8() % 16);
                mem.write(off, inp.bytes(n));
            }
            14 => {
                let off = (usize::from(inp.u16()) % creator.metadata_size()) & !3;
                mem.write(off, &inp.u32().to_le_bytes());
            }
            15 if !spans.is_empty() => {
                let (base, size) = spans[inp.pick(spans.len())];
                let off = base + ((usize::from(inp.u16()) % size) & !3);
                mem.write(off, &inp.u32().to_le_bytes());
            }
            16 => {
                let owner = 1 + u32::from(inp.u8()) % PARTIES;
                if let Ok(q) = Pool::attach(mem.region(), owner) {
                    pools[owner as usize - 1] = q;
                }
            }
            17 => {
                // The waiting protocol on every event, with tries in between (the core's
                // waiting is the caller's: register, try, notify, unregister).
                let events = [
                    Some(p.free_event()),
                    ch.as_ref().map(|c| c.recv_event()),
                    ch.as_ref().map(|c| c.send_event()),
                ];
                for (i, ev) in events.into_iter().flatten().enumerate() {
                    let how = if i % 2 == 0 { Waiter::All } else { Waiter::One };
                    let seen = ev.register(how);
                    if let Ok(a) = p.alloc(3000, AllocKind::Data) {
                        let _ = p.free(a);
                    }
                    if let Some(ch) = ch {
                        let _ = ch.try_send(&buf[..100], 0, 0);
                        let mut dest = [0u8; 64];
                        let _ = ch.try_recv_into(&mut dest);
                    }
                    let _ = (ev.notify(), ev.word().load(Ordering::Relaxed) != seen);
                    ev.unregister(how);
                    let _ = ev.waiters(how);
                }
            }
            _ => {}
        }
    }
    // Whatever the adversary did, recovery and teardown only return errors.
    let _ = creator.recover(&|o| o == 1);
    for ch in &chans {
        let _ = ch.recover(&|o| o == 1);
    }
    for ch in chans {
        let _ = ch.destroy();
    }
    for a in allocs {
        let _ = creator.free(a);
    }
    let _ = creator.stats();
}

// ----- api_model -----

/// A queued position in the model: a message, or a tombstone a failed send left behind
/// (receivers skip it, but it occupies its position until then).
#[derive(Debug)]
enum Entry {
    Msg {
        bytes: Vec<u8>,
        hints: u64,
        clientid: u64,
        /// Size of its side allocation, 0 when inline.
        side: usize,
    },
    Tomb,
}

/// A live allocation the caller owns; its block is filled with `pattern(tag, size)`.
#[derive(Debug)]
struct Live {
    alloc: Alloc,
    size: usize,
    tag: u8,
}

fn pattern(tag: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| tag.wrapping_add(i as u8)).collect()
}

struct Model<'m> {
    mem: &'m Mem,
    pool: Pool,
    q: VecDeque<Entry>,
    live: Vec<Live>,
    tag: u8,
    capacity: usize,
    block: usize,
    /// Bytes the channel structure itself takes.
    chan_bytes: usize,
}

impl Model<'_> {
    /// Block size the pool gives a request of `n` bytes.
    fn rounded(&self, n: usize) -> usize {
        let mb = self.pool.min_block();
        n.div_ceil(mb).max(1).next_power_of_two() * mb
    }

    fn next_tag(&mut self) -> u8 {
        self.tag = self.tag.wrapping_add(37);
        self.tag
    }

    /// Takes ownership of a fresh allocation: fills it with a pattern, checks its span.
    fn adopt(&mut self, alloc: Alloc) {
        let (off, size) = self
            .pool
            .resolve(&alloc)
            .expect("a fresh allocation resolves");
        assert!(off >= self.pool.metadata_size() && off + size <= self.pool.region().len());
        for l in &self.live {
            let (o, s) = self.pool.resolve(&l.alloc).expect("live allocation");
            assert!(off + size <= o || o + s <= off, "allocations overlap");
        }
        let tag = self.next_tag();
        self.mem.write(off, &pattern(tag, size));
        self.live.push(Live { alloc, size, tag });
    }

    /// Receivers skip leading tombstones before they look at a message.
    fn skip_tombs(&mut self) {
        while matches!(self.q.front(), Some(Entry::Tomb)) {
            self.q.pop_front();
        }
    }

    fn check_len(&self, ch: &Channel) {
        let n = self.q.len();
        assert_eq!(ch.len(), n);
        assert_eq!(ch.is_empty(), n == 0);
        assert_eq!(ch.is_full(), n == self.capacity);
        assert_eq!(ch.capacity(), self.capacity);
        assert_eq!(ch.block_size(), self.block);
        let expect = [
            u64::from(n > 0),
            u64::from(n < self.capacity),
            u64::from(n > 0 || n < self.capacity),
            u64::from(n == 0),
            u64::from(n == self.capacity),
            n as u64,
            self.capacity as u64,
            0,
        ];
        for (op, want) in POLLS.into_iter().zip(expect) {
            assert_eq!(ch.poll(op), Ok(want), "{op:?}");
        }
        assert_eq!(ch.claims(), (0, 0));
    }

    fn check_stats(&self) {
        let s = self.pool.stats().expect("stats");
        let side: Vec<usize> = self
            .q
            .iter()
            .filter_map(|e| match e {
                Entry::Msg { side, .. } if *side > 0 => Some(*side),
                _ => None,
            })
            .collect();
        let used = self.chan_bytes
            + self.live.iter().map(|l| l.size).sum::<usize>()
            + side.iter().sum::<usize>();
        assert_eq!(s.total - s.free, used, "used bytes");
        assert_eq!(s.live as usize, 1 + self.live.len() + side.len(), "live");
        assert_eq!(self.pool.allocations().take(4096).count(), s.live as usize);
    }

    fn send_copy(&mut self, ch: &Channel, inp: &mut Input<'_>) {
        let len = match inp.u8() % 4 {
            0 => 0,
            1 => self.block,
            2 => self.block + 1,
            _ => usize::from(inp.u16()) % 400,
        };
        let tag = self.next_tag();
        let bytes = pattern(tag, len);
        let (hints, clientid) = (u64::from(inp.u8()) << 40, u64::from(tag));
        let r = ch.try_send(&bytes, hints, clientid);
        if self.q.len() == self.capacity {
            assert_eq!(r, Err(ChannelError::Full));
            return;
        }
        let side = match r {
            Ok(()) if len <= self.block => 0,
            Ok(()) => self.rounded(len),
            Err(ChannelError::Pool(PoolError::OutOfSpace)) if len > self.block => {
                // No side allocation. A core that claims the position first leaves a
                // tombstone there; one that allocates first leaves the queue as it was.
                if ch.len() > self.q.len() {
                    self.q.push_back(Entry::Tomb);
                }
                return;
            }
            Err(e) => panic!("send of {len} bytes: {e:?}"),
        };
        self.q.push_back(Entry::Msg {
            bytes,
            hints,
            clientid,
            side,
        });
    }

    fn send_transfer(&mut self, ch: &Channel, inp: &mut Input<'_>) {
        if self.live.is_empty() {
            return;
        }
        let i = inp.pick(self.live.len());
        let (alloc, size, tag) = (self.live[i].alloc, self.live[i].size, self.live[i].tag);
        let len = match inp.u8() % 3 {
            0 => size,
            1 => size + 1,
            _ => usize::from(inp.u16()) % (size + 1),
        };
        let r = ch.try_send_mode(SendMode::Transfer { alloc, len }, 9, u64::from(tag));
        if len > size {
            assert_eq!(r, Err(ChannelError::BadMessage));
        } else if self.q.len() == self.capacity {
            assert_eq!(r, Err(ChannelError::Full));
        } else {
            assert_eq!(r, Ok(()));
            self.live.swap_remove(i);
            self.q.push_back(Entry::Msg {
                bytes: pattern(tag, len),
                hints: 9,
                clientid: u64::from(tag),
                side: size,
            });
        }
    }

    fn recv_into(&mut self, ch: &Channel, inp: &mut Input<'_>) {
        let cap = match inp.u8() % 3 {
            0 => 0,
            1 => 512,
            _ => usize::from(inp.u16()) % 512,
        };
        let mut dest = vec![0u8; cap];
        let r = ch.try_recv_into(&mut dest);
        self.skip_tombs();
        match self.q.front() {
            None => assert_eq!(r, Err(ChannelError::Empty)),
            Some(Entry::Msg { bytes, .. }) if bytes.len() > cap => assert_eq!(
                r,
                Err(ChannelError::DestinationTooSmall {
                    needed: bytes.len(),
                    capacity: cap
                })
            ),
            Some(Entry::Msg {
                bytes,
                hints,
                clientid,
                ..
            }) => {
                let want = Received {
                    len: bytes.len(),
                    hints: *hints,
                    clientid: *clientid,
                };
                assert_eq!(r, Ok(want));
                assert_eq!(&dest[..bytes.len()], &bytes[..], "payload");
                self.q.pop_front();
            }
            Some(Entry::Tomb) => unreachable!(),
        }
    }

    fn recv_alloc(&mut self, ch: &Channel) {
        let r = ch.try_recv_alloc();
        self.skip_tombs();
        let Some(Entry::Msg {
            bytes,
            hints,
            clientid,
            side,
        }) = self.q.front()
        else {
            assert_eq!(r.map(|x| x.1), Err(ChannelError::Empty));
            return;
        };
        match r {
            Ok((alloc, got)) => {
                let want = Received {
                    len: bytes.len(),
                    hints: *hints,
                    clientid: *clientid,
                };
                assert_eq!(got, want);
                let (off, size) = self.pool.resolve(&alloc).expect("received allocation");
                let want_size = if *side > 0 {
                    *side
                } else {
                    self.rounded(bytes.len())
                };
                assert_eq!(size, want_size);
                let mut payload = vec![0u8; bytes.len()];
                self.mem.read(off, &mut payload);
                assert_eq!(&payload, bytes, "payload");
                self.q.pop_front();
                self.adopt(alloc);
            }
            // An inline message needs a fresh allocation; without one it stays queued.
            Err(ChannelError::Pool(PoolError::OutOfSpace)) if *side == 0 => {}
            Err(e) => panic!("recv_alloc: {e:?}"),
        }
    }

    fn alloc(&mut self, inp: &mut Input<'_>) {
        let size = usize::from(inp.u16()) % 3000;
        let r = self.pool.alloc(size, AllocKind::Data);
        if self.rounded(size) > self.pool.max_alloc() {
            assert!(matches!(r, Err(PoolError::TooLarge { .. })), "{r:?}");
            return;
        }
        match r {
            Ok(a) => {
                self.adopt(a);
                assert_eq!(self.live.last().map(|l| l.size), Some(self.rounded(size)));
            }
            Err(PoolError::OutOfSpace) => {
                // Only when no free block is large enough or every record is in use.
                let s = self.pool.stats().expect("stats");
                let mut free = [0u32; SIZE_CLASSES];
                let classes = self.pool.free_blocks(&mut free).expect("free blocks");
                let order = (self.rounded(size) / self.pool.min_block()).trailing_zeros() as usize;
                assert!(
                    s.live == s.max_allocations || free[order..classes].iter().all(|&n| n == 0),
                    "OutOfSpace with free blocks {free:?}"
                );
            }
            Err(e) => panic!("alloc({size}): {e:?}"),
        }
    }

    fn free(&mut self, inp: &mut Input<'_>) {
        if self.live.is_empty() {
            return;
        }
        let l = self.live.swap_remove(inp.pick(self.live.len()));
        let (off, _) = self.pool.resolve(&l.alloc).expect("live allocation");
        let mut got = vec![0u8; l.size];
        self.mem.read(off, &mut got);
        assert_eq!(got, pattern(l.tag, l.size), "allocation contents");
        assert_eq!(self.pool.free(l.alloc), Ok(()));
        assert_eq!(
            self.pool.free(l.alloc),
            Err(PoolError::Stale),
            "double free"
        );
    }

    /// Receives everything left, in order.
    fn drain(&mut self, ch: &Channel) {
        let longest = self.q.iter().map(|e| match e {
            Entry::Msg { bytes, .. } => bytes.len(),
            Entry::Tomb => 0,
        });
        let mut dest = vec![0u8; longest.max().unwrap_or(0)];
        for _ in 0..=self.capacity {
            let r = ch.try_recv_into(&mut dest);
            self.skip_tombs();
            let Some(Entry::Msg {
                bytes,
                hints,
                clientid,
                ..
            }) = self.q.pop_front()
            else {
                assert_eq!(r, Err(ChannelError::Empty));
                return;
            };
            let want = Received {
                len: bytes.len(),
                hints,
                clientid,
            };
            assert_eq!(r, Ok(want));
            assert_eq!(&dest[..bytes.len()], &bytes[..], "payload");
        }
        panic!("more messages than the capacity");
    }
}

/// Random call sequences on a pool and a channel (two handles: the creator's and one
/// attached by descriptor with another owner id) checked against a model: a queue of
/// positions and the set of live allocations.
pub fn api_model(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = PoolConfig {
        min_block: [16, 64][inp.pick(2)],
        max_allocations: Some(12 + u32::from(inp.u8() % 24)),
        uid: POOL_UID,
    };
    let mem = Mem::new(32 << 10);
    let p1 = Pool::init(mem.region(), &cfg, 1).expect("init");
    let p2 = p1.with_owner(2).expect("owner 2");
    let empty = p1.stats().expect("stats");
    assert_eq!((empty.live, empty.free), (0, empty.total));
    let capacity = 1 + usize::from(inp.u8() % 8);
    let block = [0, 8, 64, 100][inp.pick(4)];
    let at = attrs(capacity as u32, block as u32);
    let a = Channel::create(&p1, 42, &at).expect("create");
    assert!(matches!(
        Channel::create(&p2, 42, &at),
        Err(ChannelError::UidInUse(42))
    ));
    let desc = a.serialize();
    assert_eq!(Channel::peek_descriptor(&desc), Ok((42, POOL_UID)));
    let b = Channel::attach(&p2, &desc, None).expect("attach");
    let base = p1.stats().expect("stats");
    assert_eq!(base.live, 1);
    let mut m = Model {
        mem: &mem,
        pool: p1,
        q: VecDeque::new(),
        live: Vec::new(),
        tag: 0,
        capacity,
        block,
        chan_bytes: base.total - base.free,
    };
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        let op = inp.u8();
        let ch = if op & 0x80 == 0 { a } else { b };
        m.pool = if op & 0x40 == 0 { p1 } else { p2 };
        match op % 10 {
            0 | 9 => m.send_copy(&ch, &mut inp),
            1 => m.send_transfer(&ch, &mut inp),
            2 => m.recv_into(&ch, &mut inp),
            3 => m.recv_alloc(&ch),
            4 => m.alloc(&mut inp),
            5 => m.free(&mut inp),
            6 => m.check_len(&ch),
            7 => m.check_stats(),
            _ => {
                assert_eq!(ch.recover(&|_| true), Ok(ChannelRecovery::default()));
                let nobody = |o: u32| o != 3;
                assert_eq!(m.pool.recover(&nobody), Ok(PoolRecovery::default()));
            }
        }
    }
    m.pool = p1;
    m.check_len(&a);
    m.check_stats();
    if inp.u8() & 1 == 0 {
        // Drain and free: back to the baseline with the channel; destroy: back to empty.
        m.drain(&b);
        m.check_len(&a);
        while !m.live.is_empty() {
            m.free(&mut inp);
        }
        let s = p1.stats().expect("stats");
        assert_eq!((s.live, s.free), (base.live, base.free), "baseline");
        a.destroy().expect("destroy");
    } else {
        // Destroy with messages queued frees their side allocations.
        a.destroy().expect("destroy");
        while !m.live.is_empty() {
            m.free(&mut inp);
        }
    }
    assert_eq!(b.try_send(b"x", 0, 0), Err(ChannelError::Destroyed));
    assert_eq!(b.poll(Poll::Size), Err(ChannelError::Destroyed));
    assert!(matches!(
        Channel::attach(&p2, &desc, None),
        Err(ChannelError::Destroyed)
    ));
    let s = p1.stats().expect("stats");
    assert_eq!((s.live, s.free), (0, s.total), "empty after destroy");
}
