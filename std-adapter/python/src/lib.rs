//! Python bindings of the `dragon-channels` std adapter: the module `dragon_channels`, with
//! the classes and verbs of Dragon's `dragon.channels` / `dragon.managed_memory` pages
//! (`MemoryPool`, `Channel`, `Message`, `ChannelSendH`, `ChannelRecvH`, the exceptions).
//!
//! Blocking calls release the GIL and wait in slices of [`WAIT_SLICE`], checking for
//! signals (Ctrl-C) between slices.

use core::ffi::c_int;
use std::ffi::CStr;
use std::time::{Duration, Instant};

use dragon_channels as dc;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyMemoryView, PyTuple, PyType};
use pyo3::{Borrowed, ffi};

/// How long a blocked call waits with the GIL released before it re-takes the GIL to check
/// for signals (so Ctrl-C interrupts it within about this long).
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// The exception classes, made in Python so the full, empty and timeout ones can also be
/// subclasses of the builtin `TimeoutError`.
const EXCEPTIONS: &CStr = c"
class ChannelError(Exception):
    '''A channel, message or pool operation failed.'''
    __module__ = 'dragon_channels'

class ChannelFull(ChannelError, TimeoutError):
    '''A try-once send found the channel full.'''
    __module__ = 'dragon_channels'

class ChannelEmpty(ChannelError, TimeoutError):
    '''A try-once receive found the channel empty.'''
    __module__ = 'dragon_channels'

class ChannelTimeout(ChannelError, TimeoutError):
    '''A blocking send or receive timed out.'''
    __module__ = 'dragon_channels'

class ChannelSendError(ChannelError):
    '''The message cannot be sent as given.'''
    __module__ = 'dragon_channels'

class ChannelRecvError(ChannelError):
    '''The message cannot be received as asked (it stays queued).'''
    __module__ = 'dragon_channels'

class ChannelHandleNotOpenError(ChannelError):
    '''The send or receive handle is not open.'''
    __module__ = 'dragon_channels'

class ChannelDestroyed(ChannelError):
    '''The channel was destroyed.'''
    __module__ = 'dragon_channels'

class MemoryPoolError(ChannelError):
    '''A memory pool could not be created, attached or used.'''
    __module__ = 'dragon_channels'

NAMES = ['ChannelError', 'ChannelFull', 'ChannelEmpty', 'ChannelTimeout', 'ChannelSendError',
         'ChannelRecvError', 'ChannelHandleNotOpenError', 'ChannelDestroyed', 'MemoryPoolError']
";

