//! `ChannelSendH` and `ChannelRecvH`, and the ownership modes of a send.

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use dragon_channels as dc;

use crate::buffer::BytesBuffer;
use crate::errors::{channel_err, recv_err, send_err};
use crate::message::PyMessage;
use crate::poll::PyWaitMode;
use crate::timeout::{TimeoutArg, UseDefault, resolve, use_default, wait_sliced};

/// Which of Dragon's ownership modes a send uses.
#[pyclass(eq, eq_int, frozen, module = "dragon_channels")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OwnershipOnSend {
    /// The payload is copied; the sender keeps its message.
    #[pyo3(name = "copy_on_send")]
    CopyOnSend,
    /// The message's memory moves into the channel (zero copy); the message is left empty.
    #[pyo3(name = "transfer_ownership_on_send")]
    TransferOwnershipOnSend,
}

/// A send handle (unopened until `open()`).
#[pyclass(module = "dragon_channels", name = "ChannelSendH")]
pub(crate) struct PyChannelSendH {
    pub(crate) h: dc::ChannelSendH,
}

#[pymethods]
impl PyChannelSendH {
    /// The default of `timeout`: use the handle's default timeout.
    #[classattr]
    #[allow(non_snake_case)]
    fn USE_CHANNEL_SENDH_DEFAULT(py: Python<'_>) -> PyResult<Py<UseDefault>> {
        use_default(py)
    }

    /// Opens the handle.
    fn open(&mut self, py: Python<'_>) -> PyResult<()> {
        self.h.open().map_err(|e| channel_err(py, e))
    }

