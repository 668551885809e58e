//! `Message`: optional pool memory with a payload, exported through the buffer protocol.
//!
//! # Views that outlive their message
//! Dragon frees a message's memory on `destroy()` whatever views of it exist. Here
//! `destroy()` also succeeds with live views, but the memory is zeroed and kept out of the
//! pool until the last view is released: a stale view reads zeros (or what it wrote since)
//! and never touches memory another message owns, nor unmapped memory. A send by transfer
//! with live views sends a copy and leaves the message empty the same way (its views then
//! keep reading the bytes sent).

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

use dragon_channels as dc;

use crate::alloc::PyMemoryAlloc;
use crate::buffer::{Export, export_buffer};
use crate::errors::{channel_err, raise};
use crate::pool::PyMemoryPool;

/// A message: optional pool memory with a payload. Supports the buffer protocol
/// (`memoryview(msg)` is `msg.bytes_memview()`).
#[pyclass(module = "dragon_channels", name = "Message")]
pub(crate) struct PyMessage {
    /// The message.
    pub(crate) msg: dc::Message,
    /// Live buffer exports (memoryviews) of the memory.
    exports: usize,
    /// Messages given up while views of their memory existed: dropped (their memory freed)
    /// when the last view is released.
    retired: Vec<dc::Message>,
    /// Pools of allocations kept (`destroy(free_mem=False)`) while views existed: they keep
    /// the mapping alive until the last view is released.
    keep: Vec<dc::MemoryPool>,
}

impl PyMessage {
    pub(crate) fn new(msg: dc::Message) -> Self {
        Self {
            msg,
            exports: 0,
            retired: Vec::new(),
            keep: Vec::new(),
        }
    }

    /// Whether memoryviews of the memory exist.
    pub(crate) fn has_views(&self) -> bool {
        self.exports > 0
    }

    /// Leaves this object without memory; the memory stays out of the pool while views
    /// exist (see the module docs).
    pub(crate) fn retire(&mut self) {
        let m = core::mem::take(&mut self.msg);
        if self.exports > 0 {
            self.retired.push(m);
        }
    }

    /// Fails while memoryviews of the memory exist (the memory would go away under them).
    pub(crate) fn check_no_exports(&self, what: &str) -> PyResult<()> {
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

// `memoryview(msg)`: the payload, writable (`buffer.rs`).
export_buffer!(PyMessage);

impl Export for PyMessage {
    /// The payload inside the pool mapping. `exports` stops the memory from being freed or
    /// moved while a view lives (`destroy()` and a send by transfer retire it instead), and
    /// the message, which the view references, keeps the mapping alive.
    fn memory(&mut self, py: Python<'_>) -> PyResult<(*mut u8, usize)> {
        let s = self.msg.bytes_memview().map_err(|e| channel_err(py, e))?;
        Ok((s.as_mut_ptr(), s.len()))
    }

    fn exported(&mut self) {
        self.exports += 1;
    }

    fn released(&mut self) {
        self.exports = self.exports.saturating_sub(1);
        if self.exports == 0 {
            self.retired.clear();
            self.keep.clear();
        }
    }
}

#[pymethods]
impl PyMessage {
    /// A message with no memory (`Message()`, the same as `Message.create_empty()`).
    #[new]
    fn py_new() -> Self {
        Self::new(dc::Message::create_empty())
    }

    /// A message with no memory (a destination a receive fills).
    #[staticmethod]
    fn create_empty() -> Self {
        Self::new(dc::Message::create_empty())
    }

    /// A message with `n_bytes` of memory from `mpool` (tries once). Raises `ChannelError`
    /// for 0 bytes and when the pool has no block of that size, `OverflowError` for a
    /// negative size.
    #[staticmethod]
    fn create_alloc(
        py: Python<'_>,
        mpool: PyRef<'_, PyMemoryPool>,
        n_bytes: usize,
    ) -> PyResult<Self> {
        if n_bytes == 0 {
            return Err(raise(
                py,
                "ChannelError",
                "a message needs at least 1 byte: use Message.create_empty() for none".into(),
            ));
        }
        let m =
            dc::Message::create_alloc(mpool.get(py)?, n_bytes).map_err(|e| channel_err(py, e))?;
        Ok(Self::new(m))
    }

    /// A message over the memory of `mem` (a `MemoryAlloc` of a pool this process mapped),
    /// with a payload of its whole size. The message takes the allocation over: `destroy()`
    /// frees it (`destroy(free_mem=False)` leaves it allocated), and it is reclaimed with this
    /// process if the process dies. Raises `ChannelError` for negative `hints` / `clientid`, a
    /// window that does not start at the allocation (a `clone(offset > 0)`), or a channel's
    /// own memory; `MemoryPoolError` for a freed allocation; `DragonMemoryError` for a
    /// detached or remote one.
    #[staticmethod]
    #[pyo3(signature = (mem, hints = 0, clientid = 0))]
    fn create_from_mem(
        py: Python<'_>,
        mem: PyRef<'_, PyMemoryAlloc>,
        hints: i128,
        clientid: i128,
    ) -> PyResult<Self> {
        let (Ok(hints), Ok(clientid)) = (u64::try_from(hints), u64::try_from(clientid)) else {
            return Err(raise(
                py,
                "ChannelError",
                "hints and clientid must be integers from 0 to 2**64 - 1".into(),
            ));
        };
        let (pool, alloc, offset, len) = mem.parts(py)?;
        if offset != 0 {
            return Err(raise(
                py,
                "ChannelError",
                format!(
                    "the window starts {offset} bytes into its allocation: a message's payload \
                     starts at the allocation's first byte (pass the allocation, or a clone at \
                     offset 0)"
                ),
            ));
        }
        let mut m =
            dc::Message::create_from_mem(pool, alloc, len).map_err(|e| channel_err(py, e))?;
        m.set_hints(hints);
        m.set_clientid(clientid);
        Ok(Self::new(m))
    }

    /// Destroys the message; with `free_mem` (the default) its memory is freed, else it
    /// stays allocated in the pool. With live views the memory is zeroed first and freed
    /// when the last view goes (see the module docs).
    #[pyo3(signature = (free_mem = true))]
    fn destroy(&mut self, py: Python<'_>, free_mem: bool) -> PyResult<()> {
        if self.exports > 0 {
            if let Ok(b) = self.msg.bytes_memview() {
                b.fill(0);
            }
            if free_mem {
                self.retire();
                return Ok(());
            }
            if let Some(p) = self.msg.pool() {
                self.keep.push(p.clone());
            }
        }
        let m = core::mem::take(&mut self.msg);
        m.destroy(free_mem)
            .map(drop)
            .map_err(|e| channel_err(py, e))
    }

    /// Zeroes the payload bytes `start` to `stop` (default: all).
    #[pyo3(signature = (start = 0, stop = None))]
    fn clear_payload(&mut self, py: Python<'_>, start: usize, stop: Option<usize>) -> PyResult<()> {
        let b = self.msg.bytes_memview().map_err(|e| channel_err(py, e))?;
        let stop = stop.unwrap_or(b.len());
        if start > stop || stop > b.len() {
            return Err(raise(
                py,
                "ChannelValueError",
                format!("cannot clear {start}..{stop} of {} bytes", b.len()),
            ));
        }
        b[start..stop].fill(0);
        Ok(())
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
