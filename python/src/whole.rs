//! Integer arguments that refuse `bool`.
//!
//! Python's `bool` is an `int`, so a plain integer argument takes `True`
//! as 1: `Aggregator(unsaved_buckets=True)` would keep one bucket. Chancy's
//! plugin refuses bools where it asks for counts (`max_buffered_points`),
//! and so does ringmetrics' (`ring_buckets`); the native API does too.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBool;

/// An integer argument of type `T`, given as an `int` that is not a bool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Whole<T>(pub(crate) T);

impl<'a, 'py, T: FromPyObject<'a, 'py>> FromPyObject<'a, 'py> for Whole<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err("expected an int, not bool"));
        }
        T::extract(obj).map(Whole).map_err(Into::into)
    }
}
