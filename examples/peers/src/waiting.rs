//! Waiting scenarios: how fast a process parked in a [`ChannelSet`] poll wakes up beside one
//! parked in a blocking receive, and the channel-as-barrier beside `std::sync::Barrier` and
//! Python's `multiprocessing.Barrier`.
//!
//! Set wake-up: process A sends one 64-byte message to channel `k` (uniformly random) of the
//! N request channels; process B waits in `ChannelSet::poll(Timeout::Block,
//! WaitMode::Adaptive)` over all N, receives it try-once and copies it back on a reply
//! channel, where A waits in a blocking `recv_into`. The reference row is the same ping-pong
//! with B in a blocking `recv_into` on one request channel. The "asleep" variant has A pause
//! 200 µs (longer than the wait layer's `YIELD_FOR`) before each send, outside the timed
//! window, so that B is asleep (futex_waitv for the set, FUTEX_WAIT for the receive) when the
//! message comes; B's voluntary context switches per round say whether it was.
//!
//! Barrier: P parties (the parent and P-1 children, or threads) run rounds; the parent
//! records the time between the ends of consecutive rounds (the round period it sees) in a
//! histogram. A round of ours: `poll(BarrierWait)`, the last arriver `poll(BarrierRelease)`,
//! then every party receives its 8-byte ordinal with a blocking `recv_into`.
//!
//! Every scenario runs several times, interleaved (run 1 of every row, then run 2...), so
//! that the rows of one run share the machine's state; tables give the median over runs of
//! each percentile, and the median and range of the per-run ratios.

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use dragon_channels::{
    Channel, ChannelAttrs, ChannelRecvH, ChannelSendH, ChannelSet, MemoryPool, Message, Poll,
    Polled, SetEventKind, Timeout, WaitMode,
};

use crate::util::{Ctl, Lat, Res, hex, hist, lat, num, reap, record, spawn, table, unhex};

/// `hints` value of the stop message.
const STOP_HINT: u64 = u64::MAX;
/// Payload of a wake-up message.
const SIZE: usize = 64;
/// Set sizes measured (128 is `futex_waitv`'s limit: one call, no helper thread).
const SET_SIZES: [usize; 3] = [1, 16, 128];
/// A's pause before each send in the "asleep" variant.
const GAP: Duration = Duration::from_micros(200);
/// How long a barrier party waits for a round before giving up (a dead peer).
const BARRIER_PATIENCE: Duration = Duration::from_secs(30);

/// Sizes of the waiting scenarios.
pub struct Plan {
    /// Runs of every row.
    pub runs: usize,
    /// Measured round trips per run, B spinning or yielding.
    pub hot: usize,
    /// Measured round trips per run, B asleep.
    pub asleep: usize,
    /// Measured barrier rounds per run.
    pub rounds: usize,
}

impl Plan {
    /// The full or quick plan; `runs` overrides the run count.
    pub fn new(quick: bool, runs: Option<usize>) -> Self {
        let p = if quick {
            Self {
                runs: 3,
                hot: 20_000,
                asleep: 500,
                rounds: 500,
            }
        } else {
            Self {
                runs: 5,
                hot: 100_000,
                asleep: 2_000,
                rounds: 2_000,
            }
        };
        Self {
            runs: runs.unwrap_or(p.runs).max(1),
            ..p
        }
    }
}

fn warmup(n: usize) -> usize {
    (n / 10).max(50)
}

fn pool_name(tag: &str) -> String {
    format!("dcb-{}-{tag}", std::process::id())
}

fn ctl_path(tag: &str) -> String {
    format!("/dev/shm/dcb-{}-{tag}", std::process::id())
}

/// Voluntary and involuntary context switches so far of `who` (`RUSAGE_SELF`,
/// `RUSAGE_THREAD`).
fn switches(who: libc::c_int) -> (u64, u64) {
    // SAFETY: a zeroed rusage is a valid out-value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    unsafe { libc::getrusage(who, &mut ru) };
    (ru.ru_nvcsw as u64, ru.ru_nivcsw as u64)
}

/// A small xorshift generator: the request channel of each round.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What B waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiter {
    /// A blocking `recv_into` on one channel.
    Recv,
    /// `ChannelSet::poll` over this many channels, then a try-once `recv_into`.
    Set(usize),
    /// A diagnostic floor for a set's spin phase, not a library API: spin over the core's
    /// `may_recv` hint of this many channels (no fence, no clock, never sleeps), then a
    /// try-once `recv_into` on the one that says yes.
    Hints(usize),
}