static EXC_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn exc_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    EXC_MODULE
        .get_or_try_init(py, || {
            PyModule::from_code(
                py,
                EXCEPTIONS,
                c"dragon_channels/_errors.py",
                c"dragon_channels._errors",
            )
            .map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

/// A new exception of the class `name` with `msg`.
fn raise(py: Python<'_>, name: &str, msg: String) -> PyErr {
    match exc_module(py).and_then(|m| m.getattr(name)) {
        Ok(ty) => match ty.cast_into::<PyType>() {
            Ok(ty) => PyErr::from_type(ty, msg),
            Err(e) => e.into(),
        },
        Err(e) => e,
    }
}

/// The adapter's error as the seed's exception.
fn channel_err(py: Python<'_>, e: dc::Error) -> PyErr {
    let name = match &e {
        dc::Error::ChannelFull => "ChannelFull",
        dc::Error::ChannelEmpty => "ChannelEmpty",
        dc::Error::ChannelTimeout => "ChannelTimeout",
        dc::Error::ChannelSendError(_) => "ChannelSendError",
        dc::Error::ChannelRecvError(_) => "ChannelRecvError",
        dc::Error::ChannelHandleNotOpen => "ChannelHandleNotOpenError",
        dc::Error::ChannelDestroyed => "ChannelDestroyed",
        dc::Error::MemoryPool(_) => "MemoryPoolError",
        _ => "ChannelError",
    };
    raise(py, name, e.to_string())
}

fn pool_err(py: Python<'_>, e: dc::MemoryPoolError) -> PyErr {
    raise(py, "MemoryPoolError", e.to_string())
}

fn is_timeout(e: &dc::Error) -> bool {
    matches!(e, dc::Error::ChannelTimeout)
}

/// The sentinel meaning "use the handle's default timeout"
/// (`ChannelSendH.USE_CHANNEL_SENDH_DEFAULT`, `ChannelRecvH.USE_CHANNEL_RECVH_DEFAULT`).
#[pyclass(frozen, module = "dragon_channels", name = "UseDefaultTimeout")]
struct UseDefault;

#[pymethods]
impl UseDefault {
    fn __repr__(&self) -> &'static str {
        "USE_DEFAULT"
    }
}

static USE_DEFAULT: PyOnceLock<Py<UseDefault>> = PyOnceLock::new();

fn use_default(py: Python<'_>) -> PyResult<Py<UseDefault>> {
    USE_DEFAULT
        .get_or_try_init(py, || Py::new(py, UseDefault))
        .map(|u| u.clone_ref(py))
}

/// A `timeout` argument: the handle default, `None` (block), or seconds.
#[derive(Clone, Copy, Debug)]
enum TimeoutArg {
    Default,
    Given(dc::Timeout),
}

impl<'a, 'py> FromPyObject<'a, 'py> for TimeoutArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<UseDefault>() {
            return Ok(Self::Default);
        }
        if obj.is_none() {
            return Ok(Self::Given(dc::Timeout::Block));
        }
        let secs: f64 = obj.extract()?;
        Ok(Self::Given(seconds_timeout(secs)?))
    }
}

/// Seconds as a timeout: 0 tries once, infinity blocks, negative or NaN is an error.
fn seconds_timeout(secs: f64) -> PyResult<dc::Timeout> {
    if secs.is_nan() || secs < 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout must be None or a number >= 0, not {secs}"
        )));
    }
    if secs == 0.0 {
        return Ok(dc::Timeout::Try);
    }
    Ok(Duration::try_from_secs_f64(secs).map_or(dc::Timeout::Block, dc::Timeout::After))
}

/// The timeout of one call from `blocking`, `timeout` and the handle default; never
/// `Timeout::Default`.
fn resolve(blocking: bool, timeout: TimeoutArg, default: dc::Timeout) -> dc::Timeout {
    if !blocking {
        return dc::Timeout::Try;
    }
    let t = match timeout {
        TimeoutArg::Default => default,
        TimeoutArg::Given(t) => t,
    };
    match t {
        dc::Timeout::Default => dc::Timeout::Block,
        dc::Timeout::After(d) if d.is_zero() => dc::Timeout::Try,
        t => t,
    }
}

/// Runs `op` under `timeout` with the GIL released, in slices of [`WAIT_SLICE`]; between
/// slices that time out it re-takes the GIL and checks for signals (a pending
/// `KeyboardInterrupt` is raised). `op` gets the timeout of one slice; the last slice's
/// `ChannelTimeout` is the result when the whole timeout expires.
fn wait_sliced<T, F>(
    py: Python<'_>,
    timeout: dc::Timeout,
    mut op: F,
) -> PyResult<Result<T, dc::Error>>
where
    T: Send,
    F: FnMut(dc::Timeout) -> Result<T, dc::Error> + Send,
{
    let deadline = match timeout {
        dc::Timeout::Try => return Ok(op(dc::Timeout::Try)),
        dc::Timeout::After(d) => Instant::now().checked_add(d),
        dc::Timeout::Block | dc::Timeout::Default => None,
    };
    loop {
        let (slice, last) = match deadline {
            None => (WAIT_SLICE, false),
            Some(dl) => {
                let left = dl.saturating_duration_since(Instant::now());
                if left <= WAIT_SLICE {
                    (left.max(Duration::from_nanos(1)), true)
                } else {
                    (WAIT_SLICE, false)
                }
            }
        };
        let r = py.detach(|| op(dc::Timeout::After(slice)));
        match r {
            Err(ref e) if is_timeout(e) && !last => py.check_signals()?,
            r => return Ok(r),
        }
    }
}

