//! The module's exceptions: Dragon's names, made in Python so that some can also be
//! subclasses of builtin exceptions (`TimeoutError`, `ValueError`,
//! `threading.BrokenBarrierError`, as Dragon's are); and the adapter's errors mapped onto them.

use std::ffi::CStr;

use dragon_channels as dc;
use dragon_channels::dragon_channels_core::ChannelError as CoreError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The exception classes, made in Python so that some can also be subclasses of builtin ones.
pub(crate) const EXCEPTIONS: &CStr = c"
import threading

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

class ChannelValueError(ChannelError, ValueError):
    '''A value is out of range: a poll operation that does not exist, a V past a bounded
    semaphore's bound.'''
    __module__ = 'dragon_channels'

class ChannelBarrierBroken(ChannelError, threading.BrokenBarrierError):
    '''The barrier was aborted (or an arrival timed out): poll POLLRESET before using it
    again.'''
    __module__ = 'dragon_channels'

class ChannelBarrierReady(ChannelError):
    '''Not a failure: this party arrived last at the barrier and must now poll
    POLLBARRIER_RELEASE.'''
    __module__ = 'dragon_channels'

class ChannelSetError(ChannelError):
    '''A channel set could not be made or polled.'''
    __module__ = 'dragon_channels'

class ChannelSetTimeout(ChannelSetError, TimeoutError):
    '''A channel set poll found no event in time.'''
    __module__ = 'dragon_channels'

NAMES = ['ChannelError', 'ChannelFull', 'ChannelEmpty', 'ChannelTimeout', 'ChannelSendError',
         'ChannelRecvError', 'ChannelHandleNotOpenError', 'ChannelDestroyed', 'MemoryPoolError',
         'ChannelValueError', 'ChannelBarrierBroken', 'ChannelBarrierReady', 'ChannelSetError',
         'ChannelSetTimeout']
";

static EXC_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

pub(crate) fn exc_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
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
    let name = match &e {
        dc::Error::ChannelFull => "ChannelFull",
        dc::Error::ChannelEmpty => "ChannelEmpty",
        dc::Error::ChannelTimeout => "ChannelTimeout",
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

pub(crate) fn pool_err(py: Python<'_>, e: dc::MemoryPoolError) -> PyErr {
    raise(py, "MemoryPoolError", e.to_string())
}

pub(crate) fn is_timeout(e: &dc::Error) -> bool {
    matches!(e, dc::Error::ChannelTimeout)
}