impl Waiter {
    fn channels(self) -> usize {
        match self {
            Self::Recv => 1,
            Self::Set(n) | Self::Hints(n) => n,
        }
    }

    fn name(self) -> String {
        match self {
            Self::Recv => "blocking recv_into, 1 channel".into(),
            Self::Set(n) => format!("ChannelSet::poll, {n} channels"),
            Self::Hints(n) => format!("spin on may_recv hints, {n} channels"),
        }
    }
}

/// One wake-up run: half round trips, and B's voluntary context switches per round.
pub struct Wake {
    lat: Lat,
    sleeps: f64,
    /// B's involuntary context switches per round (preempted, or a yield that handed its CPU
    /// to another task).
    preempts: f64,
}

/// A sends to a random channel of B's, B answers on the reply channel; `n` measured round
/// trips; with `gap`, A pauses that long before each send (outside the timed window).
pub fn wake(waiter: Waiter, n: usize, gap: Option<Duration>, seed: u64) -> Res<Wake> {
    let chans = waiter.channels();
    let warm = warmup(n);
    let attrs = ChannelAttrs {
        capacity: 2,
        block_size: SIZE as u32,
    };
    let pool = MemoryPool::create(4 << 20, &pool_name("wk"), 1)?;
    let ctl_path = ctl_path("wkctl");
    let ctl = Ctl::create(&ctl_path)?;
    let mut reqs = Vec::with_capacity(chans);
    let made = (|| -> Res<Channel> {
        for i in 0..chans {
            reqs.push(Channel::create(&pool, 1 + i as u64, Some(attrs))?);
        }
        Ok(Channel::create(&pool, 1000, Some(attrs))?)
    })();
    let run = |reply: &Channel| -> Res<Wake> {
        let descs: Vec<String> = reqs.iter().map(|c| hex(&c.serialize())).collect();
        let mode = match waiter {
            Waiter::Recv => "recv",
            Waiter::Set(_) => "set",
            Waiter::Hints(_) => "hints",
        };
        let arg = format!(
            "{mode}:{ctl_path}:{}:{}",
            hex(&reply.serialize()),
            descs.join(",")
        );
        let child = spawn("wait-pp", &arg)?;
        let go = || -> Res<Wake> {
            let sendhs = reqs
                .iter()
                .map(|c| {
                    let mut s = c.sendh()?;
                    s.open()?;
                    Ok(s)
                })
                .collect::<Res<Vec<ChannelSendH>>>()?;
            let mut recvh = reply.recvh()?;
            recvh.open()?;
            let mut out = Message::create_alloc(&pool, SIZE)?;
            let mut back = Message::create_alloc(&pool, SIZE)?;
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            let mut h = hist();
            ctl.wait_ready(1);
            for i in 0..(warm + n) as u64 {
                let k = rng.below(chans);
                out.bytes_memview()?[..8].copy_from_slice(&i.to_le_bytes());
                if let Some(g) = gap {
                    std::thread::sleep(g);
                }
                let t0 = Instant::now();
                sendhs[k].send(&out, None, Timeout::Block)?;
                recvh.recv_into(&mut back, Timeout::Block)?;
                let dt = t0.elapsed();
                if back.bytes()?[..8] != i.to_le_bytes() {
                    return Err("wake-up: wrong echo".into());
                }
                if i as usize >= warm {
                    record(&mut h, dt);
                }
            }
            out.set_hints(STOP_HINT);
            sendhs[0].send(&out, None, Timeout::Block)?;
            Ok(Wake {
                lat: lat(&h),
                sleeps: 0.0,
                preempts: 0.0,
            })
        };
        let r = go();
        if r.is_err() {
            // B may be waiting for a stop that will not come.
            let mut s = reqs[0].sendh()?;
            s.open()?;
            let mut m = Message::create_alloc(&pool, SIZE)?;
            m.set_hints(STOP_HINT);
            let _ = s.send(&m, None, Timeout::Try);
        }
        let reaped = reap(child, "wake-up");
        let mut w = r?;
        reaped?;
        w.sleeps = ctl.slot(0).load(SeqCst) as f64 / (warm + n + 1) as f64;
        w.preempts = ctl.slot(1).load(SeqCst) as f64 / (warm + n + 1) as f64;
        Ok(w)
    };
    let r = match &made {
        Ok(reply) => run(reply),
        Err(e) => Err(e.to_string().into()),
    };
    let _ = std::fs::remove_file(&ctl_path);
    for c in reqs {
        c.destroy()?;
    }
    if let Ok(reply) = made {
        reply.destroy()?;
    }
    pool.destroy()?;
    r
}