    /// Closes the handle.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.h.close().map_err(|e| channel_err(py, e))
    }

    /// Whether the handle is open.
    #[getter]
    fn is_open(&self) -> bool {
        self.h.is_open()
    }

    /// Sends `msg` (copy, or transfer of its memory); with `dest_msg` the payload goes into
    /// that message's memory, which is sent.
    #[pyo3(signature = (msg, dest_msg = None, ownership = OwnershipOnSend::CopyOnSend, blocking = true, timeout = TimeoutArg::Default))]
    fn send(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyMessage>,
        dest_msg: Option<&Bound<'_, PyMessage>>,
        ownership: OwnershipOnSend,
        blocking: bool,
        timeout: TimeoutArg,
    ) -> PyResult<()> {
        let t = resolve(blocking, timeout, self.h.default_timeout());
        let h = &self.h;
        let r = match (ownership, dest_msg) {
            (OwnershipOnSend::CopyOnSend, None) => {
                let m = msg.borrow();
                let m = &m.msg;
                wait_sliced(py, t, |to| h.send(m, None, to))?
            }
            (OwnershipOnSend::CopyOnSend, Some(dest)) => {
                if dest.is(msg) {
                    return Err(PyValueError::new_err("dest_msg must not be msg"));
                }
                let m = msg.borrow();
                let mut d = dest.borrow_mut();
                d.check_no_exports("send into dest_msg")?;
                let (m, d) = (&m.msg, &mut d.msg);
                wait_sliced(py, t, |to| h.send(m, Some(&mut *d), to))?
            }
            (OwnershipOnSend::TransferOwnershipOnSend, None) if msg.borrow().has_views() => {
                // Views of the memory exist: send a copy, then leave the message empty with
                // its memory kept for the views (`message.rs`).
                let r = {
                    let m = msg.borrow();
                    let m = &m.msg;
                    wait_sliced(py, t, |to| h.send(m, None, to))?
                };
                if r.is_ok() {
                    msg.borrow_mut().retire();
                }
                r
            }
            (OwnershipOnSend::TransferOwnershipOnSend, None) => {
                let mut pm = msg.borrow_mut();
                let mut slot = Some(core::mem::take(&mut pm.msg));
                let r = wait_sliced(py, t, |to| {
                    let m = slot.take().unwrap_or_default();
                    h.send_transfer(m, to).map_err(|te| {
                        slot = Some(te.message);
                        te.error
                    })
                })?;
                if let Some(m) = slot {
                    pm.msg = m;
                }
                r
            }
            (OwnershipOnSend::TransferOwnershipOnSend, Some(_)) => {
                return Err(PyValueError::new_err(
                    "dest_msg cannot be used with transfer_ownership_on_send",
                ));
            }
        };
        r.map_err(|e| send_err(py, e))
    }

    /// Sends the bytes of `msg_bytes` (any byte buffer) as a message of `msg_len` bytes
    /// (default: their length; zero padded).
    #[pyo3(signature = (msg_bytes, msg_len = None, dest_msg = None, blocking = true, timeout = TimeoutArg::Default))]
    fn send_bytes(
        &self,
        py: Python<'_>,
        msg_bytes: &Bound<'_, PyAny>,
        msg_len: Option<usize>,
        dest_msg: Option<&Bound<'_, PyMessage>>,
        blocking: bool,
        timeout: TimeoutArg,
    ) -> PyResult<()> {
        let t = resolve(blocking, timeout, self.h.default_timeout());
        // The bytes where they lie (no copy): the export keeps them alive and unresized
        // until `buf` drops after the send.
        let buf = BytesBuffer::get(msg_bytes)?;
        let bytes = buf
            .as_slice()
            .ok_or_else(|| PyBufferError::new_err("msg_bytes must be a contiguous buffer"))?;
        let n = msg_len.unwrap_or(bytes.len());
        let h = &self.h;
        let r = match dest_msg {
            None => wait_sliced(py, t, |to| h.send_bytes(bytes, n, None, to))?,
            Some(dest) => {
                let mut d = dest.borrow_mut();
                d.check_no_exports("send into dest_msg")?;
                let d = &mut d.msg;
                wait_sliced(py, t, |to| h.send_bytes(bytes, n, Some(&mut *d), to))?
            }
        };
        drop(buf);
        r.map_err(|e| send_err(py, e))
    }

    /// `await sendh.send_async(msg)`: sends a copy of `msg` once a slot is free (a
    /// coroutine; a cancelled one sent nothing; see `asyncio.rs`).
    fn send_async(slf: &Bound<'_, Self>, msg: &Bound<'_, PyMessage>) -> PyResult<Py<PyAny>> {
        crate::asyncio::send_async(slf.py(), slf.clone().unbind(), msg.clone().unbind())
    }

    /// `await sendh.send_bytes_async(msg_bytes, msg_len=None)`: the bytes (copied now) as a
    /// message, once a slot is free.
    #[pyo3(signature = (msg_bytes, msg_len = None))]
    fn send_bytes_async(
        slf: &Bound<'_, Self>,
        msg_bytes: &Bound<'_, PyAny>,
        msg_len: Option<usize>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let bytes = BytesBuffer::get(msg_bytes)?.to_vec(py)?;
        crate::asyncio::send_bytes_async(py, slf.clone().unbind(), bytes, msg_len)
    }

    /// `copy_on_send` (as a class attribute, as Dragon's).
    #[classattr]
    fn copy_on_send() -> OwnershipOnSend {
        OwnershipOnSend::CopyOnSend
    }

    /// `transfer_ownership_on_send` (as a class attribute, as Dragon's).
    #[classattr]
    fn transfer_ownership_on_send() -> OwnershipOnSend {
        OwnershipOnSend::TransferOwnershipOnSend
    }

    /// How blocked sends of this handle wait (a `WaitMode`).
    #[getter]
    fn wait_mode(&self) -> PyWaitMode {
        PyWaitMode::from(self.h.wait_mode())
    }

    /// `with ch.sendh() as h:` opens the handle and closes it at the end.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        {
            let mut me = slf.borrow_mut();
            if !me.h.is_open() {
                me.h.open().map_err(|e| channel_err(py, e))?;
            }
        }
        Ok(slf)
    }

    fn __exit__(
        &mut self,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> bool {
        if self.h.is_open() {
            let _ = self.h.close();
        }
        false
    }

    fn __repr__(&self) -> String {
        format!("ChannelSendH(open={})", self.h.is_open())
    }
}

