//! `ringmetrics._native`: the Python face of the aggregator and the syncer.
//!
//! Record calls borrow the key as `&str` straight from the Python string and
//! never release the GIL (they take nanoseconds); flush, stop, reads and
//! cleanup release it while they wait on PostgreSQL.

mod duration;
mod fast;
mod recorder;
mod syncer;
mod whole;

use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyMemoryError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt};
use ringmetrics::{Clock, Config, Kind, OverridableClock, Resolution};
use ringmetrics_postgres::{ReadQuery, SyncError};
use whole::Whole;

create_exception!(
    _native,
    StorageError,
    PyException,
    "A PostgreSQL failure while saving or reading metrics."
);

/// The one error type of the bindings.
pub(crate) enum Error {
    Core(ringmetrics::Error),
    Sync(SyncError),
    Value(String),
}

impl From<ringmetrics::Error> for Error {
    fn from(e: ringmetrics::Error) -> Self {
        Error::Core(e)
    }
}

impl From<SyncError> for Error {
    fn from(e: SyncError) -> Self {
        Error::Sync(e)
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::Core(e @ ringmetrics::Error::AllocationFailed { .. }) => PyMemoryError::new_err(e.to_string()),
            Error::Core(e) => PyValueError::new_err(e.to_string()),
            Error::Value(m) => PyValueError::new_err(m),
            Error::Sync(SyncError::Timeout) => PyTimeoutError::new_err(SyncError::Timeout.to_string()),
            Error::Sync(e @ SyncError::InvalidConfig(_)) => PyValueError::new_err(e.to_string()),
            Error::Sync(e) => StorageError::new_err(e.to_string()),
        }
    }
}

const NANOS: f64 = 1e9;

fn secs_to_nanos(secs: f64) -> Result<i64, Error> {
    if !secs.is_finite() || secs.abs() > 9.2e9 {
        return Err(Error::Value(format!("timestamp {secs} s is out of range")));
    }
    Ok((secs * NANOS).round() as i64)
}

/// A value as Chancy accepts it: an int or float, not a bool.
#[inline]
fn number(value: &Bound<'_, PyAny>) -> Result<f64, Error> {
    if let Ok(f) = value.cast_exact::<PyFloat>() {
        return Ok(f.value());
    }
    // Exact ints that fit an i64 convert without the temporary float object
    // the generic path creates (bools are not exact ints: they go on below).
    if let Ok(i) = value.cast_exact::<PyInt>() {
        if let Ok(n) = i.extract::<i64>() {
            return Ok(n as f64);
        }
    }
    if value.is_instance_of::<PyBool>() {
        return Err(Error::Value("metric values must be numbers, not bool".into()));
    }
    value
        .extract::<f64>()
        .map_err(|e| Error::Value(format!("metric value is not a finite number: {e}")))
}

fn kind_of(name: &str) -> Result<Kind, Error> {
    Kind::from_name(name).ok_or_else(|| Error::Value(format!("unknown metric kind {name:?}")))
}

fn resolution_of(name: &str) -> Result<Resolution, Error> {
    Resolution::from_name(name)
        .ok_or_else(|| Error::Value(format!("resolution must be 1min, 5min, 1hour or 1day, not {name:?}")))
}

/// A clock that stands still until moved (for tests and demos).
#[pyclass(module = "ringmetrics._native", frozen)]
struct ManualClock(ringmetrics::ManualClock);

#[pymethods]
impl ManualClock {
    #[new]
    fn new(start_seconds: f64) -> Result<Self, Error> {
        Ok(ManualClock(ringmetrics::ManualClock::new(secs_to_nanos(
            start_seconds,
        )?)))
    }

    /// Set the time, in seconds since the epoch.
    fn set(&self, seconds: f64) -> Result<(), Error> {
        self.0.set(secs_to_nanos(seconds)?);
        Ok(())
    }

    /// Move the time by `seconds` (negative goes back).
    fn advance(&self, seconds: f64) -> Result<(), Error> {
        self.0.advance(secs_to_nanos(seconds)?);
        Ok(())
    }

    /// The time, in seconds since the epoch.
    fn now(&self) -> f64 {
        self.0.now() as f64 / NANOS
    }
}

/// The lock-free, zero-allocation aggregator.
#[pyclass(module = "ringmetrics._native", frozen)]
pub(crate) struct Aggregator {
    pub(crate) inner: Arc<ringmetrics::Aggregator>,
    /// When built without a ManualClock: the system clock with an override.
    overridable: Option<OverridableClock>,
}