/// A managed-memory pool in `/dev/shm/<name>`.
#[pyclass(module = "dragon_channels", name = "MemoryPool")]
struct PyMemoryPool {
    pool: Option<dc::MemoryPool>,
}

impl PyMemoryPool {
    fn get(&self, py: Python<'_>) -> PyResult<&dc::MemoryPool> {
        self.pool.as_ref().ok_or_else(|| {
            raise(
                py,
                "MemoryPoolError",
                "memory pool was destroyed or detached: attach again".into(),
            )
        })
    }
}

#[pymethods]
impl PyMemoryPool {
    /// Creates the pool `name` of `size` bytes with the user id `uid`. `pre_alloc_blocks`
    /// must be None; `min_block` and `max_allocations` set the pool's attributes.
    #[new]
    #[pyo3(signature = (size, name, uid, pre_alloc_blocks = None, *, min_block = None, max_allocations = None))]
    fn new(
        py: Python<'_>,
        size: usize,
        name: &str,
        uid: u64,
        pre_alloc_blocks: Option<&Bound<'_, PyAny>>,
        min_block: Option<u32>,
        max_allocations: Option<u32>,
    ) -> PyResult<Self> {
        if pre_alloc_blocks.is_some_and(|b| !b.is_none()) {
            return Err(PyValueError::new_err(
                "pre_alloc_blocks is not supported: pass None",
            ));
        }
        let mut attrs = dc::PoolAttrs::default();
        if let Some(b) = min_block {
            attrs.min_block = b;
        }
        attrs.max_allocations = max_allocations.or(attrs.max_allocations);
        let pool = dc::MemoryPool::create_with_attrs(size, name, uid, &attrs)
            .map_err(|e| pool_err(py, e))?;
        Ok(Self { pool: Some(pool) })
    }

    /// Attaches to a pool from `MemoryPool.serialize()` bytes, or by name (a `str`).
    #[staticmethod]
    fn attach(py: Python<'_>, ser: &Bound<'_, PyAny>) -> PyResult<Self> {
        let pool = if let Ok(name) = ser.extract::<&str>() {
            dc::MemoryPool::attach(name)
        } else {
            let b: Vec<u8> = ser.extract()?;
            dc::MemoryPool::attach_serialized(&b)
        }
        .map_err(|e| pool_err(py, e))?;
        Ok(Self { pool: Some(pool) })
    }

    /// Bytes another process passes to `MemoryPool.attach`.
    fn serialize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.get(py)?.serialize()))
    }

    /// Destroys the pool (unlinks its file; mappings live on until their last user goes).
    fn destroy(&mut self, py: Python<'_>) -> PyResult<()> {
        self.get(py)?;
        let pool = self.pool.take().expect("checked above");
        pool.destroy().map_err(|e| pool_err(py, e))
    }

    /// Detaches this object from the pool.
    fn detach(&mut self) {
        self.pool = None;
    }

    /// The pool's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.get(py)?.name().to_owned())
    }

    /// The user id given at creation.
    #[getter]
    fn uid(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.get(py)?.uid())
    }

    /// The data area's size in bytes.
    #[getter]
    fn size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.size())
    }

    /// Free bytes.
    #[getter]
    fn free_space(&self, py: Python<'_>) -> PyResult<usize> {
        self.get(py)?.free_space().map_err(|e| pool_err(py, e))
    }

    /// Fraction of the pool in use (0.0 to 1.0).
    #[getter]
    fn utilization(&self, py: Python<'_>) -> PyResult<f64> {
        self.get(py)?.utilization().map_err(|e| pool_err(py, e))
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
        match &self.pool {
            Some(p) => format!("MemoryPool(name={:?}, size={})", p.name(), p.size()),
            None => "MemoryPool(<detached>)".into(),
        }
    }
}