/// A receive handle (unopened until `open()`).
#[pyclass(module = "dragon_channels", name = "ChannelRecvH")]
pub(crate) struct PyChannelRecvH {
    pub(crate) h: dc::ChannelRecvH,
}

#[pymethods]
impl PyChannelRecvH {
    /// The default of `timeout`: use the handle's default timeout.
    #[classattr]
    #[allow(non_snake_case)]
    fn USE_CHANNEL_RECVH_DEFAULT(py: Python<'_>) -> PyResult<Py<UseDefault>> {
        use_default(py)
    }

    /// Opens the handle.
    fn open(&mut self, py: Python<'_>) -> PyResult<()> {
        self.h.open().map_err(|e| channel_err(py, e))
    }

    /// Closes the handle.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.h.close().map_err(|e| channel_err(py, e))
    }

    /// Whether the handle is open.
    #[getter]
    fn is_open(&self) -> bool {
        self.h.is_open()
    }

    /// Receives the next message: a new `Message`, or into `dest_msg` (returned).
    #[pyo3(signature = (dest_msg = None, blocking = true, timeout = TimeoutArg::Default))]
    fn recv(
        &self,
        py: Python<'_>,
        dest_msg: Option<Bound<'_, PyMessage>>,
        blocking: bool,
        timeout: TimeoutArg,
    ) -> PyResult<Py<PyAny>> {
        let t = resolve(blocking, timeout, self.h.default_timeout());
        let h = &self.h;
        match dest_msg {
            None => {
                let m = wait_sliced(py, t, |to| h.recv(to))?.map_err(|e| recv_err(py, e))?;
                Ok(Py::new(py, PyMessage::new(m))?.into_any())
            }
            Some(dest) => {
                {
                    let mut d = dest.borrow_mut();
                    let d = &mut d.msg;
                    wait_sliced(py, t, |to| h.recv_into(&mut *d, to))?
                        .map_err(|e| recv_err(py, e))?;
                }
                Ok(dest.into_any().unbind())
            }
        }
    }

    /// Receives the next message as `bytes`.
    #[pyo3(signature = (blocking = true, timeout = TimeoutArg::Default))]
    fn recv_bytes<'py>(
        &self,
        py: Python<'py>,
        blocking: bool,
        timeout: TimeoutArg,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let t = resolve(blocking, timeout, self.h.default_timeout());
        let h = &self.h;
        let v = wait_sliced(py, t, |to| h.recv_bytes(to))?.map_err(|e| recv_err(py, e))?;
        Ok(PyBytes::new(py, &v))
    }

    /// `await recvh.recv_async()`: the next message, once there is one (a coroutine; a
    /// cancelled one received nothing; see `asyncio.rs`).
    fn recv_async(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        crate::asyncio::recv_async(slf.py(), slf.clone().unbind())
    }

    /// `await recvh.recv_bytes_async()`: the next message as `bytes`.
    fn recv_bytes_async(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        crate::asyncio::recv_bytes_async(slf.py(), slf.clone().unbind())
    }

    /// How blocked receives of this handle wait (a `WaitMode`).
    #[getter]
    fn wait_mode(&self) -> PyWaitMode {
        PyWaitMode::from(self.h.wait_mode())
    }

    /// `with ch.recvh() as h:` opens the handle and closes it at the end.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        {
            let mut me = slf.borrow_mut();
            if !me.h.is_open() {
                me.h.open().map_err(|e| channel_err(py, e))?;
            }
        }
        Ok(slf)
    }

    fn __exit__(
        &mut self,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> bool {
        if self.h.is_open() {
            let _ = self.h.close();
        }
        false
    }

    fn __repr__(&self) -> String {
        format!("ChannelRecvH(open={})", self.h.is_open())
    }
}
