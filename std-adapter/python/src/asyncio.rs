//! asyncio: `await recvh.recv_async()`, `await recvh.recv_bytes_async()`,
//! `await sendh.send_async(msg)`, `await sendh.send_bytes_async(b)`.
//!
//! Each call returns a coroutine, `dragon_channels._aio.drive(op)`, driving an [`AsyncOp`]:
//! each `op._try()` (on the loop's thread, holding the GIL, inside the awaiting task) runs
//! the adapter's try-once operation through a `dragon_channels::AsyncWait`. When it completes
//! (the message was there, the slot free) the coroutine returns the result in the same step:
//! the fast path never involves the waiter thread. When the channel is busy, the wait
//! registers a waker with the process's async waiter thread (the same one Rust futures use)
//! and `_try` hands back a readiness future of the loop for the coroutine to await; when the
//! channel's word changes, that thread wakes the waker, which schedules `op._wake` on the
//! loop with `loop.call_soon_threadsafe` (the only thing it does in Python, holding the GIL
//! briefly), and `_wake` resolves the readiness future.
//!
//! Timeouts: `asyncio.wait_for(recvh.recv_async(), t)` (or `asyncio.timeout`). Cancellation
//! (a timeout, `task.cancel()`) can land only where the coroutine awaits the readiness
//! future, never between taking a message and returning it; its `finally` takes the
//! registration out (`op._close()`). Since every try either completes the whole operation
//! or changes nothing, a cancelled receive received nothing (the message stays queued) and a
//! cancelled send sent nothing. (An earlier design resolved an `asyncio.Future` from a loop
//! callback after taking the message: on CPython 3.12+, whose `wait_for` cancels the awaiting
//! task even when the result arrived in the same loop pass as the timeout, that lost it.)

use core::task::{Context, Poll, Waker};
use std::sync::{Arc, Mutex};

use dragon_channels as dc;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{recv_err, send_err};
use crate::handle::{PyChannelRecvH, PyChannelSendH};
use crate::message::PyMessage;

/// What an [`AsyncOp`] does.
enum Kind {
    /// `recv_async()`: a new `Message`.
    Recv(Py<PyChannelRecvH>),
    /// `recv_bytes_async()`: `bytes`.
    RecvBytes(Py<PyChannelRecvH>),
    /// `send_async(msg)`: a copy of the message.
    Send(Py<PyChannelSendH>, Py<PyMessage>),
    /// `send_bytes_async(b, msg_len)`: the bytes, copied when the call was made.
    SendBytes(Py<PyChannelSendH>, Vec<u8>, usize),
}

/// An operation in progress: until it is done, its wait, and the readiness future
/// the awaiting coroutine waits on while the operation is busy.
struct State {
    kind: Kind,
    wait: dc::AsyncWait,
    ready: Option<Py<PyAny>>,
}

/// Drives one async call (see the module docs). Internal: only its bound methods are
/// handed to asyncio.
#[pyclass(module = "dragon_channels", name = "_AsyncOp")]
pub(crate) struct AsyncOp {
    state: Mutex<Option<State>>,
}

/// The waker the async waiter thread calls: schedules the op's `_wake` on its loop.
struct LoopWake {
    op: Py<AsyncOp>,
    event_loop: Py<PyAny>,
}

impl std::task::Wake for LoopWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        Python::attach(|py| {
            let r = self.op.bind(py).getattr("_wake").and_then(|step| {
                self.event_loop
                    .call_method1(py, "call_soon_threadsafe", (step,))
            });
            // A closed loop refuses: nobody awaits the future any more.
            if let Err(e) = r {
                drop(e);
            }
        });
    }
}

/// The channel an operation works on (for its wait's registration).
fn channel(py: Python<'_>, kind: &Kind) -> PyResult<dc::Channel> {
    Ok(match kind {
        Kind::Recv(h) | Kind::RecvBytes(h) => h.bind(py).try_borrow()?.h.channel().clone(),
        Kind::Send(h, _) | Kind::SendBytes(h, ..) => h.bind(py).try_borrow()?.h.channel().clone(),
    })
}

/// One try-once run of the operation: `Ok(Ok(result))`, `Ok(Err(e))` for a channel error
/// (busy or final), `Err` for a Python error.
fn try_once(py: Python<'_>, kind: &Kind) -> PyResult<Result<Py<PyAny>, dc::Error>> {
    let t = dc::Timeout::Try;
    Ok(match kind {
        Kind::Recv(h) => match h.bind(py).try_borrow()?.h.recv(t) {
            Ok(m) => Ok(Py::new(py, PyMessage::new(m))?.into_any()),
            Err(e) => Err(e),
        },
        Kind::RecvBytes(h) => match h.bind(py).try_borrow()?.h.recv_bytes(t) {
            Ok(v) => Ok(PyBytes::new(py, &v).into_any().unbind()),
            Err(e) => Err(e),
        },
        Kind::Send(h, m) => h
            .bind(py)
            .try_borrow()?
            .h
            .send(&m.bind(py).try_borrow()?.msg, None, t)
            .map(|()| py.None()),
        Kind::SendBytes(h, b, n) => h
            .bind(py)
            .try_borrow()?
            .h
            .send_bytes(b, *n, None, t)
            .map(|()| py.None()),
    })
}

