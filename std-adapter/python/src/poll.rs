//! `Channel.poll` with Dragon's Python names: the `EventType` operations, the wait modes
//! (`IDLE_WAIT`, `SPIN_WAIT`, `ADAPTIVE_WAIT`), and `PollResult`, where a poll leaves its
//! value.
//!
//! `EventType` is an `enum.IntFlag` made in Python, as Dragon's `cpdef enum` is under
//! Cython 3, so `EventType.POLLIN | EventType.POLLOUT` is `EventType.POLLINOUT`. Its values
//! are the Rust [`dc::Poll`] values (`POLLCAPACITY` at 8), passed through unchanged; Dragon's
//! names, plus the aliases `POLLBARRIER_WAIT` (its C name) and `SEMAPHORE_Z`.
//!
//! # Waiting
//! A poll that waits releases the GIL and waits in slices of
//! [`crate::timeout::WAIT_SLICE`], checking for signals between slices, like a blocking
//! receive. A barrier arrival (`POLLBARRIER`) is the exception: it waits for the whole timeout
//! in one call, because an arrival whose timeout passes breaks the barrier (Dragon's rule),
//! so the end of a slice must not count as one. Ctrl-C is seen when it returns.

use std::ffi::CStr;

use dragon_channels as dc;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{Borrowed, IntoPyObjectExt};

use crate::errors::{channel_err, raise};
use crate::timeout::{seconds_timeout, wait_sliced};

/// `EventType` and `PollResult`, made in Python (an `IntFlag`, and a plain object whose
/// attributes a poll sets).
const POLL_PY: &CStr = c"
import enum

class EventType(enum.IntFlag):
    '''Poll operations for Channel.poll(event_mask=...), and the events a ChannelSet
    reports. POLLIN | POLLOUT is POLLINOUT.'''
    POLLNOTHING = 0
    POLLIN = 1
    POLLOUT = 2
    POLLINOUT = 3
    POLLEMPTY = 4
    POLLFULL = 5
    POLLSIZE = 6
    POLLRESET = 7
    POLLCAPACITY = 8
    POLLBARRIER = 9
    POLLBARRIER_WAIT = 9
    POLLBARRIER_ABORT = 10
    POLLBARRIER_RELEASE = 11
    POLLBARRIER_ISBROKEN = 12
    POLLBARRIER_WAITERS = 13
    POLLBLOCKED_RECEIVERS = 14
    SEMAPHORE_P = 15
    SEMAPHORE_V = 16
    SEMAPHORE_VZ = 17
    SEMAPHORE_Z = 17
    SEMAPHORE_PEEK = 18

EventType.__module__ = 'dragon_channels'

class PollResult:
    '''Where Channel.poll(poll_result=...) leaves its outcome: `value` (the number a count
    or semaphore operation answers, else the event mask) and `rc` ('SUCCESS', or 'TIMEOUT'
    when the poll returned False).'''
    __module__ = 'dragon_channels'

    def __init__(self, value=None, rc=None):
        self.value = value
        self.rc = rc

    def __repr__(self):
        return f'PollResult(value={self.value!r}, rc={self.rc!r})'
";

static POLL_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The Python module holding `EventType` and `PollResult`.
pub(crate) fn poll_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    POLL_MODULE
        .get_or_try_init(py, || {
            PyModule::from_code(
                py,
                POLL_PY,
                c"dragon_channels/_poll.py",
                c"dragon_channels._poll",
            )
            .map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

/// `EventType(op)`.
pub(crate) fn event_type(py: Python<'_>, value: u32) -> PyResult<Bound<'_, PyAny>> {
    poll_module(py)?.getattr("EventType")?.call1((value,))
}

/// How a blocked poll, receive or set poll waits (Dragon's `dragon.dtypes.WaitMode`; the
/// module constants `IDLE_WAIT`, `SPIN_WAIT`, `ADAPTIVE_WAIT` are its members).
#[pyclass(eq, eq_int, frozen, module = "dragon_channels", name = "WaitMode")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PyWaitMode {
    /// Sleep on the futex after one try.
    #[pyo3(name = "IDLE_WAIT")]
    Idle = 0,
    /// Never sleep: keep trying (one CPU busy for the whole wait).
    #[pyo3(name = "SPIN_WAIT")]
    Spin = 1,
    /// Spin, then yield, then sleep (the default).
    #[pyo3(name = "ADAPTIVE_WAIT")]
    Adaptive = 2,
}

#[pymethods]
impl PyWaitMode {
    /// Dragon's number for the mode (`DRAGON_IDLE_WAIT` = 0, `SPIN` = 1, `ADAPTIVE` = 2).
    #[getter]
    fn value(&self) -> u32 {
        *self as u32
    }

    /// Pickles as `getattr(WaitMode, name)`.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Reduced<'py>> {
        let py = slf.py();
        let name = match *slf.get() {
            Self::Idle => "IDLE_WAIT",
            Self::Spin => "SPIN_WAIT",
            Self::Adaptive => "ADAPTIVE_WAIT",
        };
        let getattr = py.import("builtins")?.getattr("getattr")?;
        Ok((getattr, (slf.as_any().get_type().into_any(), name)))
    }
}

/// What `WaitMode.__reduce__` returns: `getattr` and `(WaitMode, member name)`.
type Reduced<'py> = (Bound<'py, PyAny>, (Bound<'py, PyAny>, &'static str));