/// Which of Dragon's ownership modes a send uses.
#[pyclass(eq, eq_int, frozen, module = "dragon_channels")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnershipOnSend {
    /// The payload is copied; the sender keeps its message.
    #[pyo3(name = "copy_on_send")]
    CopyOnSend,
    /// The message's memory moves into the channel (zero copy); the message is left empty.
    #[pyo3(name = "transfer_ownership_on_send")]
    TransferOwnershipOnSend,
}

fn channel_attrs(
    py: Python<'_>,
    attr: Option<&Bound<'_, PyAny>>,
    capacity: Option<u32>,
    block_size: Option<u32>,
) -> PyResult<Option<dc::ChannelAttrs>> {
    if attr.is_some_and(|a| !a.is_none()) {
        return Err(raise(
            py,
            "ChannelError",
            "channel attr objects are not supported: pass capacity= and block_size=".into(),
        ));
    }
    if capacity.is_none() && block_size.is_none() {
        return Ok(None);
    }
    let mut a = dc::ChannelAttrs::default();
    if let Some(c) = capacity {
        a.capacity = c;
    }
    if let Some(b) = block_size {
        a.block_size = b;
    }
    Ok(Some(a))
}

/// A channel in a memory pool.
#[pyclass(module = "dragon_channels", name = "Channel")]
struct PyChannel {
    ch: Option<dc::Channel>,
    /// Kept by `detach(serialize=True)`.
    saved: Option<Vec<u8>>,
}

impl PyChannel {
    fn get(&self, py: Python<'_>) -> PyResult<&dc::Channel> {
        self.ch.as_ref().ok_or_else(|| {
            raise(
                py,
                "ChannelError",
                "channel object was destroyed or detached: attach again".into(),
            )
        })
    }
}

#[pymethods]
impl PyChannel {
    /// Creates a channel in `mem_pool` with the unique id `c_uid` (the same as
    /// `Channel.create`).
    #[new]
    #[pyo3(signature = (mem_pool, c_uid, attr = None, *, capacity = None, block_size = None))]
    fn new(
        py: Python<'_>,
        mem_pool: PyRef<'_, PyMemoryPool>,
        c_uid: u64,
        attr: Option<&Bound<'_, PyAny>>,
        capacity: Option<u32>,
        block_size: Option<u32>,
    ) -> PyResult<Self> {
        let attrs = channel_attrs(py, attr, capacity, block_size)?;
        let ch =
            dc::Channel::create(mem_pool.get(py)?, c_uid, attrs).map_err(|e| channel_err(py, e))?;
        Ok(Self {
            ch: Some(ch),
            saved: None,
        })
    }

    /// Creates a channel in `mem_pool` with the unique id `c_uid`.
    #[staticmethod]
    #[pyo3(signature = (mem_pool, c_uid, attr = None, *, capacity = None, block_size = None))]
    fn create(
        py: Python<'_>,
        mem_pool: PyRef<'_, PyMemoryPool>,
        c_uid: u64,
        attr: Option<&Bound<'_, PyAny>>,
        capacity: Option<u32>,
        block_size: Option<u32>,
    ) -> PyResult<Self> {
        Self::new(py, mem_pool, c_uid, attr, capacity, block_size)
    }

    /// Attaches to a channel from `Channel.serialize()` bytes (in any process).
    #[staticmethod]
    fn attach(py: Python<'_>, ser_bytes: Vec<u8>) -> PyResult<Self> {
        let ch = dc::Channel::attach(&ser_bytes).map_err(|e| channel_err(py, e))?;
        Ok(Self {
            ch: Some(ch),
            saved: None,
        })
    }

    /// Destroys the channel.
    fn destroy(&mut self, py: Python<'_>) -> PyResult<()> {
        self.get(py)?;
        let ch = self.ch.take().expect("checked above");
        ch.destroy().map_err(|e| channel_err(py, e))
    }

