//! Instructions per message: one uncontended send + receive pair, in one process, through our
//! handles and the core beside crossbeam-channel's `try_send` + `try_recv`; and per pool
//! allocation + free (a `Message` and the core's `Pool`) beside a 64-byte `Box` allocation +
//! free. Instruction counts are exact and repeatable on a noisy machine, where times are not.
//!
//! `cargo run --release --example op_cost` runs itself under `valgrind --tool=callgrind` for
//! every row, once with N and once with 2N pairs; the difference over N is the cost of one
//! pair (start-up and teardown cancel out). `op_cost ROW N` runs one row without valgrind and
//! prints its mean time per pair (rows: `handles`, `bytes`, `core`, `crossbeam`,
//! `crossbeam-vec`, `box`, `message`, `pool`).

use core::hint::black_box;
use std::process::Command;
use std::time::Instant;

use dragon_channels::{
    AllocKind, Channel, ChannelAttrs, ChannelRecvH, ChannelSendH, MemoryPool, Message, Timeout,
};

/// Every row: name, what one iteration does.
const ROWS: [(&str, &str); 8] = [
    (
        "handles",
        "ChannelSendH::send + ChannelRecvH::recv_into, 64 B messages",
    ),
    (
        "bytes",
        "ChannelSendH::send_bytes + ChannelRecvH::recv_bytes, 64 B",
    ),
    (
        "core",
        "core Channel::try_send + try_recv_into, 64 B (no handles)",
    ),
    (
        "crossbeam",
        "crossbeam-channel bounded(16) try_send + try_recv of [u8; 64]",
    ),
    (
        "crossbeam-vec",
        "crossbeam-channel bounded(16) try_send + try_recv of a new 64 B Vec<u8>, dropped",
    ),
    ("box", "Box::new([u8; 64]) + drop (malloc + free)"),
    (
        "message",
        "Message::create_alloc(&pool, 64) + drop (pool allocation + free)",
    ),
    (
        "pool",
        "core PoolCache::alloc(64) + free (a thread cache, no adapter)",
    ),
];

/// Rows compared with crossbeam's pair; the others with the `Box`.
const CHANNEL_ROWS: usize = 5;

/// Pairs per callgrind run (and twice as many in the second run).
const CALLGRIND_N: usize = 20_000;

type Res<T> = Result<T, Box<dyn core::error::Error>>;

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next()) {
        (Some(row), n) => {
            let n = n.and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
            let t0 = Instant::now();
            run(&row, n)?;
            let dt = t0.elapsed();
            println!(
                "{row}: {n} pairs, {:.1} ns per pair",
                dt.as_nanos() as f64 / n as f64
            );
            Ok(())
        }
        (None, _) => callgrind_table(),
    }
}

/// Runs `n` iterations of `row`. Each row is a function of its own that is never inlined,
/// so that one row's code does not change how the compiler lays out another's.
fn run(row: &str, n: usize) -> Res<()> {
    match row {
        "handles" | "bytes" | "core" => with_channel(|pool, ch| match row {
            "handles" => handles(pool, ch, n),
            "bytes" => bytes(ch, n),
            _ => core_row(ch, n),
        }),
        "crossbeam" => crossbeam(n),
        "crossbeam-vec" => crossbeam_vec(n),
        "box" => boxed(n),
        "message" | "pool" => with_channel(|pool, _| match row {
            "message" => message(pool, n),
            _ => pool_row(pool, n),
        }),
        other => Err(format!(
            "unknown row {other:?}: one of handles, bytes, core, crossbeam, crossbeam-vec, box, \
             message, pool"
        )
        .into()),
    }
}

#[inline(always)]
fn check(got: &[u8], i: usize) -> Res<()> {
    if got[..8] != (i as u64).to_le_bytes() {
        return Err("received the wrong message".into());
    }
    Ok(())
}

#[inline(never)]
fn crossbeam(n: usize) -> Res<()> {
    let (s, r) = crossbeam_channel::bounded::<[u8; 64]>(16);
    let mut msg = [0u8; 64];
    for i in 0..n {
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        s.try_send(black_box(msg))?;
        let back = r.try_recv()?;
        check(&back, i)?;
    }
    Ok(())
}

/// What `send_bytes` + `recv_bytes` does with crossbeam: the receiver gets a `Vec` of its own.
#[inline(never)]
fn crossbeam_vec(n: usize) -> Res<()> {
    let (s, r) = crossbeam_channel::bounded::<Vec<u8>>(16);
    for i in 0..n {
        let mut msg = vec![0u8; 64];
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        s.try_send(black_box(msg))?;
        let back = r.try_recv()?;
        check(&back, i)?;
    }
    Ok(())
}

#[inline(never)]
fn boxed(n: usize) -> Res<()> {
    for i in 0..n {
        let mut b = Box::new([0u8; 64]);
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        check(&black_box(b)[..], i)?;
    }
    Ok(())
}

