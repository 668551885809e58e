//! The pool's battery: validation, allocation rules, descriptors, queries, a model-checked
//! property test, a multi-thread stress test, corruption and dead-party recovery.
#![allow(clippy::std_instead_of_core, clippy::disallowed_types)] // a std test program

mod common;

use common::{Mem, pool, waited, watchdog};
use dragon_channels_core::pool::{CHUNK_BYTES, SIZE_CLASSES, STRUCT_OWNER_BIT};
use dragon_channels_core::{Alloc, AllocKind, Pool, PoolConfig, PoolError, Waiter, Wake};
use proptest::prelude::*;

const MIB: usize = 1 << 20;

fn scaled(n: usize) -> usize {
    if cfg!(miri) { (n / 100).max(2) } else { n }
}

#[test]
fn metadata_overhead_at_most_3_percent() {
    let mut m = Mem::new(MIB);
    let p = pool(&mut m, 64);
    let share = p.metadata_size() as f64 / MIB as f64;
    assert!(
        share <= 0.03,
        "metadata {} B = {:.2}%",
        p.metadata_size(),
        share * 100.0
    );
    assert!(p.total_size() + p.metadata_size() <= MIB);
}

#[test]
fn required_size_fits_requested_data() {
    for &data in &[64usize, 1000, 4096, 100_000, MIB] {
        let cfg = PoolConfig::default();
        let need = Pool::required_size(data, &cfg).unwrap();
        let mut m = Mem::new(need);
        let p = Pool::init(m.region(), &cfg, 1).unwrap();
        assert!(p.total_size() >= data, "{data}: total {}", p.total_size());
    }
}

#[test]
fn attach_validates_header() {
    let mut m = Mem::new(64 * 1024);
    let p = pool(&mut m, 64);
    let a = Pool::attach(m.region(), 2).unwrap();
    assert_eq!(a.total_size(), p.total_size());
    // A shorter mapping than recorded.
    // SAFETY: same live buffer, shorter length.
    let short = unsafe { dragon_channels_core::Region::new(m.region().base(), 32 * 1024).unwrap() };
    assert!(matches!(
        Pool::attach(short, 2),
        Err(PoolError::SizeMismatch { .. })
    ));
    assert_eq!(
        Pool::attach(m.region(), 0).unwrap_err(),
        PoolError::BadOwner
    );
    let saved = m.bytes_mut()[4];
    m.bytes_mut()[4] ^= 0x7F;
    assert!(matches!(
        Pool::attach(m.region(), 2),
        Err(PoolError::VersionMismatch { .. })
    ));
    m.bytes_mut()[4] = saved;
    m.bytes_mut()[0] ^= 1;
    assert_eq!(
        Pool::attach(m.region(), 2).unwrap_err(),
        PoolError::BadMagic
    );
    let mut z = Mem::new(4096);
    assert_eq!(
        Pool::attach(z.region(), 2).unwrap_err(),
        PoolError::BadMagic
    );
}

#[test]
fn bad_configs_are_refused() {
    let mut m = Mem::new(4096);
    for mb in [0u32, 8, 48, 100] {
        let cfg = PoolConfig {
            min_block: mb,
            ..Default::default()
        };
        assert!(matches!(
            Pool::init(m.region(), &cfg, 1),
            Err(PoolError::BadConfig(_))
        ));
    }
    let mut tiny = Mem::new(256);
    assert!(matches!(
        Pool::init(tiny.region(), &PoolConfig::default(), 1),
        Err(PoolError::RegionTooSmall { .. })
    ));
}

#[test]
fn sizes_round_up_to_powers_of_two() {
    let mut m = Mem::new(MIB);
    let p = pool(&mut m, 64);
    for (req, want) in [
        (0usize, 64usize),
        (1, 64),
        (64, 64),
        (65, 128),
        (1000, 1024),
        (4097, 8192),
    ] {
        let a = p.alloc(req, AllocKind::Data).unwrap();
        let (off, size) = p.resolve(&a).unwrap();
        assert_eq!(size, want, "request {req}");
        assert_eq!(
            (off - p.metadata_size()) % size,
            0,
            "blocks are aligned to their size"
        );
        p.free(a).unwrap();
    }
    assert!(matches!(
        p.alloc(2 * MIB, AllocKind::Data),
        Err(PoolError::TooLarge { .. })
    ));
}

