//! The buffer protocol on every CPython from 3.9, in one abi3 build: exporting pool memory
//! (`Message`, `MemoryAlloc`: `memoryview(x)`, `bytes_memview()`, `get_memview()`) and
//! reading the bytes of any buffer (`send_bytes` and friends), both without a copy.
//!
//! # Why this module exists
//! PyO3 offers the buffer protocol (`__getbuffer__` / `__releasebuffer__` in `#[pymethods]`,
//! `pyo3::buffer::PyBuffer`) under the limited API only from 3.11, because CPython's headers
//! add `Py_buffer` and its functions to the limited API in 3.11. The wheel is built for the
//! stable ABI of 3.9 (`pyo3/abi3-py39`), so this module declares what it needs itself:
//!
//! - [`Py_buffer`], `#[repr(C)]`: its layout is the one of CPython 3.3 and later (PEP 3118,
//!   <https://docs.python.org/3/c-api/buffer.html#buffer-structure>); 3.11 put that same
//!   struct, unchanged, into the limited API ("Changed in version 3.11: ... added to the
//!   limited API", <https://docs.python.org/3/c-api/stable.html#stable-abi-list> lists
//!   `Py_buffer` with its fields as part of the stable ABI, so it can no longer change). A
//!   non-abi3 build checks our declaration against PyO3's, which follows the headers of the
//!   interpreter it builds for (the `const` assertions below).
//! - `PyObject_GetBuffer`, `PyBuffer_Release`, `PyBuffer_FillInfo`, `PyBuffer_IsContiguous`,
//!   `PyBuffer_ToContiguous`: functions every CPython 3.x interpreter exports with these
//!   signatures (<https://docs.python.org/3/c-api/buffer.html>; 3.11 only added them to the
//!   limited API). An abi3 extension on Linux is not linked against libpython: its symbols
//!   resolve from the interpreter when it loads, as every other C API call of PyO3 does.
//! - The type slots `Py_bf_getbuffer` (1) and `Py_bf_releasebuffer` (2): `PyType_FromSpec`
//!   honours them from 3.9 (bpo-40724, "Allow defining buffer slots in type specs"; PyO3's
//!   own `create_type_object.rs` patches the type object by hand only before 3.9). Before
//!   3.11 the limited-API header merely hides the slot numbers and the callback types.
//!
//! # Exporting
//! [`export_buffer!`] gives a `#[pyclass]` the two slots through PyO3's `multiple-pymethods`
//! inventory: PyO3 passes every slot of a class's items to `PyType_FromSpec`, so the class
//! gets the same `bf_getbuffer` / `bf_releasebuffer` as `#[pymethods] __getbuffer__` gives
//! it on 3.11 (on 3.12+ CPython derives `__buffer__` / `__release_buffer__` from them, as
//! before). The class implements [`Export`]: the memory and the count of live exports. Each
//! view's `obj` is the exporting object, which keeps the pool mapped while the view lives.
//!
//! # Reading
//! [`BytesBuffer`] holds one export of any object (released on drop) and gives its bytes,
//! with the checks `PyBuffer::<u8>::get` made: items of one byte (`B` or `c`).

#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int, c_void};
use core::mem::MaybeUninit;
use core::panic::AssertUnwindSafe;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi::{Py_ssize_t, PyObject};
use pyo3::panic::PanicException;
use pyo3::prelude::*;

/// CPython's `Py_buffer` (`bufferinfo`), field for field; see the module docs.
#[repr(C)]
pub(crate) struct Py_buffer {
    /// Start of the memory.
    pub(crate) buf: *mut c_void,
    /// The exporting object (a strong reference; NULL for a temporary buffer).
    pub(crate) obj: *mut PyObject,
    /// Bytes of the memory (product of the shape times the item size).
    pub(crate) len: Py_ssize_t,
    /// Bytes of one item.
    pub(crate) itemsize: Py_ssize_t,
    /// 1 for read-only memory.
    pub(crate) readonly: c_int,
    /// Number of dimensions.
    pub(crate) ndim: c_int,
    /// `struct` module format of one item (NULL: `"B"`).
    pub(crate) format: *mut c_char,
    /// Items in each dimension (`ndim` entries).
    pub(crate) shape: *mut Py_ssize_t,
    /// Bytes to step in each dimension (`ndim` entries).
    pub(crate) strides: *mut Py_ssize_t,
    /// PIL-style indirection offsets, or NULL.
    pub(crate) suboffsets: *mut Py_ssize_t,
    /// The exporter's own use.
    pub(crate) internal: *mut c_void,
}