#[inline(never)]
fn handles(pool: &MemoryPool, ch: &Channel, n: usize) -> Res<()> {
    let (sendh, recvh) = open_handles(ch)?;
    let mut out = Message::create_alloc(pool, 64)?;
    let mut back = Message::create_alloc(pool, 64)?;
    for i in 0..n {
        out.bytes_memview()?[..8].copy_from_slice(&(i as u64).to_le_bytes());
        sendh.send(&out, None, Timeout::Block)?;
        recvh.recv_into(&mut back, Timeout::Block)?;
        check(back.bytes()?, i)?;
    }
    Ok(())
}

#[inline(never)]
fn bytes(ch: &Channel, n: usize) -> Res<()> {
    let (sendh, recvh) = open_handles(ch)?;
    let mut out = [0u8; 64];
    for i in 0..n {
        out[..8].copy_from_slice(&(i as u64).to_le_bytes());
        sendh.send_bytes(&out, 64, None, Timeout::Block)?;
        check(&recvh.recv_bytes(Timeout::Block)?, i)?;
    }
    Ok(())
}

#[inline(never)]
fn core_row(ch: &Channel, n: usize) -> Res<()> {
    let core = ch.core_channel();
    let (mut out, mut back) = ([0u8; 64], [0u8; 64]);
    for i in 0..n {
        out[..8].copy_from_slice(&(i as u64).to_le_bytes());
        core.try_send(&out, 0, 0)?;
        core.try_recv_into(&mut back)?;
        check(&back, i)?;
    }
    Ok(())
}

#[inline(never)]
fn message(pool: &MemoryPool, n: usize) -> Res<()> {
    for i in 0..n {
        let mut m = Message::create_alloc(pool, 64)?;
        m.bytes_memview()?[..8].copy_from_slice(&(i as u64).to_le_bytes());
        check(black_box(&m).bytes()?, i)?;
    }
    Ok(())
}

#[inline(never)]
fn pool_row(pool: &MemoryPool, n: usize) -> Res<()> {
    let mut cache = pool
        .core_pool()
        .claim_cache()
        .ok_or("the pool has no free magazine")?;
    for _ in 0..n {
        let a = cache.alloc(64, AllocKind::Data)?;
        let _ = cache.free(black_box(a))?;
    }
    cache.release()?;
    Ok(())
}

fn open_handles(ch: &Channel) -> Res<(ChannelSendH, ChannelRecvH)> {
    let mut sendh = ch.sendh()?;
    sendh.open()?;
    let mut recvh = ch.recvh()?;
    recvh.open()?;
    Ok((sendh, recvh))
}

/// A pool with one channel (capacity 16, 256 inline bytes per slot) for `f`; both are
/// destroyed afterwards.
fn with_channel(f: impl FnOnce(&MemoryPool, &Channel) -> Res<()>) -> Res<()> {
    let name = format!("op-cost-{}", std::process::id());
    let pool = MemoryPool::create(4 << 20, &name, 1)?;
    let attrs = ChannelAttrs {
        capacity: 16,
        block_size: 256,
    };
    let result = Channel::create(&pool, 1, Some(attrs))
        .map_err(Into::into)
        .and_then(|ch| {
            let r = f(&pool, &ch);
            ch.destroy()?;
            r
        });
    pool.destroy()?;
    result
}

/// Instructions of one run of `row` with `n` pairs, under callgrind.
fn instructions(exe: &str, row: &str, n: usize) -> Res<u64> {
    let out_file =
        std::env::temp_dir().join(format!("op-cost-{}-{row}-{n}.cg", std::process::id()));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .args([exe, row, &n.to_string()])
        .output()
        .map_err(|e| format!("running valgrind ({e}): install it (apt-get install valgrind)"))?;
    let _ = std::fs::remove_file(&out_file);
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("callgrind run of {row} failed:\n{text}").into());
    }
    text.lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no instruction count in callgrind's output:\n{text}").into())
}

fn callgrind_table() -> Res<()> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().ok_or("executable path is not UTF-8")?;
    let n = CALLGRIND_N;
    println!(
        "Instructions per iteration (callgrind, runs of {n} and {} iterations, difference / {n}):\n",
        2 * n
    );
    println!("| row | what one iteration does | instructions | ratio |");
    println!("|---|---|---:|---:|");
    let mut counts = Vec::new();
    for (row, _) in ROWS {
        let per =
            (instructions(exe, row, 2 * n)? as f64 - instructions(exe, row, n)? as f64) / n as f64;
        counts.push(per);
    }
    let (cb, boxed) = (counts[3], counts[5]);
    for (i, ((row, what), per)) in ROWS.iter().zip(&counts).enumerate() {
        let (base, name) = if i < CHANNEL_ROWS {
            (cb, "crossbeam")
        } else {
            (boxed, "box")
        };
        println!("| {row} | {what} | {per:.0} | {:.2}x {name} |", per / base);
    }
    Ok(())
}