#[test]
fn fill_then_drain_restores_everything() {
    let mut m = Mem::new(256 * 1024);
    let cfg = PoolConfig {
        min_block: 64,
        max_allocations: Some(4096),
        uid: 9,
    };
    let p = Pool::init(m.region(), &cfg, 1).unwrap();
    let before = p.stats().unwrap();
    let mut held = Vec::new();
    loop {
        match p.alloc(64, AllocKind::Data) {
            Ok(a) => held.push(a),
            Err(PoolError::OutOfSpace) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(held.len(), p.total_size() / 64);
    assert_eq!(p.free_space().unwrap(), 0);
    assert_eq!(p.utilization().unwrap(), 100.0);
    for a in held.drain(..) {
        p.free(a).unwrap();
    }
    assert_eq!(p.stats().unwrap(), before);
    // Everything merged back: the largest block is available again.
    let big = p.alloc(p.max_alloc(), AllocKind::Data).unwrap();
    p.free(big).unwrap();
}

/// Frees of small blocks leave buddies unmerged (the fast path); the free-block query and a
/// large allocation still see the fully merged pool.
#[test]
fn lazily_freed_blocks_merge_for_queries_and_large_allocations() {
    let mut m = Mem::new(256 * 1024);
    let cfg = PoolConfig {
        min_block: 64,
        max_allocations: Some(4096),
        uid: 9,
    };
    let p = Pool::init(m.region(), &cfg, 1).unwrap();
    let mut fresh = [0u32; SIZE_CLASSES];
    p.free_blocks(&mut fresh).unwrap();
    let before = p.stats().unwrap();
    // Mixed small sizes, freed in an order that leaves many free buddy pairs.
    let mut held = Vec::new();
    for i in 0..600usize {
        held.push(p.alloc(64 << (i % 4), AllocKind::Data).unwrap());
    }
    let (even, odd): (Vec<_>, Vec<_>) = held.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, a) in even.into_iter().chain(odd) {
        p.free(a).unwrap();
    }
    assert_eq!(
        p.stats().unwrap(),
        before,
        "unmerged blocks count as free space"
    );
    let mut now = [0u32; SIZE_CLASSES];
    p.free_blocks(&mut now).unwrap();
    assert_eq!(now, fresh, "the query reports the merged pool");
    // Again, then straight to the largest block (the allocation merges what it needs).
    let small: Vec<_> = (0..300)
        .map(|_| p.alloc(64, AllocKind::Data).unwrap())
        .collect();
    for a in small {
        p.free(a).unwrap();
    }
    let big = p.alloc(p.max_alloc(), AllocKind::Data).unwrap();
    p.free(big).unwrap();
    p.free_blocks(&mut now).unwrap();
    assert_eq!(now, fresh);
}

#[test]
fn records_limit_gives_out_of_space_then_recovers() {
    let mut m = Mem::new(64 * 1024);
    let cfg = PoolConfig {
        min_block: 64,
        max_allocations: Some(3),
        uid: 0,
    };
    let p = Pool::init(m.region(), &cfg, 1).unwrap();
    let v: Vec<Alloc> = (0..3)
        .map(|_| p.alloc(1, AllocKind::Data).unwrap())
        .collect();
    assert_eq!(p.alloc(1, AllocKind::Data), Err(PoolError::OutOfSpace));
    p.free(v[1]).unwrap();
    let again = p.alloc(1, AllocKind::Data).unwrap();
    assert_ne!(again, v[1], "a reused record carries a new generation");
    assert_eq!(p.free(v[1]), Err(PoolError::Stale));
}

#[test]
fn stale_forged_and_foreign_descriptors_are_refused() {
    let mut m = Mem::new(MIB);
    let p = pool(&mut m, 64);
    let a = p.alloc(100, AllocKind::Data).unwrap();
    let b = p.alloc(100, AllocKind::Data).unwrap();
    let before = p.stats().unwrap();
    let mut forged = a.to_bytes();
    forged[0] ^= 1; // another block
    assert_eq!(
        p.free(Alloc::from_bytes(&forged).unwrap()),
        Err(PoolError::BadDescriptor)
    );
    let mut forged = a.to_bytes();
    forged[10] = 3; // another order
    assert_eq!(
        p.free(Alloc::from_bytes(&forged).unwrap()),
        Err(PoolError::BadDescriptor)
    );
    let mut forged = a.to_bytes();
    forged[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        p.free(Alloc::from_bytes(&forged).unwrap()),
        Err(PoolError::BadDescriptor)
    );
    let mut forged = a.to_bytes();
    forged[12] ^= 0xFF; // another pool
    assert_eq!(
        p.free(Alloc::from_bytes(&forged).unwrap()),
        Err(PoolError::BadDescriptor)
    );
    assert!(Alloc::from_bytes(&forged[..15]).is_none());
    assert_eq!(p.stats().unwrap(), before, "refused frees change nothing");
    p.free(a).unwrap();
    assert_eq!(p.free(a), Err(PoolError::Stale));
    p.free(b).unwrap();
}

#[test]
fn queries_and_iteration_report_owners() {
    let mut m = Mem::new(MIB);
    let p = pool(&mut m, 64);
    let q = Pool::attach(m.region(), 77).unwrap();
    let a = p.alloc(64, AllocKind::Data).unwrap();
    let b = q.alloc(300, AllocKind::ChannelBuffer).unwrap();
    let infos: Vec<_> = p.allocations().map(Result::unwrap).collect();
    assert_eq!(infos.len(), 2);
    assert!(
        infos
            .iter()
            .any(|i| i.alloc == a && i.owner == 1 && i.size == 64 && i.kind == AllocKind::Data)
    );
    assert!(
        infos
            .iter()
            .any(|i| i.alloc == b && i.owner == 77 && i.size == 512)
    );
    let mut classes = [0u32; SIZE_CLASSES];
    let n = p.free_blocks(&mut classes).unwrap();
    let free: usize = classes[..n]
        .iter()
        .enumerate()
        .map(|(k, &c)| (c as usize) << (k + 6))
        .sum();
    assert_eq!(free, p.free_space().unwrap());
    let s = p.stats().unwrap();
    assert_eq!((s.live, s.total - s.free), (2, 64 + 512));
    p.set_owner(&a, 5).unwrap();
    assert_eq!(p.owner_of(&a).unwrap(), 5);
}

#[test]
fn recover_frees_dead_owners_allocations_only() {
    let mut m = Mem::new(MIB);
    let p = pool(&mut m, 64);
    let base = p.stats().unwrap();
    let dead = Pool::attach(m.region(), 42).unwrap();
    let mine = p.alloc(100, AllocKind::Data).unwrap();
    for _ in 0..10 {
        dead.alloc(1000, AllocKind::Data).unwrap();
    }
    let structure = dead.alloc(64, AllocKind::Data).unwrap();
    dead.set_owner(&structure, STRUCT_OWNER_BIT | 3).unwrap();
    let rep = p.recover(&|o| o != 42).unwrap();
    assert_eq!((rep.freed, rep.lock_taken_over), (10, false));
    p.free(mine).unwrap();
    p.free(structure).unwrap();
    assert_eq!(p.stats().unwrap(), base);
}

#[test]
fn free_event_wakes_a_registered_allocator() {
    // The protocol a blocked allocator follows (the std adapter's, with a futex sleep):
    // register, try again, wait while the word holds the registered value.
    let mut m = Mem::new(16 * 1024);
    let p = pool(&mut m, 64);
    let mut all = Vec::new();
    while let Ok(a) = p.alloc(64, AllocKind::Data) {
        all.push(a);
    }
    let ev = p.free_event();
    assert_eq!(ev.notify(), Wake::None, "no waiter: no wake-up needed");
    std::thread::scope(|s| {
        let seen = ev.register(Waiter::All);
        assert_eq!(p.alloc(64, AllocKind::Data), Err(PoolError::OutOfSpace));
        s.spawn(|| {
            p.free(all.pop().unwrap()).unwrap();
            assert_eq!(
                p.free_event().notify(),
                Wake::All,
                "a registered waiter must be woken"
            );
        });
        while ev.word().load(core::sync::atomic::Ordering::Acquire) == seen {
            std::thread::yield_now();
        }
        ev.unregister(Waiter::All);
        let a = p.alloc(64, AllocKind::Data).unwrap();
        p.free(a).unwrap();
    });
    assert_eq!(ev.waiters(Waiter::All), 0);
    for a in all {
        p.free(a).unwrap();
    }
}

#[test]
fn many_threads_alloc_and_free_without_overlap() {
    let _watchdog = watchdog(300, "many_threads_alloc_and_free_without_overlap");
    let mut m = Mem::new(4 * MIB);
    let p = pool(&mut m, 64);
    let base = p.stats().unwrap();
    let rounds = scaled(3000);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let p = p.with_owner(10 + t).unwrap();
            s.spawn(move || {
                let mut held: Vec<(Alloc, usize, u8)> = Vec::new();
                for i in 0..rounds {
                    let size = 1 + (i * 37 + t as usize * 101) % 3000;
                    let pat = (t as u8).wrapping_mul(31).wrapping_add(i as u8);
                    match waited(|| p.alloc(size, AllocKind::Data)) {
                        Ok(a) => {
                            let (off, _) = waited(|| p.resolve(&a)).unwrap();
                            // SAFETY: the allocation is ours alone until freed.
                            unsafe {
                                core::ptr::write_bytes(p.region().base().add(off), pat, size)
                            };
                            held.push((a, size, pat));
                        }
                        Err(PoolError::OutOfSpace) => {}
                        Err(e) => panic!("{e}"),
                    }
                    if held.len() > 8 || (i % 3 == 0 && !held.is_empty()) {
                        let (a, size, pat) = held.swap_remove(i % held.len());
                        let (off, _) = waited(|| p.resolve(&a)).unwrap();
                        // SAFETY: still ours; nobody else writes it.
                        let got = unsafe {
                            core::slice::from_raw_parts(p.region().base().add(off), size)
                        };
                        assert!(
                            got.iter().all(|&b| b == pat),
                            "thread {t}: block overwritten"
                        );
                        waited(|| p.free(a)).unwrap();
                    }
                }
                for (a, _, _) in held {
                    waited(|| p.free(a)).unwrap();
                }
            });
        }
    });
    assert_eq!(p.stats().unwrap(), base);
}

