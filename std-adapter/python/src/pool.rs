//! `MemoryPool`: Dragon's `dragon.managed_memory.MemoryPool` over the adapter's pool in
//! `/dev/shm`, and the pool descriptor Python code passes around.
//!
//! # Names
//! Dragon takes pool names of up to 236 bytes; a file name here is 1 to 29 bytes of ASCII
//! letters, digits, `_`, `-` and `.` ([`dc::MAX_NAME_LEN`]). A name that is not a valid file
//! name is stored under a derived one, [`file_name_for`]: up to 11 of its characters, a dot
//! and the 16 hex digits of its FNV-1a hash, so every process derives the same file from the
//! same name. `MemoryPool.name` is the name given; `file_name` is the file's.
//!
//! # Sizes
//! As in Dragon, the size asked for is rounded up to a power of two, and a pool must hold at
//! least [`MIN_BLOCKS`] minimum blocks (else `DragonPoolCreateFail` says how many bytes).
//!
//! # Descriptor
//! `serialize()` gives `[m_uid u64][hostid u64][adapter descriptor length u32][adapter
//! descriptor][name length u32][name]`, little endian: Dragon's pool descriptors also start
//! with the pool uid and host id. The adapter descriptor is `dragon_channels::MemoryPool::
//! serialize`'s (which Rust code attaches with `MemoryPool::attach_serialized`), and
//! `MemoryPool.attach` takes it bare too. A descriptor whose host id is not this machine's
//! ([`host_id`]) attaches as a remote pool: an object with a uid and a name and no mapping,
//! whose operations raise `DragonPoolError` (Dragon's "operation attempted on a non-local
//! pool").

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use dragon_channels as dc;

use crate::alloc::{self, PyMemoryAlloc, PyMemoryAllocations};
use crate::errors::raise_code;

/// The fewest minimum blocks a pool holds (Dragon's rule).
pub(crate) const MIN_BLOCKS: usize = 5;
/// Dragon's cap on the default number of allocation records.
pub(crate) const DEFAULT_MAX_ALLOCATIONS: u32 = 2_097_152;
/// The longest pool name Dragon accepts, in bytes.
pub(crate) const MAX_DRAGON_NAME: usize = 236;
/// Magic of the adapter's pool descriptor ("DRMP", little endian).
const NATIVE_MAGIC: &[u8; 4] = b"DRMP";

/// This process's host id: the adapter's (`dragon_channels::host`: the kernel's boot id,
/// unless `DRAGON_CHANNELS_HOST_ID` overrides it), which its descriptors also carry.
pub(crate) fn host_id() -> u64 {
    dc::host::host_id()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn valid_file_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// The `/dev/shm` file name of the pool Dragon's code calls `name` (see the module docs).
pub(crate) fn file_name_for(name: &str) -> String {
    if !name.is_empty() && name.len() <= dc::MAX_NAME_LEN && name.chars().all(valid_file_char) {
        return name.to_owned();
    }
    let prefix: String = name
        .chars()
        .take(11)
        .map(|c| if valid_file_char(c) { c } else { '_' })
        .collect();
    format!("{prefix}.{:016x}", fnv1a(name.as_bytes()))
}

/// What a Python pool descriptor names.
pub(crate) struct PoolDesc {
    pub(crate) uid: u64,
    pub(crate) host: u64,
    pub(crate) native: Vec<u8>,
    pub(crate) name: String,
}

/// The adapter descriptor's uid and file name (its layout: `dragon_channels::MemoryPool::
/// serialize`).
pub(crate) fn native_uid_name(b: &[u8]) -> Option<(u64, String)> {
    native_host_uid_name(b).map(|(_, uid, name)| (uid, name))
}

/// The adapter descriptor's host id, uid and file name.
fn native_host_uid_name(b: &[u8]) -> Option<(u64, u64, String)> {
    // Layout 2: magic, version, host id, uid, nonce, mapping length, name length, name.
    if b.len() < 41 || &b[..4] != NATIVE_MAGIC {
        return None;
    }
    let host = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let uid = u64::from_le_bytes(b[16..24].try_into().ok()?);
    let n = usize::from(b[40]);
    let name = core::str::from_utf8(b.get(41..41 + n)?).ok()?;
    Some((host, uid, name.to_owned()))
}

impl PoolDesc {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24 + self.native.len() + self.name.len());
        v.extend_from_slice(&self.uid.to_le_bytes());
        v.extend_from_slice(&self.host.to_le_bytes());
        v.extend_from_slice(&(self.native.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.native);
        v.extend_from_slice(&(self.name.len() as u32).to_le_bytes());
        v.extend_from_slice(self.name.as_bytes());
        v
    }

    /// Parses [`PoolDesc::to_bytes`] or a bare adapter descriptor; returns the descriptor and
    /// the bytes it took.
    pub(crate) fn parse(b: &[u8]) -> Option<(Self, usize)> {
        if let Some((host, uid, name)) = native_host_uid_name(b) {
            let len = 41 + name.len() + 4;
            return Some((
                Self {
                    uid,
                    host,
                    native: b.get(..len)?.to_vec(),
                    name,
                },
                len,
            ));
        }
        let u64_at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
        let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
        let (uid, host) = (u64_at(0)?, u64_at(8)?);
        let n = u32_at(16)? as usize;
        let native = b.get(20..20 + n)?.to_vec();
        let m = u32_at(20 + n)? as usize;
        let name = core::str::from_utf8(b.get(24 + n..24 + n + m)?).ok()?;
        Some((
            Self {
                uid,
                host,
                native,
                name: name.to_owned(),
            },
            24 + n + m,
        ))
    }
}