// Where PyO3 declares `Py_buffer` (a version-specific build, or abi3 from 3.11), ours must
// have its layout.
#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
const _: () = {
    use core::mem::{offset_of, size_of};
    use pyo3::ffi::Py_buffer as Theirs;
    assert!(size_of::<Py_buffer>() == size_of::<Theirs>());
    assert!(offset_of!(Py_buffer, buf) == offset_of!(Theirs, buf));
    assert!(offset_of!(Py_buffer, obj) == offset_of!(Theirs, obj));
    assert!(offset_of!(Py_buffer, len) == offset_of!(Theirs, len));
    assert!(offset_of!(Py_buffer, itemsize) == offset_of!(Theirs, itemsize));
    assert!(offset_of!(Py_buffer, readonly) == offset_of!(Theirs, readonly));
    assert!(offset_of!(Py_buffer, ndim) == offset_of!(Theirs, ndim));
    assert!(offset_of!(Py_buffer, format) == offset_of!(Theirs, format));
    assert!(offset_of!(Py_buffer, shape) == offset_of!(Theirs, shape));
    assert!(offset_of!(Py_buffer, strides) == offset_of!(Theirs, strides));
    assert!(offset_of!(Py_buffer, suboffsets) == offset_of!(Theirs, suboffsets));
    assert!(offset_of!(Py_buffer, internal) == offset_of!(Theirs, internal));
};

/// `PyBUF_FORMAT | PyBUF_INDIRECT` (`PyBUF_FULL_RO`): any buffer, with its format, shape and
/// strides filled in (CPython's `Include/pybuffer.h`).
const PYBUF_FULL_RO: c_int = 0x0004 | 0x0100 | 0x0010 | 0x0008;

/// `Py_bf_getbuffer` of `Include/typeslots.h`.
pub(crate) const PY_BF_GETBUFFER: c_int = 1;
/// `Py_bf_releasebuffer` of `Include/typeslots.h`.
pub(crate) const PY_BF_RELEASEBUFFER: c_int = 2;

// SAFETY: these are CPython's declarations (Include/abstract.h up to 3.10, Include/pybuffer.h
// from 3.11), exported by every CPython 3.x interpreter with these signatures; `const` on a
// pointer parameter does not change the ABI.
unsafe extern "C" {
    fn PyObject_GetBuffer(obj: *mut PyObject, view: *mut Py_buffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut Py_buffer);
    fn PyBuffer_FillInfo(
        view: *mut Py_buffer,
        obj: *mut PyObject,
        buf: *mut c_void,
        len: Py_ssize_t,
        readonly: c_int,
        flags: c_int,
    ) -> c_int;
    fn PyBuffer_IsContiguous(view: *const Py_buffer, order: c_char) -> c_int;
    fn PyBuffer_ToContiguous(
        buf: *mut c_void,
        src: *const Py_buffer,
        len: Py_ssize_t,
        order: c_char,
    ) -> c_int;
}

/// A `#[pyclass]` whose memory the buffer protocol exports, writable (see
/// [`export_buffer!`]).
pub(crate) trait Export:
    pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>
{
    /// The memory a new export shows: its address and length. It must stay mapped, and not
    /// be handed to anyone else, until as many `released` calls as `exported` calls were made.
    fn memory(&mut self, py: Python<'_>) -> PyResult<(*mut u8, usize)>;
    /// A view of [`Export::memory`] now exists.
    fn exported(&mut self);
    /// A view made by `exported` is gone.
    fn released(&mut self);
}

/// Runs `f` for a slot function: its error (or panic, as `PanicException`) is set as the
/// Python exception and gives `None`.
fn guard<R>(py: Python<'_>, f: impl FnOnce() -> PyResult<R>) -> Option<R> {
    let err = match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => return Some(r),
        Ok(Err(e)) => e,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in a buffer slot".to_owned());
            PanicException::new_err(what)
        }
    };
    err.restore(py);
    None
}

