//! Benchmarks of the core (not tests; CI does not judge them). Prints medians of repeated
//! runs side by side with the peers measured in the same run, and their ratios.
//!
//! - Pool: alloc+free pairs of 64 B .. 4 KiB against glibc malloc/free (`std::alloc::System`)
//!   and `heapless::pool::boxed`, one thread and two threads.
//! - Channel: 64 B throughput between two threads against `crossbeam-channel` bounded(100),
//!   and the uncontended try_send + try_recv pair on one thread.
//!
//! Run: `cargo bench -p dragon-channels-core --bench core_bench` (add `-- --quick` for a short run).

#![allow(clippy::std_instead_of_core, missing_docs)] // a std benchmark program

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

use dragon_channels_core::{
    AllocKind, Channel, ChannelAttrs, ChannelError, Pool, PoolConfig, Region,
};
use heapless::pool::boxed::{Box as HBox, BoxBlock};

struct Mem(Vec<u64>);

impl Mem {
    fn region(&mut self) -> Region {
        let p = self.0.as_mut_ptr() as *mut u8;
        let off = p.align_offset(64);
        // SAFETY: the vector outlives every handle made in this process.
        unsafe { Region::new(p.add(off), self.0.len() * 8 - 64).unwrap() }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median over `reps` runs of `f(iters)`, in ns per iteration.
fn measure(reps: usize, iters: u64, mut f: impl FnMut(u64)) -> f64 {
    f(iters / 10); // warm-up
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f(iters);
                t.elapsed().as_nanos() as f64 / iters as f64
            })
            .collect(),
    )
}

/// Runs `f` on `threads` threads at once; ns per iteration per thread (median of reps).
fn measure_threads(reps: usize, threads: usize, iters: u64, f: impl Fn(usize, u64) + Sync) -> f64 {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::thread::scope(|s| {
                    for i in 0..threads {
                        let f = &f;
                        s.spawn(move || f(i, iters));
                    }
                });
                t.elapsed().as_nanos() as f64 / iters as f64
            })
            .collect(),
    )
}

heapless::box_pool!(H64: [u8; 64]);
heapless::box_pool!(H256: [u8; 256]);
heapless::box_pool!(H1K: [u8; 1024]);
heapless::box_pool!(H4K: [u8; 4096]);

fn heapless_pair(size: usize, iters: u64) {
    macro_rules! run {
        ($p:ident, $n:expr) => {
            for _ in 0..iters {
                let b: HBox<$p> = $p.alloc([0u8; $n]).ok().unwrap();
                black_box(&b);
                drop(b);
            }
        };
    }
    match size {
        64 => run!(H64, 64),
        256 => run!(H256, 256),
        1024 => run!(H1K, 1024),
        _ => run!(H4K, 4096),
    }
}