#[test]
fn random_metadata_corruption_gives_errors_only() {
    // Flip random bytes of a live pool's header, table and records, then run operations:
    // only errors may come back (no panic, no access outside the region: Miri checks that).
    let iterations = scaled(300);
    let mut rnd = common::xorshift(0x1234_5678_9abc_def0u64);
    for _ in 0..iterations {
        let mut m = Mem::new(64 * 1024);
        let p = pool(&mut m, 64);
        let mut held: Vec<Alloc> = (0..20)
            .filter_map(|i| p.alloc(i * 50, AllocKind::Data).ok())
            .collect();
        let meta = p.metadata_size();
        for _ in 0..(1 + rnd() % 8) {
            let i = (rnd() as usize) % meta;
            m.bytes_mut()[i] ^= 1 << (rnd() % 8);
        }
        let p = match Pool::attach(m.region(), 1) {
            Ok(p) => p,
            Err(_) => continue,
        };
        if p.lock_holder().is_some() {
            // A flipped lock word reads as a holder that never lets go: recovery (holder
            // declared dead) takes the lock over and rebuilds, or reports the damage.
            let _ = p.recover(&|_| false);
        }
        for j in 0..40 {
            if j % 2 == 0 {
                if let Ok(a) = p.alloc((rnd() % 5000) as usize, AllocKind::Data) {
                    held.push(a);
                }
            } else if !held.is_empty() {
                let a = held.swap_remove(rnd() as usize % held.len());
                let _ = p.free(a);
            }
            let _ = p.stats();
            let _ = p.allocations().count();
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    Free(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0usize..9000).prop_map(Op::Alloc),
            2 => any::<usize>().prop_map(Op::Free),
        ],
        1..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random alloc/free against a model: live allocations never overlap, the queries agree
    /// with the model, and everything comes back at the end.
    #[test]
    fn alloc_free_matches_model(ops in ops()) {
        let mut m = Mem::new(128 * 1024);
        let p = pool(&mut m, 64);
        let base = p.stats().unwrap();
        let mut live: Vec<(Alloc, usize, usize)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc(n) => match p.alloc(n, AllocKind::Data) {
                    Ok(a) => {
                        let (off, size) = p.resolve(&a).unwrap();
                        prop_assert!(size >= n.max(1) && size.is_power_of_two());
                        for &(_, o, s) in &live {
                            prop_assert!(off + size <= o || o + s <= off, "overlap");
                        }
                        live.push((a, off, size));
                    }
                    Err(PoolError::OutOfSpace) => {
                        // Only legitimate if no free block of that class or larger exists.
                        let mut c = [0u32; SIZE_CLASSES];
                        let k = n.max(1).div_ceil(64).next_power_of_two().trailing_zeros() as usize;
                        let classes = p.free_blocks(&mut c).unwrap();
                        prop_assert!(c[k.min(classes)..classes].iter().all(|&x| x == 0));
                    }
                    Err(PoolError::TooLarge { .. }) => prop_assert!(n > p.max_alloc()),
                    Err(e) => prop_assert!(false, "{}", e),
                },
                Op::Free(i) if !live.is_empty() => {
                    let (a, _, _) = live.swap_remove(i % live.len());
                    p.free(a).unwrap();
                    prop_assert_eq!(p.free(a), Err(PoolError::Stale));
                }
                Op::Free(_) => {}
            }
            let s = p.stats().unwrap();
            prop_assert_eq!(s.live as usize, live.len());
            prop_assert_eq!(s.total - s.free, live.iter().map(|l| l.2).sum::<usize>());
        }
        for (a, _, _) in live {
            p.free(a).unwrap();
        }
        prop_assert_eq!(p.stats().unwrap(), base);
    }
}