#[pymethods]
impl Aggregator {
    #[new]
    #[pyo3(signature = (capacity=Whole(4096), *, buckets=None, key_bytes=None, clock=None, max_future_seconds=Whole(60), unsaved_buckets=Whole(10000)))]
    // (spelled out: the defaults are `Whole`s, which Python cannot show)
    #[pyo3(
        text_signature = "(capacity=4096, *, buckets=None, key_bytes=None, clock=None, max_future_seconds=60, unsaved_buckets=10000)"
    )]
    fn new(
        capacity: Whole<usize>,
        buckets: Option<std::collections::HashMap<String, Whole<usize>>>,
        key_bytes: Option<Whole<usize>>,
        clock: Option<&Bound<'_, ManualClock>>,
        max_future_seconds: Whole<i64>,
        unsaved_buckets: Whole<usize>,
    ) -> Result<Self, Error> {
        let mut config = Config::with_capacity(capacity.0);
        config.spill = unsaved_buckets.0;
        if let Some(Whole(k)) = key_bytes {
            config.key_bytes = k;
        }
        config.max_future_secs = max_future_seconds.0;
        for (name, Whole(n)) in buckets.unwrap_or_default() {
            config.buckets[resolution_of(&name)?.index()] = n;
        }
        let (clock, overridable): (Arc<dyn Clock>, _) = match clock {
            Some(c) => (Arc::new(c.get().0.clone()), None),
            None => {
                let c = OverridableClock::new();
                (Arc::new(c.clone()), Some(c))
            }
        };
        Ok(Aggregator {
            inner: Arc::new(ringmetrics::Aggregator::with_clock(config, clock)?),
            overridable,
        })
    }

    /// Freeze this aggregator's clock at `seconds` (None: the system clock
    /// again). Only for aggregators built without a ManualClock.
    fn set_time_override(&self, seconds: Option<f64>) -> Result<(), Error> {
        let c = self
            .overridable
            .as_ref()
            .ok_or_else(|| Error::Value("this aggregator runs on a ManualClock: move that instead".into()))?;
        c.set(seconds.map(secs_to_nanos).transpose()?);
        Ok(())
    }

    /// The aggregator's time, in seconds since the epoch.
    fn now(&self) -> f64 {
        self.inner.now() as f64 / NANOS
    }

    // increment_counter, record_gauge and record_histogram(key, value,
    // unit=<default>) are hand-written entry points: see `fast`.

    /// Record into `key` of `kind` ("counter", "gauge", "histogram"),
    /// optionally at `at` seconds since the epoch. Raises ValueError.
    #[pyo3(signature = (kind, key, value, unit, at=None))]
    fn record(
        &self,
        kind: &str,
        key: &str,
        value: &Bound<'_, PyAny>,
        unit: &str,
        at: Option<f64>,
    ) -> Result<(), Error> {
        let kind = kind_of(kind)?;
        let v = number(value)?;
        match at {
            None => self.inner.record_key(kind, key, unit, v)?,
            Some(at) => self.inner.record_key_at(kind, key, unit, v, secs_to_nanos(at)?)?,
        }
        Ok(())
    }

    /// Like `record`, but never raises: returns None when stored, else the
    /// reason it was dropped (the drop is counted in `drops()`).
    #[pyo3(signature = (kind, key, value, unit, at=None))]
    fn try_record(
        &self,
        kind: &str,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        unit: &Bound<'_, PyAny>,
        at: Option<f64>,
    ) -> Option<String> {
        use ringmetrics::DropReason;
        // A refusal before the aggregator sees the record is counted under
        // the reason it breaks; the aggregator counts its own.
        let result = (|| -> Result<(), (Error, DropReason)> {
            let kind = kind_of(kind).map_err(|e| (e, DropReason::UnknownSeries))?;
            let key: &str = key
                .extract()
                .map_err(|_| (Error::Value("metric keys must be str".into()), DropReason::InvalidKey))?;
            let unit: &str = unit
                .extract()
                .map_err(|_| (Error::Value("metric units must be str".into()), DropReason::InvalidUnit))?;
            let v = number(value).map_err(|e| (e, DropReason::NonFiniteValue))?;
            let at = at
                .map(secs_to_nanos)
                .transpose()
                .map_err(|e| (e, DropReason::InvalidTimestamp))?;
            match at {
                None => self.inner.record_key(kind, key, unit, v),
                Some(at) => self.inner.record_key_at(kind, key, unit, v, at),
            }
            .map_err(|e| (Error::Core(e), DropReason::UnknownSeries))
        })();
        match result {
            Ok(()) => None,
            Err((Error::Core(e), _)) => Some(e.to_string()),
            Err((Error::Value(m), reason)) => {
                self.inner.count_refused(reason);
                Some(m)
            }
            Err((Error::Sync(e), _)) => Some(e.to_string()),
        }
    }

    /// A handle for repeated recording into `key` without a lookup.
    #[pyo3(signature = (kind, key, unit=None))]
    fn handle(&self, kind: &str, key: &str, unit: Option<&str>) -> Result<Handle, Error> {
        let kind = kind_of(kind)?;
        let series = self.inner.register(kind, key, unit.unwrap_or(kind.default_unit()))?;
        Ok(Handle {
            agg: self.inner.clone(),
            series,
        })
    }

    /// Buckets of `key` at `resolution` starting in [start, end) (seconds),
    /// oldest first: (start, count, sum, min, max, last, sampled_at).
    #[pyo3(signature = (key, resolution="1min", start=None, end=None))]
    fn snapshot(
        &self,
        key: &str,
        resolution: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<(i64, u64, f64, f64, f64, f64, f64)>, Error> {
        let r = resolution_of(resolution)?;
        let Some(info) = self.inner.lookup(key) else {
            return Ok(Vec::new());
        };
        let series = self.inner.series(info.id).expect("registered");
        let buckets = self
            .inner
            .snapshot(series, r, start.unwrap_or(i64::MIN / 2), end.unwrap_or(i64::MAX / 2))?;
        Ok(buckets
            .into_iter()
            .map(|b| {
                (
                    b.start,
                    b.count,
                    b.sum,
                    b.min,
                    b.max,
                    b.last,
                    b.sampled_at as f64 / NANOS,
                )
            })
            .collect())
    }

    /// Registered keys with their kind and unit, in registration order.
    fn series(&self) -> Vec<(String, String, String)> {
        (0..self.inner.len() as u32)
            .filter_map(|i| self.inner.info(i))
            .map(|i| (i.key.to_owned(), i.kind.name().to_owned(), i.unit.to_owned()))
            .collect()
    }

    /// Drop counters: every refusal, by reason; and per resolution, records
    /// dropped as expired, stale or overflowing, and observations lost
    /// because their bucket left the ring unsaved with the unsaved-bucket
    /// buffer full.
    fn drops<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self.inner.drops();
        let out = PyDict::new(py);
        for r in ringmetrics::DropReason::ALL {
            out.set_item(r.name(), d.get(r))?;
        }
        for (name, per) in [
            ("expired", d.expired),
            ("stale", d.stale),
            ("resolution_overflow", d.overflow),
            ("unsaved", d.unsaved),
        ] {
            let inner = PyDict::new(py);
            for r in Resolution::ALL {
                inner.set_item(r.name(), per[r.index()])?;
            }
            out.set_item(name, inner)?;
        }
        Ok(out)
    }

    /// Number of registered series.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Bytes reserved per series at this configuration.
    fn bytes_per_series(&self) -> usize {
        self.inner.bytes_per_series()
    }

    /// From now on, keep each bucket that leaves its ring unsaved (up to
    /// `unsaved_buckets`) until a syncer saves it. Attaching a syncer does
    /// this; call it first when records may outlast a ring before then.
    fn start_saving(&self) {
        self.inner.start_saving();
    }

    /// Unsaved buckets that left their rings, waiting for a syncer.
    fn unsaved_len(&self) -> usize {
        self.inner.unsaved_len()
    }

    /// Start the Postgres syncer thread for this aggregator (a Syncer with
    /// this aggregator attached under `worker_id`). With `interval=None`
    /// it flushes only when asked. With `low_priority`, the syncer thread
    /// runs at the lowest priority (Linux SCHED_IDLE): the process's other
    /// threads, such as an event loop, run first; under CPU saturation
    /// flushes take longer. The timeouts are `Syncer`'s.
    #[pyo3(signature = (dsn, *, prefix="chancy_", worker_id="", session_id=None, interval=60.0, max_backoff=300.0, low_priority=false, hold_connection=false, retention_seconds=None, connect_timeout=None, statement_timeout=None, lock_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_syncer(
        slf: &Bound<'_, Self>,
        dsn: &str,
        prefix: &str,
        worker_id: &str,
        session_id: Option<&str>,
        interval: Option<f64>,
        max_backoff: f64,
        low_priority: bool,
        hold_connection: bool,
        retention_seconds: Option<[Whole<i64>; 4]>,
        connect_timeout: Option<f64>,
        statement_timeout: Option<f64>,
        lock_timeout: Option<f64>,
    ) -> Result<syncer::Syncer, Error> {
        let options = syncer::Options {
            prefix,
            interval,
            max_backoff,
            low_priority,
            hold_connection,
            retention_seconds: retention_seconds.map(|r| r.map(|Whole(s)| s)),
            timeouts: (connect_timeout, statement_timeout, lock_timeout),
            schema_v1_max_points: None,
            create_schema: true,
        };
        let s = syncer::Syncer::spawn(dsn, &options)?;
        s.attach_inner(&slf.get().inner, worker_id, session_id)?;
        Ok(s)
    }
}

