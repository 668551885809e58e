//! Two-process ping-pong of 64-byte messages: half-round-trip latency percentiles of the
//! channel API, beside the hardware floor measured in the same run.
//!
//! - Channel: the parent creates a pool with a `ping` and a `pong` channel and re-executes
//!   itself as the peer, passing the channels' serialized descriptors in the environment. The
//!   parent sends 64 bytes on `ping` (copy send, inline) and waits for the peer to send them
//!   back on `pong` (blocking receive into a reused message), `N` times.
//! - Floor: the same two processes' worth of work on raw shared memory: a 4 KiB `/dev/shm`
//!   mapping (the same kind of `MAP_SHARED` mapping), where each side copies the 64 bytes in,
//!   stores a flag (`AtomicU32`, Release), and the other spins on the flag (Acquire) and copies
//!   the 64 bytes out.
//!
//! - Core: the same channels through the core's try-once `try_send` / `try_recv_into` in a busy
//!   loop (a receiver polls [`Channel::may_recv`]-style readiness first): the queue's own cost,
//!   without the adapter's blocking; the difference to the first row is the adapter's.
//!
//! Half round trip = round trip / 2. Run with
//! `cargo run --release --example pingpong [-- iterations]` (default 200000); with
//! `DC_PINGPONG_PIN=1` the parent runs on CPU 0 and the peers on CPU 1.
//!
//! [`Channel::may_recv`]: dragon_channels_core::Channel::may_recv

use core::time::Duration;
use std::process::{Command, Stdio};
use std::time::Instant;

use dragon_channels::{Channel, ChannelAttrs, MemoryPool, Message, Timeout};

const ROLE: &str = "DC_PINGPONG_ROLE";
const DESC: &str = "DC_PINGPONG_DESC";
const LEN: usize = 64;
const WARMUP: usize = 10_000;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

fn iterations() -> usize {
    std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000)
}

fn spawn_peer(role: &str, desc: &str) -> std::io::Result<std::process::Child> {
    Command::new(std::env::current_exe()?)
        .env(ROLE, role)
        .env(DESC, desc)
        .stdout(Stdio::null())
        .spawn()
}

/// Percentiles of half round trips, in nanoseconds.
struct Stats {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

fn stats(mut rtt: Vec<Duration>) -> Stats {
    rtt.sort_unstable();
    let at = |q: f64| {
        let i = ((rtt.len() as f64 * q) as usize).min(rtt.len() - 1);
        rtt[i].as_nanos() as f64 / 2.0
    };
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: rtt[rtt.len() - 1].as_nanos() as f64 / 2.0,
    }
}

fn print_row(what: &str, s: &Stats) {
    println!(
        "{what:<28} p50 {:>8.0} ns  p99 {:>8.0} ns  p99.9 {:>8.0} ns  max {:>9.0} ns",
        s.p50, s.p99, s.p999, s.max
    );
}

// ----- channel ping-pong -----

/// Which API a channel ping-pong goes through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    /// The adapter's handles: blocking `send` / `recv_into` (spin, yield, futex sleep).
    Handles,
    /// The core's try-once `try_send` / `try_recv_into`, retried in a busy loop: the queue
    /// alone, without the adapter's waiting and wake-ups.
    CoreSpin,
}

impl Api {
    fn role(self) -> &'static str {
        match self {
            Self::Handles => "channel",
            Self::CoreSpin => "core",
        }
    }
}

/// Busy-retries a core try-once operation while it reports a full or empty channel.
fn spin_core<T>(
    mut op: impl FnMut() -> Result<T, dragon_channels_core::ChannelError>,
) -> Result<T, dragon_channels_core::ChannelError> {
    use dragon_channels_core::ChannelError as E;
    loop {
        match op() {
            Err(E::Full | E::Empty) => {}
            r => return r,
        }
    }
}

/// Core copy send on `ch`, retried while the channel is full.
fn core_send(ch: &Channel, bytes: &[u8]) -> Result<(), dragon_channels_core::ChannelError> {
    spin_core(|| ch.core_channel().try_send(bytes, 0, 0))
}

/// Core receive from `ch` into `dest`: polls the readiness hint, then tries.
fn core_recv(ch: &Channel, dest: &mut [u8]) -> Result<(), dragon_channels_core::ChannelError> {
    let c = ch.core_channel();
    spin_core(|| {
        while !c.may_recv() {
            core::hint::spin_loop();
        }
        c.try_recv_into(dest)
    })
    .map(|_| ())
}