/// Chunks a backing function may still back in `sparse_pools_back_chunks_as_allocations_need_them`
/// (a test of its own, so no other test shares it).
static BUDGET: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Bytes backed so far by that function.
static BACKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn budgeted_backing(_r: dragon_channels_core::Region, _off: usize, len: usize) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    let chunks = len.div_ceil(CHUNK_BYTES);
    if BUDGET
        .fetch_update(SeqCst, SeqCst, |b| b.checked_sub(chunks))
        .is_err()
    {
        return false;
    }
    BACKED.fetch_add(len, SeqCst);
    true
}

/// A sparse pool backs chunks as the allocator first needs them, never more than it is
/// allowed, and a backing failure is a clean `NoBacking`: nothing allocated, nothing changed.
#[test]
fn sparse_pools_back_chunks_as_allocations_need_them() {
    use std::sync::atomic::Ordering::SeqCst;
    let len = scaled(16) * MIB;
    let mut m = Mem::new(len);
    let cfg = PoolConfig {
        min_block: 64,
        max_allocations: Some(1024),
        uid: 3,
    };
    BUDGET.store(usize::MAX / 2, SeqCst);
    let p = Pool::init_sparse(m.region(), &cfg, 1, budgeted_backing).unwrap();
    // Init backs only the links of the first free blocks (one per set bit of the block
    // count): a few bytes each, no whole chunk.
    let tiles = (p.total_size() / 64).count_ones() as usize;
    assert_eq!(p.backed_bytes().unwrap(), 0);
    assert_eq!(BACKED.load(SeqCst), tiles * 8);
    // A small allocation splits the big block: the heads of the upper halves are backed.
    let a = p.alloc(64, AllocKind::Data).unwrap();
    let after_one = p.backed_bytes().unwrap();
    assert!(after_one < p.total_size() / 2, "{after_one}");
    // Only a few more chunks may be backed now.
    let before = p.stats().unwrap();
    BUDGET.store(1, SeqCst);
    assert_eq!(
        p.alloc(p.max_alloc() / 2, AllocKind::Data),
        Err(PoolError::NoBacking),
        "half the pool needs more chunks than the budget"
    );
    assert_eq!(
        p.stats().unwrap(),
        before,
        "a failed backing changes nothing"
    );
    // What is backed stays usable.
    let b = p.alloc(64, AllocKind::Data).unwrap();
    p.free(b).unwrap();
    BUDGET.store(usize::MAX / 2, SeqCst);
    p.free(a).unwrap();
    let all = p.alloc(p.max_alloc(), AllocKind::Data).unwrap();
    assert!(p.backed_bytes().unwrap() >= p.max_alloc());
    p.free(all).unwrap();
    assert_eq!(p.stats().unwrap().free, p.total_size());
    // A party that attached without a backing function uses backed chunks only (the
    // largest block's, now).
    let q = Pool::attach(m.region(), 2).unwrap();
    let c = q.alloc(64, AllocKind::Data).unwrap();
    q.free(c).unwrap();
}