/// The `bf_getbuffer` slot of an [`Export`] class.
///
/// # Safety
/// Called by CPython only (the GIL held), with `obj` an instance of `T` and `view` valid.
pub(crate) unsafe extern "C" fn getbuffer<T: Export>(
    obj: *mut PyObject,
    view: *mut Py_buffer,
    flags: c_int,
) -> c_int {
    // SAFETY: CPython calls type slots with the GIL held (attached).
    let py = unsafe { Python::assume_attached() };
    let done = guard(py, || {
        // SAFETY: `obj` is a live object CPython lends for the call.
        let any = unsafe { Bound::from_borrowed_ptr(py, obj) };
        let cell = any.cast::<T>()?;
        let mut me = cell
            .try_borrow_mut()
            .map_err(|e| PyBufferError::new_err(format!("cannot export the memory now: {e}")))?;
        let (ptr, len) = me.memory(py)?;
        let len = Py_ssize_t::try_from(len)
            .map_err(|_| PyBufferError::new_err("the memory is too large to export"))?;
        // SAFETY: `view` is valid (CPython's contract); `ptr..ptr + len` stays mapped while
        // the export lives (`Export::memory`); `view.obj` takes a reference to `obj`, which
        // keeps the exporter (and so the mapping) alive until `PyBuffer_Release`.
        let rc = unsafe { PyBuffer_FillInfo(view, obj, ptr.cast(), len, 0, flags) };
        if rc == -1 {
            return Err(PyErr::fetch(py));
        }
        me.exported();
        Ok(())
    });
    if done.is_some() {
        0
    } else {
        // SAFETY: `view` is valid; the protocol asks for `obj` NULL on failure.
        unsafe { (*view).obj = core::ptr::null_mut() };
        -1
    }
}

/// The `bf_releasebuffer` slot of an [`Export`] class.
///
/// # Safety
/// Called by CPython only (the GIL held), with `obj` an instance of `T`, once for each
/// successful [`getbuffer`].
pub(crate) unsafe extern "C" fn releasebuffer<T: Export>(
    obj: *mut PyObject,
    _view: *mut Py_buffer,
) {
    // SAFETY: CPython calls type slots with the GIL held (attached).
    let py = unsafe { Python::assume_attached() };
    let done = guard(py, || {
        // SAFETY: `obj` is a live object (the view holds a reference to it).
        let any = unsafe { Bound::from_borrowed_ptr(py, obj) };
        let cell = any.cast::<T>()?;
        cell.try_borrow_mut()
            .map_err(|e| PyBufferError::new_err(format!("cannot end an export now: {e}")))?
            .released();
        Ok(())
    });
    if done.is_none() {
        // The slot returns nothing: the error goes where CPython reports unraisable ones,
        // with the object. The export stays counted: its memory stays kept (no crash).
        // SAFETY: `obj` is live (see above).
        let any = unsafe { Bound::from_borrowed_ptr(py, obj) };
        PyErr::fetch(py).write_unraisable(py, Some(&any));
    }
}

/// Gives a `#[pyclass]` that implements [`Export`] the buffer slots (see the module docs).
macro_rules! export_buffer {
    ($cls:ty) => {
        pyo3::inventory::submit! {
            type Inventory = <$cls as pyo3::impl_::pyclass::PyClassImpl>::Inventory;
            Inventory::new(pyo3::impl_::pyclass::PyClassItems {
                methods: &[],
                slots: &[
                    pyo3::ffi::PyType_Slot {
                        slot: $crate::buffer::PY_BF_GETBUFFER,
                        pfunc: $crate::buffer::getbuffer::<$cls> as *mut core::ffi::c_void,
                    },
                    pyo3::ffi::PyType_Slot {
                        slot: $crate::buffer::PY_BF_RELEASEBUFFER,
                        pfunc: $crate::buffer::releasebuffer::<$cls> as *mut core::ffi::c_void,
                    },
                ],
            })
        }
    };
}
pub(crate) use export_buffer;