#[pymethods]
impl AsyncOp {
    /// One try: `(True, result)` when the operation completed; `(False, ready)` when it is
    /// busy, its waker registered and `ready` a new future of the loop that `_wake` resolves;
    /// raises the operation's error when it failed.
    fn _try<'py>(slf: &Bound<'py, Self>) -> PyResult<(bool, Bound<'py, PyAny>)> {
        let py = slf.py();
        let me = slf.borrow();
        let mut guard = me
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(st) = guard.as_mut() else {
            return Err(PyRuntimeError::new_err(
                "this asynchronous operation has already finished",
            ));
        };
        // The loop of the task running the coroutine (so the coroutine may be made outside
        // a loop, as `asyncio.run(recvh.recv_async())` does).
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let waker = Waker::from(Arc::new(LoopWake {
            op: slf.clone().unbind(),
            event_loop: event_loop.clone().unbind(),
        }));
        let mut cx = Context::from_waker(&waker);
        let ch = channel(py, &st.kind)?;
        let mut py_err = None;
        let polled = st
            .wait
            .poll_op(&ch, &mut cx, || match try_once(py, &st.kind) {
                Ok(r) => r,
                Err(e) => {
                    py_err = Some(e);
                    // Final (not busy): ends the poll.
                    Err(dc::Error::ChannelHandleNotOpen)
                }
            });
        let done = match polled {
            Poll::Pending => {
                let ready = event_loop.call_method0("create_future")?;
                st.ready = Some(ready.clone().unbind());
                return Ok((false, ready));
            }
            Poll::Ready(r) => r,
        };
        let is_recv = matches!(st.kind, Kind::Recv(_) | Kind::RecvBytes(_));
        *guard = None;
        drop(guard);
        match (done, py_err) {
            (_, Some(e)) => Err(e),
            (Ok(v), None) => Ok((true, v.into_bound(py))),
            (Err(e), None) => Err(if is_recv {
                recv_err(py, e)
            } else {
                send_err(py, e)
            }),
        }
    }

    /// Called on the loop by the waker: resolves the readiness future the coroutine awaits
    /// (nothing once it is done, cancelled or already resolved).
    fn _wake(&self, py: Python<'_>) -> PyResult<()> {
        let ready = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
            .and_then(|st| st.ready.take());
        if let Some(ready) = ready {
            let ready = ready.bind(py);
            if !ready.call_method0("done")?.is_truthy()? {
                ready.call_method1("set_result", (py.None(),))?;
            }
        }
        Ok(())
    }

    /// The coroutine's `finally`: a finished, failed or cancelled operation leaves the
    /// waiter's table at once.
    fn _close(&self) {
        let st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(st);
    }
}

/// The coroutine that runs `kind` (`_aio.drive`); nothing is tried before it is awaited.
fn start(py: Python<'_>, kind: Kind) -> PyResult<Py<PyAny>> {
    // A handle in the idle wait mode never spins (`AsyncWait::set_spin`).
    let wait = match &kind {
        Kind::Recv(h) | Kind::RecvBytes(h) => {
            dc::AsyncWait::receiving(h.bind(py).try_borrow()?.h.wait_mode())
        }
        Kind::Send(h, _) | Kind::SendBytes(h, ..) => {
            dc::AsyncWait::sending(h.bind(py).try_borrow()?.h.wait_mode())
        }
    };
    let op = Bound::new(
        py,
        AsyncOp {
            state: Mutex::new(Some(State {
                kind,
                wait,
                ready: None,
            })),
        },
    )?;
    Ok(py
        .import("dragon_channels._aio")?
        .call_method1("drive", (op,))?
        .unbind())
}

/// `recvh.recv_async()`.
pub(crate) fn recv_async(py: Python<'_>, h: Py<PyChannelRecvH>) -> PyResult<Py<PyAny>> {
    start(py, Kind::Recv(h))
}

/// `recvh.recv_bytes_async()`.
pub(crate) fn recv_bytes_async(py: Python<'_>, h: Py<PyChannelRecvH>) -> PyResult<Py<PyAny>> {
    start(py, Kind::RecvBytes(h))
}

/// `sendh.send_async(msg)`.
pub(crate) fn send_async(
    py: Python<'_>,
    h: Py<PyChannelSendH>,
    msg: Py<PyMessage>,
) -> PyResult<Py<PyAny>> {
    start(py, Kind::Send(h, msg))
}

/// `sendh.send_bytes_async(msg_bytes, msg_len)`.
pub(crate) fn send_bytes_async(
    py: Python<'_>,
    h: Py<PyChannelSendH>,
    bytes: Vec<u8>,
    msg_len: Option<usize>,
) -> PyResult<Py<PyAny>> {
    let n = msg_len.unwrap_or(bytes.len());
    start(py, Kind::SendBytes(h, bytes, n))
}
