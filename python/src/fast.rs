//! Hand-written CPython entry points for the record calls.
//!
//! A record takes about 25 ns in the core; PyO3's generic method trampoline
//! and keyword parser cost about as much again. The record methods are
//! therefore plain `METH_FASTCALL | METH_KEYWORDS` functions, installed on
//! the PyO3 classes as method descriptors at module init. They take a direct
//! path for the common call (positional arguments: an exact `str` key, an
//! exact `int` or `float` value) and fall back to PyO3's conversions for
//! everything else, with the same results and errors as before.

use std::any::Any;
use std::ffi::{CStr, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::PyString;
use ringmetrics::Kind;

use crate::{Aggregator, Error, Handle, number};

/// An object pointer as CPython passes it: borrowed for the call.
pub(crate) type Obj = *mut ffi::PyObject;

/// A record method's parameters, for binding keyword arguments.
pub(crate) struct Params {
    /// The method's name, for messages.
    pub name: &'static str,
    /// Parameter names, in order.
    pub names: &'static [&'static CStr],
    /// How many may be given positionally (the rest are keyword-only).
    pub positional: usize,
    /// How many are required (a prefix of `names`).
    pub required: usize,
}

/// Bind vectorcall arguments to `p`'s parameters; a missing optional
/// parameter stays null. On a bad call, sets the TypeError Python would
/// raise and returns None.
///
/// # Safety
/// `args` holds `nargs` positional arguments followed by one value per name
/// in `kwnames` (a tuple of str, or null), as CPython passes them to a
/// `METH_FASTCALL | METH_KEYWORDS` function; the caller is attached.
pub(crate) unsafe fn bind<const N: usize>(
    p: &Params,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
) -> Option<[Obj; N]> {
    let mut out = [ptr::null_mut(); N];
    let nargs = nargs.max(0) as usize;
    if nargs > p.positional {
        return type_error(format!(
            "{}() takes at most {} positional arguments ({nargs} given)",
            p.name, p.positional
        ));
    }
    for (i, slot) in out.iter_mut().enumerate().take(nargs) {
        // SAFETY: i < nargs, and `args` holds nargs positional arguments.
        *slot = unsafe { *args.add(i) };
    }
    if !kwnames.is_null() {
        // SAFETY: kwnames is a tuple (CPython's calling convention).
        let nkw = unsafe { ffi::PyTuple_Size(kwnames) }.max(0) as usize;
        for j in 0..nkw {
            // SAFETY: j < len(kwnames); the item is a borrowed str.
            let name = unsafe { ffi::PyTuple_GetItem(kwnames, j as ffi::Py_ssize_t) };
            let index = p
                .names
                .iter()
                // SAFETY: `name` is a str and each of `names` a NUL-terminated ASCII string.
                .position(|n| unsafe { ffi::PyUnicode_CompareWithASCIIString(name, n.as_ptr()) } == 0);
            match index {
                Some(i) if out[i].is_null() => {
                    // SAFETY: keyword values follow the positional ones, one per name.
                    out[i] = unsafe { *args.add(nargs + j) };
                }
                Some(i) => {
                    return type_error(format!(
                        "{}() got multiple values for argument '{}'",
                        p.name,
                        p.names[i].to_string_lossy()
                    ));
                }
                None => {
                    let name = Python::attach(|py| {
                        // SAFETY: `name` is a live str borrowed from kwnames.
                        unsafe { Borrowed::from_ptr(py, name) }.to_string()
                    });
                    return type_error(format!("{}() got an unexpected keyword argument '{name}'", p.name));
                }
            }
        }
    }
    if let Some(i) = out[..p.required].iter().position(|o| o.is_null()) {
        return type_error(format!(
            "{}() missing required argument '{}'",
            p.name,
            p.names[i].to_string_lossy()
        ));
    }
    Some(out)
}

#[cold]
fn type_error<T>(message: String) -> Option<T> {
    Python::attach(|py| PyTypeError::new_err(message).restore(py));
    None
}

/// An exact `str` as `&str`, borrowed from the object (CPython caches the
/// UTF-8 form; ASCII strings are used in place). None for anything else,
/// including strings that cannot be encoded (lone surrogates).
///
/// # Safety
/// `o` is a live object and the caller is attached; the result must not
/// outlive `o`.
#[inline(always)]
pub(crate) unsafe fn exact_str<'a>(o: Obj) -> Option<&'a str> {
    // SAFETY: `o` is a live object (caller's contract).
    if unsafe { ffi::Py_TYPE(o) } != &raw mut ffi::PyUnicode_Type {
        return None;
    }
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: `o` is an exact str; the returned buffer lives as long as `o`.
    let p = unsafe { ffi::PyUnicode_AsUTF8AndSize(o, &mut len) };
    if p.is_null() {
        // SAFETY: attached; the slow path raises the error again if it applies.
        unsafe { ffi::PyErr_Clear() };
        return None;
    }
    // SAFETY: CPython returns `len` bytes of valid UTF-8 at `p`, kept alive by `o`.
    Some(unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(p.cast::<u8>(), len as usize)) })
}

