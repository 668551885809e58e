//! Thread caches: each thread that allocates from a pool holds one of the pool's magazines
//! (the core's [`PoolCache`], see the core's `pool/magazine.rs`). Allocations and frees
//! through it take no lock and touch no line another thread writes.
//!
//! # The hot mapping
//! The mapping a thread made or dropped a message of last (of those it has a cache of) is
//! its **hot** mapping: the thread holds a reference to it (so its address names it: no
//! mapping id to load and compare) and its cache, and a message's fast paths look at nothing
//! else. The thread also banks **spare references** to it: a message made here takes a
//! banked reference instead of cloning its pool handle (an atomic increment), and a message
//! dropped here banks its reference instead of dropping it (an atomic decrement), so a thread
//! that creates and drops messages pays neither. The other mappings' caches wait in a list
//! keyed by mapping id; a message of another mapping makes that one hot, and the old hot
//! mapping's references are dropped. So the thread keeps its hot mapping until it exits,
//! makes or drops a message of another pool, or destroys or detaches the pool itself
//! ([`let_go`]).
//!
//! A cache lives as long as its thread and its mapping: a thread that exits gives its
//! magazines back to the pools it still maps; a mapping that goes (its last handle and
//! message dropped) gives back every magazine its party's threads hold
//! ([`dragon_channels_core::Pool::release_caches_of_party`]), and the other threads' entries
//! for it are never matched again (ids are not reused) and are dropped without touching the
//! pool. A process that dies leaves its magazines to the next recovery, like its other
//! allocations.

use core::cell::RefCell;
use core::ptr::NonNull;
use std::sync::Arc;

use dragon_channels_core::{Alloc, AllocKind, PoolCache, PoolError as CorePoolError, Wake};

use crate::message::MsgMem;
use crate::pool::{MemoryPool, PoolInner, mapped_by_id};
use crate::sync::{AtomicU64, Ordering};
use crate::wait;

/// Entries past which a thread prunes those of mappings that are gone.
const PRUNE_AT: usize = 8;

/// A new mapping id (never 0, never reused in this process).
pub(crate) fn new_mapping_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One thread's state (borrowed for each look; a reentrant look finds it borrowed and takes
/// the pool lock's path).
struct ThreadState {
    caches: RefCell<Caches>,
}

/// A thread's caches: the hot mapping's, and the others as `(mapping id, its magazine)`
/// (`None` when the pool had none to give).
struct Caches {
    hot: Option<Hot>,
    others: Vec<(u64, Option<PoolCache>)>,
}

/// The hot mapping (module docs): this thread's references to it and its cache.
struct Hot {
    refs: Refs,
    cache: PoolCache,
}

impl Hot {
    /// Whether this is `pool`'s mapping.
    #[inline]
    fn is(&self, pool: &PoolInner) -> bool {
        core::ptr::eq(Arc::as_ptr(&self.refs.pool.inner), pool)
    }

    /// Stops being hot: the cache's entry for the list, and the references, to drop outside
    /// the thread's state.
    fn retire(self) -> ((u64, Option<PoolCache>), Refs) {
        ((self.refs.pool.inner.id, Some(self.cache)), self.refs)
    }
}

/// References to a mapping that a thread holds: `pool`, and `spares` strong counts of its
/// `Arc` besides that no value owns (banked message references). Dropping it drops them all:
/// outside the thread's state where it can be, as the last one's drop runs the mapping's.
struct Refs {
    /// While it is held, no other mapping has its address.
    pool: MemoryPool,
    spares: usize,
}

impl Refs {
    /// A reference to the mapping for a message: a banked one, or a new one.
    #[inline]
    fn lend(&mut self) -> MemoryPool {
        if self.spares == 0 {
            return self.pool.clone();
        }
        self.spares -= 1;
        // SAFETY: the bank held `spares + 1` strong counts of this `Arc` that no value owns
        // (the field's invariant); the new value owns one of them.
        let inner = unsafe { Arc::from_raw(Arc::as_ptr(&self.pool.inner)) };
        MemoryPool { inner }
    }

