//! Async scenarios (`--async [--quick] [--runs K]`): 64 B ping-pong between two processes
//! with futures (`send_async` / `recv_into_async` on tokio's current-thread runtime in both)
//! beside the blocking ping-pong of the same handles and beside tokio's in-process `mpsc`
//! between two tasks; 1->1 throughput with futures beside the blocking one; and the CPU a
//! process uses while 100 futures wait on 100 idle channels (getrusage over a few seconds)
//! beside a blocked receiver's; and the wake-up of a receiver that sleeps (a future through
//! the waiter thread, beside a blocked receiver on its futex).

use std::time::{Duration, Instant};

use dragon_channels::{Channel, ChannelAttrs, MemoryPool, Message};

use crate::util::{
    Ctl, Lat, Res, cpu_ns, hex, hist, lat, mono_ns, num, ratio, reap, record, spawn, table, unhex,
};

/// `hints` value of the stop message.
const STOP_HINT: u64 = u64::MAX;

/// Futures waiting in the idle scenario.
const IDLE_FUTURES: usize = 100;

fn pool_name(tag: &str) -> String {
    format!("dcb-{}-a{tag}", std::process::id())
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Two-process ping-pong of 64-byte messages with futures, `n` measured round trips.
pub fn pingpong(n: usize) -> Res<Lat> {
    let warm = (n / 10).max(100);
    let attrs = ChannelAttrs {
        capacity: 2,
        block_size: 64,
    };
    let pool = MemoryPool::create(1 << 20, &pool_name("pp"), 1)?;
    let ping = Channel::create(&pool, 1, Some(attrs))?;
    let pong = Channel::create(&pool, 2, Some(attrs))?;
    let child = spawn(
        "async-pp",
        &format!("{}:{}", hex(&ping.serialize()), hex(&pong.serialize())),
    )?;
    let run = || -> Res<Lat> {
        let mut s = ping.sendh()?;
        s.open()?;
        let mut r = pong.recvh()?;
        r.open()?;
        let mut out = Message::create_alloc(&pool, 64)?;
        let mut back = Message::create_alloc(&pool, 64)?;
        let regs0 = dragon_channels::AsyncWaiter::now().registrations;
        let r = runtime()?.block_on(async {
            let mut h = hist();
            for i in 0..(warm + n) as u64 {
                out.bytes_memview()?[..8].copy_from_slice(&i.to_le_bytes());
                let t0 = Instant::now();
                s.send_async(&out, None).await?;
                r.recv_into_async(&mut back).await?;
                let dt = t0.elapsed();
                if back.bytes()?[..8] != i.to_le_bytes() {
                    return Err("async: wrong echo".into());
                }
                if i as usize >= warm {
                    record(&mut h, dt);
                }
            }
            out.set_hints(STOP_HINT);
            s.send_async(&out, None).await?;
            Ok(lat(&h))
        });
        eprintln!(
            "  async ping-pong: {:.3} waiter registrations per round trip (this process)",
            (dragon_channels::AsyncWaiter::now().registrations - regs0) as f64 / (warm + n) as f64
        );
        r
    };
    let r = run();
    let reaped = reap(child, "async ping-pong");
    ping.destroy()?;
    pong.destroy()?;
    pool.destroy()?;
    let r = r?;
    reaped?;
    Ok(r)
}

/// The async ping-pong peer: echoes with futures until the stop hint.
pub fn pingpong_peer(arg: &str) -> Res<()> {
    let (a, b) = arg.split_once(':').ok_or("bad argument")?;
    let ping = Channel::attach(&unhex(a))?;
    let pong = Channel::attach(&unhex(b))?;
    let mut s = pong.sendh()?;
    s.open()?;
    let mut r = ping.recvh()?;
    r.open()?;
    let mut m = Message::create_alloc(ping.pool(), 64)?;
    runtime()?.block_on(async {
        loop {
            r.recv_into_async(&mut m).await?;
            if m.hints() == STOP_HINT {
                return Ok(());
            }
            s.send_async(&m, None).await?;
        }
    })
}

/// tokio's `mpsc` (capacity 1 each way) between two tasks of a 2-worker multi-thread
/// runtime, 64-byte arrays, `n` measured round trips.
pub fn tokio_mpsc(n: usize) -> Res<Lat> {
    let warm = (n / 10).max(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<[u8; 64]>(1);
        let (btx, mut brx) = tokio::sync::mpsc::channel::<[u8; 64]>(1);
        let echo = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if btx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let main = tokio::spawn(async move {
            let mut h = hist();
            let mut m = [0u8; 64];
            for i in 0..(warm + n) as u64 {
                m[..8].copy_from_slice(&i.to_le_bytes());
                let t0 = Instant::now();
                tx.send(m).await.map_err(|_| "mpsc closed")?;
                let back = brx.recv().await.ok_or("mpsc closed")?;
                let dt = t0.elapsed();
                if back[..8] != i.to_le_bytes() {
                    return Err::<Lat, String>("mpsc: wrong echo".into());
                }
                if i as usize >= warm {
                    record(&mut h, dt);
                }
            }
            Ok(lat(&h))
        });
        let r = main.await.map_err(|e| e.to_string())?;
        echo.await.map_err(|e| e.to_string())?;
        Ok(r?)
    })
}

