//! One-command benchmark suite: dragon-channels beside its floor (raw atomics on a shared
//! mapping) and peer IPC mechanisms, printed as markdown tables and written as JSON.
//!
//! `cargo run --release --manifest-path examples/peers/Cargo.toml -- [--quick] [--json out.json]`
//!
//! `--waiting [--quick] [--runs K] [--json out.json]` runs only the waiting scenarios (channel
//! set wake-up, barrier).
//!
//! `--wake recv|N|hintsN ROUNDS [GAP_US]` and
//! `--barrier P ROUNDS [recv|adaptive|spin|idle|yield]` run one waiting scenario once (for
//! profiling).
//!
//! `--async [--quick] [--runs K]` runs only the async scenarios (`awaiting.rs`).
//!
//! `--alloc [--quick] [--runs K]` runs only the allocation tables, K times each (5 by
//! default), and prints every run and the medians.
//!
//! `--scaling N [--total M]` runs only the N->N throughput scenario and prints one
//! tab-separated line (used by `scaling.sh`).

mod alloc;
mod awaiting;
mod floor;
mod ours;
mod peers;
mod util;
mod waiting;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use util::{Lat, Res, num, ratio, size_name, table};

const SIZES: [usize; 4] = [64, 1024, 64 << 10, 1 << 20];

struct Cfg {
    quick: bool,
    json: Option<String>,
    /// Runs of each waiting scenario (`--runs K`; the plan's default otherwise).
    runs: Option<usize>,
    /// `--waiting`: only the waiting scenarios.
    waiting_only: bool,
    /// `--alloc`: only the allocation tables (`--runs K` times, medians).
    alloc_only: bool,
}

impl Cfg {
    fn iters(&self, size: usize) -> usize {
        let full = match size {
            0..=64 => 200_000,
            65..=1024 => 100_000,
            1025..=65536 => 20_000,
            _ => 2_000,
        };
        if self.quick { full / 10 } else { full }
    }
    fn total(&self) -> usize {
        if self.quick { 300_000 } else { 2_000_000 }
    }
    fn allocs(&self) -> usize {
        if self.quick { 200_000 } else { 1_000_000 }
    }
    fn idle(&self) -> Duration {
        Duration::from_secs(if self.quick { 1 } else { 2 })
    }
}

fn child_role() -> Option<Res<()>> {
    let role = std::env::var(util::ROLE).ok()?;
    let arg = std::env::var(util::ARG).unwrap_or_default();
    Some(match role.as_str() {
        "ours-pp" => ours::pingpong_peer(&arg),
        "ours-tx" => ours::throughput_peer(&arg, true),
        "ours-rx" => ours::throughput_peer(&arg, false),
        "ours-idle" => ours::idle_peer(&arg),
        "ours-alloc" => ours::alloc_peer(&arg),
        "floor" => floor::peer(&arg),
        "stream" => peers::stream_peer(&arg),
        "mq" => peers::mq_peer(&arg),
        "ipc" => peers::ipc_peer(&arg),
        "iox" => peers::iceoryx2_peer(&arg),
        "wait-pp" => waiting::wake_peer(&arg),
        "wait-bar" => waiting::barrier_peer(&arg),
        "async-pp" => awaiting::pingpong_peer(&arg),
        "async-tx" => awaiting::throughput_peer(&arg),
        "async-idle" => awaiting::idle_peer(&arg),
        "async-gap" => awaiting::asleep_peer(&arg),
        r => Err(format!("unknown role {r}").into()),
    })
}

/// A latency row: mechanism name and its result (or why it failed).
struct Row {
    name: &'static str,
    lat: Result<Lat, String>,
}

fn measure(name: &'static str, f: impl FnOnce() -> Res<Lat>) -> Row {
    let t = Instant::now();
    let lat = f().map_err(|e| e.to_string());
    eprintln!(
        "  {name}: {} ({:.1} s)",
        match &lat {
            Ok(l) => format!("p50 {} ns", l.p50),
            Err(e) => format!("FAILED: {e}"),
        },
        t.elapsed().as_secs_f64()
    );
    Row { name, lat }
}

