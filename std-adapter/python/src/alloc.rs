//! `MemoryAlloc` and `MemoryAllocations`: Dragon's allocation API of
//! `dragon.managed_memory`, over the core pool's allocations
//! (`dragon_channels::MemoryPool::core_pool`).
//!
//! # Ownership
//! An allocation made by `MemoryPool.alloc` belongs to the pool, as in Dragon: its record's
//! owner is a structure owner (`STRUCT_OWNER_BIT | its record`), which crash recovery never
//! reclaims, so it outlives the process that made it until some process frees it (through
//! any `MemoryAlloc` naming it, clones and attached copies included). Messages are
//! different: a `Message`'s memory is its process's and is reclaimed if that process dies.
//!
//! # Descriptor
//! `serialize()` gives `[pool descriptor length u64][pool descriptor (pool.rs)][core
//! allocation descriptor, 16 B][offset u64][length u64]`, little endian: a clone's
//! descriptor names the same allocation with its own window. A descriptor of a remote pool
//! attaches as a remote allocation: it serializes and clones, and raises
//! `DragonMemoryError` for everything that needs the memory.
//!
//! # Views that outlive their allocation
//! `get_memview()` exports the memory itself (no copy). A view keeps the `MemoryAlloc`, and
//! so the pool mapping, alive: after `free()` (or a `destroy()` of the pool) a stale view
//! never touches unmapped memory; it reads and writes whatever the block holds next (another
//! allocation, once the pool hands the block out again).

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use dragon_channels as dc;
use dragon_channels::dragon_channels_core::pool::STRUCT_OWNER_BIT;
use dragon_channels::{Alloc, AllocKind};

use crate::buffer::{Export, export_buffer};
use crate::errors::{raise_code, types_attr};
use crate::pool::{PoolDesc, PyMemoryPool, host_id};
use crate::timeout::wait_sliced;

fn mem_err(py: Python<'_>, msg: String, code: &str) -> PyErr {
    raise_code(py, "DragonMemoryError", msg, code)
}

/// An allocation in a pool, or a window of one (Dragon's `MemoryAlloc`).
#[pyclass(module = "dragon_channels", name = "MemoryAlloc")]
pub(crate) struct PyMemoryAlloc {
    /// The pool, mapped by this process; `None` for a remote allocation. Kept after
    /// `detach()` and `free()` while views exist, so that they never see unmapped memory.
    pool: Option<dc::MemoryPool>,
    /// The pool's Python descriptor.
    pool_ser: Vec<u8>,
    /// Dragon's name of the pool.
    pool_name: String,
    alloc: Alloc,
    /// Start of this window inside the block.
    offset: usize,
    /// Bytes of this window.
    len: usize,
    /// Set by `detach()`: the object no longer gives access to the memory.
    detached: bool,
    /// Live buffer exports (memoryviews).
    exports: usize,
}

impl PyMemoryAlloc {
    fn local(&self, py: Python<'_>) -> PyResult<&dc::MemoryPool> {
        if self.detached {
            return Err(mem_err(
                py,
                "the allocation object was detached".into(),
                "INVALID_OPERATION",
            ));
        }
        self.pool.as_ref().ok_or_else(|| {
            mem_err(
                py,
                format!(
                    "the allocation is in pool {:?}, which is not on this host",
                    self.pool_name
                ),
                "MEMORY_OPERATION_ATTEMPT_ON_NONLOCAL_POOL",
            )
        })
    }

    /// The pool, the allocation, and this window's offset and length, for a `Message` that
    /// takes the memory over (`Message.create_from_mem`).
    pub(crate) fn parts(&self, py: Python<'_>) -> PyResult<(&dc::MemoryPool, Alloc, usize, usize)> {
        Ok((self.local(py)?, self.alloc, self.offset, self.len))
    }

    /// The window's address, after checking that the allocation is live.
    fn ptr(&self, py: Python<'_>) -> PyResult<*mut u8> {
        let pool = self.local(py)?;
        let core = pool.core_pool();
        let (off, cap) = core.resolve(&self.alloc).map_err(|e| {
            mem_err(
                py,
                format!("the allocation is not live (freed?): {e}"),
                "NOT_FOUND",
            )
        })?;
        if self.offset + self.len > cap || off + cap > core.region().len() {
            return Err(mem_err(
                py,
                "window outside the block".into(),
                "INVALID_VALUE",
            ));
        }
        // SAFETY: `resolve` checked that `off..off + cap` is a live block of the pool's
        // region (checked above against the mapping's length), and the window
        // `offset..offset + len` lies inside the block; `pool` keeps the mapping alive.
        Ok(unsafe { core.region().base().add(off + self.offset) })
    }