/// B of the wake-up scenario: waits as told, echoes until the stop hint, then stores its
/// voluntary context switches in slot 0 and involuntary ones in slot 1.
pub fn wake_peer(arg: &str) -> Res<()> {
    let mut it = arg.split(':');
    let mut next = || it.next().ok_or("bad argument");
    let mode = next()?;
    let ctl = Ctl::open(next()?)?;
    let reply = Channel::attach(&unhex(next()?))?;
    let reqs = next()?
        .split(',')
        .map(|d| Ok(Channel::attach(&unhex(d))?))
        .collect::<Res<Vec<Channel>>>()?;
    let mut sendh = reply.sendh()?;
    sendh.open()?;
    let recvhs = reqs
        .iter()
        .map(|c| {
            let mut r = c.recvh()?;
            r.open()?;
            Ok(r)
        })
        .collect::<Res<Vec<ChannelRecvH>>>()?;
    let mut set = if mode == "set" {
        Some(ChannelSet::new(&reqs, Poll::In)?)
    } else {
        None
    };
    let mut m = Message::create_alloc(reply.pool(), SIZE)?;
    let (v0, i0) = switches(libc::RUSAGE_SELF);
    ctl.ready();
    loop {
        match &mut set {
            Some(set) => {
                let ev = set.poll(Timeout::Block, WaitMode::Adaptive)?;
                if ev.kind == SetEventKind::Destroyed {
                    return Err("wake-up peer: channel destroyed".into());
                }
                recvhs[ev.index].recv_into(&mut m, Timeout::Try)?;
            }
            None if mode == "hints" => spin_hints(&reqs, &recvhs, &mut m)?,
            None => recvhs[0].recv_into(&mut m, Timeout::Block)?,
        }
        if m.hints() == STOP_HINT {
            break;
        }
        sendh.send(&m, None, Timeout::Block)?;
    }
    let (v1, i1) = switches(libc::RUSAGE_SELF);
    ctl.slot(0).store(v1 - v0, SeqCst);
    ctl.slot(1).store(i1 - i0, SeqCst);
    Ok(())
}

/// [`Waiter::Hints`]: spins over the channels' `may_recv` hints until one receive succeeds.
fn spin_hints(reqs: &[Channel], recvhs: &[ChannelRecvH], m: &mut Message) -> Res<()> {
    let mut i = 0;
    loop {
        if reqs[i].core_channel().may_recv() {
            match recvhs[i].recv_into(m, Timeout::Try) {
                Ok(()) => return Ok(()),
                Err(dragon_channels::Error::ChannelEmpty) => {}
                Err(e) => return Err(e.into()),
            }
        }
        i = (i + 1) % reqs.len();
        if i == 0 {
            std::hint::spin_loop();
        }
    }
}

/// One barrier run: the round period the parent saw (histogram, ns) and the mean period;
/// party 0's context switches per round, voluntary (sleeps) and involuntary (preempted, or a
/// yield that handed its CPU to another task), NaN where not measured.
#[derive(Clone, Copy)]
pub struct Rounds {
    p50: f64,
    p99: f64,
    mean: f64,
    vol: f64,
    invol: f64,
}

/// Round periods of party 0 from the end times of its rounds (after `warm` rounds), with
/// the context switches `(v0, i0)` / `(v1, i1)` of party 0's thread before and after.
fn rounds_of(ends: &[Instant], warm: usize, (v0, i0): (u64, u64), (v1, i1): (u64, u64)) -> Rounds {
    let mut h = hist();
    let kept = &ends[warm..];
    for w in kept.windows(2) {
        h.saturating_record((w[1] - w[0]).as_nanos().max(1) as u64);
    }
    let span = kept[kept.len() - 1] - kept[0];
    Rounds {
        p50: h.value_at_quantile(0.5) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        mean: span.as_nanos() as f64 / (kept.len() - 1) as f64,
        vol: (v1 - v0) as f64 / ends.len() as f64,
        invol: (i1 - i0) as f64 / ends.len() as f64,
    }
}

