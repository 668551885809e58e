//! The module's exceptions: Dragon's names, defined in Python (`dragon_channels/_types.py`)
//! so that some can also be subclasses of builtin exceptions (`TimeoutError`, `ValueError`,
//! `threading.BrokenBarrierError`, as Dragon's are); and the adapter's errors mapped onto them.

use dragon_channels as dc;
use dragon_channels::dragon_channels_core::ChannelError as CoreError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static EXC_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// `dragon_channels._types`, where the exception classes and enumerations are defined.
pub(crate) fn exc_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    EXC_MODULE
        .get_or_try_init(py, || {
            py.import("dragon_channels._types").map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

/// A `dragon_channels._types` attribute (an enumeration or exception class).
pub(crate) fn types_attr<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    exc_module(py)?.getattr(name)
}

/// A new Dragon managed-memory exception `name` with `msg` and the `DragonError` member
/// `code` as its `lib_err`.
pub(crate) fn raise_code(py: Python<'_>, name: &str, msg: String, code: &str) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let m = exc_module(py)?;
        let code = m.getattr("DragonError")?.getattr(code)?;
        let ty = m.getattr(name)?.cast_into::<PyType>()?;
        Ok(PyErr::from_type(ty, (msg, code.unbind())))
    })();
    made.unwrap_or_else(|e| e)
}

/// A new exception of the class `name` with `msg`.
pub(crate) fn raise(py: Python<'_>, name: &str, msg: String) -> PyErr {
    match exc_module(py).and_then(|m| m.getattr(name)) {
        Ok(ty) => match ty.cast_into::<PyType>() {
            Ok(ty) => PyErr::from_type(ty, msg),
            Err(e) => e.into(),
        },
        Err(e) => e,
    }
}

/// The adapter's error as the seed's exception.
pub(crate) fn channel_err(py: Python<'_>, e: dc::Error) -> PyErr {
    err_named(py, e, "ChannelTimeout")
}

/// A send's error: a timeout is `ChannelSendTimeout`.
pub(crate) fn send_err(py: Python<'_>, e: dc::Error) -> PyErr {
    err_named(py, e, "ChannelSendTimeout")
}

/// A receive's error: a timeout is `ChannelRecvTimeout`.
pub(crate) fn recv_err(py: Python<'_>, e: dc::Error) -> PyErr {
    err_named(py, e, "ChannelRecvTimeout")
}

fn err_named(py: Python<'_>, e: dc::Error, timeout: &str) -> PyErr {
    let name = match &e {
        dc::Error::ChannelFull => "ChannelFull",
        dc::Error::ChannelEmpty => "ChannelEmpty",
        dc::Error::ChannelTimeout => timeout,
        dc::Error::ChannelSendError(_) => "ChannelSendError",
        dc::Error::ChannelRecvError(_) => "ChannelRecvError",
        dc::Error::ChannelHandleNotOpen => "ChannelHandleNotOpenError",
        dc::Error::ChannelDestroyed => "ChannelDestroyed",
        dc::Error::MemoryPool(_) => "MemoryPoolError",
        dc::Error::ChannelBarrierBroken => "ChannelBarrierBroken",
        dc::Error::ChannelError(dc::Reason::Core(CoreError::SemaphoreBound { .. })) => {
            "ChannelValueError"
        }
        _ => "ChannelError",
    };
    raise(py, name, e.to_string())
}

pub(crate) fn is_timeout(e: &dc::Error) -> bool {
    matches!(e, dc::Error::ChannelTimeout)
}