    /// The window's bytes (a copy).
    fn bytes(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        let p = self.ptr(py)?;
        // SAFETY: `ptr` checked that `len` bytes from `p` are inside a live block of the
        // mapped pool; other processes may write them concurrently, which makes the copy a
        // snapshot of shared memory, as a memoryview read is.
        Ok(unsafe { core::slice::from_raw_parts(p, self.len) }.to_vec())
    }

    fn new_local(pool: &PyMemoryPool, py: Python<'_>, alloc: Alloc, len: usize) -> PyResult<Self> {
        Ok(Self {
            pool: Some(pool.get(py)?.clone()),
            pool_ser: pool.descriptor(py)?,
            pool_name: pool.name.clone(),
            alloc,
            offset: 0,
            len,
            detached: false,
            exports: 0,
        })
    }

    /// The descriptor bytes.
    fn descriptor(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.pool_ser.len() + 32);
        v.extend_from_slice(&(self.pool_ser.len() as u64).to_le_bytes());
        v.extend_from_slice(&self.pool_ser);
        v.extend_from_slice(&self.alloc.to_bytes());
        v.extend_from_slice(&(self.offset as u64).to_le_bytes());
        v.extend_from_slice(&(self.len as u64).to_le_bytes());
        v
    }
}

/// The `AllocType` member for a core kind.
fn kind_member<'py>(py: Python<'py>, k: AllocKind) -> PyResult<Bound<'py, PyAny>> {
    let name = match k {
        AllocKind::Data => "DATA",
        AllocKind::Channel => "CHANNEL",
        AllocKind::ChannelBuffer => "CHANNEL_BUFFER",
    };
    types_attr(py, "AllocType")?.getattr(name)
}

/// The core kind of an `AllocType` argument (None: DATA). `BOOTSTRAP` has no core kind.
fn kind_arg(py: Python<'_>, t: Option<&Bound<'_, PyAny>>) -> PyResult<AllocKind> {
    let Some(t) = t.filter(|t| !t.is_none()) else {
        return Ok(AllocKind::Data);
    };
    if !t.is_instance(&types_attr(py, "AllocType")?)? {
        return Err(PyTypeError::new_err("alloc_type must be an AllocType"));
    }
    match t.getattr("name")?.extract::<String>()?.as_str() {
        "DATA" => Ok(AllocKind::Data),
        "CHANNEL" => Ok(AllocKind::Channel),
        "CHANNEL_BUFFER" => Ok(AllocKind::ChannelBuffer),
        _ => Err(PyValueError::new_err(
            "AllocType.BOOTSTRAP is not supported: use DATA",
        )),
    }
}