/// How a barrier party waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waits {
    /// The measured protocol: the arrival polls Adaptive, the ordinal comes by a blocking
    /// receive.
    Recv,
    /// Profiling: both waits are polls in this mode (the ordinal's a `poll(In)`, then a
    /// try-once receive, again while another party took the message first).
    Poll(WaitMode),
    /// Profiling, not a library mode: try-once arrival and receive with a `yield_now`
    /// between tries (no spin phase, never sleeps).
    Yield,
}

impl Waits {
    fn name(self) -> &'static str {
        match self {
            Self::Recv => "recv",
            Self::Poll(WaitMode::Adaptive) => "adaptive",
            Self::Poll(WaitMode::Spin) => "spin",
            Self::Poll(WaitMode::Idle) => "idle",
            Self::Yield => "yield",
        }
    }

    fn parse(s: &str) -> Res<Self> {
        Ok(match s {
            "recv" => Self::Recv,
            "adaptive" => Self::Poll(WaitMode::Adaptive),
            "spin" => Self::Poll(WaitMode::Spin),
            "idle" => Self::Poll(WaitMode::Idle),
            "yield" => Self::Yield,
            m => return Err(format!("unknown barrier wait {m}").into()),
        })
    }
}

/// Retries `f` with a `yield_now` between tries while it fails with an error `again` accepts,
/// for at most [`BARRIER_PATIENCE`].
fn yielding<T>(
    again: impl Fn(&dragon_channels::Error) -> bool,
    mut f: impl FnMut() -> Result<T, dragon_channels::Error>,
) -> Res<T> {
    let start = Instant::now();
    loop {
        match f() {
            Err(e) if again(&e) && start.elapsed() < BARRIER_PATIENCE => {
                std::thread::yield_now();
            }
            r => return Ok(r?),
        }
    }
}

/// One party's rounds of our barrier, waiting as `waits` says; `ends` gets the end time of
/// each round.
fn barrier_party(
    ch: &Channel,
    total: usize,
    waits: Waits,
    mut ends: Option<&mut Vec<Instant>>,
) -> Res<()> {
    use dragon_channels::Error::{ChannelEmpty, ChannelTimeout};
    let mut recvh = ch.recvh()?;
    recvh.open()?;
    let mut m = Message::create_alloc(ch.pool(), 8)?;
    let patience = Timeout::After(BARRIER_PATIENCE);
    for _ in 0..total {
        let arrived = match waits {
            Waits::Recv => ch.poll(Poll::BarrierWait, patience, WaitMode::Adaptive)?,
            Waits::Poll(mode) => ch.poll(Poll::BarrierWait, patience, mode)?,
            Waits::Yield => yielding(
                |e| matches!(e, ChannelTimeout),
                || ch.poll(Poll::BarrierWait, Timeout::Try, WaitMode::Adaptive),
            )?,
        };
        match arrived {
            Polled::ReadyToRelease => {
                ch.poll(Poll::BarrierRelease, Timeout::Try, WaitMode::Adaptive)?;
            }
            Polled::Ready => {}
            p => return Err(format!("barrier arrival answered {p:?}").into()),
        }
        match waits {
            Waits::Recv => recvh.recv_into(&mut m, patience)?,
            // Another party may take the message the poll saw: poll again then.
            Waits::Poll(mode) => loop {
                ch.poll(Poll::In, patience, mode)?;
                match recvh.recv_into(&mut m, Timeout::Try) {
                    Err(ChannelEmpty) => {}
                    r => break r?,
                }
            },
            Waits::Yield => yielding(
                |e| matches!(e, ChannelEmpty),
                || recvh.recv_into(&mut m, Timeout::Try),
            )?,
        }
        let ordinal = i64::from_le_bytes(m.bytes()?[..8].try_into()?);
        if ordinal < 0 {
            return Err("barrier round aborted".into());
        }
        if let Some(e) = ends.as_deref_mut() {
            e.push(Instant::now());
        }
    }
    Ok(())
}