fn heapless_setup() {
    macro_rules! manage {
        ($p:ident, $n:expr, $blocks:expr) => {{
            for _ in 0..$blocks {
                let block: &'static mut BoxBlock<[u8; $n]> = Box::leak(Box::new(BoxBlock::new()));
                $p.manage(block);
            }
        }};
    }
    manage!(H64, 64, 4);
    manage!(H256, 256, 4);
    manage!(H1K, 1024, 4);
    manage!(H4K, 4096, 4);
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, iters) = if quick {
        (5, 200_000u64)
    } else {
        (11, 2_000_000u64)
    };
    heapless_setup();

    let mut mem = Mem(vec![0u64; (64 << 20) / 8 + 16]);
    let pool = Pool::init(
        mem.region(),
        &PoolConfig {
            min_block: 64,
            max_allocations: None,
            uid: 1,
        },
        1,
    )
    .unwrap();

    println!("## Pool: alloc+free pair, ns (median of {reps} runs of {iters})\n");
    println!(
        "| size | threads | dragon pool | glibc malloc | heapless::pool | pool/malloc | pool/heapless |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for size in [64usize, 256, 1024, 4096] {
        for threads in [1usize, 2] {
            let ours = measure_threads(reps, threads, iters, |t, n| {
                let p = pool.with_owner(10 + t as u32).unwrap();
                for _ in 0..n {
                    // Stalled only means the lock holder was preempted for long: retry.
                    let a = loop {
                        match p.alloc(size, AllocKind::Data) {
                            Err(dragon_channels_core::PoolError::Stalled { .. }) => continue,
                            r => break r.unwrap(),
                        }
                    };
                    while let Err(e) = p.free(black_box(a)) {
                        assert!(
                            matches!(e, dragon_channels_core::PoolError::Stalled { .. }),
                            "{e}"
                        );
                    }
                }
            });
            let layout = Layout::from_size_align(size, 8).unwrap();
            let malloc = measure_threads(reps, threads, iters, |_, n| {
                for _ in 0..n {
                    // SAFETY: a non-zero-size layout; the block is freed with the same layout.
                    unsafe {
                        let p = System.alloc(layout);
                        black_box(p);
                        System.dealloc(p, layout);
                    }
                }
            });
            let hl = measure_threads(reps, threads, iters, |_, n| heapless_pair(size, n));
            println!(
                "| {size} | {threads} | {ours:.1} | {malloc:.1} | {hl:.1} | {:.2}x | {:.2}x |",
                ours / malloc,
                ours / hl
            );
        }
    }

    println!("\n## Channel: 64 B messages, two threads (median of {reps} runs)\n");
    let msgs = iters;
    let ch = Channel::create(
        &pool,
        1,
        &ChannelAttrs {
            capacity: 100,
            block_size: 64,
        },
    )
    .unwrap();
    let ours = measure(reps, msgs, |n| {
        std::thread::scope(|s| {
            s.spawn(|| {
                let m = [7u8; 64];
                for _ in 0..n {
                    while ch.try_send(&m, 0, 0) == Err(ChannelError::Full) {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut b = [0u8; 64];
            for _ in 0..n {
                while ch.try_recv_into(&mut b).is_err() {
                    std::hint::spin_loop();
                }
                black_box(&b);
            }
        });
    });
    // The same, waiting on the readiness hints (one word of the awaited slot) and trying
    // only when they say so, as the std adapter's blocking calls do.
    let ours_hint = measure(reps, msgs, |n| {
        std::thread::scope(|s| {
            s.spawn(|| {
                let m = [7u8; 64];
                for _ in 0..n {
                    loop {
                        while !ch.may_send() {
                            std::hint::spin_loop();
                        }
                        if ch.try_send(&m, 0, 0) != Err(ChannelError::Full) {
                            break;
                        }
                    }
                }
            });
            let mut b = [0u8; 64];
            for _ in 0..n {
                loop {
                    while !ch.may_recv() {
                        std::hint::spin_loop();
                    }
                    if ch.try_recv_into(&mut b).is_ok() {
                        break;
                    }
                }
                black_box(&b);
            }
        });
    });
    let (tx, rx) = crossbeam_channel::bounded::<[u8; 64]>(100);
    let cb = measure(reps, msgs, |n| {
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..n {
                    tx.send([7u8; 64]).unwrap();
                }
            });
            for _ in 0..n {
                black_box(rx.recv().unwrap());
            }
        });
    });
    let cb_spin = measure(reps, msgs, |n| {
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..n {
                    while tx.try_send([7u8; 64]).is_err() {
                        std::hint::spin_loop();
                    }
                }
            });
            for _ in 0..n {
                loop {
                    if let Ok(m) = rx.try_recv() {
                        black_box(m);
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
        });
    });
    println!("| peer | ns/msg | Mmsg/s | ours vs peer (throughput) |");
    println!("|---|---:|---:|---:|");
    println!(
        "| dragon channel (try_* spin) | {ours:.1} | {:.2} | 1.00x |",
        1e3 / ours
    );
    println!(
        "| dragon channel (may_* hint, then try_*) | {ours_hint:.1} | {:.2} | {:.2}x |",
        1e3 / ours_hint,
        ours_hint / ours
    );
    println!(
        "| crossbeam bounded(100) send/recv | {cb:.1} | {:.2} | {:.2}x |",
        1e3 / cb,
        cb / ours
    );
    println!(
        "| crossbeam bounded(100) try_* spin | {cb_spin:.1} | {:.2} | {:.2}x |",
        1e3 / cb_spin,
        cb_spin / ours
    );

    println!("\n## Channel: uncontended try_send + try_recv pair, one thread, 64 B\n");
    let ours_pair = measure(reps, iters, |n| {
        let m = [7u8; 64];
        let mut b = [0u8; 64];
        for _ in 0..n {
            ch.try_send(&m, 0, 0).unwrap();
            ch.try_recv_into(&mut b).unwrap();
            black_box(&b);
        }
    });
    let cb_pair = measure(reps, iters, |n| {
        for _ in 0..n {
            tx.try_send([7u8; 64]).unwrap();
            black_box(rx.try_recv().unwrap());
        }
    });
    println!("| dragon pair ns | crossbeam pair ns | ratio (ours/crossbeam) |");
    println!("|---:|---:|---:|");
    println!(
        "| {ours_pair:.1} | {cb_pair:.1} | {:.2}x |",
        ours_pair / cb_pair
    );
}
