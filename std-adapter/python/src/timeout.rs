//! Timeout arguments (`None`, seconds, the handle default) and the one place a blocking call
//! waits with the GIL released: in slices of [`WAIT_SLICE`], checking for signals (Ctrl-C)
//! between slices.

use std::time::{Duration, Instant};

use dragon_channels as dc;
use pyo3::Borrowed;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::errors::is_timeout;

/// How long a blocked call waits with the GIL released before it re-takes the GIL to check
/// for signals (so Ctrl-C interrupts it within about this long).
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(50);

/// The sentinel meaning "use the handle's default timeout"
/// (`ChannelSendH.USE_CHANNEL_SENDH_DEFAULT`, `ChannelRecvH.USE_CHANNEL_RECVH_DEFAULT`).
#[pyclass(frozen, module = "dragon_channels", name = "UseDefaultTimeout")]
pub(crate) struct UseDefault;

#[pymethods]
impl UseDefault {
    fn __repr__(&self) -> &'static str {
        "USE_DEFAULT"
    }
}

static USE_DEFAULT: PyOnceLock<Py<UseDefault>> = PyOnceLock::new();

pub(crate) fn use_default(py: Python<'_>) -> PyResult<Py<UseDefault>> {
    USE_DEFAULT
        .get_or_try_init(py, || Py::new(py, UseDefault))
        .map(|u| u.clone_ref(py))
}

/// A `timeout` argument: the handle default, `None` (block), or seconds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TimeoutArg {
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
pub(crate) fn seconds_timeout(secs: f64) -> PyResult<dc::Timeout> {
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
pub(crate) fn resolve(blocking: bool, timeout: TimeoutArg, default: dc::Timeout) -> dc::Timeout {
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
pub(crate) fn wait_sliced<T, F>(
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