/// One export of an object's bytes, released on drop (any buffer of one-byte items).
pub(crate) struct BytesBuffer {
    /// Filled by `PyObject_GetBuffer`; boxed so that its address stays put (an exporter may
    /// keep pointers into it, e.g. `shape` pointing at `len`).
    view: Box<Py_buffer>,
}

impl BytesBuffer {
    /// An export of `obj`. Raises `TypeError` for an object without the buffer protocol and
    /// `BufferError` for items other than bytes (`B`, `c`).
    pub(crate) fn get(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        let mut raw = Box::new(MaybeUninit::<Py_buffer>::uninit());
        // SAFETY: `raw` is writable memory of a `Py_buffer`, which `PyObject_GetBuffer`
        // fills when it returns 0.
        if unsafe { PyObject_GetBuffer(obj.as_ptr(), raw.as_mut_ptr(), PYBUF_FULL_RO) } == -1 {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `PyObject_GetBuffer` filled the `Py_buffer` (same layout through
        // `MaybeUninit`); from here `Drop` releases the export, on errors too.
        let view = unsafe { Box::from_raw(Box::into_raw(raw).cast::<Py_buffer>()) };
        let me = Self { view };
        let v = &*me.view;
        let format: &[u8] = if v.format.is_null() {
            b"B"
        } else {
            // SAFETY: a non-NULL `format` is a NUL-terminated string the exporter keeps
            // alive with the export.
            unsafe { core::ffi::CStr::from_ptr(v.format) }.to_bytes()
        };
        let item = match format {
            [b'@' | b'=' | b'<' | b'>' | b'!', c] => Some(*c),
            [c] => Some(*c),
            _ => None,
        };
        if v.shape.is_null() || v.strides.is_null() {
            return Err(PyBufferError::new_err(
                "the buffer gave no shape or strides",
            ));
        }
        if v.itemsize != 1 || !matches!(item, Some(b'B' | b'c')) {
            return Err(PyBufferError::new_err(format!(
                "buffer contents are not bytes (format {:?}, item size {})",
                String::from_utf8_lossy(format),
                v.itemsize
            )));
        }
        Ok(me)
    }

    /// Whether the bytes lie in one piece (C order).
    pub(crate) fn is_c_contiguous(&self) -> bool {
        // SAFETY: `view` holds a live export.
        unsafe { PyBuffer_IsContiguous(&*self.view, b'C' as c_char) != 0 }
    }

    /// The bytes, where they lie; `None` unless they lie in one piece.
    pub(crate) fn as_slice(&self) -> Option<&[u8]> {
        if !self.is_c_contiguous() {
            return None;
        }
        let len = usize::try_from(self.view.len).ok()?;
        if len == 0 {
            return Some(&[]);
        }
        // SAFETY: a C-contiguous export of one-byte items has `len` bytes at `buf`, kept
        // alive and unresized by the export until `self` drops.
        Some(unsafe { core::slice::from_raw_parts(self.view.buf.cast::<u8>(), len) })
    }

    /// A copy of the bytes in C order (any layout).
    pub(crate) fn to_vec(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        let len = usize::try_from(self.view.len)
            .map_err(|_| PyBufferError::new_err("negative buffer length"))?;
        let mut v = Vec::<u8>::with_capacity(len);
        // SAFETY: `v` has room for `len` bytes, the export's length; the export is live.
        let rc = unsafe {
            PyBuffer_ToContiguous(
                v.as_mut_ptr().cast(),
                &*self.view,
                self.view.len,
                b'C' as c_char,
            )
        };
        if rc == -1 {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `PyBuffer_ToContiguous` wrote all `len` bytes.
        unsafe { v.set_len(len) };
        Ok(v)
    }
}

impl Drop for BytesBuffer {
    fn drop(&mut self) {
        // SAFETY: `view` holds one live export (made by `get`), released once here. The GIL
        // is held: a `BytesBuffer` lives inside a call from Python and is dropped there;
        // it is not `Send` (raw pointers), so it cannot leave the thread.
        unsafe { PyBuffer_Release(&mut *self.view) };
    }
}