/// An exact `float`, or an exact `int` that fits an i64, as f64 (bools are
/// not exact ints). None for anything else: the slow path decides.
///
/// # Safety
/// `o` is a live object and the caller is attached.
#[inline(always)]
pub(crate) unsafe fn exact_number(o: Obj) -> Option<f64> {
    // SAFETY: `o` is a live object (caller's contract).
    let t = unsafe { ffi::Py_TYPE(o) };
    if t == &raw mut ffi::PyFloat_Type {
        // SAFETY: `o` is an exact float: this cannot fail.
        return Some(unsafe { ffi::PyFloat_AsDouble(o) });
    }
    if t == &raw mut ffi::PyLong_Type {
        let mut overflow: c_int = 0;
        // SAFETY: `o` is an exact int: the only failure is overflow, reported in `overflow`.
        let n = unsafe { ffi::PyLong_AsLongAndOverflow(o, &mut overflow) };
        if overflow == 0 {
            return Some(n as f64);
        }
    }
    None
}

/// A new reference to None.
#[inline(always)]
pub(crate) fn none() -> Obj {
    // SAFETY: None is a static object; the caller returns the new reference to CPython.
    unsafe {
        let n = ffi::Py_None();
        ffi::Py_IncRef(n);
        n
    }
}

/// Raise `e` and return the NULL CPython expects with it.
#[cold]
pub(crate) fn raise(e: impl Into<PyErr>) -> Obj {
    let e = e.into();
    Python::attach(|py| e.restore(py));
    ptr::null_mut()
}

/// Run an entry point's body; a Rust panic becomes a PanicException
/// instead of unwinding into CPython.
#[inline(always)]
pub(crate) fn guard(body: impl FnOnce() -> Obj) -> Obj {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(o) => o,
        Err(payload) => panicked(payload),
    }
}

#[cold]
fn panicked(payload: Box<dyn Any + Send>) -> Obj {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a Rust panic in ringmetrics".into());
    raise(PanicException::new_err(message))
}

/// The Rust object behind `slf`.
///
/// # Safety
/// `slf` is a live instance of `T` (CPython checks it against the type the
/// method descriptor was made for) and the caller is attached.
#[inline(always)]
pub(crate) unsafe fn this<'a, T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync>(
    slf: Obj,
) -> &'a T {
    // SAFETY: the caller's contract; the borrow lasts for the call, while
    // CPython holds `slf`.
    unsafe {
        let py = Python::assume_attached();
        Borrowed::from_ptr(py, slf).cast_unchecked::<T>().get()
    }
}

/// Install `def` (leaked: descriptors keep a pointer to it) on `ty` as a
/// method, replacing any attribute of that name.
pub(crate) fn install(ty: &Bound<'_, pyo3::types::PyType>, def: ffi::PyMethodDef) -> PyResult<()> {
    let py = ty.py();
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(def));
    // SAFETY: `ty` is a live type object, `def` lives forever; the new
    // reference is owned by the Bound.
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_ptr().cast::<ffi::PyTypeObject>(), def))?
    };
    // SAFETY: `def.ml_name` is a NUL-terminated static string.
    let name = unsafe { CStr::from_ptr(def.ml_name) }.to_str().expect("ASCII names");
    ty.setattr(PyString::new(py, name), descr)
}

/// A `METH_FASTCALL | METH_KEYWORDS` method definition.
pub(crate) fn fastcall(
    name: &'static CStr,
    f: ffi::PyCFunctionFastWithKeywords,
    doc: &'static CStr,
) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: f,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }
}

// ---------------------------------------------------------------------------
// Aggregator.increment_counter / record_gauge / record_histogram

const KEY_VALUE_UNIT: &[&CStr] = &[c"key", c"value", c"unit"];

static COUNTER: Params = Params {
    name: "increment_counter",
    names: KEY_VALUE_UNIT,
    positional: 3,
    required: 2,
};
static GAUGE: Params = Params {
    name: "record_gauge",
    ..COUNTER
};
static HISTOGRAM: Params = Params {
    name: "record_histogram",
    ..COUNTER
};

/// `Aggregator.<record>(key, value, unit=<default>)`: raises ValueError on
/// bad input, TypeError on a key or unit that is not a str.
#[inline(always)]
unsafe fn record_key(
    slf: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
    kind: Kind,
    params: &'static Params,
) -> Obj {
    guard(|| {
        // SAFETY: CPython passes an Aggregator (the descriptor's type) and is attached.
        let agg: &Aggregator = unsafe { this(slf) };
        if kwnames.is_null() && (nargs == 2 || nargs == 3) {
            // SAFETY: nargs positional arguments, all live for the call.
            let (key, value, unit) = unsafe {
                (
                    exact_str(*args),
                    exact_number(*args.add(1)),
                    if nargs == 3 {
                        exact_str(*args.add(2))
                    } else {
                        Some(kind.default_unit())
                    },
                )
            };
            if let (Some(key), Some(value), Some(unit)) = (key, value, unit) {
                return match agg.inner.record_key(kind, key, unit, value) {
                    Ok(()) => none(),
                    Err(e) => raise(Error::from(e)),
                };
            }
        }
        // SAFETY: CPython's FASTCALL arguments, as received.
        match unsafe { bind::<3>(params, args, nargs, kwnames) } {
            // SAFETY: bound arguments are borrowed from the call.
            Some([key, value, unit]) => unsafe { record_key_slow(agg, kind, key, value, unit) },
            None => ptr::null_mut(),
        }
    })
}

