//! The Chancy plugin's record methods, native.
//!
//! `await metrics.increment_counter(key, 1)` through a Python `async def`
//! costs a coroutine object, a frame and a `StopIteration` before any work
//! is done (about 150 ns here). [`Recorder`]'s `increment_counter`,
//! `record_gauge` and `record_histogram_value` keep Chancy's signature
//! (`metric_key, value, *, unit=...`), record at once and return
//! [`RECORDED`]: one shared, already finished awaitable, so awaiting it costs
//! two slot calls and allocates nothing.
//!
//! Like Chancy's plugin they never raise into a job: invalid input is
//! dropped, counted in the aggregator's drop counters and reported through
//! the plugin's rate-limited warning. While the plugin's clock hook (Chancy's
//! `utcnow`) is monkeypatched, records are stamped with the time it returns.

use std::ffi::{CStr, c_void};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyType};
use ringmetrics::{DropReason, Kind, OverridableClock};

use crate::fast::{Obj, Params, bind, exact_number, exact_str, fastcall, guard, install, none, raise, this};
use crate::{Aggregator, Error, kind_of, secs_to_nanos};

/// The one `Recorded` instance (a reference owned for the process's life).
static RECORDED: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());

/// A new reference to the shared `Recorded` awaitable.
#[inline(always)]
fn recorded() -> Obj {
    let r = RECORDED.load(Ordering::Relaxed);
    // SAFETY: set once at module init, before any Recorder exists, and
    // never released; the caller hands the new reference to CPython.
    unsafe { ffi::Py_IncRef(r) };
    r
}

/// Where the plugin's clock hook lives: `namespace[name]`, and the function
/// that was there originally (not patched).
struct ClockHook {
    namespace: Py<PyDict>,
    name: Py<PyString>,
    original: Py<PyAny>,
    /// Whether the target's clock is currently overridden by the hook.
    overridden: AtomicBool,
}

/// What a Recorder records into: an aggregator and, for the clock hook,
/// its overridable clock.
struct Target {
    agg: Arc<ringmetrics::Aggregator>,
    /// The aggregator's clock, overridden while the hook is patched.
    clock: Option<OverridableClock>,
}

/// Records into an aggregator the way Chancy's plugin methods do: never
/// raises on bad input, returns an awaitable that is already done.
#[pyclass(module = "ringmetrics._native", frozen)]
pub(crate) struct Recorder {
    /// Swapped by `retarget` (under the GIL, as every call is: the lock is
    /// never contended).
    target: parking_lot::RwLock<Target>,
    /// `warn(message)`: the plugin's rate-limited warning.
    warn: Py<PyAny>,
    hook: Option<ClockHook>,
}

#[pymethods]
impl Recorder {
    /// Record into `aggregator`; `warn(message)` is called for each dropped
    /// record. With `clock_hook=(namespace, name, original)`, while
    /// `namespace[name]` is not `original`, records are stamped with
    /// `namespace[name]().timestamp()` (the aggregator must not run on a
    /// ManualClock).
    #[new]
    #[pyo3(signature = (aggregator, warn, clock_hook=None))]
    fn new(
        aggregator: &Bound<'_, Aggregator>,
        warn: Py<PyAny>,
        clock_hook: Option<(Py<PyDict>, Py<PyString>, Py<PyAny>)>,
    ) -> PyResult<Self> {
        let hook = clock_hook.map(|(namespace, name, original)| ClockHook {
            namespace,
            name,
            original,
            overridden: AtomicBool::new(false),
        });
        let target = Recorder::target_of(aggregator, hook.is_some())?;
        Ok(Recorder {
            target: parking_lot::RwLock::new(target),
            warn,
            hook,
        })
    }

    /// Record into `aggregator` from now on (calls through methods taken
    /// earlier included).
    fn retarget(&self, aggregator: &Bound<'_, Aggregator>) -> PyResult<()> {
        *self.target.write() = Recorder::target_of(aggregator, self.hook.is_some())?;
        Ok(())
    }

    /// Record `value` into `key` of `kind` ("counter", "gauge",
    /// "histogram") with `unit`. Never raises: a dropped record is counted
    /// and warned about.
    fn record(&self, kind: &str, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, unit: &Bound<'_, PyAny>) {
        match kind_of(kind) {
            // SAFETY: the objects are live for the call; attached.
            Ok(kind) => unsafe { self.record_raw(kind, key.as_ptr(), value.as_ptr(), unit.as_ptr()) },
            Err(Error::Value(m)) => {
                self.target.read().agg.count_refused(DropReason::InvalidKey);
                self.dropped(key.as_ptr(), m);
            }
            Err(_) => unreachable!("kind_of only fails with a value error"),
        }
    }