/// Pools made by `init` have everything backed: no backing function is ever needed.
#[test]
fn plain_pools_are_fully_backed() {
    let mut m = Mem::new(MIB);
    let p = pool(&mut m, 64);
    assert_eq!(p.backed_bytes().unwrap(), p.total_size());
    let a = p.alloc(p.max_alloc(), AllocKind::Data).unwrap();
    p.free(a).unwrap();
}

/// A pool with magazines (one per 2,048 minimum blocks, so 1 MiB of 64-byte blocks has 8).
/// Frees `a` through `cache`, or through `p`'s lock without one.
fn free(p: &Pool, cache: &mut Option<dragon_channels_core::PoolCache>, a: Alloc) {
    match cache.as_mut() {
        Some(c) => assert_eq!(waited(|| c.free(a)), Ok(Wake::None), "nobody waits"),
        None => waited(|| p.free(a)).unwrap(),
    }
}

fn magazine_pool(m: &mut Mem) -> Pool {
    let cfg = PoolConfig {
        min_block: 64,
        max_allocations: Some(4096),
        uid: 11,
    };
    let mut p = Pool::init(m.region(), &cfg, 1).unwrap();
    // Waiters yield after a few spins, as the adapter's do (more threads than cores here).
    p.set_lock_backoff(common::yielding_backoff);
    p
}