    /// Detaches from the channel; with `serialize`, keeps its descriptor for `serialize()`.
    #[pyo3(signature = (serialize = false))]
    fn detach(&mut self, py: Python<'_>, serialize: bool) -> PyResult<()> {
        let ch = self.get(py)?;
        if serialize {
            self.saved = Some(ch.serialize());
        }
        self.ch = None;
        Ok(())
    }

    /// The serialized descriptor (`bytes`) another process passes to `Channel.attach`.
    fn serialize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        match (&self.ch, &self.saved) {
            (Some(ch), _) => Ok(PyBytes::new(py, &ch.serialize())),
            (None, Some(s)) => Ok(PyBytes::new(py, s)),
            (None, None) => self.get(py).map(|_| PyBytes::new(py, b"")),
        }
    }

    /// A new, unopened send handle; `timeout` is its default (None: block).
    #[pyo3(signature = (timeout = None))]
    fn sendh(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyChannelSendH> {
        let default = timeout.map_or(Ok(dc::Timeout::Block), seconds_timeout)?;
        let h = self
            .get(py)?
            .sendh_with(default)
            .map_err(|e| channel_err(py, e))?;
        Ok(PyChannelSendH { h })
    }

    /// A new, unopened receive handle; `timeout` is its default (None: block).
    #[pyo3(signature = (timeout = None))]
    fn recvh(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyChannelRecvH> {
        let default = timeout.map_or(Ok(dc::Timeout::Block), seconds_timeout)?;
        let h = self
            .get(py)?
            .recvh_with(default)
            .map_err(|e| channel_err(py, e))?;
        Ok(PyChannelRecvH { h })
    }

    /// Messages queued now.
    #[getter]
    fn num_msgs(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.num_msgs())
    }

    /// Messages the channel holds at most.
    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.capacity())
    }

    /// Payload bytes stored inline per message.
    #[getter]
    fn block_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.block_size())
    }

    /// The channel's unique id.
    #[getter]
    fn cuid(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.get(py)?.cuid())
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
        match &self.ch {
            Some(c) => format!(
                "Channel(c_uid={}, pool={:?}, capacity={}, block_size={})",
                c.cuid(),
                c.pool().name(),
                c.capacity(),
                c.block_size()
            ),
            None => "Channel(<detached>)".into(),
        }
    }
}

/// A message: optional pool memory with a payload. Supports the buffer protocol
/// (`memoryview(msg)` is `msg.bytes_memview()`).
#[pyclass(module = "dragon_channels", name = "Message")]
struct PyMessage {
    msg: dc::Message,
    /// Live buffer exports (memoryviews) of the memory.
    exports: usize,
}

impl PyMessage {
    fn new(msg: dc::Message) -> Self {
        Self { msg, exports: 0 }
    }

    /// Fails while memoryviews of the memory exist (the memory would go away under them).
    fn check_no_exports(&self, what: &str) -> PyResult<()> {
        if self.exports == 0 {
            Ok(())
        } else {
            Err(PyBufferError::new_err(format!(
                "cannot {what}: {} memoryview(s) of this message's memory exist; release them first",
                self.exports
            )))
        }
    }
}

#[pymethods]
impl PyMessage {
    /// A message with no memory (a destination a receive fills).
    #[staticmethod]
    fn create_empty() -> Self {
        Self::new(dc::Message::create_empty())
    }

    /// A message with `n_bytes` of memory from `mpool`.
    #[staticmethod]
    fn create_alloc(
        py: Python<'_>,
        mpool: PyRef<'_, PyMemoryPool>,
        n_bytes: usize,
    ) -> PyResult<Self> {
        let m =
            dc::Message::create_alloc(mpool.get(py)?, n_bytes).map_err(|e| channel_err(py, e))?;
        Ok(Self::new(m))
    }

