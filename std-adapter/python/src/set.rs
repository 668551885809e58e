//! `ChannelSet`: one poll over many channels (Dragon's `dragon.channels.ChannelSet`), over the
//! adapter's [`dc::ChannelSet`].
//!
//! The set is level-triggered: `poll` reports a channel whose condition holds when it looks,
//! so a message sent while nobody polls is reported by the next poll, and senders never wait
//! for a poller. Dragon's `capture_all_events=True` (its default, `DRAGON_SYNC`) gives that
//! too, by making senders wait; `capture_all_events=False` loses such events in Dragon but
//! not here. The set keeps no shared-memory object, so `mem_pool`, `lock_type` and
//! `num_allowed_spin_waiters` are checked and otherwise unused.

use dragon_channels as dc;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::channel::PyChannel;
use crate::errors::raise;
use crate::poll::{WaitModeArg, event_type, poll_op};
use crate::pool::PyMemoryPool;
use crate::timeout::wait_sliced;

/// A set of channels polled together. Not shareable between processes (each process makes
/// its own over the channels it attached), nor polled by two threads at once (the second
/// gets pyo3's "already borrowed" error while the first waits).
#[pyclass(module = "dragon_channels", name = "ChannelSet")]
pub(crate) struct PyChannelSet {
    /// `None` once destroyed.
    set: Option<dc::ChannelSet>,
    /// The `Channel` objects by set index, as given (`poll` returns them); `None` once
    /// removed or reported destroyed.
    channels: Vec<Option<Py<PyAny>>>,
}

/// `ChannelSetError` with `msg`.
fn set_err(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    raise(py, "ChannelSetError", msg.into())
}

/// The adapter's error of a set operation as `ChannelSetError` / `ChannelSetTimeout`.
fn set_op_err(py: Python<'_>, e: dc::Error) -> PyErr {
    match e {
        dc::Error::ChannelTimeout => raise(
            py,
            "ChannelSetTimeout",
            "no channel of the set had an event in time".into(),
        ),
        e => set_err(py, e.to_string()),
    }
}

/// A set's event mask: one of POLLIN, POLLOUT, POLLINOUT, POLLEMPTY, POLLFULL.
fn set_mask(py: Python<'_>, mask: i64) -> PyResult<dc::Poll> {
    let op = poll_op(py, mask).map_err(|_| {
        set_err(
            py,
            format!("event_mask {mask} is not a poll operation a channel set waits for"),
        )
    })?;
    match op {
        dc::Poll::In | dc::Poll::Out | dc::Poll::InOut | dc::Poll::Empty | dc::Poll::Full => Ok(op),
        _ => Err(set_err(
            py,
            format!(
                "a channel set's event_mask is POLLIN, POLLOUT, POLLINOUT, POLLEMPTY or POLLFULL, not {mask}"
            ),
        )),
    }
}

impl PyChannelSet {
    fn get_mut(&mut self, py: Python<'_>) -> PyResult<&mut dc::ChannelSet> {
        self.set
            .as_mut()
            .ok_or_else(|| set_err(py, "the channel set was destroyed"))
    }

    fn get(&self, py: Python<'_>) -> PyResult<&dc::ChannelSet> {
        self.set
            .as_ref()
            .ok_or_else(|| set_err(py, "the channel set was destroyed"))
    }
}