/// Freed small allocations stay in the freeing thread's cache and come back from it; to
/// everyone else they are free memory: statistics, the free-block query and allocations of
/// other parties (which drain magazines when the pool is otherwise full) all see them.
#[test]
fn magazines_cache_per_thread_and_stay_free_memory_for_everyone() {
    let mut m = Mem::new(MIB);
    let a_pool = magazine_pool(&mut m);
    let b_pool = a_pool.with_owner(2).unwrap();
    let before = a_pool.stats().unwrap();
    let mut fresh = [0u32; SIZE_CLASSES];
    a_pool.free_blocks(&mut fresh).unwrap();
    let mut a = a_pool.claim_cache().expect("a magazine");
    let x = a.alloc(64, AllocKind::Data).unwrap();
    let y = a.alloc(128, AllocKind::Data).unwrap();
    assert_eq!(a.free(x), Ok(Wake::None));
    assert_eq!(a.free(y), Ok(Wake::None));
    assert_eq!(
        a_pool.stats().unwrap(),
        before,
        "cached blocks count as free"
    );
    assert_eq!(
        a_pool.allocations().count(),
        0,
        "cached blocks are not allocations"
    );
    // A stale descriptor of a cached allocation is refused, and changes nothing.
    assert_eq!(a_pool.free(x), Err(PoolError::Stale));
    assert_eq!(b_pool.free(x), Err(PoolError::Stale));
    assert_eq!(a.free(x), Err(PoolError::Stale));
    assert_eq!(a_pool.resolve(&y), Err(PoolError::Stale));
    // The same thread gets its cached block back, with a new generation.
    let x2 = a.alloc(64, AllocKind::Data).unwrap();
    assert_eq!(
        a_pool.resolve(&x2).unwrap(),
        a_pool.span_unchecked(&x).unwrap()
    );
    assert_ne!(x2, x);
    assert_eq!(a_pool.owner_of(&x2), Ok(1));
    assert_eq!(a_pool.allocations().count(), 1, "a slot record is listed");
    // Freed through the pool lock by another party (ownership moved): freed for good.
    b_pool.free(x2).unwrap();
    assert_eq!(a_pool.stats().unwrap(), before);
    let x3 = a.alloc(64, AllocKind::Data).unwrap();
    assert_eq!(a.free(x3), Ok(Wake::None));
    // Party 2 fills the pool: it gets every byte, party 1's cached blocks included.
    let mut held = Vec::new();
    while let Ok(h) = b_pool.alloc(64, AllocKind::Data) {
        held.push(h);
    }
    assert_eq!(
        held.len(),
        4096,
        "bounded by the records, not by cached blocks"
    );
    for h in held {
        b_pool.free(h).unwrap();
    }
    let big = b_pool.alloc(b_pool.max_alloc(), AllocKind::Data).unwrap();
    b_pool.free(big).unwrap();
    // The drained cache still works, and its release gives back what it cached.
    let z = a.alloc(256, AllocKind::Data).unwrap();
    assert_eq!(a.free(z), Ok(Wake::None));
    assert_eq!(a_pool.stats().unwrap(), before);
    a.release().unwrap();
    let mut now = [0u32; SIZE_CLASSES];
    a_pool.free_blocks(&mut now).unwrap();
    assert_eq!(now, fresh, "the query drains magazines and merges");
    assert_eq!(a_pool.stats().unwrap(), before);
}