fn channel_parent(n: usize, api: Api) -> Result<Stats, Box<dyn core::error::Error>> {
    let name = format!("pingpong-{}", std::process::id());
    let pool = MemoryPool::create(4 << 20, &name, 1)?;
    let attrs = ChannelAttrs {
        capacity: 16,
        block_size: 256,
    };
    let ping = Channel::create(&pool, 1, Some(attrs))?;
    let pong = Channel::create(&pool, 2, Some(attrs))?;
    let desc = format!("{}:{}", hex(&ping.serialize()), hex(&pong.serialize()));
    let mut peer = spawn_peer(api.role(), &desc)?;

    let mut sendh = ping.sendh()?;
    sendh.open()?;
    let mut recvh = pong.recvh()?;
    recvh.open()?;
    let mut out = Message::create_alloc(&pool, LEN)?;
    let mut back = Message::create_alloc(&pool, LEN)?;
    let mut rtt = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        out.bytes_memview()?[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let t0 = Instant::now();
        match api {
            Api::Handles => {
                sendh.send(&out, None, Timeout::Block)?;
                recvh.recv_into(&mut back, Timeout::Block)?;
            }
            Api::CoreSpin => {
                core_send(&ping, out.bytes()?)?;
                core_recv(&pong, back.bytes_memview()?)?;
            }
        }
        let dt = t0.elapsed();
        if back.bytes()?[..8] != (i as u64).to_le_bytes() {
            return Err("peer echoed the wrong message".into());
        }
        if i >= WARMUP {
            rtt.push(dt);
        }
    }
    // Stop the peer: a message whose first byte is 0xFF... with an all-ones counter.
    out.bytes_memview()?.fill(0xFF);
    sendh.send(&out, None, Timeout::Block)?;
    let status = peer.wait()?;
    if !status.success() {
        return Err(format!("channel peer failed: {status}").into());
    }
    drop((out, back, sendh, recvh));
    ping.destroy()?;
    pong.destroy()?;
    pool.destroy()?;
    Ok(stats(rtt))
}

fn channel_peer(desc: &str, api: Api) -> Result<(), Box<dyn core::error::Error>> {
    let (a, b) = desc.split_once(':').ok_or("bad descriptor list")?;
    let ping = Channel::attach(&unhex(a))?;
    let pong = Channel::attach(&unhex(b))?;
    let mut recvh = ping.recvh()?;
    recvh.open()?;
    let mut sendh = pong.sendh()?;
    sendh.open()?;
    let mut msg = Message::create_alloc(ping.pool(), LEN)?;
    loop {
        match api {
            Api::Handles => recvh.recv_into(&mut msg, Timeout::Block)?,
            Api::CoreSpin => core_recv(&ping, msg.bytes_memview()?)?,
        }
        if msg.bytes()?.iter().all(|&x| x == 0xFF) {
            return Ok(());
        }
        match api {
            Api::Handles => sendh.send(&msg, None, Timeout::Block)?,
            Api::CoreSpin => core_send(&pong, msg.bytes()?)?,
        }
    }
}

// ----- the floor: raw atomics on a shared mapping -----

/// Raw shared-memory ping-pong. The workspace bans naming atomics outside the core's and the
/// adapter's `sync` modules; this benchmark measures exactly such a raw atomic, on purpose.
#[allow(clippy::disallowed_types)]
mod floor {
    use core::sync::atomic::{AtomicU32, Ordering};
    use core::time::Duration;
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::Instant;

    use memmap2::{MmapMut, MmapOptions};

    use super::LEN;

    const FLAG_A: usize = 0;
    const FLAG_B: usize = 64;
    const BUF_A: usize = 128;
    const BUF_B: usize = 256;
    const SIZE: usize = 4096;
    const STOP: u32 = u32::MAX;

    pub(super) fn path(parent_pid: u32) -> String {
        format!("/dev/shm/pingpong-floor-{parent_pid}")
    }

