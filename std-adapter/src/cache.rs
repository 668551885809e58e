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

/// One thread's state: its caches, `(mapping id, its magazine)` (`None` when the pool had none
/// to give), and its spare pool reference.
struct ThreadState {
    caches: RefCell<Vec<(u64, Option<PoolCache>)>>,
    spare: Cell<Option<MemoryPool>>,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        for (id, cache) in core::mem::take(self.caches.get_mut()) {
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
    static THREAD: ThreadState = const {
        ThreadState {
            caches: RefCell::new(Vec::new()),
            spare: Cell::new(None),
        }
    };
}

impl ThreadState {
    /// Runs `f` with this thread's cache of `pool` (claimed on first use). `None` without
    /// one: an observer, a pool without magazines or with all of them held by live
    /// processes, or a reentrant call.
    #[inline]
    fn with_cache<T>(&self, pool: &PoolInner, f: impl FnOnce(&mut PoolCache) -> T) -> Option<T> {
        if pool.observer {
            return None;
        }
        let mut list = self.caches.try_borrow_mut().ok()?;
        let cache = match list.iter_mut().position(|(id, _)| *id == pool.id) {
            Some(at) => list[at].1.as_mut(),
            None => claim(&mut list, pool),
        }?;
        Some(f(cache))
    }

    /// This thread's spare if it refers to `pool`'s mapping.
    #[inline]
    fn take_spare(&self, pool: &MemoryPool) -> Option<MemoryPool> {
        match self.spare.take() {
            Some(p) if p.same_pool(pool) => Some(p),
            other => {
                self.spare.set(other);
                None
            }
        }
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
    THREAD
        .try_with(|t| t.with_cache(pool, |c| c.alloc(size, kind)))
        .ok()
        .flatten()
        .unwrap_or_else(|| pool.core.alloc(size, kind))
}

/// Frees through this thread's cache of `pool`. `None`: no cache; the caller frees through
/// the pool lock.
#[inline]
pub(crate) fn free(pool: &PoolInner, a: Alloc) -> Option<Result<Wake, CorePoolError>> {
    THREAD
        .try_with(|t| t.with_cache(pool, |c| c.free(a)))
        .ok()
        .flatten()
}

/// A message's allocation of `size` bytes from `pool` and its reference to the pool (this
/// thread's spare when it is one to `pool`, a clone otherwise), with one look at the
/// thread's state.
#[inline]
pub(crate) fn alloc_message(
    pool: &MemoryPool,
    size: usize,
) -> (Result<Alloc, CorePoolError>, MemoryPool) {
    let kind = AllocKind::Data;
    let got = THREAD.try_with(|t| {
        (
            t.with_cache(&pool.inner, |c| c.alloc(size, kind)),
            t.take_spare(pool),
        )
    });
    let (r, spare) = got.unwrap_or((None, None));
    (
        r.unwrap_or_else(|| pool.inner.core.alloc(size, kind)),
        spare.unwrap_or_else(|| pool.clone()),
    )
}

/// Frees a message's allocation `a` through this thread's cache of its pool and keeps the
/// message's pool reference as this thread's spare (the one it replaces, if any, is
/// dropped); returns whom to wake. `Err`: not freed through a cache, with the reference back
/// and what the cache's free said (`None`: no cache); the caller frees through the pool lock.
#[inline]
pub(crate) fn free_message(
    pool: MemoryPool,
    a: Alloc,
) -> Result<Wake, (MemoryPool, Option<CorePoolError>)> {
    let r = THREAD.try_with(|t| t.with_cache(&pool.inner, |c| c.free(a)));
    match r {
        Ok(Some(Ok(w))) => {
            if !pool.inner.observer {
                // Dropped outside the access: the last reference's drop may run the
                // mapping's own drop.
                let old = THREAD.try_with(|t| t.spare.replace(Some(pool)));
                drop(old);
            }
            Ok(w)
        }
        Ok(Some(Err(e))) => Err((pool, Some(e))),
        _ => Err((pool, None)),
    }
}

/// A reference to `pool` for a message: this thread's spare if it is one to the same
/// mapping, a clone otherwise.
#[inline]
pub(crate) fn pool_ref(pool: &MemoryPool) -> MemoryPool {
    THREAD
        .try_with(|t| t.take_spare(pool))
        .ok()
        .flatten()
        .unwrap_or_else(|| pool.clone())
}

/// Drops this thread's spare if it refers to `pool`'s mapping (the pool is being destroyed
/// or detached by this thread: its mapping should go with its last handle).
pub(crate) fn forget_spare(pool: &MemoryPool) {
    let old = THREAD.try_with(|t| t.take_spare(pool));
    drop(old);
}
