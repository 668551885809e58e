//! `Channel`: create, attach, serialize, destroy; handles; properties.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};

use dragon_channels as dc;

use crate::errors::{channel_err, raise};
use crate::handle::{PyChannelRecvH, PyChannelSendH};
use crate::poll::{WaitModeArg, poll_channel, poll_op};
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
    /// `Channel.create`). With `semaphore=True` or `bounded_semaphore=True` it is a semaphore
    /// channel of value `initial_sem_value` (a bounded one refuses a V past that value);
    /// `capacity` and `block_size` are then ignored, as in Dragon.
    #[new]
    #[pyo3(signature = (
        mem_pool, c_uid, attr = None, *, capacity = None, block_size = None,
        semaphore = false, bounded_semaphore = false, initial_sem_value = 0
    ))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, Dragon's names
    fn new(
        py: Python<'_>,
        mem_pool: PyRef<'_, PyMemoryPool>,
        c_uid: u64,
        attr: Option<&Bound<'_, PyAny>>,
        capacity: Option<u32>,
        block_size: Option<u32>,
        semaphore: bool,
        bounded_semaphore: bool,
        initial_sem_value: u32,
    ) -> PyResult<Self> {
        let attrs = channel_attrs(py, attr, capacity, block_size)?;
        let pool = mem_pool.get(py)?;
        let ch = match (semaphore, bounded_semaphore) {
            (true, true) => {
                return Err(raise(
                    py,
                    "ChannelError",
                    "only one of semaphore and bounded_semaphore may be True".into(),
                ));
            }
            (false, false) => dc::Channel::create(pool, c_uid, attrs),
            (_, bounded) => dc::Channel::create_semaphore(
                pool,
                c_uid,
                dc::SemaphoreAttrs {
                    initial: initial_sem_value,
                    bounded,
                },
            ),
        }
        .map_err(|e| channel_err(py, e))?;
        Ok(Self {
            ch: Some(ch),
            saved: None,
        })
    }

    /// Creates a channel: the same as `Channel(...)`, with the same arguments.
    #[classmethod]
    #[pyo3(signature = (*args, **kwargs))]
    fn create<'py>(
        cls: &Bound<'py, PyType>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        cls.call(args, kwargs)
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

    /// Receivers sleeping on the channel now.
    #[getter]
    fn blocked_receivers(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.blocked_receivers())
    }

    /// Parties arrived at the barrier in the current round.
    #[getter]
    fn barrier_count(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.barrier_count())
    }

    /// Whether the barrier is broken (aborted, or an arrival timed out) until a POLLRESET.
    #[getter]
    fn broken_barrier(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.get(py)?.broken_barrier())
    }

    /// Whether this is a semaphore channel.
    #[getter]
    fn is_semaphore(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.get(py)?.is_semaphore())
    }

    /// Dragon's poll: waits until the `event_mask` operation's condition holds or `timeout`
    /// seconds pass (None: block; 0: try once), waiting as `wait_mode` says (a `WaitMode`,
    /// default `ADAPTIVE_WAIT`). Returns True when it completed, False when the condition
    /// did not hold in time. With `poll_result` (a `PollResult`, or any object), its
    /// `value` is set to the number a count or semaphore operation answers (POLLSIZE,
    /// POLLCAPACITY, POLLBARRIER_ISBROKEN, POLLBARRIER_WAITERS, POLLBLOCKED_RECEIVERS,
    /// SEMAPHORE_PEEK, the value before SEMAPHORE_P / SEMAPHORE_V, the messages
    /// POLLBARRIER_RELEASE deposited), else to the event mask, and its `rc` to 'SUCCESS'
    /// or 'TIMEOUT'.
    ///
    /// Raises `ChannelBarrierReady` to the last party arriving at the barrier (it must then
    /// poll POLLBARRIER_RELEASE), `ChannelBarrierBroken` for an arrival at a broken barrier
    /// (or one whose timeout passed: that breaks it), `ChannelValueError` for an
    /// `event_mask` that is no operation and for a V past a bounded semaphore's bound,
    /// `ChannelError` for a semaphore operation on a message channel or the other way
    /// round, `ChannelDestroyed`; `ValueError` for a negative timeout or a mask <= 0.
    #[pyo3(
        signature = (timeout = None, wait_mode = WaitModeArg(dc::WaitMode::Adaptive), event_mask = 1, poll_result = None),
        text_signature = "($self, timeout=None, wait_mode=ADAPTIVE_WAIT, event_mask=EventType.POLLIN, poll_result=None)"
    )]
    fn poll(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        wait_mode: WaitModeArg,
        event_mask: i64,
        poll_result: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let op = poll_op(py, event_mask)?;
        poll_channel(py, self.get(py)?, timeout, wait_mode.0, op, poll_result)
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