/// Wake-up of a receiver that sleeps: a child sends `n` messages 1 ms apart, each stamped
/// with `CLOCK_MONOTONIC`; this process receives them with `recv_bytes_async` (tokio
/// current-thread: the future goes through the waiter thread) or, with `blocking`, with
/// `recv_bytes(Timeout::Block)` (a futex sleeper), and records send-to-return times (ns).
pub fn asleep(n: usize, blocking: bool) -> Res<Lat> {
    let attrs = ChannelAttrs {
        capacity: 2,
        block_size: 64,
    };
    let pool = MemoryPool::create(1 << 20, &pool_name("as"), 1)?;
    let ch = Channel::create(&pool, 1, Some(attrs))?;
    let child = spawn("async-gap", &format!("{}:{n}", hex(&ch.serialize())))?;
    let run = || -> Res<Lat> {
        let mut r = ch.recvh()?;
        r.open()?;
        let mut h = hist();
        let mut take = |b: Vec<u8>| -> Res<()> {
            let stamp = u64::from_le_bytes(b.get(..8).ok_or("short")?.try_into()?);
            h.saturating_record(mono_ns().saturating_sub(stamp).max(1));
            Ok(())
        };
        if blocking {
            for _ in 0..n {
                take(r.recv_bytes(dragon_channels::Timeout::Block)?)?;
            }
        } else {
            runtime()?.block_on(async {
                for _ in 0..n {
                    take(r.recv_bytes_async().await?)?;
                }
                Ok::<(), Box<dyn std::error::Error>>(())
            })?;
        }
        Ok(lat(&h))
    };
    let r = run();
    let reaped = reap(child, "asleep sender");
    ch.destroy()?;
    pool.destroy()?;
    let r = r?;
    reaped?;
    Ok(r)
}

/// The sender of [`asleep`]: one stamped message every millisecond.
pub fn asleep_peer(arg: &str) -> Res<()> {
    let (d, n) = arg.split_once(':').ok_or("bad argument")?;
    let ch = Channel::attach(&unhex(d))?;
    let n: usize = n.parse()?;
    let mut s = ch.sendh()?;
    s.open()?;
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(1));
        let stamp = mono_ns().to_le_bytes();
        s.send_bytes(&stamp, 8, None, dragon_channels::Timeout::Block)?;
    }
    Ok(())
}

