//! Two-process ping-pong of 64-byte messages: half-round-trip latency percentiles of the
//! channel API and of the bare core queue, measured back to back in the same run.
//!
//! - Channel: the parent creates a pool with a `ping` and a `pong` channel and re-executes
//!   itself as the peer, passing the channels' serialized descriptors in the environment. The
//!   parent sends 64 bytes on `ping` (copy send, inline) and waits for the peer to send them
//!   back on `pong` (blocking receive into a reused message), `N` times.
//! - Core: the same channels through the core's try-once `try_send` / `try_recv_into` in a busy
//!   loop (a receiver polls [`Channel::may_recv`]-style readiness first): the queue's own cost,
//!   without the adapter's blocking; the difference to the first row is the adapter's.
//!
//! Half round trip = round trip / 2. Run with
//! `cargo run --release --example pingpong [-- iterations]` (default 200000); with
//! `DC_PINGPONG_PIN=1` the parent runs on CPU 0 and the peers on CPU 1.
//!
//! The hardware floor (the same ping-pong over raw atomics on a shared mapping) and other IPC
//! mechanisms are measured beside the channel by the benchmark suite:
//! `cargo run --release --manifest-path examples/peers/Cargo.toml` (`-- --pingpong 64 200000`
//! for just the channel and the floor at 64 B).
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
        _ => {}
    }
    let n = iterations();
    println!("two-process ping-pong, {LEN}-byte messages, {n} round trips (+{WARMUP} warm-up)");
    let t0 = Instant::now();
    let ch = channel_parent(n, Api::Handles)?;
    let t1 = Instant::now();
    let co = channel_parent(n, Api::CoreSpin)?;
    let t2 = Instant::now();
    println!(
        "wall time: channel {:.2} s, core {:.2} s",
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64()
    );
    print_row("channel (send / recv_into)", &ch);
    print_row("core (try_*, busy retry)", &co);
    Ok(())
}