    /// Banks a reference to this mapping: call it only where the caller then forgets that
    /// reference (`mem::forget`), whose strong count the bank now owns. The bank has no
    /// bound: a thread that drops more messages than it makes (of messages made elsewhere)
    /// grows it, and letting go of it then costs one atomic decrement per banked reference,
    /// each one a drop that was deferred, not added.
    #[inline]
    fn bank(&mut self) {
        self.spares += 1;
    }
}

impl Drop for Refs {
    fn drop(&mut self) {
        let ptr = Arc::as_ptr(&self.pool.inner);
        for _ in 0..self.spares {
            // SAFETY: each banked count is a strong count of this `Arc` that no value owns
            // (`Refs::spares`); `pool` holds one more, so the count stays above zero here.
            unsafe { Arc::decrement_strong_count(ptr) };
        }
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        let caches = self.caches.get_mut();
        if let Some(hot) = caches.hot.take() {
            let ((_, cache), refs) = hot.retire();
            // The mapping is alive: `refs` holds it until after the release.
            if let Some(cache) = cache {
                let _ = cache.release();
            }
            drop(refs);
        }
        for (id, cache) in core::mem::take(&mut caches.others) {
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
            caches: RefCell::new(Caches {
                hot: None,
                others: Vec::new(),
            }),
        }
    };
}

/// This thread's state; `None` once its destructor has run or runs (a thread being torn
/// down). A pointer, so that what uses it need not be a closure passed to `THREAD.try_with`
/// (which makes `try_with` too large to inline into a message's fast path).
///
/// The state stays alive from a successful look until this thread's thread-local destructors
/// run it, which cannot start while the thread runs the caller (they run at its exit, one
/// after the other): the pointer may be used until the caller returns, and not kept.
#[inline(always)]
fn state() -> Option<NonNull<ThreadState>> {
    THREAD.try_with(|t| NonNull::from(t)).ok()
}

/// Runs `f` with this thread's state; `None` once its destructor has run or runs.
#[inline(always)]
fn with_state<R>(f: impl FnOnce(&ThreadState) -> R) -> Option<R> {
    // SAFETY: used only during this call (see `state`).
    Some(f(unsafe { state()?.as_ref() }))
}

impl Caches {
    /// The hot mapping if it is `pool`'s.
    #[inline(always)]
    fn hot_for(&mut self, pool: &PoolInner) -> Option<&mut Hot> {
        // Compared as non-null pointers, one comparison tells both that there is a hot
        // mapping and that it is `pool`'s.
        let hot = self
            .hot
            .as_ref()
            .map(|h| NonNull::from(&*h.refs.pool.inner));
        if hot != Some(NonNull::from(pool)) {
            return None;
        }
        self.hot.as_mut()
    }

    /// This thread's cache of `pool` (claimed on first use). `None` without one: an
    /// observer, or a pool without magazines or with all of them held by live processes.
    #[inline]
    fn of(&mut self, pool: &PoolInner) -> Option<&mut PoolCache> {
        match &mut self.hot {
            Some(hot) if hot.is(pool) => Some(&mut hot.cache),
            _ => find_or_claim(&mut self.others, pool),
        }
    }

    /// Makes `pool` the hot mapping, with `pool` as its reference, if this thread has or can
    /// claim a cache of it. Returns the references to drop outside the thread's state: the
    /// old hot mapping's, or `pool` itself when it cannot be hot.
    #[cold]
    #[inline(never)]
    fn make_hot(&mut self, pool: MemoryPool) -> Option<Refs> {
        if let Some(hot) = &mut self.hot
            && hot.is(&pool.inner)
        {
            hot.refs.bank();
            core::mem::forget(pool);
            return None;
        }
        // The entry of a pool without a cache stays in the list (so that the next look does
        // not try to claim one again).
        let id = pool.inner.id;
        let cached = find_or_claim(&mut self.others, &pool.inner).is_some();
        let at = cached
            .then(|| self.others.iter().position(|(i, _)| *i == id))
            .flatten();
        let Some((_, Some(cache))) = at.map(|at| self.others.swap_remove(at)) else {
            return Some(Refs { pool, spares: 0 });
        };
        let old = self.hot.replace(Hot {
            refs: Refs { pool, spares: 0 },
            cache,
        });
        old.map(|old| {
            let (entry, refs) = old.retire();
            self.others.push(entry);
            refs
        })
    }
}