/// A registered series, for recording without a key lookup.
#[pyclass(module = "ringmetrics._native", frozen)]
struct Handle {
    agg: Arc<ringmetrics::Aggregator>,
    series: ringmetrics::Series,
}

#[pymethods]
impl Handle {
    // record(value) is a hand-written entry point: see `fast`.

    /// Record `value` observed at `at` seconds since the epoch.
    fn record_at(&self, value: &Bound<'_, PyAny>, at: f64) -> Result<(), Error> {
        Ok(self.agg.record_at(self.series, number(value)?, secs_to_nanos(at)?)?)
    }

    /// The series' key.
    #[getter]
    fn key(&self) -> String {
        self.agg
            .info(self.series.id())
            .map(|i| i.key.to_owned())
            .unwrap_or_default()
    }

    /// The series' kind.
    #[getter]
    fn kind(&self) -> &'static str {
        self.series.kind().name()
    }
}

/// Read every worker's rows back with Chancy's merge rules:
/// {key: (kind, unit, [(start, count, sum, min, max, value, sampled_at)])}.
#[pyfunction]
#[pyo3(signature = (dsn, *, prefix="chancy_", metric_prefix=None, worker_id=None, resolution="5min", start, end))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn read_metrics(
    py: Python<'_>,
    dsn: &str,
    prefix: &str,
    metric_prefix: Option<String>,
    worker_id: Option<String>,
    resolution: &str,
    start: i64,
    end: i64,
) -> Result<Vec<(String, String, String, Vec<(i64, u64, f64, f64, f64, f64, f64)>)>, Error> {
    let q = ReadQuery {
        prefix: metric_prefix,
        worker_id,
        resolution: resolution_of(resolution)?,
        start_secs: start,
        end_secs: end,
    };
    let series = py.detach(|| ringmetrics_postgres::read_metrics(dsn, prefix, &q))?;
    Ok(series
        .into_iter()
        .map(|s| {
            let points = s
                .points
                .iter()
                .map(|p| {
                    (
                        p.start,
                        p.count,
                        p.sum,
                        p.min,
                        p.max,
                        p.value,
                        p.sampled_at_nanos as f64 / NANOS,
                    )
                })
                .collect();
            (s.key, s.kind.name().to_owned(), s.unit, points)
        })
        .collect())
}

