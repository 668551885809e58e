//! Shared helpers: histograms, re-exec of the peer role, control mappings, clocks, tables.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use memmap2::{MmapMut, MmapOptions};

/// Result type of every benchmark step.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Environment variable naming the peer role of a re-executed child.
pub const ROLE: &str = "DC_BENCH_ROLE";
/// Environment variable carrying the role's argument string.
pub const ARG: &str = "DC_BENCH_ARG";
/// Marker of the stop message in byte protocols (first 8 bytes).
pub const STOP: u64 = u64::MAX;

/// Re-executes this binary as `role` with `arg`; stdout goes to null.
pub fn spawn(role: &str, arg: &str) -> Res<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .env(ROLE, role)
        .env(ARG, arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?)
}

/// Waits for a child and turns a failure into an error.
pub fn reap(mut c: Child, what: &str) -> Res<()> {
    let st = c.wait()?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what} peer failed: {st}").into())
    }
}

/// Latency percentiles of half round trips, nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub n: u64,
}

/// A histogram of half round trips in ns (1 ns .. 10 s, 3 significant digits).
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// Records one round trip as a half round trip.
pub fn record(h: &mut Histogram<u64>, rtt: Duration) {
    let half = (rtt.as_nanos() as u64 / 2).max(1);
    h.saturating_record(half);
}

/// Percentiles of a histogram.
pub fn lat(h: &Histogram<u64>) -> Lat {
    Lat {
        p50: h.value_at_quantile(0.50) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        p999: h.value_at_quantile(0.999) as f64,
        max: h.max() as f64,
        n: h.len(),
    }
}

/// `CLOCK_MONOTONIC` in ns: one clock for all processes of the machine.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (user + system) of `who` (`RUSAGE_SELF`, `RUSAGE_THREAD`), ns.
pub fn cpu_ns(who: libc::c_int) -> u64 {
    // SAFETY: a zeroed rusage is a valid out-value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Creates (or opens) a `/dev/shm` file of `len` bytes and maps it shared.
pub fn map_file(path: &str, len: usize, create: bool) -> Res<MmapMut> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .mode(0o600)
        .open(path)?;
    if create {
        file.set_len(len as u64)?;
    }
    // SAFETY: a private benchmark file shared only by this run's processes; it is accessed
    // through atomics and raw copies ordered by those atomics.
    Ok(unsafe { MmapOptions::new().len(len).map_mut(&file)? })
}

/// A small control page in `/dev/shm` shared by the parent and its children: a ready
/// counter, a go flag and per-child 64-bit slots.
pub struct Ctl {
    map: MmapMut,
}

impl Ctl {
    const LEN: usize = 4096;

    /// Creates the page at `path`.
    pub fn create(path: &str) -> Res<Self> {
        Ok(Self {
            map: map_file(path, Self::LEN, true)?,
        })
    }

    /// Opens the page at `path`.
    pub fn open(path: &str) -> Res<Self> {
        Ok(Self {
            map: map_file(path, Self::LEN, false)?,
        })
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is 4-aligned and inside the page-aligned mapping; zeroed memory is a
        // valid AtomicU32; the reference does not outlive the mapping.
        unsafe { &*self.map.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Slot `i` (0..500).
    pub fn slot(&self, i: usize) -> &AtomicU64 {
        assert!(i < 500);
        // SAFETY: 8-aligned offset inside the mapping; as in `u32_at`.
        unsafe { &*self.map.as_ptr().add(128 + 8 * i).cast::<AtomicU64>() }
    }

    /// Counts this process as ready.
    pub fn ready(&self) {
        // SYNC: SeqCst <-> the parent's load in `wait_ready`.
        self.u32_at(0).fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until `n` processes are ready (sleeping 100 µs between checks).
    pub fn wait_ready(&self, n: u32) {
        while self.u32_at(0).load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Sets the go flag.
    pub fn go(&self) {
        // SYNC: Release <-> children's Acquire in `wait_go`.
        self.u32_at(64).store(1, Ordering::Release);
    }

    /// Waits for the go flag, yielding the CPU between checks.
    pub fn wait_go(&self) {
        // SYNC: Acquire <-> the parent's Release in `go`.
        while self.u32_at(64).load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
    }
}

/// Hex encoding for descriptors passed in the environment.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Inverse of [`hex`].
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

/// A size as text (64 B, 1 KiB, 1 MiB).
pub fn size_name(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Prints a markdown table.
pub fn table(head: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", head.join(" | "));
    println!("|{}", "---|".repeat(head.len()));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
}

/// A number formatted for a table (no decimals above 100, else 3 significant digits).
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A ratio formatted as `1.23x` (or n/a when undefined).
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 || !a.is_finite() || !b.is_finite() {
        "n/a".into()
    } else {
        format!("{:.2}x", a / b)
    }
}

/// The calling thread's CPU affinity mask.
pub fn affinity() -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid (empty) set; the call fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        set
    }
}

/// Sets the calling thread's CPU affinity mask.
pub fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
}

/// Pins the calling thread to `cpu` (modulo the CPU count); returns the previous mask.
pub fn pin(cpu: usize) -> libc::cpu_set_t {
    let old = affinity();
    // The online CPU count, not `available_parallelism`: that reads this thread's affinity
    // mask, which a child of a pinned parent inherits (it said 1 there, and the peer that
    // should run on CPU 1 pinned itself to CPU 0, beside the parent).
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let ncpu = usize::try_from(online).unwrap_or(1).max(1);
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes a bit inside it (the index is
    // below the CPU count, far below the set's 1024 bits).
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % ncpu, &mut set);
        set
    };
    set_affinity(&set);
    old
}