/// This thread's cache of `pool` from the list of the mappings that are not hot (claimed and
/// added on first use). `None` for an observer, which never caches, and for a pool that had
/// no magazine to give.
#[cold]
#[inline(never)]
fn find_or_claim<'a>(
    list: &'a mut Vec<(u64, Option<PoolCache>)>,
    pool: &PoolInner,
) -> Option<&'a mut PoolCache> {
    if pool.observer {
        return None;
    }
    let at = match list.iter().position(|(id, _)| *id == pool.id) {
        Some(at) => at,
        None => {
            claim(list, pool);
            list.len() - 1
        }
    };
    list.get_mut(at).and_then(|(_, c)| c.as_mut())
}

/// Adds this thread's entry for `pool` to the end of `list` (claiming a magazine if one is
/// free or held by a dead process).
fn claim(list: &mut Vec<(u64, Option<PoolCache>)>, pool: &PoolInner) {
    if list.len() >= PRUNE_AT {
        list.retain(|(id, _)| mapped_by_id(*id).is_some());
    }
    // Magazines held by dead processes are taken over (their cached blocks go back to the
    // pool) rather than leaving this thread without one.
    let alive = |o: u32| pool.is_alive(o);
    let claimed = pool.core.claim_cache_reclaiming(&alive).ok().flatten();
    list.push((pool.id, claimed));
}

/// Runs `f` with this thread's cache of `pool`; `None` without one (see [`Caches::of`]), in a
/// reentrant call or in a thread being torn down.
#[inline]
fn with_cache<T>(pool: &PoolInner, f: impl FnOnce(&mut PoolCache) -> T) -> Option<T> {
    with_state(|t| {
        let mut caches = t.caches.try_borrow_mut().ok()?;
        caches.of(pool).map(f)
    })
    .flatten()
}

/// Allocates through this thread's cache of `pool`, or through the pool lock without one.
#[inline]
pub(crate) fn alloc(
    pool: &PoolInner,
    size: usize,
    kind: AllocKind,
) -> Result<Alloc, CorePoolError> {
    with_cache(pool, |c| c.alloc(size, kind)).unwrap_or_else(|| pool.core.alloc(size, kind))
}

/// Frees through this thread's cache of `pool`. `None`: no cache; the caller frees through
/// the pool lock.
#[inline]
pub(crate) fn free(pool: &PoolInner, a: Alloc) -> Option<Result<Wake, CorePoolError>> {
    with_cache(pool, |c| c.free(a))
}

/// The fast path of a message's allocation: a `size`-byte payload from what this thread's
/// cache of its hot mapping holds, when that is `pool`'s, with a reference to the pool
/// (banked or new), in one look at the thread's state. `None`: nothing at hand (another
/// mapping is hot, or the cache holds nothing of that size); the caller goes to
/// [`make_hot`] and [`alloc`].
#[inline(always)]
pub(crate) fn alloc_message(pool: &MemoryPool, size: usize) -> Option<MsgMem> {
    // SAFETY: used only during this call (see `state`).
    let t = unsafe { state()?.as_ref() };
    let mut caches = t.caches.try_borrow_mut().ok()?;
    let hot = caches.hot_for(&pool.inner)?;
    let (a, off, cap) = hot.cache.alloc_cached(size, AllocKind::Data)?;
    let pool_ref = hot.refs.lend();
    // SAFETY: the cache says the block of `a` is `off..off + cap`, inside the pool's data
    // area; an allocation of `size` bytes has a block of at least that many.
    Some(unsafe { MsgMem::placed(pool_ref, a, off, cap, size) })
}