/// Chancy's cleanup: delete expired chunks and orphan definitions.
#[pyfunction]
#[pyo3(signature = (dsn, *, prefix="chancy_", retention_seconds))]
fn cleanup(py: Python<'_>, dsn: &str, prefix: &str, retention_seconds: [Whole<i64>; 4]) -> Result<u64, Error> {
    let retention_seconds = retention_seconds.map(|Whole(s)| s);
    Ok(py.detach(|| ringmetrics_postgres::cleanup(dsn, prefix, retention_seconds))?)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The Rust crates' `log` records (the syncer's warnings: failed flushes,
    // conflicting definitions) go to Python's `logging`, under loggers named
    // after their modules (`ringmetrics_postgres.writer`, ...). Another
    // extension may have installed a Rust logger first; then theirs wins.
    let _ = pyo3_log::try_init();
    m.add_class::<Aggregator>()?;
    m.add_class::<ManualClock>()?;
    m.add_class::<Handle>()?;
    fast::install_record_methods(m.py())?;
    recorder::install_recorder(m)?;
    m.add_class::<syncer::Syncer>()?;
    m.add_class::<syncer::PendingFlush>()?;
    m.add_function(wrap_pyfunction!(read_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(cleanup, m)?)?;
    m.add_function(wrap_pyfunction!(syncer::_stop_all_syncers, m)?)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (m.getattr("_stop_all_syncers")?,))?;
    m.add("StorageError", m.py().get_type::<StorageError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