/// Every magazine can be claimed once, a released one again; a thread without one allocates
/// a cache that frees more than its budget allows frees the rest for good, and everything
/// comes back.
#[test]
fn caches_are_claimed_once_and_keep_at_most_their_budget() {
    let mut m = Mem::new(MIB);
    let p = magazine_pool(&mut m);
    let before = p.stats().unwrap();
    let caches: Vec<_> = std::iter::from_fn(|| p.claim_cache()).collect();
    assert!(
        caches.len() >= 4,
        "1 MiB of 64-byte blocks: {}",
        caches.len()
    );
    assert!(p.claim_cache().is_none(), "every magazine is held");
    let mut it = caches.into_iter();
    let mut c = it.next().unwrap();
    for other in it {
        other.release().unwrap();
    }
    // Fill every slot with 1 KiB allocations (16 minimum blocks each), then free them all:
    // what the budget does not allow goes back to the pool, and the query that drains
    // magazines gets back exactly what stayed.
    let n = dragon_channels_core::pool::MAG_SLOTS;
    let held: Vec<_> = (0..n)
        .map(|_| c.alloc(1024, AllocKind::Data).unwrap())
        .collect();
    for h in held {
        assert_eq!(c.free(h), Ok(Wake::None));
    }
    assert_eq!(p.stats().unwrap(), before, "cached blocks count as free");
    let again: Vec<_> = (0..n)
        .map(|_| c.alloc(1024, AllocKind::Data).unwrap())
        .collect();
    for h in again {
        p.free(h).unwrap();
    }
    let mut fb = [0u32; SIZE_CLASSES];
    p.free_blocks(&mut fb).unwrap();
    let mut other = p.claim_cache().expect("released magazines are claimable");
    let a = other.alloc(64, AllocKind::Data).unwrap();
    assert_eq!(other.free(a), Ok(Wake::None));
    other.release().unwrap();
    c.release().unwrap();
    assert_eq!(p.stats().unwrap(), before);
}

/// A party that dies with allocations in its magazine: recovery frees them and releases the
/// magazine.
#[test]
fn recovery_empties_a_dead_partys_magazine() {
    let mut m = Mem::new(MIB);
    let p = magazine_pool(&mut m);
    let dead = p.with_owner(5).unwrap();
    let before = p.stats().unwrap();
    let mut c = dead.claim_cache().unwrap();
    let held: Vec<_> = (0..4)
        .map(|i| c.alloc(64 << (i % 2), AllocKind::Data).unwrap())
        .collect();
    let live_one = c.alloc(256, AllocKind::Data).unwrap();
    let live_pool_rec = dead.alloc(64, AllocKind::Data).unwrap();
    for h in held {
        assert_eq!(c.free(h), Ok(Wake::None));
    }
    let _ = (live_one, live_pool_rec);
    // Every magazine but the dead party's is claimed by someone else.
    let others: Vec<_> = std::iter::from_fn(|| p.claim_cache()).collect();
    assert!(!others.is_empty());
    let rep = p.recover(&|o| o != 5).unwrap();
    assert_eq!(
        rep.freed, 6,
        "four cached and two live allocations: {rep:?}"
    );
    assert_eq!(p.stats().unwrap(), before);
    // The dead party's magazine is free again: a new party claims it and works.
    let again = p.with_owner(6).unwrap();
    let mut c = again.claim_cache().expect("the dead party's magazine");
    let z = c.alloc(64, AllocKind::Data).unwrap();
    assert_eq!(c.free(z), Ok(Wake::None));
    let z = c.alloc(64, AllocKind::Data).unwrap();
    assert_eq!(c.free(z), Ok(Wake::None));
    assert_eq!(p.stats().unwrap(), before);
    c.release().unwrap();
    for o in others {
        o.release().unwrap();
    }
    assert_eq!(p.stats().unwrap(), before);
}

