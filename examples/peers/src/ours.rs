//! dragon-channels scenarios: two-process ping-pong (copy and transfer), N->N throughput,
//! pool alloc+free, and a blocked receiver's CPU use.

use std::time::{Duration, Instant};

use dragon_channels::{
    Channel, ChannelAttrs, ChannelRecvH, ChannelSendH, MemoryPool, Message, PoolAttrs, Timeout,
};
use dragon_channels_core::AllocKind;

use crate::util::{Ctl, Lat, Res, cpu_ns, hex, hist, lat, mono_ns, reap, record, spawn, unhex};

/// `hints` value of the stop message.
const STOP_HINT: u64 = u64::MAX;

/// How the payload travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `send(&msg, None, ..)` copies into the channel slot; `recv_into` copies out.
    Copy,
    /// `send_transfer(msg, ..)` moves the allocation; `recv` takes it (zero copy).
    Transfer,
}

fn pool_name(tag: &str) -> String {
    format!("dcb-{}-{tag}", std::process::id())
}

fn open_pair(ping: &Channel, pong: &Channel) -> Res<(ChannelSendH, ChannelRecvH)> {
    let mut s = ping.sendh()?;
    s.open()?;
    let mut r = pong.recvh()?;
    r.open()?;
    Ok((s, r))
}

/// Two-process ping-pong of `size`-byte messages, `n` measured round trips; with `pinned`
/// the parent runs on CPU 0 and the peer on CPU 1 for the run.
pub fn pingpong(size: usize, n: usize, mode: Mode, pinned: bool) -> Res<Lat> {
    let warm = (n / 10).max(100);
    // Copy mode: payloads inline in the slot (block size = payload). Transfer: small
    // slots; the payload is a pool allocation that moves back and forth.
    let block = match mode {
        Mode::Copy => size.max(64),
        Mode::Transfer => 64,
    };
    let attrs = ChannelAttrs {
        capacity: 2,
        block_size: u32::try_from(block)?,
    };
    let pool_size = (8 * size.max(4096)).next_power_of_two().max(1 << 20) * 2;
    let pool = MemoryPool::create(pool_size, &pool_name("pp"), 1)?;
    let ping = Channel::create(&pool, 1, Some(attrs))?;
    let pong = Channel::create(&pool, 2, Some(attrs))?;
    let arg = format!(
        "{}:{}:{size}:{}:{}",
        hex(&ping.serialize()),
        hex(&pong.serialize()),
        if mode == Mode::Copy {
            "copy"
        } else {
            "transfer"
        },
        if pinned { "pin" } else { "free" }
    );
    let old = pinned.then(|| crate::util::pin(0));
    let child = spawn("ours-pp", &arg)?;
    let run = || -> Res<Lat> {
        let (sendh, recvh) = open_pair(&ping, &pong)?;
        let mut h = hist();
        match mode {
            Mode::Copy => {
                let mut out = Message::create_alloc(&pool, size)?;
                let mut back = Message::create_alloc(&pool, size)?;
                for i in 0..(warm + n) as u64 {
                    out.bytes_memview()?[..8].copy_from_slice(&i.to_le_bytes());
                    let t0 = Instant::now();
                    sendh.send(&out, None, Timeout::Block)?;
                    recvh.recv_into(&mut back, Timeout::Block)?;
                    let dt = t0.elapsed();
                    if back.bytes()?[..8] != i.to_le_bytes() || back.len() != size {
                        return Err("ours: wrong echo".into());
                    }
                    if i as usize >= warm {
                        record(&mut h, dt);
                    }
                }
                out.set_hints(STOP_HINT);
                sendh.send(&out, None, Timeout::Block)?;
            }
            Mode::Transfer => {
                let mut m = Message::create_alloc(&pool, size)?;
                for i in 0..(warm + n) as u64 {
                    m.bytes_memview()?[..8].copy_from_slice(&i.to_le_bytes());
                    let t0 = Instant::now();
                    sendh
                        .send_transfer(m, Timeout::Block)
                        .map_err(|e| e.error)?;
                    m = recvh.recv(Timeout::Block)?;
                    let dt = t0.elapsed();
                    if m.bytes()?[..8] != i.to_le_bytes() || m.len() != size {
                        return Err("ours transfer: wrong echo".into());
                    }
                    if i as usize >= warm {
                        record(&mut h, dt);
                    }
                }
                m.set_hints(STOP_HINT);
                sendh
                    .send_transfer(m, Timeout::Block)
                    .map_err(|e| e.error)?;
            }
        }
        Ok(lat(&h))
    };
    let r = run();
    if let Some(old) = old {
        crate::util::set_affinity(&old);
    }
    let reaped = reap(child, "ours ping-pong");
    ping.destroy()?;
    pong.destroy()?;
    pool.destroy()?;
    let r = r?;
    reaped?;
    Ok(r)
}

