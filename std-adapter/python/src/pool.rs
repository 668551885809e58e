//! `MemoryPool`: a managed-memory pool in `/dev/shm`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use dragon_channels as dc;

use crate::errors::{pool_err, raise};

/// A managed-memory pool in `/dev/shm/<name>`.
#[pyclass(module = "dragon_channels", name = "MemoryPool")]
pub(crate) struct PyMemoryPool {
    pool: Option<dc::MemoryPool>,
}

impl PyMemoryPool {
    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<&dc::MemoryPool> {
        self.pool.as_ref().ok_or_else(|| {
            raise(
                py,
                "MemoryPoolError",
                "memory pool was destroyed or detached: attach again".into(),
            )
        })
    }
}

#[pymethods]
impl PyMemoryPool {
    /// Creates the pool `name` of `size` bytes with the user id `uid`. `pre_alloc_blocks`
    /// must be None; `min_block` and `max_allocations` set the pool's attributes.
    #[new]
    #[pyo3(signature = (size, name, uid, pre_alloc_blocks = None, *, min_block = None, max_allocations = None))]
    fn new(
        py: Python<'_>,
        size: usize,
        name: &str,
        uid: u64,
        pre_alloc_blocks: Option<&Bound<'_, PyAny>>,
        min_block: Option<u32>,
        max_allocations: Option<u32>,
    ) -> PyResult<Self> {
        if pre_alloc_blocks.is_some_and(|b| !b.is_none()) {
            return Err(PyValueError::new_err(
                "pre_alloc_blocks is not supported: pass None",
            ));
        }
        let mut attrs = dc::PoolAttrs::default();
        if let Some(b) = min_block {
            attrs.min_block = b;
        }
        attrs.max_allocations = max_allocations.or(attrs.max_allocations);
        let pool = dc::MemoryPool::create_with_attrs(size, name, uid, &attrs)
            .map_err(|e| pool_err(py, e))?;
        Ok(Self { pool: Some(pool) })
    }

    /// Attaches to a pool from `MemoryPool.serialize()` bytes, or by name (a `str`).
    #[staticmethod]
    fn attach(py: Python<'_>, ser: &Bound<'_, PyAny>) -> PyResult<Self> {
        let pool = if let Ok(name) = ser.extract::<&str>() {
            dc::MemoryPool::attach(name)
        } else {
            let b: Vec<u8> = ser.extract()?;
            dc::MemoryPool::attach_serialized(&b)
        }
        .map_err(|e| pool_err(py, e))?;
        Ok(Self { pool: Some(pool) })
    }

    /// Bytes another process passes to `MemoryPool.attach`.
    fn serialize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.get(py)?.serialize()))
    }

    /// Destroys the pool (unlinks its file; mappings live on until their last user goes).
    fn destroy(&mut self, py: Python<'_>) -> PyResult<()> {
        self.get(py)?;
        let pool = self.pool.take().expect("checked above");
        pool.destroy().map_err(|e| pool_err(py, e))
    }

    /// Detaches this object from the pool.
    fn detach(&mut self) {
        self.pool = None;
    }

    /// The pool's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.get(py)?.name().to_owned())
    }

    /// The user id given at creation.
    #[getter]
    fn uid(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.get(py)?.uid())
    }

    /// The data area's size in bytes.
    #[getter]
    fn size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.size())
    }

    /// Free bytes.
    #[getter]
    fn free_space(&self, py: Python<'_>) -> PyResult<usize> {
        self.get(py)?.free_space().map_err(|e| pool_err(py, e))
    }

    /// Fraction of the pool in use (0.0 to 1.0).
    #[getter]
    fn utilization(&self, py: Python<'_>) -> PyResult<f64> {
        self.get(py)?.utilization().map_err(|e| pool_err(py, e))
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
        match &self.pool {
            Some(p) => format!("MemoryPool(name={:?}, size={})", p.name(), p.size()),
            None => "MemoryPool(<detached>)".into(),
        }
    }
}