/// A managed-memory pool in `/dev/shm` (Dragon's `MemoryPool`).
#[pyclass(module = "dragon_channels", name = "MemoryPool")]
pub(crate) struct PyMemoryPool {
    /// The pool; `None` before creation, after `destroy()` / `detach()`, and for a remote
    /// pool.
    pub(crate) pool: Option<dc::MemoryPool>,
    /// Dragon's name of the pool (the file's name may differ: [`file_name_for`]).
    pub(crate) name: String,
    /// The pool uid (also known for a remote pool).
    pub(crate) uid: u64,
    /// The host id of a remote pool; `None` for a local one.
    pub(crate) remote_host: Option<u64>,
    /// The descriptor of a remote pool (it has no mapping to make one from).
    remote_ser: Option<Vec<u8>>,
}

impl PyMemoryPool {
    /// A Python object for a pool this process has mapped; `name` is Dragon's name when
    /// known (else the file name).
    pub(crate) fn local(pool: dc::MemoryPool, name: Option<String>) -> Self {
        Self {
            name: name.unwrap_or_else(|| pool.name().to_owned()),
            uid: pool.uid(),
            pool: Some(pool),
            remote_host: None,
            remote_ser: None,
        }
    }

    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<&dc::MemoryPool> {
        self.pool.as_ref().ok_or_else(|| self.unusable(py))
    }

    fn unusable(&self, py: Python<'_>) -> PyErr {
        if self.remote_host.is_some() {
            raise_code(
                py,
                "DragonPoolError",
                format!(
                    "pool {:?} is not on this host: only its descriptor can be used here",
                    self.name
                ),
                "MEMORY_OPERATION_ATTEMPT_ON_NONLOCAL_POOL",
            )
        } else if self.name.is_empty() {
            raise_code(
                py,
                "DragonPoolError",
                "the memory pool was never created".into(),
                "INVALID_OPERATION",
            )
        } else {
            raise_code(
                py,
                "DragonPoolError",
                format!(
                    "memory pool {:?} was destroyed or detached: attach again",
                    self.name
                ),
                "OBJECT_DESTROYED",
            )
        }
    }

    /// The Python descriptor of this pool.
    pub(crate) fn descriptor(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        if let Some(s) = &self.remote_ser {
            return Ok(s.clone());
        }
        let p = self.get(py)?;
        Ok(PoolDesc {
            uid: p.uid(),
            host: host_id(),
            native: p.serialize(),
            name: self.name.clone(),
        }
        .to_bytes())
    }

    /// Attaches to what `desc` names: this host's pool, or a remote stub.
    pub(crate) fn from_desc(py: Python<'_>, desc: PoolDesc, ser: &[u8]) -> PyResult<Self> {
        if desc.host != host_id() {
            return Ok(Self {
                pool: None,
                name: desc.name,
                uid: desc.uid,
                remote_host: Some(desc.host),
                remote_ser: Some(ser.to_vec()),
            });
        }
        let pool = dc::MemoryPool::attach_serialized(&desc.native).map_err(|e| {
            raise_code(
                py,
                "DragonPoolAttachFail",
                format!("cannot attach pool {:?}: {e}", desc.name),
                "NOT_FOUND",
            )
        })?;
        Ok(Self::local(pool, Some(desc.name)))
    }
}

