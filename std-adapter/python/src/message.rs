//! `Message`: optional pool memory with a payload, exported through the buffer protocol.

use core::ffi::c_int;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

use dragon_channels as dc;

use crate::errors::channel_err;
use crate::pool::PyMemoryPool;

/// A message: optional pool memory with a payload. Supports the buffer protocol
/// (`memoryview(msg)` is `msg.bytes_memview()`).
#[pyclass(module = "dragon_channels", name = "Message")]
pub(crate) struct PyMessage {
    /// The message.
    pub(crate) msg: dc::Message,
    /// Live buffer exports (memoryviews) of the memory.
    exports: usize,
}

impl PyMessage {
    pub(crate) fn new(msg: dc::Message) -> Self {
        Self { msg, exports: 0 }
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