/// Our barrier: the parent and `parties - 1` child processes, `rounds` measured rounds,
/// every party waiting as `waits` says.
pub fn barrier(parties: usize, rounds: usize, waits: Waits) -> Res<Rounds> {
    let warm = warmup(rounds);
    let total = warm + rounds;
    let pool = MemoryPool::create(1 << 20, &pool_name("br"), 1)?;
    let attrs = ChannelAttrs {
        capacity: u32::try_from(parties)?,
        ..Default::default()
    };
    let ch = Channel::create(&pool, 1, Some(attrs))?;
    let ctl_path = ctl_path("brctl");
    let ctl = Ctl::create(&ctl_path)?;
    let arg = format!(
        "{}:{ctl_path}:{total}:{}",
        hex(&ch.serialize()),
        waits.name()
    );
    let mut kids = Vec::new();
    let run = (|| -> Res<Rounds> {
        for _ in 1..parties {
            kids.push(spawn("wait-bar", &arg)?);
        }
        ctl.wait_ready(parties as u32 - 1);
        ctl.go();
        let mut ends = Vec::with_capacity(total);
        let before = switches(libc::RUSAGE_THREAD);
        barrier_party(&ch, total, waits, Some(&mut ends))?;
        Ok(rounds_of(
            &ends,
            warm,
            before,
            switches(libc::RUSAGE_THREAD),
        ))
    })();
    if run.is_err() {
        // Children still arriving learn it from the broken barrier.
        let _ = ch.poll(Poll::BarrierAbort, Timeout::Try, WaitMode::Adaptive);
    }
    let mut reaped = Ok(());
    for k in kids {
        if let Err(e) = reap(k, "barrier") {
            reaped = Err(e);
        }
    }
    let _ = std::fs::remove_file(&ctl_path);
    ch.destroy()?;
    pool.destroy()?;
    let r = run?;
    reaped?;
    Ok(r)
}

/// A barrier child: `total` rounds.
pub fn barrier_peer(arg: &str) -> Res<()> {
    let mut it = arg.split(':');
    let mut next = || it.next().ok_or("bad argument");
    let ch = Channel::attach(&unhex(next()?))?;
    let ctl = Ctl::open(next()?)?;
    let total: usize = next()?.parse()?;
    let waits = Waits::parse(next()?)?;
    ctl.ready();
    ctl.wait_go();
    barrier_party(&ch, total, waits, None)
}

/// `std::sync::Barrier` with `threads` threads (the calling one included).
pub fn std_barrier(threads: usize, rounds: usize) -> Rounds {
    let warm = warmup(rounds);
    let total = warm + rounds;
    let b = std::sync::Barrier::new(threads);
    let mut ends = Vec::with_capacity(total);
    let mut sw = ((0, 0), (0, 0));
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| {
                for _ in 0..total {
                    b.wait();
                }
            });
        }
        sw.0 = switches(libc::RUSAGE_THREAD);
        for _ in 0..total {
            b.wait();
            ends.push(Instant::now());
        }
        sw.1 = switches(libc::RUSAGE_THREAD);
    });
    rounds_of(&ends, warm, sw.0, sw.1)
}

/// Times `multiprocessing.Barrier` rounds in the parent, as [`rounds_of`] does; prints
/// "p50 p99 mean" in ns. Arguments: parties, measured rounds, warm-up rounds.
const PY_BARRIER: &str = r#"
import multiprocessing as mp, sys, time
def party(b, total):
    for _ in range(total):
        b.wait()
n, rounds, warm = map(int, sys.argv[1:4])
ctx = mp.get_context("fork")
b = ctx.Barrier(n)
ps = [ctx.Process(target=party, args=(b, warm + rounds)) for _ in range(n - 1)]
for p in ps:
    p.start()
ends = []
for _ in range(warm + rounds):
    b.wait()
    ends.append(time.perf_counter_ns())
for p in ps:
    p.join()
