//! Thread caches: each thread that allocates from a pool holds one of the pool's magazines
//! (the core's [`PoolCache`], see the core's `pool/magazine.rs`), found through a
//! thread-local list keyed by the mapping's id. Allocations and frees through it take no
//! lock and touch no line another thread writes.
//!
//! Each thread also keeps one **spare reference** to the mapping it last allocated from: a
//! message takes it instead of cloning its pool handle (an atomic increment) and its drop
//! puts it back instead of dropping it (an atomic decrement), so a thread that creates and
//! drops messages pays neither. The spare keeps that one mapping of this thread's until the
//! thread exits, allocates from another pool, or destroys or detaches the pool itself
//! ([`forget_spare`]).
//!
//! A cache lives as long as its thread and its mapping: a thread that exits gives its
//! magazines back to the pools it still maps; a mapping that goes (its last handle and
//! message dropped) gives back every magazine its party's threads hold
//! ([`dragon_channels_core::Pool::release_caches_of_party`]), and the other threads' entries
//! for it are never matched again (ids are not reused) and are dropped without touching the
//! pool. A process that dies leaves its magazines to the next recovery, like its other
//! allocations.

use core::cell::{Cell, RefCell};
use dragon_channels_core::{Alloc, AllocKind, PoolCache, PoolError as CorePoolError, Wake};

use crate::pool::{MemoryPool, PoolInner, mapped_by_id};
use crate::sync::{AtomicU64, Ordering};

/// Entries past which a thread prunes those of mappings that are gone.
const PRUNE_AT: usize = 8;

/// A new mapping id (never 0, never reused in this process).
pub(crate) fn new_mapping_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One thread's caches: `(mapping id, its magazine)`; `None` when the pool had none to give.
struct ThreadCaches(RefCell<Vec<(u64, Option<PoolCache>)>>);

impl Drop for ThreadCaches {
    fn drop(&mut self) {
        for (id, cache) in core::mem::take(self.0.get_mut()) {
            give_back(id, cache);
        }
    }
}

/// Gives `cache` back to its pool if the mapping is still there (its thread is done with
/// it); otherwise the mapping's drop gave it back already. One try: if the pool lock stays
/// held, the magazine stays claimed until the mapping goes (or recovery finds this process
/// dead), which costs the pool only what the magazine caches.
fn give_back(id: u64, cache: Option<PoolCache>) {
    if let (Some(cache), Some(_mapped)) = (cache, mapped_by_id(id)) {
        let _ = cache.release();
    }
}

thread_local! {
    static CACHES: ThreadCaches = const { ThreadCaches(RefCell::new(Vec::new())) };
    /// This thread's spare reference (see the module docs).
    static SPARE: Cell<Option<MemoryPool>> = const { Cell::new(None) };
}

/// A reference to `pool` for a message: this thread's spare if it is one to the same
/// mapping, a clone otherwise.
#[inline]
pub(crate) fn pool_ref(pool: &MemoryPool) -> MemoryPool {
    SPARE
        .try_with(|s| match s.take() {
            Some(p) if p.same_pool(pool) => Some(p),
            other => {
                s.set(other);
                None
            }
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| pool.clone())
}

/// Takes back a message's pool reference as this thread's spare (the one it replaces, if
/// any, is dropped).
#[inline]
pub(crate) fn keep_spare(pool: MemoryPool) {
    if pool.inner.observer {
        return;
    }
    // Dropped outside the thread-local access: the last reference's drop may run the
    // mapping's own drop.
    let old = SPARE.try_with(|s| s.replace(Some(pool)));
    drop(old);
}

/// Drops this thread's spare if it refers to `pool`'s mapping (the pool is being destroyed
/// or detached by this thread: its mapping should go with its last handle).
pub(crate) fn forget_spare(pool: &MemoryPool) {
    let old = SPARE.try_with(|s| match s.take() {
        Some(p) if p.same_pool(pool) => Some(p),
        other => {
            s.set(other);
            None
        }
    });
    drop(old);
}

/// Runs `f` with this thread's cache of `pool` (claimed on first use), or `slow` without one
/// (an observer, a pool without magazines or with all of them held by live processes, a
/// thread being torn down, or a reentrant call): the pool lock's path.
#[inline]
fn with_cache<T>(
    pool: &PoolInner,
    f: impl FnOnce(&mut PoolCache) -> T,
    slow: impl FnOnce() -> T,
) -> T {
    if pool.observer {
        return slow();
    }
    let mut f = Some(f);
    let r = CACHES.try_with(|c| {
        let Ok(mut list) = c.0.try_borrow_mut() else {
            return None;
        };
        let cache = match list.iter_mut().position(|(id, _)| *id == pool.id) {
            Some(at) => list[at].1.as_mut(),
            None => claim(&mut list, pool),
        }?;
        f.take().map(|f| f(cache))
    });
    match r {
        Ok(Some(v)) => v,
        _ => slow(),
    }
}

/// Adds this thread's entry for `pool` to `list` (claiming a magazine if one is free or held
/// by a dead process) and returns its cache.
#[cold]
fn claim<'a>(
    list: &'a mut Vec<(u64, Option<PoolCache>)>,
    pool: &PoolInner,
) -> Option<&'a mut PoolCache> {
    if list.len() >= PRUNE_AT {
        list.retain(|(id, _)| mapped_by_id(*id).is_some());
    }
    // Magazines held by dead processes are taken over (their cached blocks go back to the
    // pool) rather than leaving this thread without one.
    let alive = |o: u32| pool.is_alive(o);
    let claimed = pool.core.claim_cache_reclaiming(&alive).ok().flatten();
    list.push((pool.id, claimed));
    list.last_mut().and_then(|(_, c)| c.as_mut())
}

/// Allocates through this thread's cache of `pool`, or through the pool lock without one.
#[inline]
pub(crate) fn alloc(
    pool: &PoolInner,
    size: usize,
    kind: AllocKind,
) -> Result<Alloc, CorePoolError> {
    with_cache(
        pool,
        |c| c.alloc(size, kind),
        || pool.core.alloc(size, kind),
    )
}

/// Frees through this thread's cache of `pool`. `None`: no cache; the caller frees through
/// the pool lock.
#[inline]
pub(crate) fn free(pool: &PoolInner, a: Alloc) -> Option<Result<Wake, CorePoolError>> {
    with_cache(pool, |c| Some(c.free(a)), || None)
}