#[pymethods]
impl PyChannelSet {
    /// A set over the `Channel` objects of `channel_list`, waiting for `event_mask`
    /// (POLLIN, POLLOUT, POLLINOUT, POLLEMPTY or POLLFULL). `mem_pool` must be a live pool;
    /// `lock_type`, `num_allowed_spin_waiters` (a positive int) and `capture_all_events`
    /// are Dragon's tuning and have no effect here (module docs).
    #[new]
    #[pyo3(
        signature = (mem_pool, channel_list, lock_type = None, num_allowed_spin_waiters = None, event_mask = 1, capture_all_events = true),
        text_signature = "(mem_pool, channel_list, lock_type=None, num_allowed_spin_waiters=None, event_mask=EventType.POLLIN, capture_all_events=True)"
    )]
    fn new(
        py: Python<'_>,
        mem_pool: PyRef<'_, PyMemoryPool>,
        channel_list: &Bound<'_, PyAny>,
        lock_type: Option<&Bound<'_, PyAny>>,
        num_allowed_spin_waiters: Option<&Bound<'_, PyAny>>,
        event_mask: i64,
        capture_all_events: bool,
    ) -> PyResult<Self> {
        // Dragon's tuning of its broadcast object: nothing here to tune (module docs).
        let _ = (lock_type, capture_all_events);
        mem_pool.get(py)?;
        if let Some(n) = num_allowed_spin_waiters.filter(|n| !n.is_none())
            && !n.extract::<i64>().is_ok_and(|n| n > 0)
        {
            return Err(set_err(
                py,
                "num_allowed_spin_waiters must be an integer, greater than zero",
            ));
        }
        let mask = set_mask(py, event_mask)?;
        let mut channels = Vec::new();
        let mut objs = Vec::new();
        for item in channel_list.try_iter()? {
            let item = item?;
            let ch = item.cast::<PyChannel>().map_err(|_| {
                set_err(
                    py,
                    format!(
                        "channel_list holds {}, not a Channel",
                        item.get_type()
                            .name()
                            .map_or_else(|_| "?".into(), |n| n.to_string())
                    ),
                )
            })?;
            channels.push(ch.borrow().get(py)?.clone());
            objs.push(Some(item.clone().unbind()));
        }
        let set = dc::ChannelSet::new(&channels, mask).map_err(|e| set_op_err(py, e))?;
        Ok(Self {
            set: Some(set),
            channels: objs,
        })
    }

    /// Waits for an event on a channel of the set and returns `(channel, event)`: the
    /// `Channel` object as given and the `EventType` that holds (POLLIN or POLLOUT for a
    /// POLLINOUT set). A channel destroyed while in the set is returned once with
    /// `EventType.POLLNOTHING` and then leaves the set. `timeout` is in seconds (None:
    /// block; 0: look once); `wait_mode` defaults to `IDLE_WAIT`, as in Dragon.
    ///
    /// The poll does not consume the event: receive (or send) next; another party may
    /// have been faster, so a try-once receive after a poll can find the channel empty.
    ///
    /// Raises `ChannelSetTimeout` when nothing happened in time, `ChannelSetError` when the
    /// set is empty or destroyed.
    #[pyo3(
        signature = (timeout = None, wait_mode = WaitModeArg(dc::WaitMode::Idle)),
        text_signature = "($self, timeout=None, wait_mode=IDLE_WAIT)"
    )]
    fn poll<'py>(
        &mut self,
        py: Python<'py>,
        timeout: Option<f64>,
        wait_mode: WaitModeArg,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let t = timeout.map_or(Ok(dc::Timeout::Block), crate::timeout::seconds_timeout)?;
        let set = self.get_mut(py)?;
        let ev =
            wait_sliced(py, t, |to| set.poll(to, wait_mode.0))?.map_err(|e| set_op_err(py, e))?;
        let slot = self.channels.get_mut(ev.index).ok_or_else(|| {
            set_err(
                py,
                format!("the set reported index {} it does not have", ev.index),
            )
        })?;
        let (ch, kind) = match ev.kind {
            dc::SetEventKind::Ready(op) => (slot.as_ref().map(|c| c.clone_ref(py)), op.value()),
            dc::SetEventKind::Destroyed => (slot.take(), 0),
        };
        let ch = ch.ok_or_else(|| set_err(py, "the set reported a channel it no longer holds"))?;
        PyTuple::new(py, [ch.into_bound(py), event_type(py, kind)?])
    }

    /// Adds a `Channel` to the set.
    fn add(&mut self, py: Python<'_>, channel: &Bound<'_, PyChannel>) -> PyResult<()> {
        let ch = channel.borrow().get(py)?.clone();
        let i = self.get_mut(py)?.add(&ch).map_err(|e| set_op_err(py, e))?;
        debug_assert_eq!(i, self.channels.len());
        self.channels
            .push(Some(channel.clone().into_any().unbind()));
        Ok(())
    }

    /// Removes a `Channel` (the same object that was given) from the set.
    fn remove(&mut self, py: Python<'_>, channel: &Bound<'_, PyAny>) -> PyResult<()> {
        let i = self
            .channels
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.bind(py).is(channel)))
            .ok_or_else(|| PyValueError::new_err("the channel is not in the set"))?;
        self.get_mut(py)?.remove(i);
        self.channels[i] = None;
        Ok(())
    }

    /// The `Channel` objects in the set.
    #[getter]
    fn channels(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.channels
            .iter()
            .flatten()
            .map(|c| c.clone_ref(py))
            .collect()
    }

    /// The event mask (an `EventType`); settable to POLLIN, POLLOUT, POLLINOUT, POLLEMPTY or
    /// POLLFULL.
    #[getter]
    fn get_event_mask<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        event_type(py, self.get(py)?.event_mask().value())
    }

    #[setter]
    fn set_event_mask(&mut self, py: Python<'_>, mask: i64) -> PyResult<()> {
        let op = set_mask(py, mask)?;
        self.get_mut(py)?
            .set_event_mask(op)
            .map_err(|e| set_op_err(py, e))
    }

    /// Destroys the set (the channels are untouched).
    fn destroy(&mut self, py: Python<'_>) -> PyResult<()> {
        self.get(py)?;
        self.set = None;
        self.channels.clear();
        Ok(())
    }

    /// Channels in the set.
    fn __len__(&self) -> usize {
        self.set.as_ref().map_or(0, dc::ChannelSet::len)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Destroys the set.
    fn __exit__(
        &mut self,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) {
        self.set = None;
        self.channels.clear();
    }

    fn __repr__(&self) -> String {
        match &self.set {
            Some(s) => format!(
                "ChannelSet(channels={}, event_mask={})",
                s.len(),
                s.event_mask().value()
            ),
            None => "ChannelSet(<destroyed>)".into(),
        }
    }
}