kept = ends[warm:]
d = sorted(kept[i + 1] - kept[i] for i in range(len(kept) - 1))
print(d[len(d) // 2], d[min(len(d) - 1, int(len(d) * 0.99))], (kept[-1] - kept[0]) / (len(kept) - 1))
"#;

/// Python's `multiprocessing.Barrier` with `procs` processes; `Ok(None)` without python3.
pub fn py_barrier(procs: usize, rounds: usize) -> Res<Option<Rounds>> {
    let warm = warmup(rounds);
    let out = match std::process::Command::new("python3")
        .args(["-c", PY_BARRIER])
        .args([procs, rounds, warm].map(|v| v.to_string()))
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !out.status.success() {
        return Err(format!(
            "python3 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let v = text
        .split_whitespace()
        .map(str::parse::<f64>)
        .collect::<Result<Vec<_>, _>>()?;
    match v[..] {
        [p50, p99, mean] => Ok(Some(Rounds {
            p50,
            p99,
            mean,
            vol: f64::NAN,
            invol: f64::NAN,
        })),
        _ => Err(format!("python3 printed {text:?}").into()),
    }
}

/// The median of `v` (NaN when empty).
fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Median and range of per-run ratios, as `1.23x (1.10–1.40)`.
fn spread(r: &[f64]) -> String {
    let ok: Vec<f64> = r.iter().copied().filter(|x| x.is_finite()).collect();
    if ok.is_empty() {
        return "n/a".into();
    }
    let lo = ok.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ok.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2}x ({lo:.2}–{hi:.2})", median(&ok))
}

/// Per-run results of one row: `Ok` values, or the first error.
struct Runs<T> {
    ok: Vec<T>,
    err: Option<String>,
}

impl<T> Runs<T> {
    fn new() -> Self {
        Self {
            ok: Vec::new(),
            err: None,
        }
    }

    fn push(&mut self, r: Res<T>) {
        match r {
            Ok(v) => self.ok.push(v),
            Err(e) => {
                eprintln!("    failed: {e}");
                self.err.get_or_insert(e.to_string());
            }
        }
    }

    fn med(&self, f: impl Fn(&T) -> f64) -> f64 {
        median(&self.ok.iter().map(f).collect::<Vec<_>>())
    }
}

/// Per-run ratios a/b of run-paired results (runs that failed on either side are skipped).
fn ratios(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter_map(|(x, y)| Some(x.as_ref()? / y.as_ref()?))
        .collect()
}

/// Runs and prints both waiting tables; appends JSON records to `js`.
pub fn report(plan: &Plan, js: &mut String) {
    wake_table(plan, false, js);
    wake_table(plan, true, js);
    barrier_table(plan, js);
}

fn wake_table(plan: &Plan, asleep: bool, js: &mut String) {
    let (n, gap, label) = if asleep {
        (plan.asleep, Some(GAP), "asleep")
    } else {
        (plan.hot, None, "hot")
    };
    eprintln!("set wake-up ({label}, {} runs):", plan.runs);
    let waiters: Vec<Waiter> = std::iter::once(Waiter::Recv)
        .chain(SET_SIZES.iter().map(|&n| Waiter::Set(n)))
        .collect();
    // p50 per run (None for a failed run), by waiter.
    let mut p50s: Vec<Vec<Option<f64>>> = vec![Vec::new(); waiters.len()];
    let mut all: Vec<Runs<Wake>> = waiters.iter().map(|_| Runs::new()).collect();
    for run in 0..plan.runs {
        for (i, &w) in waiters.iter().enumerate() {
            let t = Instant::now();
            let r = wake(w, n, gap, run as u64);
            match &r {
                Ok(x) => eprintln!(
                    "  run {run} {}: p50 {} ns ({:.1} s)",
                    w.name(),
                    x.lat.p50,
                    t.elapsed().as_secs_f64()
                ),
                Err(_) => eprintln!("  run {run} {}:", w.name()),
            }
            p50s[i].push(r.as_ref().ok().map(|x| x.lat.p50));
            all[i].push(r);
        }
    }
    let mut rows = Vec::new();
    for (i, w) in waiters.iter().enumerate() {
        let r = &all[i];
        if r.ok.is_empty() {
            rows.push(vec![
                w.name(),
                format!("failed: {}", r.err.as_deref().unwrap_or("?")),
            ]);
            continue;
        }
        let (p50, p99) = (r.med(|x| x.lat.p50), r.med(|x| x.lat.p99));
        let (sleeps, preempts) = (r.med(|x| x.sleeps), r.med(|x| x.preempts));
        let vs = if i == 0 {
            "—".into()
        } else {
            spread(&ratios(&p50s[i], &p50s[0]))
        };
        let mut line = vec![
            w.name(),
            num(p50),
            num(p99),
            vs,
            format!("{preempts:.2} / {sleeps:.2}"),
        ];
        if let Some(e) = &r.err {
            line.push(format!(
                "{} of {} runs failed: {e}",
                plan.runs - r.ok.len(),
                plan.runs
            ));
        }
        rows.push(line);
        crate::json_num(
            js,
            &format!("wake_{label}"),
            &[
                ("channels", w.channels().to_string()),
                (
                    "waiter",
                    format!("\"{}\"", if i == 0 { "recv" } else { "set" }),
                ),
                ("p50_ns", crate::jf(p50)),
                ("p99_ns", crate::jf(p99)),
                ("b_voluntary_switches_per_round", crate::jf(sleeps)),
                ("b_involuntary_switches_per_round", crate::jf(preempts)),
                ("runs", r.ok.len().to_string()),
            ],
        );
    }
    if asleep {
        println!(
            "## Wake-up from sleep: ChannelSet (futex_waitv) vs blocking receive (FUTEX_WAIT), 64 B, half round trip, ns\n\n\
             As the table above, but A pauses {} µs before each send (outside the timed window), longer than the \
             wait layer's spin + yield phase ({} µs), so B is asleep when the message comes. {n} measured round \
             trips per run, {} runs.\n",
            GAP.as_micros(),
            dragon_channels::YIELD_FOR.as_micros(),
            plan.runs
        );
    } else {
        println!(
            "## Set wake-up latency: ChannelSet::poll vs blocking receive, 64 B, half round trip, ns\n\n\
             A sends one 64 B message to a random channel of N (copy send), B waits in \
             `ChannelSet::poll(Block, Adaptive)` then `recv_into(Try)` on the channel reported and sends it \
             back; A waits in a blocking `recv_into`. Reference: B in a blocking `recv_into` on one channel. \
             {n} measured round trips per run, {} runs interleaved; p50 and p99 are medians over runs; \
             set/recv is the median (and range) of the per-run p50 ratios (target: at most 1.5x). \
             \"B switches/round\": B's involuntary / voluntary context switches per round trip (voluntary 1 = \
             it slept every time; involuntary near 1 = A and B shared one CPU, another task holding the other, \
             and every hand-over was a yield).\n",
            plan.runs
        );
    }
    table(
        &[
            "B waits in",
            "p50",
            "p99",
            "set/recv p50 (range)",
            "B switches/round (invol / vol)",
        ],
        &rows,
    );
}

/// The median of each field over runs (`None` for no runs).
fn med_rounds(v: &[Rounds]) -> Option<Rounds> {
    let f = |g: fn(&Rounds) -> f64| median(&v.iter().map(g).collect::<Vec<_>>());
    (!v.is_empty()).then(|| Rounds {
        p50: f(|x| x.p50),
        p99: f(|x| x.p99),
        mean: f(|x| x.mean),
        vol: f(|x| x.vol),
        invol: f(|x| x.invol),
    })
}

fn barrier_table(plan: &Plan, js: &mut String) {
    let rounds = plan.rounds;
    eprintln!("barrier ({} runs):", plan.runs);
    let mut rows = Vec::new();
    for parties in [2usize, 8] {
        let (mut ours, mut py) = (Runs::new(), Runs::new());
        let mut std_ = Vec::new();
        // p50 per run (None for a failed or skipped run).
        let (mut o50, mut s50, mut p50) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..plan.runs {
            let t = Instant::now();
            let o = barrier(parties, rounds, Waits::Recv);
            let s = std_barrier(parties, rounds);
            let p = py_barrier(parties, rounds);
            o50.push(o.as_ref().ok().map(|r| r.p50));
            s50.push(Some(s.p50));
            p50.push(p.as_ref().ok().copied().flatten().map(|r| r.p50));
            eprintln!(
                "  run {run}, {parties} parties: ours p50 {} (party 0 involuntary switches/round \
                 {:.2}), std p50 {}, python p50 {} ({:.1} s)",
                o50[run].unwrap_or(f64::NAN),
                o.as_ref().map_or(f64::NAN, |r| r.invol),
                s.p50,
                p50[run].unwrap_or(f64::NAN),
                t.elapsed().as_secs_f64()
            );
            ours.push(o);
            std_.push(s);
            py.push(p);
        }
        let py_missing = py.ok.iter().any(Option::is_none);
        let py_ok: Vec<Rounds> = py.ok.iter().flatten().copied().collect();
        let lines = [
            (
                "dragon-channels barrier (processes)",
                med_rounds(&ours.ok),
                "—".to_string(),
                ours.err.clone(),
            ),
            (
                "std::sync::Barrier (threads)",
                med_rounds(&std_),
                spread(&ratios(&s50, &o50)),
                None,
            ),
            (
                "Python multiprocessing.Barrier (processes)",
                med_rounds(&py_ok),
                spread(&ratios(&p50, &o50)),
                if py_missing {
                    Some("skipped: python3 not found".to_string())
                } else {
                    py.err.clone()
                },
            ),
        ];
        for (name, r, vs, err) in lines {
            let mut line = vec![parties.to_string(), name.to_string()];
            match r {
                Some(r) if !py_missing || !name.starts_with("Python") => {
                    let sw = if r.vol.is_finite() {
                        format!("{:.2} / {:.2}", r.invol, r.vol)
                    } else {
                        "n/a".into()
                    };
                    line.extend([num(r.p50), num(r.p99), num(r.mean), vs, sw]);
                    crate::json_num(
                        js,
                        "barrier",
                        &[
                            ("parties", parties.to_string()),
                            ("mechanism", format!("\"{name}\"")),
                            ("p50_ns", crate::jf(r.p50)),
                            ("p99_ns", crate::jf(r.p99)),
                            ("mean_ns", crate::jf(r.mean)),
                            ("party0_involuntary_per_round", crate::jf(r.invol)),
                            ("party0_voluntary_per_round", crate::jf(r.vol)),
                        ],
                    );
                }
                _ => line.push(err.unwrap_or_else(|| "failed".into())),
            }
            rows.push(line);
        }
    }
    println!(
        "## Barrier: time per round (ns), ours beside std::sync::Barrier and Python's multiprocessing.Barrier\n\n\
         P parties run {} warm-up and {rounds} measured rounds; party 0 (the parent process, or the main \
         thread) records the time between the ends of consecutive rounds: p50 and p99 of that period, and \
         the mean (span / rounds). Ours: `poll(BarrierWait, .., Adaptive)`, the last arriver \
         `poll(BarrierRelease)`, then each party `recv_into`s its 8-byte ordinal; Python: `b.wait()` in \
         processes forked by `multiprocessing` (`python3 -c`, timed with `perf_counter_ns`). Figures are \
         medians over {} runs; \"peer/ours p50\" is how many times faster ours is (median and range of \
         per-run ratios; target against Python: at least 10x). \"Party 0 switches\": its thread's \
         involuntary / voluntary context switches per round; about 1 involuntary per round with 2 \
         parties means both shared one CPU (another task held the other), and every hand-over was a \
         yield after the wait layer's {} µs spin. With P above the CPU count the parties share CPUs \
         anyway: a waiting party that spins or yields delays the one that must act.\n",
        warmup(rounds),
        plan.runs,
        dragon_channels::SPIN_FOR.as_micros()
    );
    table(
        &[
            "P",
            "mechanism",
            "p50",
            "p99",
            "mean",
            "peer/ours p50 (range)",
            "party 0 switches/round (invol / vol)",
        ],
        &rows,
    );
}

/// `--wake recv|N|hintsN ROUNDS [GAP_US]` and
/// `--barrier P ROUNDS [recv|adaptive|spin|idle|yield]`: one scenario, one run, for
/// profiling; prints its figures and context switches per round.
pub fn single(args: &[String]) -> Res<()> {
    let get = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    match get(0)? {
        "--wake" => {
            let waiter = match get(1)? {
                "recv" => Waiter::Recv,
                h if h.starts_with("hints") => Waiter::Hints(h[5..].parse()?),
                n => Waiter::Set(n.parse()?),
            };
            let n: usize = get(2)?.parse()?;
            let gap = match args.get(3) {
                Some(us) => Some(Duration::from_micros(us.parse()?)),
                None => None,
            };
            let w = wake(waiter, n, gap, 0)?;
            println!(
                "{}: p50 {} p99 {} p99.9 {} max {}; B switches/round: voluntary {:.3}, \
                 involuntary {:.3}",
                waiter.name(),
                w.lat.p50,
                w.lat.p99,
                w.lat.p999,
                w.lat.max,
                w.sleeps,
                w.preempts
            );
        }
        _ => {
            let parties: usize = get(1)?.parse()?;
            let rounds: usize = get(2)?.parse()?;
            let waits = Waits::parse(args.get(3).map_or("recv", String::as_str))?;
            let r = barrier(parties, rounds, waits)?;
            println!(
                "barrier ({}), {parties} processes: p50 {} p99 {} mean {:.0}; party 0 \
                 switches/round: voluntary {:.3}, involuntary {:.3}",
                waits.name(),
                r.p50,
                r.p99,
                r.mean,
                r.vol,
                r.invol
            );
        }
    }
    Ok(())
}