    // increment_counter, record_gauge and record_histogram_value are
    // hand-written entry points, installed by `install`.
}

impl Recorder {
    fn target_of(aggregator: &Bound<'_, Aggregator>, hooked: bool) -> PyResult<Target> {
        let agg = aggregator.get();
        if hooked && agg.overridable.is_none() {
            return Err(PyValueError::new_err(
                "a clock hook needs an aggregator without a ManualClock",
            ));
        }
        Ok(Target {
            agg: agg.inner.clone(),
            clock: agg.overridable.clone(),
        })
    }

    /// Stamp, record, and report a drop. `unit` may be null (the kind's
    /// default unit).
    ///
    /// # Safety
    /// Non-null arguments are live objects; the caller is attached.
    #[inline(always)]
    unsafe fn record_raw(&self, kind: Kind, key: Obj, value: Obj, unit: Obj) {
        // The target is read-locked only around Rust work, never while
        // Python code runs (which could retarget).
        if let Some(hook) = &self.hook {
            // SAFETY: the namespace dict and name are alive (held by the
            // hook); the result is a borrowed reference or null.
            let current = unsafe { ffi::PyDict_GetItem(hook.namespace.as_ptr(), hook.name.as_ptr()) };
            if !current.is_null() && current != hook.original.as_ptr() {
                // SAFETY: `current` is borrowed from the namespace, alive for this call.
                if let Err(m) = unsafe { self.stamp(hook, current) } {
                    self.target.read().agg.count_refused(DropReason::InvalidTimestamp);
                    return self.dropped(key, m);
                }
            } else if hook.overridden.load(Ordering::Relaxed) {
                if let Some(clock) = &self.target.read().clock {
                    clock.set(None);
                }
                hook.overridden.store(false, Ordering::Relaxed);
            }
        }
        // SAFETY: live objects (caller's contract).
        let fast = unsafe {
            (
                exact_str(key),
                exact_number(value),
                if unit.is_null() {
                    Some(kind.default_unit())
                } else {
                    // Chancy's `unit or default`: "" is the default too.
                    exact_str(unit).map(|u| if u.is_empty() { kind.default_unit() } else { u })
                },
            )
        };
        let result = match fast {
            (Some(k), Some(v), Some(u)) => self
                .target
                .read()
                .agg
                .record_key(kind, k, u, v)
                .map_err(|e| e.to_string()),
            // SAFETY: live objects (caller's contract).
            _ => unsafe { self.record_slow(kind, key, value, unit) },
        };
        if let Err(m) = result {
            self.dropped(key, m);
        }
    }

    /// Any argument types, read as Chancy 0.26's `_record` reads them (see
    /// [`chancy_unit`], [`chancy_value`]); counts what the aggregator never
    /// sees.
    #[cold]
    #[inline(never)]
    unsafe fn record_slow(&self, kind: Kind, key: Obj, value: Obj, unit: Obj) -> Result<(), String> {
        let agg = self.target.read().agg.clone();
        Python::attach(|py| {
            // SAFETY: non-null arguments are live for the call.
            let arg = |o: Obj| unsafe { Borrowed::from_ptr(py, o) };
            let refused = |reason, m: &str| {
                agg.count_refused(reason);
                m.to_string()
            };
            let key: &str = arg(key).extract().map_err(|_| {
                refused(
                    DropReason::InvalidKey,
                    "metric keys must be str (without lone surrogates)",
                )
            })?;
            // SAFETY: `unit` is null or live (caller's contract).
            let unit = unsafe { chancy_unit(py, kind, unit) }.map_err(|m| refused(DropReason::InvalidUnit, &m))?;
            // SAFETY: `value` is live (caller's contract).
            let value = unsafe { chancy_value(value) }
                .ok_or_else(|| refused(DropReason::NonFiniteValue, &value_message(arg(value))))?;
            agg.record_key(kind, key, unit, value).map_err(|e| e.to_string())
        })
    }