/// `MemoryPool.alloc` (`timeout` None) and `alloc_blocking`.
pub(crate) fn alloc(
    py: Python<'_>,
    pool: &PyMemoryPool,
    size: u64,
    alloc_type: Option<&Bound<'_, PyAny>>,
    timeout: Option<dc::Timeout>,
) -> PyResult<PyMemoryAlloc> {
    let p = pool.get(py)?;
    if size == 0 {
        return Err(PyRuntimeError::new_err(
            "cannot allocate 0 bytes (Dragon's zero-byte placeholder allocations are not supported)",
        ));
    }
    let kind = kind_arg(py, alloc_type)?;
    if kind != AllocKind::Data {
        return Err(PyValueError::new_err(
            "only AllocType.DATA allocations can be made from Python",
        ));
    }
    let n = usize::try_from(size).map_err(|_| PyValueError::new_err("size too large"))?;
    if n > p.max_alloc() {
        return Err(raise_code(
            py,
            "DragonMemoryError",
            format!(
                "{n} bytes can never fit in pool {:?}: its largest block is {} bytes \
                 (DRAGON_DYNHEAP_REQUESTED_SIZE_TOO_LARGE)",
                pool.name,
                p.max_alloc()
            ),
            "DYNHEAP_REQUESTED_SIZE_TOO_LARGE",
        ));
    }
    // The pool's own allocation (its records, so ids count from 1 in a fresh pool, as
    // Dragon's), waited for by the adapter, which recovers dead lock holders; then handed to
    // the pool.
    let t = timeout.unwrap_or(dc::Timeout::Try);
    let r = wait_sliced(py, t, |to| p.alloc_blocking(n, AllocKind::Data, to))?;
    let a = match r {
        Ok(a) => a,
        Err(dc::Error::ChannelTimeout) => {
            return Err(raise_code(
                py,
                "DragonPoolAllocationTimeout",
                format!(
                    "no block of {n} bytes became free in pool {:?} in time",
                    pool.name
                ),
                "TIMEOUT",
            ));
        }
        Err(e) => {
            return Err(raise_code(
                py,
                "DragonPoolAllocationNotAvailable",
                format!(
                    "no block of {n} bytes is free in pool {:?} now \
                     (DRAGON_DYNHEAP_REQUESTED_SIZE_NOT_AVAILABLE): {e}",
                    pool.name
                ),
                "DYNHEAP_REQUESTED_SIZE_NOT_AVAILABLE",
            ));
        }
    };
    p.core_pool()
        .set_owner(&a, STRUCT_OWNER_BIT | a.id())
        .map_err(|e| mem_err(py, e.to_string(), "FAILURE"))?;
    PyMemoryAlloc::new_local(pool, py, a, n)
}

/// Live allocations of `pool` (a snapshot).
fn infos(py: Python<'_>, pool: &PyMemoryPool) -> PyResult<Vec<dc::AllocInfo>> {
    pool.get(py)?
        .allocations()
        .map_err(|e| crate::pool::pool_error(py, e))
}

/// `MemoryPool.alloc_from_id`.
pub(crate) fn from_id(py: Python<'_>, pool: &PyMemoryPool, id: u64) -> PyResult<PyMemoryAlloc> {
    let info = infos(py, pool)?
        .into_iter()
        .find(|i| u64::from(i.alloc.id()) + 1 == id)
        .ok_or_else(|| {
            raise_code(
                py,
                "DragonPoolError",
                format!("no live allocation has id {id}"),
                "NOT_FOUND",
            )
        })?;
    PyMemoryAlloc::new_local(pool, py, info.alloc, info.size)
}

/// `MemoryPool.get_allocations`.
pub(crate) fn allocations(py: Python<'_>, pool: &PyMemoryPool) -> PyResult<PyMemoryAllocations> {
    Ok(PyMemoryAllocations {
        items: infos(py, pool)?
            .into_iter()
            .map(|i| (u64::from(i.alloc.id()) + 1, i.kind))
            .collect(),
    })
}

/// `MemoryPool.allocation_exists`.
pub(crate) fn exists(
    py: Python<'_>,
    pool: &PyMemoryPool,
    alloc_type: &Bound<'_, PyAny>,
    id: u64,
) -> PyResult<bool> {
    pool.get(py)?;
    let kind = kind_arg(py, Some(alloc_type))?;
    Ok(infos(py, pool)?
        .iter()
        .any(|i| i.kind == kind && u64::from(i.alloc.id()) + 1 == id))
}

// `memoryview(alloc)`: the window, writable (`buffer.rs`).
export_buffer!(PyMemoryAlloc);

impl Export for PyMemoryAlloc {
    /// The window inside the pool mapping, which the object (referenced by the view) keeps
    /// alive; see the module docs for views that outlive the allocation.
    fn memory(&mut self, py: Python<'_>) -> PyResult<(*mut u8, usize)> {
        Ok((self.ptr(py)?, self.len))
    }

    fn exported(&mut self) {
        self.exports += 1;
    }

    fn released(&mut self) {
        self.exports = self.exports.saturating_sub(1);
    }
}