    /// Destroys the message; with `free_mem` (the default) its memory is freed, else it
    /// stays allocated in the pool.
    #[pyo3(signature = (free_mem = true))]
    fn destroy(&mut self, py: Python<'_>, free_mem: bool) -> PyResult<()> {
        self.check_no_exports("destroy the message")?;
        let m = core::mem::take(&mut self.msg);
        m.destroy(free_mem)
            .map(drop)
            .map_err(|e| channel_err(py, e))
    }

    /// A writable memoryview of the payload in shared memory (no copy). The message stays
    /// alive while views exist; it cannot be destroyed or sent by transfer meanwhile.
    fn bytes_memview<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        PyMemoryView::from(slf.as_any())
    }

    /// A copy of the payload as `bytes`.
    fn tobytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.msg.bytes().unwrap_or_default())
    }

    /// Payload bytes (0 without memory).
    fn __len__(&self) -> usize {
        self.msg.len()
    }

    /// Bytes the memory holds (0 without memory).
    #[getter]
    fn capacity(&self) -> usize {
        self.msg.capacity()
    }

    /// Whether the message has memory.
    #[getter]
    fn has_memory(&self) -> bool {
        self.msg.has_memory()
    }

    /// The `hints` attribute (travels with the message).
    #[getter]
    fn get_hints(&self) -> u64 {
        self.msg.hints()
    }

    #[setter]
    fn set_hints(&mut self, h: u64) {
        self.msg.set_hints(h);
    }

    /// The `clientid` attribute (travels with the message).
    #[getter]
    fn get_clientid(&self) -> u64 {
        self.msg.clientid()
    }

    #[setter]
    fn set_clientid(&mut self, c: u64) {
        self.msg.set_clientid(c);
    }

    /// Exports the payload memory, writable.
    ///
    /// # Safety
    /// Called by CPython with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let mut me = slf.borrow_mut();
        let s = me.msg.bytes_memview().map_err(|e| channel_err(py, e))?;
        let (ptr, len) = (s.as_mut_ptr(), s.len());
        let len = isize::try_from(len).map_err(|_| PyBufferError::new_err("payload too large"))?;
        // SAFETY: `view` is valid (CPython's contract); `ptr..ptr + len` is the payload inside
        // the pool mapping, which the message (referenced by `view.obj`, set here) keeps
        // alive, and `exports` stops the memory from being freed or moved while the view lives.
        let rc = unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr.cast(), len, 0, flags) };
        if rc == -1 {
            return Err(PyErr::fetch(py));
        }
        me.exports += 1;
        Ok(())
    }

    /// Ends an export.
    ///
    /// # Safety
    /// Called by CPython with the view it got from `__getbuffer__`.
    unsafe fn __releasebuffer__(&mut self, _view: *mut ffi::Py_buffer) {
        self.exports = self.exports.saturating_sub(1);
    }

    fn __repr__(&self) -> String {
        format!(
            "Message(len={}, capacity={}, hints={}, clientid={})",
            self.msg.len(),
            self.msg.capacity(),
            self.msg.hints(),
            self.msg.clientid()
        )
    }
}

/// A send handle (unopened until `open()`).
#[pyclass(module = "dragon_channels", name = "ChannelSendH")]
struct PyChannelSendH {
    h: dc::ChannelSendH,
}

#[pymethods]
impl PyChannelSendH {
    /// The default of `timeout`: use the handle's default timeout.
    #[classattr]
    #[allow(non_snake_case)]
    fn USE_CHANNEL_SENDH_DEFAULT(py: Python<'_>) -> PyResult<Py<UseDefault>> {
        use_default(py)
    }

    /// Opens the handle.
    fn open(&mut self, py: Python<'_>) -> PyResult<()> {
        self.h.open().map_err(|e| channel_err(py, e))
    }