impl From<dc::WaitMode> for PyWaitMode {
    fn from(m: dc::WaitMode) -> Self {
        match m {
            dc::WaitMode::Idle => Self::Idle,
            dc::WaitMode::Spin => Self::Spin,
            dc::WaitMode::Adaptive => Self::Adaptive,
        }
    }
}

impl From<PyWaitMode> for dc::WaitMode {
    fn from(m: PyWaitMode) -> Self {
        match m {
            PyWaitMode::Idle => Self::Idle,
            PyWaitMode::Spin => Self::Spin,
            PyWaitMode::Adaptive => Self::Adaptive,
        }
    }
}

/// A `wait_mode` argument: a `WaitMode`, its number, or its name (`'IDLE_WAIT'`...), as
/// Dragon's `cast_wait_mode` takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitModeArg(pub(crate) dc::WaitMode);

impl<'a, 'py> FromPyObject<'a, 'py> for WaitModeArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(m) = obj.extract::<PyWaitMode>() {
            return Ok(Self(m.into()));
        }
        let m = if let Ok(n) = obj.extract::<i64>() {
            match n {
                0 => Some(PyWaitMode::Idle),
                1 => Some(PyWaitMode::Spin),
                2 => Some(PyWaitMode::Adaptive),
                _ => None,
            }
        } else if let Ok(s) = obj.extract::<String>() {
            match s.as_str() {
                "IDLE_WAIT" | "0" => Some(PyWaitMode::Idle),
                "SPIN_WAIT" | "1" => Some(PyWaitMode::Spin),
                "ADAPTIVE_WAIT" | "2" => Some(PyWaitMode::Adaptive),
                _ => None,
            }
        } else {
            None
        };
        m.map(|m| Self(m.into())).ok_or_else(|| {
            PyValueError::new_err(format!(
                "wait_mode must be IDLE_WAIT, SPIN_WAIT or ADAPTIVE_WAIT, not {}",
                obj.as_any()
            ))
        })
    }
}

/// An `event_mask` argument: a poll operation (an `EventType` or its number).
pub(crate) fn poll_op(py: Python<'_>, mask: i64) -> PyResult<dc::Poll> {
    if mask <= 0 {
        return Err(PyValueError::new_err(format!(
            "event_mask must be a poll operation (an EventType other than POLLNOTHING), not {mask}"
        )));
    }
    u32::try_from(mask)
        .ok()
        .and_then(dc::Poll::from_value)
        .ok_or_else(|| {
            raise(
                py,
                "ChannelValueError",
                format!("event_mask {mask} is not a poll operation (EventType 1 to 18)"),
            )
        })
}

/// `Channel.poll`: runs `op` on `ch`; see [`crate::channel::PyChannel::poll`].
pub(crate) fn poll_channel(
    py: Python<'_>,
    ch: &dc::Channel,
    timeout: Option<f64>,
    mode: dc::WaitMode,
    op: dc::Poll,
    poll_result: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let t = timeout.map_or(Ok(dc::Timeout::Block), seconds_timeout)?;
    if let Some(res) = poll_result {
        res.setattr("value", 0)?;
        res.setattr("rc", "TIMEOUT")?;
    }
    let r = if op == dc::Poll::BarrierWait {
        // One call for the whole timeout (module docs: a slice's end is not a timeout here).
        py.detach(|| ch.poll(op, t, mode))
    } else {
        wait_sliced(py, t, |to| ch.poll(op, to, mode))?
    };
    let value = match r {
        Ok(dc::Polled::ReadyToRelease) => {
            return Err(raise(
                py,
                "ChannelBarrierReady",
                "every party has arrived at the barrier: this one must poll POLLBARRIER_RELEASE"
                    .into(),
            ));
        }
        Ok(dc::Polled::Ready) => u64::from(op.value()),
        Ok(dc::Polled::Value(v)) => v,
        Err(dc::Error::ChannelTimeout) => return Ok(false),
        Err(e) => return Err(channel_err(py, e)),
    };
    if let Some(res) = poll_result {
        res.setattr("value", value.into_py_any(py)?)?;
        res.setattr("rc", "SUCCESS")?;
    }
    Ok(true)
}