/// 1->1 throughput with futures: a child sends `total` 64-byte messages with `send_async`,
/// this process receives them with `recv_into_async` (capacity 100, 1 KiB blocks: Dragon's
/// defaults, as the blocking 1->1 row). Messages per second.
pub fn throughput(total: usize) -> Res<f64> {
    let pool = MemoryPool::create(4 << 20, &pool_name("tp"), 1)?;
    let ch = Channel::create(&pool, 1, None)?;
    let ctl_path = format!("/dev/shm/dcb-{}-actl", std::process::id());
    let ctl = Ctl::create(&ctl_path)?;
    let run = || -> Res<f64> {
        let child = spawn(
            "async-tx",
            &format!("{}:{ctl_path}:{total}", hex(&ch.serialize())),
        )?;
        let mut r = ch.recvh()?;
        r.open()?;
        let mut m = Message::create_alloc(&pool, 64)?;
        ctl.wait_ready(1);
        let start = mono_ns();
        ctl.go();
        let got = runtime()?.block_on(async {
            let mut got = 0u64;
            loop {
                r.recv_into_async(&mut m).await?;
                if m.hints() == STOP_HINT {
                    return Ok::<u64, dragon_channels::Error>(got);
                }
                got += 1;
            }
        })?;
        let end = mono_ns();
        reap(child, "async throughput")?;
        if got != total as u64 {
            return Err(format!("async throughput: received {got} of {total}").into());
        }
        Ok(got as f64 / ((end - start) as f64 / 1e9))
    };
    let r = run();
    let _ = std::fs::remove_file(&ctl_path);
    ch.destroy()?;
    pool.destroy()?;
    r
}

/// The async throughput sender.
pub fn throughput_peer(arg: &str) -> Res<()> {
    let mut it = arg.split(':');
    let mut next = || it.next().ok_or("bad argument");
    let ch = Channel::attach(&unhex(next()?))?;
    let ctl = Ctl::open(next()?)?;
    let count: usize = next()?.parse()?;
    let mut s = ch.sendh()?;
    s.open()?;
    let mut m = Message::create_alloc(ch.pool(), 64)?;
    ctl.ready();
    ctl.wait_go();
    runtime()?.block_on(async {
        for i in 0..count as u64 {
            m.bytes_memview()?[..8].copy_from_slice(&i.to_le_bytes());
            s.send_async(&m, None).await?;
        }
        m.set_hints(STOP_HINT);
        s.send_async(&m, None).await?;
        Ok(())
    })
}

/// CPU time (ns) that a process whose [`IDLE_FUTURES`] futures all wait on idle channels
/// used over `idle` (measured in that process with getrusage, from when every future
/// waits).
pub fn idle_cpu(idle: Duration) -> Res<u64> {
    let pool = MemoryPool::create(4 << 20, &pool_name("id"), 1)?;
    let chans: Vec<Channel> = (0..IDLE_FUTURES as u64)
        .map(|i| {
            let attrs = ChannelAttrs {
                capacity: 2,
                block_size: 64,
            };
            Channel::create(&pool, 10 + i, Some(attrs))
        })
        .collect::<Result<_, _>>()?;
    let ctl_path = format!("/dev/shm/dcb-{}-aictl", std::process::id());
    let ctl = Ctl::create(&ctl_path)?;
    let descs: Vec<String> = chans.iter().map(|c| hex(&c.serialize())).collect();
    let run = || -> Res<u64> {
        let child = spawn(
            "async-idle",
            &format!("{ctl_path}:{}:{}", idle.as_millis(), descs.join(",")),
        )?;
        ctl.wait_ready(1);
        // The child measures; it ends once every future got its message.
        std::thread::sleep(idle + Duration::from_millis(200));
        for c in &chans {
            let mut s = c.sendh()?;
            s.open()?;
            s.send_bytes(&[1u8; 8], 8, None, dragon_channels::Timeout::Block)?;
        }
        reap(child, "async idle")?;
        Ok(ctl.slot(0).load(std::sync::atomic::Ordering::SeqCst))
    };
    let r = run();
    let _ = std::fs::remove_file(&ctl_path);
    for c in chans {
        c.destroy()?;
    }
    pool.destroy()?;
    r
}