/// Makes `pool`'s mapping this thread's hot one if it can be (see [`Caches::make_hot`]).
pub(crate) fn make_hot(pool: &MemoryPool) {
    adopt(pool.clone());
}

/// [`make_hot`] with the reference `pool`, which the thread keeps (banked, or as the hot
/// reference) or drops.
fn adopt(pool: MemoryPool) {
    let mut mine = Some(pool);
    let refs = with_state(|t| {
        let mut caches = t.caches.try_borrow_mut().ok()?;
        caches.make_hot(mine.take()?)
    });
    // Dropped here, outside the thread's state (whatever `mine` still holds too).
    drop(refs);
}

/// The fast path of a message's free: keeps its allocation `a` in this thread's cache of its
/// hot mapping, when that is `pool`'s, banks the message's pool reference and wakes whom the
/// free says, in one look at the thread's state. `Err`: not kept (with what the cache's free
/// said, `None`: not this cache's to keep); [`free_message_slow`] frees it then.
///
/// # Safety
/// On `Ok` the bank owns `pool`'s strong count: the caller never drops `pool` (nor uses it
/// again).
#[inline]
pub(crate) unsafe fn free_message(
    pool: &MemoryPool,
    a: &Alloc,
) -> Result<(), Option<CorePoolError>> {
    let r = with_state(|t| {
        let mut caches = t.caches.try_borrow_mut().ok()?;
        let hot = caches.hot_for(&pool.inner)?;
        let r = hot.cache.free_cached(a);
        if let Ok(Some(_)) = r {
            // The caller forgets `pool` on this answer (the contract).
            hot.refs.bank();
        }
        Some(r)
    });
    match r {
        Some(Some(Ok(Some(w)))) => {
            if w != Wake::None {
                wait::notify_freed(pool.inner.core.free_event(), w);
            }
            Ok(())
        }
        Some(Some(Err(e))) => Err(Some(e)),
        _ => Err(None),
    }
}

/// [`free_message`] past its fast path: `cache_err` is what the hot cache's free said
/// (`None`: not kept there, so the general path). `pool` is the message's reference, kept
/// as the hot one's when it can be.
#[cold]
#[inline(never)]
pub(crate) fn free_message_slow(pool: MemoryPool, a: Alloc, cache_err: Option<CorePoolError>) {
    // A drop has no one to report to: a descriptor freed meanwhile some other way is
    // refused as stale by the pool, and nothing else happens.
    let _ = match cache_err {
        Some(e) => pool.inner.free_slow(a, Some(e)),
        None => pool.inner.free(a),
    };
    adopt(pool);
}

/// A reference to `pool` for a message: a banked one if `pool`'s mapping is this thread's
/// hot one, a clone otherwise.
#[inline]
pub(crate) fn pool_ref(pool: &MemoryPool) -> MemoryPool {
    with_state(|t| {
        let mut caches = t.caches.try_borrow_mut().ok()?;
        let hot = caches.hot_for(&pool.inner)?;
        Some(hot.refs.lend())
    })
    .flatten()
    .unwrap_or_else(|| pool.clone())
}

/// Lets go of this thread's references to `pool`'s mapping if it is the hot one (the pool is
/// being destroyed or detached by this thread: its mapping should go with its last handle);
/// its cache waits in the list like the others'.
pub(crate) fn let_go(pool: &MemoryPool) {
    let refs = with_state(|t| {
        let mut caches = t.caches.try_borrow_mut().ok()?;
        if !caches.hot.as_ref()?.is(&pool.inner) {
            return None;
        }
        let (entry, refs) = caches.hot.take()?.retire();
        caches.others.push(entry);
        Some(refs)
    });
    drop(refs);
}