/// Any argument types: PyO3's conversions and errors.
#[cold]
#[inline(never)]
unsafe fn record_key_slow(agg: &Aggregator, kind: Kind, key: Obj, value: Obj, unit: Obj) -> Obj {
    Python::attach(|py| {
        let result = (|| -> PyResult<()> {
            // SAFETY: non-null arguments borrowed from the call.
            let arg = |o: Obj| unsafe { Borrowed::from_ptr(py, o) };
            let key: &str = str_argument(arg(key), "key")?;
            let unit: &str = if unit.is_null() {
                kind.default_unit()
            } else {
                str_argument(arg(unit), "unit")?
            };
            let value = number(&arg(value).to_owned())?;
            Ok(agg.inner.record_key(kind, key, unit, value).map_err(Error::from)?)
        })();
        match result {
            Ok(()) => none(),
            Err(e) => {
                e.restore(py);
                ptr::null_mut()
            }
        }
    })
}

fn str_argument<'a>(o: Borrowed<'a, '_, PyAny>, name: &str) -> PyResult<&'a str> {
    o.extract::<&str>()
        .map_err(|e| PyTypeError::new_err(format!("argument '{name}': {}", e.value(o.py()))))
}

unsafe extern "C" fn aggregator_increment_counter(
    slf: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
) -> Obj {
    // SAFETY: called by CPython with FASTCALL arguments.
    unsafe { record_key(slf, args, nargs, kwnames, Kind::Counter, &COUNTER) }
}

unsafe extern "C" fn aggregator_record_gauge(slf: Obj, args: *const Obj, nargs: ffi::Py_ssize_t, kwnames: Obj) -> Obj {
    // SAFETY: called by CPython with FASTCALL arguments.
    unsafe { record_key(slf, args, nargs, kwnames, Kind::Gauge, &GAUGE) }
}

unsafe extern "C" fn aggregator_record_histogram(
    slf: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
) -> Obj {
    // SAFETY: called by CPython with FASTCALL arguments.
    unsafe { record_key(slf, args, nargs, kwnames, Kind::Histogram, &HISTOGRAM) }
}

// ---------------------------------------------------------------------------
// Handle.record

static HANDLE_RECORD: Params = Params {
    name: "record",
    names: &[c"value"],
    positional: 1,
    required: 1,
};

/// `Handle.record(value)`: raises ValueError on bad input.
unsafe extern "C" fn handle_record(slf: Obj, args: *const Obj, nargs: ffi::Py_ssize_t, kwnames: Obj) -> Obj {
    guard(|| {
        // SAFETY: CPython passes a Handle (the descriptor's type) and is attached.
        let h: &Handle = unsafe { this(slf) };
        let fast = if nargs == 1 && kwnames.is_null() {
            // SAFETY: one positional argument, borrowed from the call.
            unsafe { exact_number(*args) }
        } else {
            None
        };
        let v = match fast {
            Some(v) => v,
            // SAFETY: CPython's FASTCALL arguments, as received.
            None => match unsafe { bind::<1>(&HANDLE_RECORD, args, nargs, kwnames) } {
                Some([value]) => match Python::attach(|py| {
                    // SAFETY: `value` is borrowed from the call.
                    number(&unsafe { Borrowed::from_ptr(py, value) }.to_owned())
                }) {
                    Ok(v) => v,
                    Err(e) => return raise(e),
                },
                None => return ptr::null_mut(),
            },
        };
        match h.agg.record(h.series, v) {
            Ok(()) => none(),
            Err(e) => raise(Error::from(e)),
        }
    })
}

/// Replace the PyO3 record methods with the entry points above.
pub(crate) fn install_record_methods(py: Python<'_>) -> PyResult<()> {
    let agg = py.get_type::<Aggregator>();
    for def in [
        fastcall(
            c"increment_counter",
            aggregator_increment_counter,
            c"increment_counter($self, key, value, unit='count')\n--\n\nAdd `value` to the counter `key`. Raises ValueError on bad input.",
        ),
        fastcall(
            c"record_gauge",
            aggregator_record_gauge,
            c"record_gauge($self, key, value, unit='number')\n--\n\nSet the gauge `key`. Raises ValueError on bad input.",
        ),
        fastcall(
            c"record_histogram",
            aggregator_record_histogram,
            c"record_histogram($self, key, value, unit='number')\n--\n\nAdd an observation to the histogram `key`. Raises ValueError on bad input.",
        ),
    ] {
        install(&agg, def)?;
    }
    install(
        &py.get_type::<Handle>(),
        fastcall(
            c"record",
            handle_record,
            c"record($self, value)\n--\n\nRecord `value` now. Raises ValueError on bad input.",
        ),
    )?;
    Ok(())
}
