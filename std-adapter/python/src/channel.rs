//! `Channel`: create, attach, serialize, destroy; handles; properties.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use dragon_channels as dc;

use crate::errors::{channel_err, raise};
use crate::handle::{PyChannelRecvH, PyChannelSendH};
use crate::pool::PyMemoryPool;
use crate::timeout::seconds_timeout;

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
pub(crate) struct PyChannel {
    ch: Option<dc::Channel>,
    /// Kept by `detach(serialize=True)`.
    saved: Option<Vec<u8>>,
}

impl PyChannel {
    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<&dc::Channel> {
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