    /// Closes the handle.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.h.close().map_err(|e| channel_err(py, e))
    }

    /// Whether the handle is open.
    #[getter]
    fn is_open(&self) -> bool {
        self.h.is_open()
    }

    /// Sends `msg` (copy, or transfer of its memory); with `dest_msg` the payload goes into
    /// that message's memory, which is sent.
    #[pyo3(signature = (msg, dest_msg = None, ownership = OwnershipOnSend::CopyOnSend, blocking = true, timeout = TimeoutArg::Default))]
    fn send(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyMessage>,
        dest_msg: Option<&Bound<'_, PyMessage>>,
        ownership: OwnershipOnSend,
        blocking: bool,
        timeout: TimeoutArg,
    ) -> PyResult<()> {
        let t = resolve(blocking, timeout, self.h.default_timeout());
        let h = &self.h;
        let r = match (ownership, dest_msg) {
            (OwnershipOnSend::CopyOnSend, None) => {
                let m = msg.borrow();
                let m = &m.msg;
                wait_sliced(py, t, |to| h.send(m, None, to))?
            }
            (OwnershipOnSend::CopyOnSend, Some(dest)) => {
                if dest.is(msg) {
                    return Err(PyValueError::new_err("dest_msg must not be msg"));
                }
                let m = msg.borrow();
                let mut d = dest.borrow_mut();
                d.check_no_exports("send into dest_msg")?;
                let (m, d) = (&m.msg, &mut d.msg);
                wait_sliced(py, t, |to| h.send(m, Some(&mut *d), to))?
            }
            (OwnershipOnSend::TransferOwnershipOnSend, None) => {
                let mut pm = msg.borrow_mut();
                pm.check_no_exports("send by transfer")?;
                let mut slot = Some(core::mem::take(&mut pm.msg));
                let r = wait_sliced(py, t, |to| {
                    let m = slot.take().unwrap_or_default();
                    h.send_transfer(m, to).map_err(|te| {
                        slot = Some(te.message);
                        te.error
                    })
                })?;
                if let Some(m) = slot {
                    pm.msg = m;
                }
                r
            }
            (OwnershipOnSend::TransferOwnershipOnSend, Some(_)) => {
                return Err(PyValueError::new_err(
                    "dest_msg cannot be used with transfer_ownership_on_send",
                ));
            }
        };
        r.map_err(|e| channel_err(py, e))
    }

    /// Sends the bytes of `msg_bytes` (any byte buffer) as a message of `msg_len` bytes
    /// (default: their length; zero padded).
    #[pyo3(signature = (msg_bytes, msg_len = None, dest_msg = None, blocking = true, timeout = TimeoutArg::Default))]
    fn send_bytes(
        &self,
        py: Python<'_>,
        msg_bytes: &Bound<'_, PyAny>,
        msg_len: Option<usize>,
        dest_msg: Option<&Bound<'_, PyMessage>>,
        blocking: bool,
        timeout: TimeoutArg,
    ) -> PyResult<()> {
        let t = resolve(blocking, timeout, self.h.default_timeout());
        let buf = PyBuffer::<u8>::get(msg_bytes)?;
        if !buf.is_c_contiguous() {
            return Err(PyBufferError::new_err(
                "msg_bytes must be a contiguous buffer",
            ));
        }
        // SAFETY: the buffer is C-contiguous with `len_bytes` bytes at `buf_ptr`, and the held
        // `PyBuffer` export keeps that memory alive and unresized until it drops after the send.
        let bytes: &[u8] =
            unsafe { core::slice::from_raw_parts(buf.buf_ptr().cast::<u8>(), buf.len_bytes()) };
        let n = msg_len.unwrap_or(bytes.len());
        let h = &self.h;
        let r = match dest_msg {
            None => wait_sliced(py, t, |to| h.send_bytes(bytes, n, None, to))?,
            Some(dest) => {
                let mut d = dest.borrow_mut();
                d.check_no_exports("send into dest_msg")?;
                let d = &mut d.msg;
                wait_sliced(py, t, |to| h.send_bytes(bytes, n, Some(&mut *d), to))?
            }
        };
        drop(buf);
        r.map_err(|e| channel_err(py, e))
    }

    fn __repr__(&self) -> String {
        format!("ChannelSendH(open={})", self.h.is_open())
    }
}