/// An integer argument, with Dragon's errors: `TypeError` for anything but an int
/// (floats and strings included), `OverflowError` for a negative one.
fn int_arg(v: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    if !v.is_instance_of::<pyo3::types::PyInt>() || v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, not {}",
            v.get_type().name()?
        )));
    }
    v.extract()
}

#[pymethods]
impl PyMemoryPool {
    /// Creates the pool `name` of `size` bytes (rounded up to a power of two) with the user
    /// id `uid`. `pre_alloc_blocks` (a list of block counts, Dragon's static blocks of
    /// `min_block_size << k` bytes) is checked and has no effect: the allocator's per-process
    /// caches serve hot small sizes. `min_block_size` (a power of two, at least 16; default
    /// 64) and `max_allocations` (most live allocations at once) set the pool's attributes;
    /// `min_block` is the older name of `min_block_size`.
    ///
    /// With no arguments at all (`MemoryPool.__new__(MemoryPool)`) it makes an object that
    /// names no pool, as Dragon's does: its operations raise `DragonPoolError`.
    ///
    /// Raises `DragonPoolCreateFail` for a size under 5 minimum blocks (saying the size
    /// needed), an empty name or one over 236 bytes, a name in use, and a full `/dev/shm`;
    /// `TypeError` for arguments that are not ints or a str; `OverflowError` for negative
    /// ones.
    #[new]
    #[pyo3(signature = (
        size = None, name = None, uid = None, pre_alloc_blocks = None, *,
        min_block_size = None, max_allocations = None, min_block = None
    ))]
    #[allow(clippy::too_many_arguments)] // Dragon's keyword arguments
    fn new(
        py: Python<'_>,
        size: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        uid: Option<&Bound<'_, PyAny>>,
        pre_alloc_blocks: Option<&Bound<'_, PyAny>>,
        min_block_size: Option<u32>,
        max_allocations: Option<u32>,
        min_block: Option<u32>,
    ) -> PyResult<Self> {
        let (size, name, uid) = match (size, name, uid) {
            (None, None, None) => {
                return Ok(Self {
                    pool: None,
                    name: String::new(),
                    uid: 0,
                    remote_host: None,
                    remote_ser: None,
                });
            }
            (Some(s), Some(n), Some(u)) => (s, n, u),
            _ => {
                return Err(PyTypeError::new_err(
                    "MemoryPool() takes size, name and uid",
                ));
            }
        };
        let size = int_arg(size, "size")?;
        let name: String = name.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "name must be a str, not {}",
                name.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let uid = int_arg(uid, "uid")?;
        if let Some(b) = pre_alloc_blocks.filter(|b| !b.is_none()) {
            let counts: Vec<u64> = b.extract().map_err(|_| {
                PyTypeError::new_err("pre_alloc_blocks must be None or a list of block counts")
            })?;
            drop(counts);
        }
        let min_block = min_block_size
            .or(min_block)
            .unwrap_or(dragon_channels::dragon_channels_core::pool::DEFAULT_MIN_BLOCK);
        let create_fail =
            |msg: String, code: &str| raise_code(py, "DragonPoolCreateFail", msg, code);
        if !min_block.is_power_of_two()
            || min_block < dragon_channels::dragon_channels_core::pool::MIN_BLOCK_MIN
        {
            return Err(create_fail(
                format!(
                    "min_block_size must be a power of two of at least 16 bytes, not {min_block}"
                ),
                "INVALID_ARGUMENT",
            ));
        }
        if name.contains(['/', '\0']) {
            return Err(create_fail(
                format!("a pool name cannot hold '/' or NUL (as shm_open's): {name:?}"),
                "INVALID_ARGUMENT",
            ));
        }
        if name.is_empty() || name.len() > MAX_DRAGON_NAME {
            return Err(create_fail(
                format!(
                    "a pool name is 1 to {MAX_DRAGON_NAME} bytes, not {}",
                    name.len()
                ),
                "INVALID_ARGUMENT",
            ));
        }
        let need = MIN_BLOCKS * min_block as usize;
        let rounded = usize::try_from(size)
            .ok()
            .and_then(usize::checked_next_power_of_two)
            .filter(|&r| r >= need);
        let Some(rounded) = rounded else {
            return Err(create_fail(
                format!(
                    "a pool of {size} bytes is too small: with {min_block}-byte minimum blocks \
                     it needs at least {need} bytes ({MIN_BLOCKS} blocks)"
                ),
                "INVALID_ARGUMENT",
            ));
        };
        let mut attrs = dc::PoolAttrs {
            min_block,
            ..Default::default()
        };
        // Dragon's default: one record per minimum block, up to 2,097,152.
        let blocks = u32::try_from(rounded / min_block as usize).unwrap_or(u32::MAX);
        attrs.max_allocations =
            Some(max_allocations.unwrap_or(blocks.min(DEFAULT_MAX_ALLOCATIONS)));
        let file = file_name_for(&name);
        let pool = dc::MemoryPool::create_with_attrs(rounded, &file, uid, &attrs).map_err(|e| {
            let code = match e {
                dc::MemoryPoolError::NoSpace { .. } => "OUT_OF_SPACE",
                _ => "FAILURE",
            };
            create_fail(format!("cannot create pool {name:?}: {e}"), code)
        })?;
        Ok(Self::local(pool, Some(name)))
    }

    /// Attaches to a pool from `serialize()` bytes (a remote pool's bytes give a remote
    /// pool object), from a Rust `MemoryPool::serialize` descriptor, or by name (a `str`).
    /// Raises `DragonPoolAttachFail` when the pool does not exist (any more).
    #[staticmethod]
    fn attach(py: Python<'_>, pool_ser: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(name) = pool_ser.extract::<String>() {
            let pool = dc::MemoryPool::attach(&file_name_for(&name)).map_err(|e| {
                raise_code(
                    py,
                    "DragonPoolAttachFail",
                    format!("cannot attach pool {name:?}: {e}"),
                    "NOT_FOUND",
                )
            })?;
            return Ok(Self::local(pool, Some(name)));
        }
        let b: Vec<u8> = pool_ser
            .extract()
            .map_err(|_| PyTypeError::new_err("pool_ser must be bytes or a pool name"))?;
        let Some((desc, _)) = PoolDesc::parse(&b) else {
            return Err(raise_code(
                py,
                "DragonPoolAttachFail",
                "not a pool descriptor".into(),
                "INVALID_ARGUMENT",
            ));
        };
        Self::from_desc(py, desc, &b)
    }

    /// `(uid, manifest file name)` of a serialized pool, without attaching: the file name in
    /// Dragon's form, `/_dragon_<name>_manifest` (this module's file is
    /// `/dev/shm/<file_name>`).
    #[staticmethod]
    fn serialized_uid_fname(py: Python<'_>, pool_ser: &[u8]) -> PyResult<(u64, String)> {
        let (desc, _) = PoolDesc::parse(pool_ser).ok_or_else(|| {
            raise_code(
                py,
                "DragonPoolError",
                "not a pool descriptor".into(),
                "INVALID_ARGUMENT",
            )
        })?;
        Ok((desc.uid, format!("/_dragon_{}_manifest", desc.name)))
    }

    /// Bytes another process passes to `MemoryPool.attach`.
    fn serialize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.descriptor(py)?))
    }

    /// Destroys the pool: unlinks its file (mappings live on until their last user goes, so
    /// memoryviews of its memory stay readable). Raises `DragonPoolError` for a remote pool,
    /// one never created, destroyed or detached.
    fn destroy(&mut self, py: Python<'_>) -> PyResult<()> {
        self.get(py)?;
        let pool = self.pool.take().expect("checked above");
        pool.destroy().map_err(|e| {
            raise_code(
                py,
                "DragonPoolError",
                format!("cannot destroy pool {:?}: {e}", self.name),
                "FAILURE",
            )
        })
    }

    /// Detaches this object from the pool (the pool lives on).
    fn detach(&mut self) {
        self.pool = None;
        self.remote_ser = None;
        self.remote_host = None;
    }

    /// Try-once allocation of `size` bytes (rounded up to a power of two inside the pool):
    /// a `MemoryAlloc`. The allocation belongs to the pool, not to this process: it lives
    /// until some process frees it (as in Dragon). Raises
    /// `DragonPoolAllocationNotAvailable` when no block is free now, `DragonMemoryError`
    /// when the size can never fit, `RuntimeError` for 0 bytes (as Dragon), `TypeError` for
    /// a size that is not an int, `DragonPoolError` for a remote or gone pool.
    #[pyo3(signature = (size, alloc_type = None))]
    fn alloc(
        &self,
        py: Python<'_>,
        size: &Bound<'_, PyAny>,
        alloc_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyMemoryAlloc> {
        let size = int_arg(size, "size")?;
        alloc::alloc(py, self, size, alloc_type, None)
    }

    /// Blocking allocation: waits up to `timeout` seconds (None: forever; 0: try once, as
    /// `alloc`) for a free block. Raises `DragonPoolAllocationTimeout` (also a
    /// `TimeoutError`) when the time passes; otherwise as `alloc`.
    #[pyo3(signature = (size, timeout = None, alloc_type = None))]
    fn alloc_blocking(
        &self,
        py: Python<'_>,
        size: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        alloc_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyMemoryAlloc> {
        let size = int_arg(size, "size")?;
        let t = timeout.map_or(Ok(dc::Timeout::Block), crate::timeout::seconds_timeout)?;
        alloc::alloc(py, self, size, alloc_type, Some(t))
    }

    /// The live allocation with id `alloc_id` (`MemoryAlloc.id`) as a `MemoryAlloc`.
    /// Raises `DragonPoolError` when there is none.
    fn alloc_from_id(&self, py: Python<'_>, alloc_id: u64) -> PyResult<PyMemoryAlloc> {
        alloc::from_id(py, self, alloc_id)
    }

    /// The live allocations (ids and types), as a `MemoryAllocations`.
    fn get_allocations(&self, py: Python<'_>) -> PyResult<PyMemoryAllocations> {
        alloc::allocations(py, self)
    }

    /// Whether a live allocation of type `alloc_type` (an `AllocType`) has id `alloc_id`.
    fn allocation_exists(
        &self,
        py: Python<'_>,
        alloc_type: &Bound<'_, PyAny>,
        alloc_id: u64,
    ) -> PyResult<bool> {
        alloc::exists(py, self, alloc_type, alloc_id)
    }

    /// Dragon's name of the pool.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        if self.name.is_empty() {
            return Err(self.unusable(py));
        }
        Ok(self.name.clone())
    }

    /// The pool's file in `/dev/shm` (differs from `name` when that is no valid file name).
    #[getter]
    fn file_name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.get(py)?.name().to_owned())
    }

    /// The user id given at creation.
    #[getter]
    fn uid(&self, py: Python<'_>) -> PyResult<u64> {
        if self.name.is_empty() {
            return Err(self.unusable(py));
        }
        Ok(self.uid)
    }

    /// The same as `uid` (Dragon's `muid`).
    #[getter]
    fn muid(&self, py: Python<'_>) -> PyResult<u64> {
        self.uid(py)
    }

    /// Dragon's runtime id: 0 (there is no Dragon runtime).
    #[getter]
    fn rt_uid(&self) -> u64 {
        0
    }

    /// Whether the pool is on this host (False for a remote pool's object).
    #[getter]
    fn is_local(&self) -> bool {
        self.remote_host.is_none()
    }

    /// The data area's size in bytes.
    #[getter]
    fn size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.size())
    }

    /// Free bytes.
    #[getter]
    fn free_space(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.stats(py)?.free)
    }

    /// Used share of the pool in percent (0.0 to 100.0), as Dragon's.
    #[getter]
    fn utilization(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.stats(py)?.utilization())
    }

    /// Most live allocations the pool holds at once.
    #[getter]
    fn max_allocations(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.stats(py)?.max_allocations)
    }

    /// Live allocations now (channels and their buffers included).
    #[getter]
    fn current_allocations(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.stats(py)?.live)
    }

    /// Free blocks by size: `{block size in bytes: count}`.
    #[getter]
    fn free_blocks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (size, count) in self.get(py)?.free_blocks().map_err(|e| pool_error(py, e))? {
            d.set_item(size, count)?;
        }
        Ok(d)
    }

    /// How many block sizes the pool has.
    #[getter]
    fn num_block_sizes(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self
            .get(py)?
            .free_blocks()
            .map_err(|e| pool_error(py, e))?
            .len())
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let ser = slf.borrow().serialize(py)?;
        let attach = slf.get_type().getattr("attach")?;
        Ok((attach, PyTuple::new(py, [ser])?))
    }

    fn __repr__(&self) -> String {
        match (&self.pool, self.remote_host) {
            (Some(p), _) => format!("MemoryPool(name={:?}, size={})", self.name, p.size()),
            (None, Some(h)) => format!("MemoryPool(name={:?}, remote host={h:#x})", self.name),
            (None, None) => "MemoryPool(<detached>)".into(),
        }
    }
}

impl PyMemoryPool {
    fn stats(&self, py: Python<'_>) -> PyResult<dc::PoolStats> {
        self.get(py)?.stats().map_err(|e| pool_error(py, e))
    }
}

/// A pool query's failure as `DragonPoolError`.
pub(crate) fn pool_error(py: Python<'_>, e: dc::MemoryPoolError) -> PyErr {
    raise_code(py, "DragonPoolError", e.to_string(), "FAILURE")
}