    pub(super) fn map(path: &str, create: bool) -> std::io::Result<MmapMut> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .mode(0o600)
            .open(path)?;
        if create {
            file.set_len(SIZE as u64)?;
        }
        // SAFETY: a private benchmark file shared only by the two processes of this example;
        // it is accessed through atomics and raw copies only.
        unsafe { MmapOptions::new().len(SIZE).map_mut(&file) }
    }

    fn flag(map: &MmapMut, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is 4-aligned inside the page-aligned mapping; a zeroed u32 is a valid
        // AtomicU32; the reference lives no longer than the mapping.
        unsafe { &*map.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn copy_in(map: &MmapMut, off: usize, src: &[u8; LEN]) {
        // SAFETY: `off..off + LEN` is inside the mapping; the other side only reads these
        // bytes after the flag store that follows (Release/Acquire).
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), map.as_ptr().add(off).cast_mut(), LEN);
        }
    }

    fn copy_out(map: &MmapMut, off: usize, dst: &mut [u8; LEN]) {
        // SAFETY: as in `copy_in`; the writer stored the flag we acquired after its copy.
        unsafe { core::ptr::copy_nonoverlapping(map.as_ptr().add(off), dst.as_mut_ptr(), LEN) }
    }

    fn wait_for(f: &AtomicU32, want: u32) -> u32 {
        loop {
            // SYNC: Acquire <-> the other side's flag store (Release) after its copy.
            let v = f.load(Ordering::Acquire);
            if v == want || v == STOP {
                return v;
            }
            core::hint::spin_loop();
        }
    }

    pub(super) fn parent(map: &MmapMut, n: usize, warmup: usize) -> Vec<Duration> {
        let (a, b) = (flag(map, FLAG_A), flag(map, FLAG_B));
        let mut msg = [0u8; LEN];
        let mut back = [0u8; LEN];
        let mut rtt = Vec::with_capacity(n);
        for i in 1..=(warmup + n) as u32 {
            msg[..4].copy_from_slice(&i.to_le_bytes());
            let t0 = Instant::now();
            copy_in(map, BUF_A, &msg);
            // SYNC: Release <-> peer's Acquire load in `wait_for`.
            a.store(i, Ordering::Release);
            wait_for(b, i);
            copy_out(map, BUF_B, &mut back);
            let dt = t0.elapsed();
            assert_eq!(
                back[..4],
                i.to_le_bytes(),
                "floor peer echoed the wrong bytes"
            );
            if i as usize > warmup {
                rtt.push(dt);
            }
        }
        // SYNC: Release <-> peer's Acquire load in `wait_for`.
        a.store(STOP, Ordering::Release);
        rtt
    }

    pub(super) fn peer(map: &MmapMut) {
        let (a, b) = (flag(map, FLAG_A), flag(map, FLAG_B));
        let mut msg = [0u8; LEN];
        let mut i = 1u32;
        loop {
            if wait_for(a, i) == STOP {
                return;
            }
            copy_out(map, BUF_A, &mut msg);
            copy_in(map, BUF_B, &msg);
            // SYNC: Release <-> parent's Acquire load in `wait_for`.
            b.store(i, Ordering::Release);
            i += 1;
        }
    }
}

fn floor_parent(n: usize) -> Result<Stats, Box<dyn core::error::Error>> {
    let path = floor::path(std::process::id());
    let map = floor::map(&path, true)?;
    let mut peer = spawn_peer("floor", &path);
    let rtt = match &mut peer {
        Ok(_) => floor::parent(&map, n, WARMUP),
        Err(_) => Vec::new(),
    };
    let _ = std::fs::remove_file(&path);
    let status = peer?.wait()?;
    if !status.success() {
        return Err(format!("floor peer failed: {status}").into());
    }
    Ok(stats(rtt))
}

/// With `DC_PINGPONG_PIN` set, the parent runs on CPU 0 and every peer on CPU 1.
fn pin(cpu: usize) {
    if std::env::var_os("DC_PINGPONG_PIN").is_some() {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
            eprintln!("cannot pin to CPU {cpu}: {e}");
        }
    }
}

fn main() -> Result<(), Box<dyn core::error::Error>> {
    let role = std::env::var(ROLE);
    pin(if role.is_ok() { 1 } else { 0 });
    match role.as_deref() {
        Ok("channel") => return channel_peer(&std::env::var(DESC)?, Api::Handles),
        Ok("core") => return channel_peer(&std::env::var(DESC)?, Api::CoreSpin),
        Ok("floor") => {
            let map = floor::map(&std::env::var(DESC)?, false)?;
            floor::peer(&map);
            return Ok(());
        }
        _ => {}
    }
    let n = iterations();
    println!("two-process ping-pong, {LEN}-byte messages, {n} round trips (+{WARMUP} warm-up)");
    let t0 = Instant::now();
    let ch = channel_parent(n, Api::Handles)?;
    let t1 = Instant::now();
    let co = channel_parent(n, Api::CoreSpin)?;
    let fl = floor_parent(n)?;
    let t2 = Instant::now();
    println!(
        "wall time: channel {:.2} s, floor {:.2} s",
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64()
    );
    print_row("channel (send / recv_into)", &ch);
    print_row("core (try_*, busy retry)", &co);
    print_row("floor (raw AtomicU32 flags)", &fl);
    println!(
        "ratio channel / floor       p50 {:>8.1}x     p99 {:>8.1}x     p99.9 {:>8.1}x",
        ch.p50 / fl.p50,
        ch.p99 / fl.p99,
        ch.p999 / fl.p999
    );
    Ok(())
}