/// The idle child: 100 futures await receives; once all wait, the process's CPU time over
/// the idle period goes to slot 0.
pub fn idle_peer(arg: &str) -> Res<()> {
    let mut it = arg.splitn(3, ':');
    let mut next = || it.next().ok_or("bad argument");
    let ctl = Ctl::open(next()?)?;
    let idle = Duration::from_millis(next()?.parse()?);
    let chans: Vec<Channel> = next()?
        .split(',')
        .map(|h| Channel::attach(&unhex(h)))
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let mut tasks = Vec::new();
    for c in &chans {
        let mut r = c.recvh()?;
        r.open()?;
        tasks.push(rt.spawn(async move { r.recv_bytes_async().await.map(|_| ()) }));
    }
    while dragon_channels::AsyncWaiter::now().waiting < chans.len() {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let c0 = cpu_ns(libc::RUSAGE_SELF);
    std::thread::sleep(idle);
    let c1 = cpu_ns(libc::RUSAGE_SELF);
    ctl.slot(0)
        .store(c1 - c0, std::sync::atomic::Ordering::SeqCst);
    ctl.ready();
    rt.block_on(async {
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `--async`: runs every scenario `runs` times, side by side, and prints the tables.
pub fn report(quick: bool, runs: Option<usize>) -> Res<()> {
    let runs = runs.unwrap_or(if quick { 3 } else { 5 });
    let n = if quick { 20_000 } else { 100_000 };
    let total = if quick { 300_000 } else { 1_000_000 };
    let idle = Duration::from_secs(if quick { 2 } else { 5 });
    let mut rows: Vec<[f64; 6]> = Vec::new();
    let mut tp: Vec<[f64; 2]> = Vec::new();
    let mut cpu: Vec<[f64; 2]> = Vec::new();
    let mut woke: Vec<[f64; 4]> = Vec::new();
    let gaps = if quick { 500 } else { 2_000 };
    for run in 0..runs {
        eprintln!("async run {}/{runs}:", run + 1);
        let b = crate::ours::pingpong(64, n, crate::ours::Mode::Copy, false)?;
        let a = pingpong(n)?;
        let t = tokio_mpsc(n)?;
        eprintln!(
            "  p50 blocking {} async {} tokio mpsc {} ns",
            b.p50, a.p50, t.p50
        );
        rows.push([b.p50, b.p99, a.p50, a.p99, t.p50, t.p99]);
        let sb = asleep(gaps, true)?;
        let sa = asleep(gaps, false)?;
        eprintln!(
            "  asleep wake-up p50 blocking {} async {} ns",
            sb.p50, sa.p50
        );
        woke.push([sb.p50, sb.p99, sa.p50, sa.p99]);
        let bt = crate::ours::throughput(1, total)?;
        let at = throughput(total)?;
        eprintln!("  1->1 msg/s blocking {} async {}", num(bt), num(at));
        tp.push([bt, at]);
        // The blocking receiver's CPU over the same idle time (ours::idle_cpu).
        let bc = crate::ours::idle_cpu(idle)? as f64;
        let ac = idle_cpu(idle)? as f64;
        let pct = |ns: f64| ns / idle.as_nanos() as f64 * 100.0;
        eprintln!(
            "  idle CPU: blocking receiver {:.3} %, {IDLE_FUTURES} waiting futures {:.3} % of a core",
            pct(bc),
            pct(ac)
        );
        cpu.push([pct(bc), pct(ac)]);
    }
    println!("## Async: 64 B ping-pong between two processes (half round trip, ns)\n");
    let mut t = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        t.push(vec![
            format!("{}", i + 1),
            num(r[0]),
            num(r[1]),
            num(r[2]),
            num(r[3]),
            num(r[4]),
            num(r[5]),
            ratio(r[2], r[0]),
        ]);
    }
    let col = |k: usize| median(&mut rows.iter().map(|r| r[k]).collect::<Vec<_>>());
    // The scheduler puts the two processes on one CPU or on two, run by run, for the
    // blocking and the async pair alike: the run's own ratio compares like with like.
    let per_run = median(&mut rows.iter().map(|r| r[2] / r[0]).collect::<Vec<_>>());
    t.push(vec![
        "median".into(),
        num(col(0)),
        num(col(1)),
        num(col(2)),
        num(col(3)),
        num(col(4)),
        num(col(5)),
        format!("{per_run:.2}x (median of the runs' ratios)"),
    ]);
    table(
        &[
            "run",
            "blocking p50",
            "blocking p99",
            "async p50",
            "async p99",
            "tokio mpsc (in-process) p50",
            "tokio mpsc p99",
            "async / blocking p50",
        ],
        &t,
    );
    println!(
        "\nasync: `send_async` + `recv_into_async` on tokio's current-thread runtime in both \
         processes; blocking: `send` + `recv_into` with `Timeout::Block`; tokio mpsc: two \
         tasks on a 2-worker runtime, one process. Target: async p50 <= 1.5x blocking p50.\n"
    );
    println!("## Async: wake-up of a sleeping receiver (send to return, ns; one message a ms)\n");
    let mut t = Vec::new();
    for (i, r) in woke.iter().enumerate() {
        t.push(vec![
            format!("{}", i + 1),
            num(r[0]),
            num(r[1]),
            num(r[2]),
            num(r[3]),
            ratio(r[2], r[0]),
        ]);
    }
    let wcol = |k: usize| median(&mut woke.iter().map(|r| r[k]).collect::<Vec<_>>());
    t.push(vec![
        "median".into(),
        num(wcol(0)),
        num(wcol(1)),
        num(wcol(2)),
        num(wcol(3)),
        ratio(wcol(2), wcol(0)),
    ]);
    table(
        &[
            "run",
            "blocked receiver p50",
            "p99",
            "async (waiter thread + tokio) p50",
            "p99",
            "async / blocking p50",
        ],
        &t,
    );
    println!();
    println!("## Async: 1->1 throughput, 64 B (messages/s)\n");
    let mut t = Vec::new();
    for (i, r) in tp.iter().enumerate() {
        t.push(vec![
            format!("{}", i + 1),
            num(r[0]),
            num(r[1]),
            ratio(r[1], r[0]),
        ]);
    }
    let b = median(&mut tp.iter().map(|r| r[0]).collect::<Vec<_>>());
    let a = median(&mut tp.iter().map(|r| r[1]).collect::<Vec<_>>());
    t.push(vec!["median".into(), num(b), num(a), ratio(a, b)]);
    table(&["run", "blocking", "async", "async / blocking"], &t);
    println!(
        "\n## Async: idle CPU over {} s (% of one core)\n",
        idle.as_secs()
    );
    let mut t = Vec::new();
    for (i, r) in cpu.iter().enumerate() {
        t.push(vec![
            format!("{}", i + 1),
            format!("{:.3}", r[0]),
            format!("{:.3}", r[1]),
        ]);
    }
    t.push(vec![
        "median".into(),
        format!(
            "{:.3}",
            median(&mut cpu.iter().map(|r| r[0]).collect::<Vec<_>>())
        ),
        format!(
            "{:.3}",
            median(&mut cpu.iter().map(|r| r[1]).collect::<Vec<_>>())
        ),
    ]);
    table(
        &[
            "run",
            "one blocked receiver (its process)",
            "100 waiting futures, tokio 2 workers (whole process)",
        ],
        &t,
    );
    println!("\nTarget: under 1 % of a core.");
    Ok(())
}