/// The ping-pong peer: echoes until the stop hint.
pub fn pingpong_peer(arg: &str) -> Res<()> {
    let mut it = arg.split(':');
    let mut next = || it.next().ok_or("bad argument");
    let ping = Channel::attach(&unhex(next()?))?;
    let pong = Channel::attach(&unhex(next()?))?;
    let size: usize = next()?.parse()?;
    let mode = next()?;
    if next()? == "pin" {
        crate::util::pin(1);
    }
    let (sendh, recvh) = open_pair(&pong, &ping)?;
    if mode == "copy" {
        let mut m = Message::create_alloc(ping.pool(), size)?;
        loop {
            recvh.recv_into(&mut m, Timeout::Block)?;
            if m.hints() == STOP_HINT {
                return Ok(());
            }
            sendh.send(&m, None, Timeout::Block)?;
        }
    } else {
        loop {
            let m = recvh.recv(Timeout::Block)?;
            if m.hints() == STOP_HINT {
                return Ok(());
            }
            sendh
                .send_transfer(m, Timeout::Block)
                .map_err(|e| e.error)?;
        }
    }
}

/// N sender processes -> one channel (capacity 100, 1 KiB blocks: Dragon's defaults) -> N
/// receiver processes, 64-byte copy sends; `total` messages. Messages per second.
pub fn throughput(nproc: usize, total: usize) -> Res<f64> {
    let per = total / nproc;
    let pool = MemoryPool::create(4 << 20, &pool_name("tp"), 1)?;
    let ch = Channel::create(&pool, 1, None)?;
    let ctl_path = format!("/dev/shm/dcb-{}-ctl", std::process::id());
    let ctl = Ctl::create(&ctl_path)?;
    let desc = hex(&ch.serialize());
    let mut kids = Vec::new();
    let mut spawned = || -> Res<()> {
        for i in 0..nproc {
            kids.push(spawn("ours-rx", &format!("{desc}:{ctl_path}:{i}:0"))?);
            kids.push(spawn("ours-tx", &format!("{desc}:{ctl_path}:{i}:{per}"))?);
        }
        Ok(())
    };
    let sp = spawned();
    let mut result = Err::<f64, Box<dyn std::error::Error>>("spawn failed".into());
    if sp.is_ok() {
        ctl.wait_ready(2 * nproc as u32);
        let start = mono_ns();
        ctl.go();
        let mut ok = Ok(());
        for k in kids.drain(..) {
            if let Err(e) = reap(k, "throughput") {
                ok = Err(e);
            }
        }
        let load = |i| ctl.slot(i).load(std::sync::atomic::Ordering::SeqCst);
        let end = (0..nproc).map(|i| load(2 * i)).max().unwrap_or(start);
        let got: u64 = (0..nproc).map(|i| load(2 * i + 1)).sum();
        result = match ok {
            Err(e) => Err(e),
            Ok(()) if got != (per * nproc) as u64 => {
                Err(format!("throughput: received {got} of {}", per * nproc).into())
            }
            Ok(()) => Ok(got as f64 / ((end - start) as f64 / 1e9)),
        };
    } else {
        for mut k in kids {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
    let _ = std::fs::remove_file(&ctl_path);
    ch.destroy()?;
    pool.destroy()?;
    sp?;
    result
}

/// A throughput child: `tx` sends `count` messages then a stop; `rx` receives until a stop
/// and records its end time and count in slots 2i and 2i+1.
pub fn throughput_peer(arg: &str, tx: bool) -> Res<()> {
    let mut it = arg.split(':');
    let mut next = || it.next().ok_or("bad argument");
    let ch = Channel::attach(&unhex(next()?))?;
    let ctl = Ctl::open(next()?)?;
    let idx: usize = next()?.parse()?;
    let count: usize = next()?.parse()?;
    if tx {
        let mut s = ch.sendh()?;
        s.open()?;
        let mut m = Message::create_alloc(ch.pool(), 64)?;
        ctl.ready();
        ctl.wait_go();
        for i in 0..count as u64 {
            m.bytes_memview()?[..8].copy_from_slice(&i.to_le_bytes());
            s.send(&m, None, Timeout::Block)?;
        }
        m.set_hints(STOP_HINT);
        s.send(&m, None, Timeout::Block)?;
    } else {
        let mut r = ch.recvh()?;
        r.open()?;
        let mut m = Message::create_alloc(ch.pool(), 64)?;
        ctl.ready();
        ctl.wait_go();
        let mut got = 0u64;
        loop {
            r.recv_into(&mut m, Timeout::Block)?;
            if m.hints() == STOP_HINT {
                break;
            }
            got += 1;
        }
        let end = mono_ns();
        use std::sync::atomic::Ordering::SeqCst;
        ctl.slot(2 * idx).store(end, SeqCst);
        ctl.slot(2 * idx + 1).store(got, SeqCst);
    }
    Ok(())
}

/// ns per alloc+free pair: (Message::create_alloc + drop, core Pool::alloc + free).
pub fn pool_alloc(size: usize, n: usize) -> Res<(f64, f64)> {
    let attrs = PoolAttrs {
        min_block: 64,
        max_allocations: Some(1024),
        ..PoolAttrs::default()
    };
    let pool = MemoryPool::create_with_attrs(4 << 20, &pool_name("al"), 1, &attrs)?;
    let run = || -> Res<(f64, f64)> {
        let t0 = Instant::now();
        for _ in 0..n {
            let m = Message::create_alloc(&pool, size)?;
            drop(std::hint::black_box(m));
        }
        let msg = t0.elapsed().as_nanos() as f64 / n as f64;
        // The core's fast path: a thread cache (a magazine of its own).
        let mut core = pool
            .core_pool()
            .claim_cache()
            .ok_or("the pool has no free magazine")?;
        let t0 = Instant::now();
        for _ in 0..n {
            let a = core
                .alloc(size, AllocKind::Data)
                .map_err(|e| format!("{e:?}"))?;
            let _ = core
                .free(std::hint::black_box(a))
                .map_err(|e| format!("{e:?}"))?;
        }
        let raw = t0.elapsed().as_nanos() as f64 / n as f64;
        core.release().map_err(|e| format!("{e:?}"))?;
        Ok((msg, raw))
    };
    let r = run();
    pool.destroy()?;
    r
}

/// ns per `Message::create_alloc` + drop pair in each of two processes allocating `size`
/// bytes from one pool at once, `n` pairs each (started together, each timing its own loop).
pub fn pool_alloc_two(size: usize, n: usize) -> Res<[f64; 2]> {
    let name = pool_name("a2");
    let pool = MemoryPool::create(16 << 20, &name, 1)?;
    let dir = std::env::temp_dir();
    let outs: Vec<String> = (0..2)
        .map(|i| {
            dir.join(format!("dcb-{}-a2-{i}", std::process::id()))
                .display()
                .to_string()
        })
        .collect();
    let run = || -> Res<[f64; 2]> {
        let kids: Vec<_> = outs
            .iter()
            .map(|out| spawn("ours-alloc", &format!("{name}:{size}:{n}:{out}")))
            .collect::<Res<_>>()?;
        for k in kids {
            reap(k, "allocating")?;
        }
        let read = |p: &String| -> Res<f64> { Ok(std::fs::read_to_string(p)?.trim().parse()?) };
        Ok([read(&outs[0])?, read(&outs[1])?])
    };
    let r = run();
    for o in &outs {
        let _ = std::fs::remove_file(o);
    }
    pool.destroy()?;
    r
}

/// Child of [`pool_alloc_two`]: `name:size:n:out`; writes its ns per pair to `out`.
pub fn alloc_peer(arg: &str) -> Res<()> {
    let mut it = arg.splitn(4, ':');
    let (Some(name), Some(size), Some(n), Some(out)) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(format!("bad argument {arg:?}").into());
    };
    let (size, n): (usize, usize) = (size.parse()?, n.parse()?);
    let pool = MemoryPool::attach(name)?;
    // Warm up (the first allocation claims this thread's magazine).
    for _ in 0..1000 {
        drop(Message::create_alloc(&pool, size)?);
    }
    let t0 = Instant::now();
    for _ in 0..n {
        let m = Message::create_alloc(&pool, size)?;
        drop(std::hint::black_box(m));
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    std::fs::write(out, format!("{ns}"))?;
    Ok(())
}

/// CPU time (ns) a receiver blocked on an empty channel used over `idle`.
pub fn idle_cpu(idle: Duration) -> Res<u64> {
    let pool = MemoryPool::create(1 << 20, &pool_name("id"), 1)?;
    let ch = Channel::create(&pool, 1, None)?;
    let ctl_path = format!("/dev/shm/dcb-{}-ictl", std::process::id());
    let ctl = Ctl::create(&ctl_path)?;
    let run = || -> Res<u64> {
        let child = spawn("ours-idle", &format!("{}:{ctl_path}", hex(&ch.serialize())))?;
        ctl.wait_ready(1);
        std::thread::sleep(idle);
        let mut s = ch.sendh()?;
        s.open()?;
        s.send_bytes(&[1u8; 8], 8, None, Timeout::Block)?;
        reap(child, "idle receiver")?;
        Ok(ctl.slot(0).load(std::sync::atomic::Ordering::SeqCst))
    };
    let r = run();
    let _ = std::fs::remove_file(&ctl_path);
    ch.destroy()?;
    pool.destroy()?;
    r
}

/// The idle child: blocks in `recv` and reports the CPU time the call used.
pub fn idle_peer(arg: &str) -> Res<()> {
    let (d, p) = arg.split_once(':').ok_or("bad argument")?;
    let ch = Channel::attach(&unhex(d))?;
    let ctl = Ctl::open(p)?;
    let mut r = ch.recvh()?;
    r.open()?;
    let c0 = cpu_ns(libc::RUSAGE_SELF);
    ctl.ready();
    let _m = r.recv(Timeout::Block)?;
    let c1 = cpu_ns(libc::RUSAGE_SELF);
    ctl.slot(0)
        .store(c1 - c0, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}
