//! The allocation tables: pool allocation + free pairs beside glibc's `malloc` + `free`, in
//! one thread and two at once (two processes on one pool, two threads on glibc).
//!
//! Each figure is measured `runs` times, the rows of a run side by side; the tables print
//! the median of the runs (and, for more than one run, every run's figures below them).

use std::time::Instant;

use crate::util::{num, ratio, size_name, table};
use crate::{jf, json_num, ours};

const SIZES: [usize; 2] = [64, 4096];

/// One run's figures at one size (ns per pair).
#[derive(Clone, Copy)]
struct Run {
    msg: f64,
    core: f64,
    malloc: f64,
    /// Each of the two processes.
    two: [f64; 2],
    /// Each of the two threads.
    two_malloc: [f64; 2],
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn one_run(size: usize, n: usize) -> Result<Run, String> {
    let malloc = malloc_ns(size, n);
    let (msg, core) = ours::pool_alloc(size, n).map_err(|e| e.to_string())?;
    let two_malloc = malloc_two_threads_ns(size, n);
    let two = ours::pool_alloc_two(size, n).map_err(|e| e.to_string())?;
    Ok(Run {
        msg,
        core,
        malloc,
        two,
        two_malloc,
    })
}

/// Measures and prints both tables, `runs` times each; adds the medians to `js`.
pub fn report(n: usize, runs: usize, js: &mut String) {
    eprintln!("pool alloc:");
    let runs = runs.max(1);
    let mut all: Vec<(usize, Result<Vec<Run>, String>)> = Vec::new();
    for &size in &SIZES {
        let mut got = Vec::new();
        let mut err = None;
        for r in 0..runs {
            match one_run(size, n) {
                Ok(run) => {
                    eprintln!(
                        "  {} run {}: message {} core {} malloc {} | two {} / {} malloc {} / {}",
                        size_name(size),
                        r + 1,
                        num(run.msg),
                        num(run.core),
                        num(run.malloc),
                        num(run.two[0]),
                        num(run.two[1]),
                        num(run.two_malloc[0]),
                        num(run.two_malloc[1])
                    );
                    got.push(run);
                }
                Err(e) => err = Some(e),
            }
        }
        all.push((size, err.map_or(Ok(got), Err)));
    }
    let med = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let mut t1 = Vec::new();
    let mut t2 = Vec::new();
    for (size, r) in &all {
        let runs = match r {
            Ok(runs) => runs,
            Err(e) => {
                t1.push(vec![size_name(*size), format!("failed: {e}")]);
                t2.push(vec![size_name(*size), format!("failed: {e}")]);
                continue;
            }
        };
        let (msg, core, m) = (
            med(runs, |r| r.msg),
            med(runs, |r| r.core),
            med(runs, |r| r.malloc),
        );
        json_num(
            js,
            "alloc_free",
            &[
                ("size", size.to_string()),
                ("runs", runs.len().to_string()),
                ("message_ns", jf(msg)),
                ("core_pool_ns", jf(core)),
                ("malloc_ns", jf(m)),
            ],
        );
        t1.push(vec![
            size_name(*size),
            num(msg),
            num(core),
            num(m),
            ratio(msg, m),
            ratio(core, m),
        ]);
        let (o0, o1) = (med(runs, |r| r.two[0]), med(runs, |r| r.two[1]));
        let (g0, g1) = (
            med(runs, |r| r.two_malloc[0]),
            med(runs, |r| r.two_malloc[1]),
        );
        // The ratio of the slower of each, per run, then the median of those.
        let (o, g) = (
            med(runs, |r| r.two[0].max(r.two[1])),
            med(runs, |r| r.two_malloc[0].max(r.two_malloc[1])),
        );
        json_num(
            js,
            "alloc_free_two",
            &[
                ("size", size.to_string()),
                ("runs", runs.len().to_string()),
                ("message_ns", jf(o)),
                ("malloc_ns", jf(g)),
            ],
        );
        t2.push(vec![
            size_name(*size),
            format!("{} / {}", num(o0), num(o1)),
            format!("{} / {}", num(g0), num(g1)),
            ratio(o, g),
        ]);
    }
    let of = if runs > 1 {
        format!("; median of {runs} runs")
    } else {
        String::new()
    };
    println!(
        "## Allocation + free pairs, one thread (ns per pair; ratio ours/malloc, above 1 = ours slower{of})\n"
    );
    table(
        &[
            "size",
            "Message::create_alloc + drop",
            "core PoolCache::alloc + free",
            "malloc + free (glibc)",
            "message/malloc",
            "core/malloc",
        ],
        &t1,
    );
    println!(
        "## Allocation + free pairs, two at once (ns per pair in each: two processes on one pool, two threads on glibc; ratio of the slower of each{of})\n"
    );
    table(
        &[
            "size",
            "Message::create_alloc + drop, 2 processes",
            "malloc + free, 2 threads",
            "ours/glibc",
        ],
        &t2,
    );
}

/// ns per malloc + free pair in each of two threads at once.
fn malloc_two_threads_ns(size: usize, n: usize) -> [f64; 2] {
    let run = move || malloc_ns(size, n);
    let a = std::thread::spawn(run);
    let b = std::thread::spawn(run);
    [a.join().unwrap_or(f64::NAN), b.join().unwrap_or(f64::NAN)]
}

fn malloc_ns(size: usize, n: usize) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        // SAFETY: malloc/free pair on the C heap; the pointer is not used otherwise.
        unsafe {
            let p = libc::malloc(std::hint::black_box(size));
            libc::free(std::hint::black_box(p));
        }
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}