#[pymethods]
impl PyMemoryAlloc {
    /// Attaches to an allocation from `serialize()` bytes (of any process). Raises
    /// `TypeError` for anything but bytes, `DragonMemoryError` for bytes that are no
    /// allocation descriptor; a descriptor of a remote pool gives a remote allocation.
    #[staticmethod]
    fn attach(py: Python<'_>, mem_ser: &Bound<'_, PyAny>) -> PyResult<Self> {
        if !mem_ser.is_instance_of::<PyBytes>()
            && !mem_ser.is_instance_of::<pyo3::types::PyByteArray>()
        {
            return Err(PyTypeError::new_err(format!(
                "mem_ser must be bytes from MemoryAlloc.serialize(), not {}",
                mem_ser.get_type().name()?
            )));
        }
        let b: Vec<u8> = mem_ser.extract()?;
        let bad = || {
            mem_err(
                py,
                "not a memory allocation descriptor".into(),
                "INVALID_ARGUMENT",
            )
        };
        let u64_at = |o: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
        };
        let n = usize::try_from(u64_at(0).ok_or_else(bad)?).map_err(|_| bad())?;
        let pool_ser = b.get(8..8 + n.min(b.len())).ok_or_else(bad)?;
        let (desc, used) = PoolDesc::parse(pool_ser).ok_or_else(bad)?;
        if used != n {
            return Err(bad());
        }
        let rest = b.get(8 + n..).ok_or_else(bad)?;
        if rest.len() != Alloc::SERIALIZED_LEN + 16 {
            return Err(bad());
        }
        let alloc = Alloc::from_bytes(&rest[..Alloc::SERIALIZED_LEN]).ok_or_else(bad)?;
        let offset = u64_at(8 + n + Alloc::SERIALIZED_LEN).ok_or_else(bad)? as usize;
        let len = u64_at(8 + n + Alloc::SERIALIZED_LEN + 8).ok_or_else(bad)? as usize;
        let name = desc.name.clone();
        let pool = if desc.host == host_id() {
            Some(
                PyMemoryPool::from_desc(py, desc, pool_ser)?
                    .get(py)?
                    .clone(),
            )
        } else {
            None
        };
        let me = Self {
            pool,
            pool_ser: pool_ser.to_vec(),
            pool_name: name,
            alloc,
            offset,
            len,
            detached: false,
            exports: 0,
        };
        if me.pool.is_some() {
            me.ptr(py)?;
        }
        Ok(me)
    }

    /// Bytes another process passes to `MemoryAlloc.attach`.
    fn serialize<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.descriptor())
    }

    /// A writable memoryview of the memory (no copy). Raises `DragonMemoryError` for a
    /// detached, freed or remote allocation. See the module docs for views that outlive
    /// the allocation.
    fn get_memview<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, pyo3::types::PyMemoryView>> {
        pyo3::types::PyMemoryView::from(slf.as_any())
    }

    /// The memory's address in this process, as an int.
    fn get_int_ptr(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.ptr(py)? as usize)
    }

    /// Detaches this object: it no longer gives access to the memory (the allocation lives
    /// on).
    fn detach(&mut self) {
        self.detached = true;
    }

    /// Frees the whole allocation (also through a clone). Raises `DragonMemoryError` for a
    /// detached or remote allocation, and for one already freed.
    fn free(&mut self, py: Python<'_>) -> PyResult<()> {
        let pool = self.local(py)?;
        pool.free(self.alloc).map_err(|e| {
            mem_err(
                py,
                format!("cannot free the allocation: {e}"),
                "INVALID_ARGUMENT",
            )
        })
    }

    /// A `MemoryAlloc` for `length` bytes (default: to the end) from `offset` of this one,
    /// naming the same allocation.
    #[pyo3(signature = (offset = 0, length = None))]
    fn clone(&self, offset: usize, length: Option<usize>) -> PyResult<Self> {
        let left = self.len.checked_sub(offset).ok_or_else(|| {
            PyValueError::new_err(format!("offset {offset} is past the size {}", self.len))
        })?;
        let len = length.unwrap_or(left);
        if len > left {
            return Err(PyValueError::new_err(format!(
                "offset {offset} + length {len} is past the size {}",
                self.len
            )));
        }
        Ok(Self {
            pool: self.pool.clone(),
            pool_ser: self.pool_ser.clone(),
            pool_name: self.pool_name.clone(),
            alloc: self.alloc,
            offset: self.offset + offset,
            len,
            detached: self.detached,
            exports: 0,
        })
    }

    /// A new allocation in `pool` (default: this one's) holding a copy of these bytes,
    /// waiting up to `timeout` seconds (None: forever) for space.
    #[pyo3(signature = (pool = None, timeout = None))]
    fn copy(
        &self,
        py: Python<'_>,
        pool: Option<PyRef<'_, PyMemoryPool>>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let data = self.bytes(py)?;
        let t = timeout.map_or(Ok(dc::Timeout::Block), crate::timeout::seconds_timeout)?;
        let own;
        let target: &PyMemoryPool = match &pool {
            Some(p) => p,
            None => {
                own = PyMemoryPool::local(self.local(py)?.clone(), Some(self.pool_name.clone()));
                &own
            }
        };
        let new = alloc(py, target, data.len().max(1) as u64, None, Some(t))?;
        let p = new.ptr(py)?;
        // SAFETY: `p` is the start of the new allocation's window of at least `data.len()`
        // bytes (it was made that large), inside the mapping `new.pool` keeps alive.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(new)
    }

    /// Zeroes bytes `start` to `stop` (default: all) of this window.
    #[pyo3(signature = (start = 0, stop = None))]
    fn clear(&self, py: Python<'_>, start: usize, stop: Option<usize>) -> PyResult<()> {
        let stop = stop.unwrap_or(self.len);
        if start > stop || stop > self.len {
            return Err(PyValueError::new_err(format!(
                "cannot clear {start}..{stop} of {} bytes",
                self.len
            )));
        }
        let p = self.ptr(py)?;
        // SAFETY: `start..stop` lies inside the window `ptr` checked to be live and mapped.
        unsafe { core::ptr::write_bytes(p.add(start), 0, stop - start) };
        Ok(())
    }

    /// Bytes of this window.
    #[getter]
    fn size(&self) -> usize {
        self.len
    }

    /// The allocation's id in its pool (1 and up; `MemoryPool.alloc_from_id` takes it).
    #[getter]
    fn id(&self) -> u64 {
        u64::from(self.alloc.id()) + 1
    }

    /// The pool, as a `MemoryPool` object (a remote one for a remote allocation).
    #[getter]
    fn pool(&self, py: Python<'_>) -> PyResult<PyMemoryPool> {
        let (desc, _) = PoolDesc::parse(&self.pool_ser)
            .ok_or_else(|| mem_err(py, "bad pool descriptor".into(), "FAILURE"))?;
        PyMemoryPool::from_desc(py, desc, &self.pool_ser)
    }

    /// Whether `other` names the same allocation (same pool, same id), whatever its window.
    fn is_the_same_as(&self, other: PyRef<'_, Self>) -> bool {
        self.alloc == other.alloc && self.pool_ser == other.pool_ser
    }

    /// A hash of the content (as Dragon's): equal contents hash equal.
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        let h = self
            .bytes(py)?
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        Ok((h >> 2) as isize)
    }

    /// Equal when `other` is a `MemoryAlloc` of the same size and content (as Dragon's).
    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(o) = other.cast::<Self>() else {
            return Ok(false);
        };
        let o = o.borrow();
        Ok(self.len == o.len && self.bytes(py)? == o.bytes(py)?)
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        format!(
            "MemoryAlloc(pool={:?}, id={}, offset={}, size={})",
            self.pool_name,
            self.id(),
            self.offset,
            self.len
        )
    }
}

/// The live allocations of a pool at one moment (Dragon's `MemoryAllocations`).
#[pyclass(module = "dragon_channels", name = "MemoryAllocations", frozen)]
pub(crate) struct PyMemoryAllocations {
    items: Vec<(u64, AllocKind)>,
}

#[pymethods]
impl PyMemoryAllocations {
    /// How many allocations.
    #[getter]
    fn num_allocs(&self) -> usize {
        self.items.len()
    }

    /// The id of the `idx`-th allocation.
    fn alloc_id(&self, idx: usize) -> PyResult<u64> {
        self.items
            .get(idx)
            .map(|i| i.0)
            .ok_or_else(|| PyValueError::new_err(format!("index {idx} out of range")))
    }

    /// The `AllocType` of the `idx`-th allocation.
    fn alloc_type<'py>(&self, py: Python<'py>, idx: usize) -> PyResult<Bound<'py, PyAny>> {
        let k = self
            .items
            .get(idx)
            .ok_or_else(|| PyValueError::new_err(format!("index {idx} out of range")))?;
        kind_member(py, k.1)
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }

    fn __repr__(&self) -> String {
        format!("MemoryAllocations(num_allocs={})", self.items.len())
    }
}