/// Threads of three parties allocate and free at once (caches, the locked path and frees of
/// one thread's allocations by another mixed, with queries and drains running): no block is
/// ever handed out twice, and the pool ends at its baseline.
#[test]
fn magazines_under_concurrency_never_hand_a_block_out_twice() {
    let _w = watchdog(
        120,
        "magazines_under_concurrency_never_hand_a_block_out_twice",
    );
    let mut m = Mem::new(MIB);
    let p = magazine_pool(&mut m);
    let before = p.stats().unwrap();
    let rounds = scaled(20_000);
    let (tx, rx) = std::sync::mpsc::channel::<Alloc>();
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            // Two threads share owner 2, each with a cache of its own; owner 5's second
            // thread has none (it uses the pool lock).
            let q = p.with_owner(2 + t / 2 * 3).unwrap();
            let tx = tx.clone();
            let rx = &rx;
            s.spawn(move || {
                let mut cache = if t == 3 { None } else { q.claim_cache() };
                let mut rng = 0x9E37_79B9u32 ^ t;
                let mut held: Vec<(Alloc, u8)> = Vec::new();
                for i in 0..rounds {
                    rng ^= rng << 13;
                    rng ^= rng >> 17;
                    rng ^= rng << 5;
                    if held.len() < 8 && !rng.is_multiple_of(3) {
                        let size = 64 << (rng % 4);
                        let got = match cache.as_mut() {
                            Some(c) => waited(|| c.alloc(size as usize, AllocKind::Data)),
                            None => waited(|| q.alloc(size as usize, AllocKind::Data)),
                        };
                        if let Ok(a) = got {
                            let (off, len) = waited(|| q.resolve(&a)).unwrap();
                            let tag = (i as u8) ^ (t as u8);
                            q.region().copy_in(off, &vec![tag; len]);
                            held.push((a, tag));
                        }
                    } else if let Some((a, tag)) = held.pop() {
                        let (off, len) = waited(|| q.resolve(&a)).unwrap();
                        let mut back = vec![0u8; len];
                        q.region().copy_out(off, &mut back);
                        assert!(back.iter().all(|&b| b == tag), "block shared with another");
                        if i % 7 == 0 {
                            // Handed to another thread, which frees it.
                            let _ = tx.send(a);
                        } else {
                            free(&q, &mut cache, a);
                        }
                    }
                    if let Ok(a) = rx.lock().unwrap().try_recv() {
                        free(&q, &mut cache, a);
                    }
                }
                for (a, _) in held {
                    free(&q, &mut cache, a);
                }
                // Whatever others handed over and nobody took yet.
                while let Ok(a) = rx.lock().unwrap().try_recv() {
                    free(&q, &mut cache, a);
                }
                if let Some(c) = cache {
                    c.release().unwrap();
                }
            });
        }
        drop(tx);
        s.spawn(|| {
            let mut fb = [0u32; SIZE_CLASSES];
            for i in 0..scaled(200) {
                let st = waited(|| p.stats()).unwrap();
                assert!(st.free <= st.total);
                if i % 10 == 0 {
                    // Drains every magazine while their threads use them.
                    waited(|| p.free_blocks(&mut fb)).unwrap();
                }
                std::thread::yield_now();
            }
        });
    });
    // Whatever handed-over allocations no thread took.
    let rx = rx.into_inner().unwrap();
    while let Ok(a) = rx.try_recv() {
        p.free(a).unwrap();
    }
    assert_eq!(p.stats().unwrap(), before);
}