fn json_lat(out: &mut String, section: &str, size: usize, r: &Row) {
    match &r.lat {
        Ok(l) => {
            let _ = write!(
                out,
                "{{\"section\":\"{section}\",\"size\":{size},\"mechanism\":\"{}\",\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"samples\":{}}},",
                r.name, l.p50, l.p99, l.p999, l.max, l.n
            );
        }
        Err(e) => {
            let _ = write!(
                out,
                "{{\"section\":\"{section}\",\"size\":{size},\"mechanism\":\"{}\",\"error\":\"{}\"}},",
                r.name,
                e.replace('"', "'")
            );
        }
    }
}

fn json_num(out: &mut String, section: &str, fields: &[(&str, String)]) {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    let _ = write!(out, "{{\"section\":\"{section}\",{}}},", body.join(","));
}

fn jf(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

fn scaling(args: &[String]) -> Res<()> {
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let n = get("--scaling").ok_or("--scaling needs N")?;
    let total = get("--total").unwrap_or(1_000_000);
    let ours = ours::throughput(n, total)?;
    let cb = peers::crossbeam_throughput(n, total)?;
    println!("{n}\t{ours:.0}\t{cb:.0}");
    cleanup();
    Ok(())
}

/// `--pingpong SIZE N`: only ours (copy) and the floor at one size, for profiling.
fn pingpong_only(a: &[String]) -> Res<()> {
    let size: usize = a.first().ok_or("--pingpong SIZE N")?.parse()?;
    let n: usize = a.get(1).ok_or("--pingpong SIZE N")?.parse()?;
    let o = ours::pingpong(size, n, ours::Mode::Copy, false)?;
    let p = ours::pingpong(size, n, ours::Mode::Copy, true)?;
    let f = floor::pingpong(size, n)?;
    println!(
        "ours  p50 {} p99 {} p99.9 {} max {}",
        o.p50, o.p99, o.p999, o.max
    );
    println!(
        "pinned p50 {} p99 {} p99.9 {} max {}",
        p.p50, p.p99, p.p999, p.max
    );
    println!(
        "floor p50 {} p99 {} p99.9 {} max {}",
        f.p50, f.p99, f.p999, f.max
    );
    cleanup();
    Ok(())
}

fn cleanup() {
    peers::iceoryx2_cleanup();
    let prefix = format!("dcb-{}-", std::process::id());
    if let Ok(d) = std::fs::read_dir("/dev/shm") {
        for e in d.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn main() -> Res<()> {
    if let Some(r) = child_role() {
        return r;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--scaling") {
        return scaling(&args);
    }
    if let Some(i) = args.iter().position(|a| a == "--wake" || a == "--barrier") {
        let r = waiting::single(&args[i..]);
        cleanup();
        return r;
    }
    if args.iter().any(|a| a == "--async") {
        let runs = args
            .iter()
            .position(|a| a == "--runs")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok());
        let r = awaiting::report(args.iter().any(|a| a == "--quick"), runs);
        cleanup();
        return r;
    }
    if let Some(i) = args.iter().position(|a| a == "--pingpong") {
        return pingpong_only(&args[i + 1..]);
    }
    let cfg = Cfg {
        quick: args.iter().any(|a| a == "--quick"),
        json: args
            .iter()
            .position(|a| a == "--json")
            .and_then(|i| args.get(i + 1).cloned()),
        runs: args
            .iter()
            .position(|a| a == "--runs")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok()),
        waiting_only: args.iter().any(|a| a == "--waiting"),
        alloc_only: args.iter().any(|a| a == "--alloc"),
    };
    let started = Instant::now();
    let load0 = load();
    let r = run(&cfg);
    cleanup();
    println!(
        "total wall time: {:.1} s ({} mode)",
        started.elapsed().as_secs_f64(),
        if cfg.quick { "quick" } else { "full" }
    );
    println!(
        "machine load (/proc/loadavg) at start: {load0}; at end: {} (the suite itself keeps \
         about 2 CPUs busy; a start value well above 0 means other work shared the CPUs and \
         the figures are noisy)",
        load()
    );
    r
}

/// The first three fields of /proc/loadavg.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn run(cfg: &Cfg) -> Res<()> {
    let mut js = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# dragon-channels benchmark suite ({} mode, {cpus} CPUs)\n",
        if cfg.quick { "quick" } else { "full" }
    );
    println!(
        "Method: closed-loop ping-pong between two processes (the parent re-executes itself as \
         the peer; threads for crossbeam). One message out, the echo back, repeated; no send \
         rate is imposed, so there is no coordinated omission. Each round trip is timed with \
         `Instant` and half of it is recorded in an HDR histogram (3 significant digits); the \
         first 10 % of round trips are warm-up and not recorded. Ours = `dragon-channels` \
         std adapter handles: `ChannelSendH::send(&msg, None, Timeout::Block)` (copy into an \
         inline slot; block size = payload, capacity 2) and `ChannelRecvH::recv_into` (copy \
         out into a reused message). Every side copies the payload in and out (the floor, \
         iceoryx2 and the kernel peers too). Ratio columns are ours / peer: above 1 means \
         ours is slower (latency) or faster (throughput, stated per table).\n"
    );

    if cfg.alloc_only {
        alloc::report(cfg.allocs(), cfg.runs.unwrap_or(5), &mut js);
        return write_json(cfg, &js, cpus);
    }
    if cfg.waiting_only {
        waiting::report(&waiting::Plan::new(cfg.quick, cfg.runs), &mut js);
        return write_json(cfg, &js, cpus);
    }

    // ----- latency -----
    let floor_flags = {
        eprintln!("floor, flags only:");
        measure("floor: raw AtomicU32 flags, no payload", || {
            floor::pingpong(0, cfg.iters(64))
        })
    };
    json_lat(&mut js, "latency", 0, &floor_flags);
    let mut lat_rows = Vec::new();
    for &size in &SIZES {
        eprintln!("latency, {}:", size_name(size));
        let n = cfg.iters(size);
        let mut rows = vec![measure("dragon-channels (copy send / recv_into)", || {
            ours::pingpong(size, n, ours::Mode::Copy, false)
        })];
        rows.push(measure("dragon-channels, pinned CPU 0 / CPU 1", || {
            ours::pingpong(size, n, ours::Mode::Copy, true)
        }));
        rows.push(measure("floor: AtomicU32 + payload copy in/out", || {
            floor::pingpong(size, n)
        }));
        rows.push(measure("iceoryx2 0.10 pub/sub [u8]", || {
            let r = peers::iceoryx2(size, n);
            peers::iceoryx2_cleanup();
            r
        }));
        match size {
            64 => rows.push(measure("crossbeam bounded(1), threads", || {
                peers::crossbeam::<64>(n)
            })),
            1024 => rows.push(measure("crossbeam bounded(1), threads", || {
                peers::crossbeam::<1024>(n)
            })),
            65536 => rows.push(measure("crossbeam bounded(1), threads", || {
                peers::crossbeam::<65536>(n)
            })),
            _ => {}
        }
        rows.push(measure("Unix domain socket pair", || peers::uds(size, n)));
        rows.push(measure("pipe pair", || peers::pipes(size, n)));
        if size <= 8192 {
            rows.push(measure("POSIX mq (mq_send/mq_receive)", || {
                peers::mq(size, n)
            }));
        }
        rows.push(measure("ipc-channel bytes_channel", || peers::ipc(size, n)));
        for r in &rows {
            json_lat(&mut js, "latency", size, r);
        }
        lat_rows.push((size, rows));
    }
    println!("## Two-process ping-pong latency (half round trip, ns)\n");
    let head = [
        "size",
        "mechanism",
        "p50",
        "p99",
        "p99.9",
        "max",
        "ours/peer p50",
        "ours/peer p99",
    ];
    let mut t = Vec::new();
    for (size, rows) in &lat_rows {
        let ours = rows[0].lat.as_ref().ok().copied();
        for r in rows.iter().chain(std::iter::once(&floor_flags)) {
            let mut line = vec![size_name(*size), r.name.to_string()];
            match (&r.lat, ours) {
                (Ok(l), o) => {
                    line.extend([num(l.p50), num(l.p99), num(l.p999), num(l.max)]);
                    if std::ptr::eq(r, &rows[0]) {
                        line.extend(["—".into(), "—".into()]);
                    } else if let Some(o) = o {
                        line.extend([ratio(o.p50, l.p50), ratio(o.p99, l.p99)]);
                    } else {
                        line.extend(["n/a".into(), "n/a".into()]);
                    }
                }
                (Err(e), _) => {
                    line.push(format!("failed: {e}"));
                    line.extend(std::iter::repeat_n(String::new(), 5));
                }
            }
            t.push(line);
        }
    }
    table(&head, &t);

    // ----- copy vs transfer -----
    eprintln!("copy vs transfer:");
    let mut t = Vec::new();
    for &size in &[64usize << 10, 1 << 20] {
        let n = cfg.iters(size);
        let tr = measure("dragon-channels transfer (send_transfer / recv)", || {
            ours::pingpong(size, n, ours::Mode::Transfer, false)
        });
        json_lat(&mut js, "transfer", size, &tr);
        let copy = lat_rows
            .iter()
            .find(|(s, _)| *s == size)
            .and_then(|(_, r)| r[0].lat.as_ref().ok().copied());
        match (copy, &tr.lat) {
            (Some(c), Ok(x)) => t.push(vec![
                size_name(size),
                num(c.p50),
                num(x.p50),
                num(c.p99),
                num(x.p99),
                ratio(c.p50, x.p50),
            ]),
            (_, Err(e)) => t.push(vec![size_name(size), format!("failed: {e}")]),
            (None, _) => t.push(vec![size_name(size), "copy run failed".into()]),
        }
    }
    println!("## Copy vs transfer of ownership (zero copy), ping-pong half round trip, ns\n");
    table(
        &[
            "size",
            "copy p50",
            "transfer p50",
            "copy p99",
            "transfer p99",
            "copy/transfer p50",
        ],
        &t,
    );

    // ----- memcpy -----
    eprintln!("memcpy:");
    let mut t = Vec::new();
    for &size in &[64usize << 10, 1 << 20] {
        let total = if cfg.quick { 1 << 30 } else { 4 << 30 };
        match floor::memcpy_gbps(size, total) {
            Ok(g) => {
                let ns = size as f64 / g;
                json_num(
                    &mut js,
                    "memcpy",
                    &[("size", size.to_string()), ("gb_per_s", jf(g))],
                );
                t.push(vec![size_name(size), num(g), num(ns)]);
            }
            Err(e) => t.push(vec![size_name(size), format!("failed: {e}"), String::new()]),
        }
    }
    println!("## memcpy bandwidth (heap -> /dev/shm mapping, one thread)\n");
    table(&["size", "GB/s", "ns per copy"], &t);

    // ----- throughput -----
    eprintln!("throughput:");
    let mut t = Vec::new();
    for n in [1usize, 2, 4] {
        let tt = Instant::now();
        let o = ours::throughput(n, cfg.total());
        let c = peers::crossbeam_throughput(n, cfg.total());
        eprintln!("  {n}->{n}: {:.1} s", tt.elapsed().as_secs_f64());
        let (of, cf) = (
            o.as_ref().copied().unwrap_or(f64::NAN),
            c.as_ref().copied().unwrap_or(f64::NAN),
        );
        json_num(
            &mut js,
            "throughput_64B",
            &[
                ("n", n.to_string()),
                ("ours_msgs_per_s", jf(of)),
                ("crossbeam_msgs_per_s", jf(cf)),
            ],
        );
        let show = |r: &Res<f64>| match r {
            Ok(v) => num(v / 1e6),
            Err(e) => format!("failed: {e}"),
        };
        t.push(vec![format!("{n}->{n}"), show(&o), show(&c), ratio(of, cf)]);
    }
    println!(
        "## Throughput, 64-byte messages, one channel (M msg/s; ratio ours/crossbeam, above 1 = ours faster)\n\nOurs: N sender processes and N receiver processes on one channel (capacity 100, 1 KiB slots), copy send / recv_into, {} messages in all, timed from a shared go flag to the last receiver's end (CLOCK_MONOTONIC). crossbeam: N sender and N receiver threads on bounded(100) of [u8; 64].\n",
        cfg.total()
    );
    table(
        &[
            "N->N",
            "dragon-channels (processes)",
            "crossbeam bounded(100) (threads)",
            "ours/crossbeam",
        ],
        &t,
    );

    // ----- pool alloc -----
    alloc::report(cfg.allocs(), 1, &mut js);

    // ----- idle CPU -----
    eprintln!("idle CPU:");
    let idle = cfg.idle();
    let ours_idle = ours::idle_cpu(idle);
    let peers_idle = peers::idle_cpu(idle);
    let pct = |ns: u64| ns as f64 / idle.as_nanos() as f64 * 100.0;
    let mut t = Vec::new();
    let o = ours_idle.as_ref().map_or(f64::NAN, |v| *v as f64);
    match &ours_idle {
        Ok(v) => t.push(vec![
            "dragon-channels recv(Block), process".into(),
            num(*v as f64 / 1e3),
            format!("{:.3}", pct(*v)),
            "—".into(),
        ]),
        Err(e) => t.push(vec!["dragon-channels".into(), format!("failed: {e}")]),
    }
    match &peers_idle {
        Ok((cb, pipe)) => {
            t.push(vec![
                "crossbeam recv, thread".into(),
                num(*cb as f64 / 1e3),
                format!("{:.3}", pct(*cb)),
                ratio(o, *cb as f64),
            ]);
            t.push(vec![
                "pipe read, thread".into(),
                num(*pipe as f64 / 1e3),
                format!("{:.3}", pct(*pipe)),
                ratio(o, *pipe as f64),
            ]);
            json_num(
                &mut js,
                "idle_cpu",
                &[
                    ("idle_s", idle.as_secs_f64().to_string()),
                    ("ours_cpu_ns", jf(o)),
                    ("crossbeam_cpu_ns", cb.to_string()),
                    ("pipe_cpu_ns", pipe.to_string()),
                ],
            );
        }
        Err(e) => t.push(vec!["peers".into(), format!("failed: {e}")]),
    }
    println!(
        "## CPU used by a receiver blocked {:.0} s on an empty channel (getrusage user+sys; ratio ours/peer)\n",
        idle.as_secs_f64()
    );
    table(&["mechanism", "CPU µs", "% of one core", "ours/peer"], &t);

    // ----- waiting: channel sets, barrier -----
    waiting::report(&waiting::Plan::new(cfg.quick, cfg.runs), &mut js);

    write_json(cfg, &js, cpus)
}

fn write_json(cfg: &Cfg, js: &str, cpus: usize) -> Res<()> {
    if let Some(path) = &cfg.json {
        let body = js.trim_end_matches(',');
        let doc = format!(
            "{{\"mode\":\"{}\",\"cpus\":{cpus},\"unit_latency\":\"ns, half round trip\",\"results\":[{body}]}}\n",
            if cfg.quick { "quick" } else { "full" }
        );
        std::fs::write(path, doc)?;
        println!("JSON written to {path}");
    }
    Ok(())
}