    /// Set the aggregator's clock to the patched hook's time.
    #[cold]
    #[inline(never)]
    unsafe fn stamp(&self, hook: &ClockHook, current: Obj) -> Result<(), String> {
        Python::attach(|py| {
            // SAFETY: `current` is alive for the call (caller's contract).
            let f = unsafe { Borrowed::from_ptr(py, current) };
            let seconds: f64 = f
                .call0()
                .and_then(|t| t.call_method0("timestamp"))
                .and_then(|s| s.extract())
                .map_err(|e| format!("the patched clock failed: {e}"))?;
            let nanos = secs_to_nanos(seconds).map_err(|e| PyErr::from(e).to_string())?;
            if let Some(clock) = &self.target.read().clock {
                clock.set(Some(nanos));
            }
            hook.overridden.store(true, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Report a dropped record through the plugin's warning.
    #[cold]
    #[inline(never)]
    fn dropped(&self, key: Obj, message: String) {
        Python::attach(|py| {
            // SAFETY: `key` is alive for the call.
            let key = unsafe { Borrowed::from_ptr(py, key) };
            let shown = key.repr().map(|r| r.to_string()).unwrap_or_else(|_| "<key>".into());
            if let Err(e) = self.warn.call1(py, (format!("Dropped metric {shown}: {message}"),)) {
                e.write_unraisable(py, Some(&key));
            }
        })
    }
}

/// A unit as Chancy's `_record` takes it: `unit or default`, so null (left
/// out) and every false value (`None`, `""`, `0`, `False`, an empty
/// container) are the kind's default unit; anything else must be a `str`
/// (subclasses included) that encodes to UTF-8. The core checks the rest.
///
/// # Safety
/// `unit` is null or a live object; attached.
unsafe fn chancy_unit<'py>(py: Python<'py>, kind: Kind, unit: Obj) -> Result<&'py str, String> {
    if unit.is_null() {
        return Ok(kind.default_unit());
    }
    // SAFETY: `unit` is live (caller's contract); attached.
    match unsafe { ffi::PyObject_IsTrue(unit) } {
        0 => return Ok(kind.default_unit()),
        1 => {}
        _ => {
            // A `__bool__` that raised: Chancy would raise; a record never does.
            let e = PyErr::fetch(py);
            return Err(format!("the unit's truth value failed: {e}"));
        }
    }
    // SAFETY: `unit` is live for the call, which outlives the borrow.
    let unit = unsafe { Borrowed::from_ptr(py, unit) };
    unit.extract::<&str>()
        .map_err(|_| "metric units must be str (without lone surrogates)".to_string())
}

/// A value as Chancy's `_record` takes it: an instance of `int` or `float`,
/// subclasses included but not `bool`, finite, stored as `float(value)`.
/// `Decimal`, `Fraction`, numpy's integer scalars and other objects with
/// `__float__` or `__index__` are not: None (dropped). A huge int that
/// overflows a float is dropped (Chancy's `math.isfinite` raises
/// OverflowError, which it catches). A float subclass is read as Chancy
/// reads it: its raw value must be finite (`math.isfinite`), then the
/// stored value is `float(value)`, its `__float__`; an int subclass goes
/// through its `__float__` for both. A `__float__` that raises is a drop
/// (Chancy would raise).
///
/// # Safety
/// `o` is a live object; attached.
unsafe fn chancy_value(o: Obj) -> Option<f64> {
    // SAFETY: `o` is live (caller's contract); attached throughout. The
    // checks read its type; `PyFloat_AsDouble` and `PyNumber_Float` may
    // run `__float__`, and any error they set is cleared.
    unsafe {
        if let Some(v) = exact_number(o) {
            return Some(v);
        }
        if ffi::PyBool_Check(o) != 0 {
            return None;
        }
        if ffi::PyFloat_Check(o) != 0 {
            // A float (subclass): PyFloat_AsDouble reads the raw value
            // without calling `__float__`, as `math.isfinite` does.
            if !ffi::PyFloat_AsDouble(o).is_finite() {
                return None;
            }
            let f = ffi::PyNumber_Float(o);
            if f.is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            let v = ffi::PyFloat_AsDouble(f);
            ffi::Py_DecRef(f);
            return Some(v);
        }
        if ffi::PyLong_Check(o) != 0 {
            // An int (a huge exact one, or a subclass): through `__float__`,
            // which raises OverflowError past the float range.
            let v = ffi::PyFloat_AsDouble(o);
            if v == -1.0 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            return Some(v);
        }
        None
    }
}

/// Why `value` was dropped, for the warning.
#[cold]
fn value_message(value: Borrowed<'_, '_, PyAny>) -> String {
    let type_name = value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    if value.is_instance_of::<pyo3::types::PyBool>()
        || !(value.is_instance_of::<pyo3::types::PyInt>() || value.is_instance_of::<pyo3::types::PyFloat>())
    {
        format!("metric values must be int or float (not bool), not {type_name}")
    } else {
        format!("metric values must be finite numbers (a {type_name} that is not finite as a float)")
    }
}

// ---------------------------------------------------------------------------
// Recorder.increment_counter / record_gauge / record_histogram_value

const CHANCY_PARAMS: &[&CStr] = &[c"metric_key", c"value", c"unit"];

static COUNTER: Params = Params {
    name: "increment_counter",
    names: CHANCY_PARAMS,
    positional: 2,
    required: 2,
};
static GAUGE: Params = Params {
    name: "record_gauge",
    ..COUNTER
};
static HISTOGRAM: Params = Params {
    name: "record_histogram_value",
    ..COUNTER
};

/// `(metric_key, value, *, unit=<default>)`: records, returns `Recorded`.
#[inline(always)]
unsafe fn chancy_record(
    slf: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
    kind: Kind,
    params: &'static Params,
) -> Obj {
    guard(|| {
        // SAFETY: CPython passes a Recorder (the descriptor's type) and is attached.
        let r: &Recorder = unsafe { this(slf) };
        // SAFETY: CPython's FASTCALL arguments, as received.
        let bound = unsafe {
            if nargs == 2 && kwnames.is_null() {
                Some([*args, *args.add(1), ptr::null_mut()])
            } else {
                bind::<3>(params, args, nargs, kwnames)
            }
        };
        match bound {
            Some([key, value, unit]) => {
                // SAFETY: bound arguments are borrowed from the call; attached.
                unsafe { r.record_raw(kind, key, value, unit) };
                recorded()
            }
            None => ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn recorder_increment_counter(
    slf: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
) -> Obj {
    // SAFETY: called by CPython with FASTCALL arguments.
    unsafe { chancy_record(slf, args, nargs, kwnames, Kind::Counter, &COUNTER) }
}

unsafe extern "C" fn recorder_record_gauge(slf: Obj, args: *const Obj, nargs: ffi::Py_ssize_t, kwnames: Obj) -> Obj {
    // SAFETY: called by CPython with FASTCALL arguments.
    unsafe { chancy_record(slf, args, nargs, kwnames, Kind::Gauge, &GAUGE) }
}

unsafe extern "C" fn recorder_record_histogram_value(
    slf: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
) -> Obj {
    // SAFETY: called by CPython with FASTCALL arguments.
    unsafe { chancy_record(slf, args, nargs, kwnames, Kind::Histogram, &HISTOGRAM) }
}

// ---------------------------------------------------------------------------
// Recorded: the finished awaitable

/// `__await__` / `__iter__`: itself.
unsafe extern "C" fn recorded_self(slf: Obj) -> Obj {
    // SAFETY: `slf` is alive; the new reference goes to CPython.
    unsafe { ffi::Py_IncRef(slf) };
    slf
}

/// `__next__`: finished. NULL without an exception set ends an `await` or
/// a `yield from` with None, without allocating a StopIteration.
unsafe extern "C" fn recorded_next(_slf: Obj) -> Obj {
    ptr::null_mut()
}

/// `am_send`: finished, returning None (what `await` uses first).
unsafe extern "C" fn recorded_am_send(_slf: Obj, _arg: Obj, result: *mut Obj) -> ffi::PySendResult {
    // SAFETY: CPython passes a valid out pointer.
    unsafe { *result = none() };
    ffi::PySendResult::PYGEN_RETURN
}

/// `send(value)`: finished (a Task drives coroutines this way).
unsafe extern "C" fn recorded_send(_slf: Obj, _value: Obj) -> Obj {
    // SAFETY: attached; StopIteration is a static exception type.
    unsafe { ffi::PyErr_SetNone(ffi::PyExc_StopIteration) };
    ptr::null_mut()
}

/// `throw(typ[, val[, tb]])`: a finished coroutine raises what is thrown.
unsafe extern "C" fn recorded_throw(_slf: Obj, args: *mut Obj, nargs: ffi::Py_ssize_t) -> Obj {
    guard(|| {
        if !(1..=3).contains(&nargs) {
            return raise(PyTypeError::new_err(format!(
                "throw expected 1 to 3 arguments, got {nargs}"
            )));
        }
        Python::attach(|py| {
            // SAFETY: nargs >= 1 arguments, borrowed from the call.
            let typ = unsafe { Borrowed::from_ptr(py, *args) }.to_owned();
            let val = (nargs >= 2)
                // SAFETY: as above.
                .then(|| unsafe { Borrowed::from_ptr(py, *args.add(1)) }.to_owned())
                .filter(|v| !v.is_none());
            let err = match val {
                Some(val) if typ.is_instance_of::<PyType>() => match typ.call1((val,)) {
                    Ok(e) => PyErr::from_value(e),
                    Err(e) => e,
                },
                _ => PyErr::from_value(typ),
            };
            raise(err)
        })
    })
}

/// `close()`: nothing to close.
unsafe extern "C" fn recorded_close(_slf: Obj, _unused: Obj) -> Obj {
    none()
}

/// Create the `Recorded` type and its one instance, and install the
/// Recorder's record methods. Called once, at module init.
pub(crate) fn install_recorder(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let methods: &'static mut [ffi::PyMethodDef; 4] = Box::leak(Box::new([
        ffi::PyMethodDef {
            ml_name: c"send".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: recorded_send,
            },
            ml_flags: ffi::METH_O,
            ml_doc: c"send($self, value, /)\n--\n\nFinished: raises StopIteration.".as_ptr(),
        },
        ffi::PyMethodDef {
            ml_name: c"throw".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFast: recorded_throw,
            },
            ml_flags: ffi::METH_FASTCALL,
            ml_doc: c"throw($self, typ, val=None, tb=None, /)\n--\n\nFinished: raises the exception thrown in."
                .as_ptr(),
        },
        ffi::PyMethodDef {
            ml_name: c"close".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: recorded_close,
            },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"close($self, /)\n--\n\nNothing to close.".as_ptr(),
        },
        ffi::PyMethodDef::zeroed(),
    ]));
    type SendFunc = unsafe extern "C" fn(Obj, Obj, *mut Obj) -> ffi::PySendResult;
    let slots: &'static mut [ffi::PyType_Slot; 7] = Box::leak(Box::new([
        ffi::PyType_Slot {
            slot: ffi::Py_am_await,
            pfunc: recorded_self as ffi::unaryfunc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_am_send,
            pfunc: recorded_am_send as SendFunc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_iter,
            pfunc: recorded_self as ffi::getiterfunc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_iternext,
            pfunc: recorded_next as ffi::iternextfunc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_methods,
            pfunc: methods.as_mut_ptr().cast::<c_void>(),
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_doc,
            pfunc: c"The awaitable the plugin's record methods return: already done; awaiting it returns None. \
                     It also answers the coroutine protocol (send, throw, close), so asyncio.create_task and \
                     asyncio.gather accept it."
                .as_ptr() as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: 0,
            pfunc: ptr::null_mut(),
        },
    ]));
    let spec: &'static mut ffi::PyType_Spec = Box::leak(Box::new(ffi::PyType_Spec {
        name: c"ringmetrics._native.Recorded".as_ptr(),
        basicsize: 0,
        itemsize: 0,
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION) as _,
        slots: slots.as_mut_ptr(),
    }));
    // SAFETY: the spec, its slots and methods live forever (leaked).
    let ty = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(spec))? };
    // SAFETY: `ty` is a heap type object made just above.
    let instance = unsafe { ffi::PyType_GenericAlloc(ty.as_ptr().cast::<ffi::PyTypeObject>(), 0) };
    if instance.is_null() {
        return Err(PyErr::fetch(py));
    }
    // The reference from GenericAlloc is kept for the life of the process.
    RECORDED.store(instance, Ordering::Relaxed);
    m.add("Recorded", ty)?;

    m.add_class::<Recorder>()?;
    let recorder = py.get_type::<Recorder>();
    for def in [
        fastcall(
            c"increment_counter",
            recorder_increment_counter,
            c"increment_counter($self, metric_key, value, *, unit='count')\n--\n\n\
              Increment a counter (Chancy's signature). Records at once, never raises on bad input; \
              returns an awaitable that is already done.",
        ),
        fastcall(
            c"record_gauge",
            recorder_record_gauge,
            c"record_gauge($self, metric_key, value, *, unit='number')\n--\n\n\
              Record a gauge (Chancy's signature). Records at once, never raises on bad input; \
              returns an awaitable that is already done.",
        ),
        fastcall(
            c"record_histogram_value",
            recorder_record_histogram_value,
            c"record_histogram_value($self, metric_key, value, *, unit='number')\n--\n\n\
              Record a histogram observation (Chancy's signature). Records at once, never raises on bad \
              input; returns an awaitable that is already done.",
        ),
    ] {
        install(&recorder, def)?;
    }
    Ok(())
}