/// A receive handle (unopened until `open()`).
#[pyclass(module = "dragon_channels", name = "ChannelRecvH")]
struct PyChannelRecvH {
    h: dc::ChannelRecvH,
}

#[pymethods]
impl PyChannelRecvH {
    /// The default of `timeout`: use the handle's default timeout.
    #[classattr]
    #[allow(non_snake_case)]
    fn USE_CHANNEL_RECVH_DEFAULT(py: Python<'_>) -> PyResult<Py<UseDefault>> {
        use_default(py)
    }

    /// Opens the handle.
    fn open(&mut self, py: Python<'_>) -> PyResult<()> {
        self.h.open().map_err(|e| channel_err(py, e))
    }

    /// Closes the handle.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.h.close().map_err(|e| channel_err(py, e))
    }

    /// Whether the handle is open.
    #[getter]
    fn is_open(&self) -> bool {
        self.h.is_open()
    }

    /// Receives the next message: a new `Message`, or into `dest_msg` (returned).
    #[pyo3(signature = (dest_msg = None, blocking = true, timeout = TimeoutArg::Default))]
    fn recv(
        &self,
        py: Python<'_>,
        dest_msg: Option<Bound<'_, PyMessage>>,
        blocking: bool,
        timeout: TimeoutArg,
    ) -> PyResult<Py<PyAny>> {
        let t = resolve(blocking, timeout, self.h.default_timeout());
        let h = &self.h;
        match dest_msg {
            None => {
                let m = wait_sliced(py, t, |to| h.recv(to))?.map_err(|e| channel_err(py, e))?;
                Ok(Py::new(py, PyMessage::new(m))?.into_any())
            }
            Some(dest) => {
                {
                    let mut d = dest.borrow_mut();
                    let d = &mut d.msg;
                    wait_sliced(py, t, |to| h.recv_into(&mut *d, to))?
                        .map_err(|e| channel_err(py, e))?;
                }
                Ok(dest.into_any().unbind())
            }
        }
    }

    /// Receives the next message as `bytes`.
    #[pyo3(signature = (blocking = true, timeout = TimeoutArg::Default))]
    fn recv_bytes<'py>(
        &self,
        py: Python<'py>,
        blocking: bool,
        timeout: TimeoutArg,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let t = resolve(blocking, timeout, self.h.default_timeout());
        let h = &self.h;
        let v = wait_sliced(py, t, |to| h.recv_bytes(to))?.map_err(|e| channel_err(py, e))?;
        Ok(PyBytes::new(py, &v))
    }

    fn __repr__(&self) -> String {
        format!("ChannelRecvH(open={})", self.h.is_open())
    }
}

/// The module `dragon_channels`.
#[pymodule]
#[pyo3(name = "dragon_channels")]
fn dragon_channels_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let errs = exc_module(py)?;
    let names: Vec<String> = errs.getattr("NAMES")?.extract()?;
    for n in names {
        m.add(n.as_str(), errs.getattr(n.as_str())?)?;
    }
    m.add_class::<PyMemoryPool>()?;
    m.add_class::<PyChannel>()?;
    m.add_class::<PyMessage>()?;
    m.add_class::<PyChannelSendH>()?;
    m.add_class::<PyChannelRecvH>()?;
    m.add_class::<OwnershipOnSend>()?;
    m.add_class::<UseDefault>()?;
    m.add("copy_on_send", OwnershipOnSend::CopyOnSend)?;
    m.add(
        "transfer_ownership_on_send",
        OwnershipOnSend::TransferOwnershipOnSend,
    )?;
    m.add("USE_DEFAULT", use_default(py)?)?;
    m.add("WAIT_SLICE_SECONDS", WAIT_SLICE.as_secs_f64())?;
    Ok(())
}
