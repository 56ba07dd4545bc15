//! `Syncer`: the Postgres syncer thread, for one aggregator
//! (`Aggregator.start_syncer`) or several (`Syncer(...)` + `attach`), and
//! `PendingFlush`, a flush an event loop can wait on without a thread.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use ringmetrics_postgres::{FlushReport, SyncError, SyncStatus, SyncerConfig};

use crate::duration;
use crate::whole::Whole;
use crate::{Aggregator, Error};

/// Every live syncer of the process, so the interpreter's exit can stop them
/// while other threads can still take the GIL (during finalization a
/// syncer thread logging through Python's `logging` would wait for it).
static LIVE: Mutex<Vec<std::sync::Weak<ringmetrics_postgres::Syncer>>> = Mutex::new(Vec::new());

/// Registered with `atexit`: stop every live syncer (final flush, bounded
/// by its 10 s) with the GIL released.
#[pyfunction]
pub(crate) fn _stop_all_syncers(py: Python<'_>) {
    let live: Vec<_> = std::mem::take(&mut *LIVE.lock())
        .into_iter()
        .filter_map(|w| w.upgrade())
        .collect();
    py.detach(|| {
        for s in live {
            let _ = s.stop(Duration::from_secs(10));
        }
    });
}

/// How a syncer is set up (the keywords shared by `Syncer(...)` and
/// `Aggregator.start_syncer`).
pub(crate) struct Options<'a> {
    pub(crate) prefix: &'a str,
    /// `None`: flush only when asked.
    pub(crate) interval: Option<f64>,
    pub(crate) max_backoff: f64,
    pub(crate) low_priority: bool,
    pub(crate) hold_connection: bool,
    pub(crate) retention_seconds: Option<[i64; 4]>,
    /// `(connect, statement, lock)` timeouts in seconds; `None`: defaults.
    pub(crate) timeouts: (Option<f64>, Option<f64>, Option<f64>),
    /// `Some(max_points)`: write Chancy 0.25's schema 1.
    pub(crate) schema_v1_max_points: Option<[usize; 4]>,
    /// Create Chancy's tables when missing (else a clear error).
    pub(crate) create_schema: bool,
}

/// The background thread writing aggregators into Chancy's tables.
#[pyclass(module = "ringmetrics._native", frozen)]
pub(crate) struct Syncer {
    /// Shared with flushes in progress, so the lock is never held while one
    /// waits: `status()` (called on the event loop) never blocks on a flush.
    inner: Mutex<Option<Arc<ringmetrics_postgres::Syncer>>>,
    /// The session of the first aggregator attached.
    session_id: Mutex<Option<String>>,
}

impl Drop for Syncer {
    /// A syncer dropped without `stop()` still makes its final flush (the
    /// core's `Drop`, bounded): with the GIL released, so other Python
    /// threads run while it waits on PostgreSQL. In a forked child it
    /// returns at once (the thread is the parent's).
    fn drop(&mut self) {
        if let Some(syncer) = self.inner.get_mut().take() {
            Python::attach(|py| py.detach(move || drop(syncer)));
        }
    }
}

fn report<'py>(py: Python<'py>, r: FlushReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("rows_written", r.rows_written)?;
    d.set_item("series_written", r.series_written)?;
    d.set_item("definitions_created", r.definitions_created)?;
    Ok(d)
}

impl Syncer {
    pub(crate) fn spawn(dsn: &str, o: &Options<'_>) -> Result<Syncer, Error> {
        let mut config = SyncerConfig::new(dsn);
        config.prefix = o.prefix.into();
        match o.interval {
            Some(secs) => config.interval = duration::interval("interval", secs)?,
            None => config.periodic = false,
        }
        config.max_backoff = duration::interval("max_backoff", o.max_backoff)?;
        config.low_priority = o.low_priority;
        config.hold_connection = o.hold_connection;
        if let Some(r) = o.retention_seconds {
            config.retention_secs = r;
        }
        let (connect, statement, lock) = o.timeouts;
        if let Some(t) = connect {
            config.connect_timeout = duration::timeout(t)?;
        }
        if let Some(t) = statement {
            config.statement_timeout = duration::timeout(t)?;
        }
        if let Some(t) = lock {
            config.lock_timeout = duration::timeout(t)?;
        }
        config.create_schema = o.create_schema;
        if let Some(max_points) = o.schema_v1_max_points {
            config.schema = ringmetrics_postgres::Schema::V1 { max_points };
        }
        let syncer = Arc::new(ringmetrics_postgres::Syncer::spawn(config)?);
        {
            let mut live = LIVE.lock();
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&syncer));
        }
        Ok(Syncer {
            inner: Mutex::new(Some(syncer)),
            session_id: Mutex::new(None),
        })
    }

    pub(crate) fn attach_inner(
        &self,
        agg: &Arc<ringmetrics::Aggregator>,
        worker_id: &str,
        session_id: Option<&str>,
    ) -> Result<String, Error> {
        let wanted = session_id
            .map(|s| {
                s.parse::<uuid::Uuid>()
                    .map_err(|e| Error::Value(format!("session_id {s:?} is not a UUID: {e}")))
            })
            .transpose()?;
        let id = self.running()?.attach(agg.clone(), worker_id, wanted)?.to_string();
        self.session_id.lock().get_or_insert_with(|| id.clone());
        Ok(id)
    }

    /// Stop the syncer; flushes in progress elsewhere finish first. On
    /// timeout it is kept (stopping: a later stop waits again); once the
    /// final flush is done, later calls see it stopped.
    fn stop_inner(&self, timeout: Duration) -> Result<FlushReport, SyncError> {
        let Some(syncer) = self.inner.lock().clone() else {
            return Ok(FlushReport::default());
        };
        let result = syncer.stop(timeout);
        if !matches!(result, Err(SyncError::Timeout)) {
            self.inner.lock().take();
        }
        result
    }

    fn running(&self) -> Result<Arc<ringmetrics_postgres::Syncer>, SyncError> {
        self.inner.lock().clone().ok_or(SyncError::Stopped)
    }

    /// Run `work` on a helper thread; the PendingFlush signals when done.
    fn in_background(work: impl FnOnce() -> Result<FlushReport, SyncError> + Send + 'static) -> PyResult<PendingFlush> {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        let shared = Arc::new(Pending {
            reader,
            writer,
            result: Mutex::new(None),
        });
        let done = shared.clone();
        std::thread::Builder::new()
            .name("ringmetrics-flush".into())
            .spawn(move || done.finish(work()))
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start a flush thread: {e}")))?;
        Ok(PendingFlush(shared))
    }
}

#[pymethods]
impl Syncer {
    /// A syncer thread with no aggregator yet (`attach` adds them). With
    /// `interval=None` (the default) it flushes only when asked; with
    /// `hold_connection=False` (the default) it connects only to write and
    /// holds no connection between flushes. `retention_seconds` (finest
    /// resolution first) is Chancy's retention: expired chunks are never
    /// written. `connect_timeout` (default 10 s; the DSN's wins),
    /// `statement_timeout` (30 s) and `lock_timeout` (10 s) bound every
    /// connection attempt and every statement of the syncer (0: none).
    /// `schema_v1_max_points` (finest first): write Chancy 0.25's schema 1
    /// instead, keeping that many buckets per resolution (one row per key,
    /// resolution and worker id: never attach two aggregators under one
    /// worker id). `create_schema=False`: missing tables are an error
    /// (run Chancy's migrations) instead of being created.
    #[new]
    #[pyo3(signature = (dsn, *, prefix="chancy_", interval=None, max_backoff=300.0, low_priority=false, hold_connection=false, retention_seconds=None, connect_timeout=None, statement_timeout=None, lock_timeout=None, schema_v1_max_points=None, create_schema=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        dsn: &str,
        prefix: &str,
        interval: Option<f64>,
        max_backoff: f64,
        low_priority: bool,
        hold_connection: bool,
        retention_seconds: Option<[Whole<i64>; 4]>,
        connect_timeout: Option<f64>,
        statement_timeout: Option<f64>,
        lock_timeout: Option<f64>,
        schema_v1_max_points: Option<[Whole<usize>; 4]>,
        create_schema: bool,
    ) -> Result<Self, Error> {
        let options = Options {
            prefix,
            interval,
            max_backoff,
            low_priority,
            hold_connection,
            retention_seconds: retention_seconds.map(|r| r.map(|Whole(s)| s)),
            timeouts: (connect_timeout, statement_timeout, lock_timeout),
            schema_v1_max_points: schema_v1_max_points.map(|m| m.map(|Whole(n)| n)),
            create_schema,
        };
        Syncer::spawn(dsn, &options)
    }

    /// Write `aggregator` too, under `worker_id` and the aggregator's
    /// session (fixed to `session_id` if it has none yet). Returns the
    /// session id. ValueError if another syncer holds the aggregator, if
    /// its data is saved under another session, or in a forked child.
    #[pyo3(signature = (aggregator, worker_id="", session_id=None))]
    fn attach(
        &self,
        aggregator: &Bound<'_, Aggregator>,
        worker_id: &str,
        session_id: Option<&str>,
    ) -> Result<String, Error> {
        self.attach_inner(&aggregator.get().inner, worker_id, session_id)
    }

    /// Save what `aggregator` holds unsaved, then stop writing it. Waits
    /// (without the GIL) at most `timeout` seconds; on failure it stays
    /// attached, its data pending.
    #[pyo3(signature = (aggregator, timeout=30.0))]
    fn detach<'py>(
        &self,
        py: Python<'py>,
        aggregator: &Bound<'py, Aggregator>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let timeout = duration::timeout(timeout)?;
        let agg = aggregator.get().inner.clone();
        let result = py.detach(|| self.running()?.detach(&agg, timeout));
        report(py, result.map_err(Error::from)?)
    }

    /// `detach` on a helper thread; returns a PendingFlush at once.
    #[pyo3(signature = (aggregator, timeout=30.0))]
    fn detach_in_background(&self, aggregator: &Bound<'_, Aggregator>, timeout: f64) -> PyResult<PendingFlush> {
        let timeout = duration::timeout(timeout)?;
        let agg = aggregator.get().inner.clone();
        let syncer = self.running();
        Syncer::in_background(move || syncer?.detach(&agg, timeout))
    }

    /// Write every changed chunk now; waits (without the GIL) at most
    /// `timeout` seconds. Raises StorageError on failure (the data stays
    /// pending and is retried), TimeoutError on timeout.
    #[pyo3(signature = (timeout=30.0))]
    fn flush<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyDict>> {
        let timeout = duration::timeout(timeout)?;
        let result = py.detach(|| self.running()?.flush(timeout));
        report(py, result.map_err(Error::from)?)
    }

    /// Start `flush(timeout)` on a helper thread and return at once. The
    /// returned PendingFlush's `fileno()` becomes readable when it is done
    /// (for an event loop's `add_reader`); its `result()` then returns the
    /// report or raises as `flush` would. Nothing here waits or takes a
    /// Python thread.
    #[pyo3(signature = (timeout=30.0))]
    fn flush_in_background(&self, timeout: f64) -> PyResult<PendingFlush> {
        let timeout = duration::timeout(timeout)?;
        let syncer = self.running();
        Syncer::in_background(move || syncer?.flush(timeout))
    }

    /// Final flush and stop the thread (waits at most `timeout` seconds,
    /// including for flushes in progress elsewhere to finish).
    #[pyo3(signature = (timeout=30.0))]
    fn stop<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyDict>> {
        let timeout = duration::timeout(timeout)?;
        let result = py.detach(|| self.stop_inner(timeout));
        report(py, result.map_err(Error::from)?)
    }

    /// `stop` on a helper thread; returns a PendingFlush at once.
    #[pyo3(signature = (timeout=30.0))]
    fn stop_in_background(slf: Py<Self>, timeout: f64) -> PyResult<PendingFlush> {
        let timeout = duration::timeout(timeout)?;
        Syncer::in_background(move || slf.get().stop_inner(timeout))
    }

    /// The syncer's health as a dict.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s: SyncStatus = self.inner.lock().as_ref().map(|s| s.status()).unwrap_or_default();
        let d = PyDict::new(py);
        d.set_item(
            "last_success",
            s.last_success
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
        )?;
        d.set_item("last_error", s.last_error)?;
        d.set_item("pending_series", s.pending_series)?;
        d.set_item("pending_chunks", s.pending_chunks)?;
        d.set_item("flushes", s.flushes)?;
        d.set_item("failures", s.failures)?;
        d.set_item("rows_written", s.rows_written)?;
        d.set_item("conflicts_dropped", s.conflicts_dropped)?;
        d.set_item("running", s.running)?;
        Ok(d)
    }

    /// The session id of the first aggregator attached ("" before any).
    #[getter]
    fn session_id(&self) -> String {
        self.session_id.lock().clone().unwrap_or_default()
    }
}

/// What a background flush shares with its PendingFlush.
struct Pending {
    /// Readable once the flush is done (one byte is written to `writer`).
    /// Both ends live as long as either side, so the write never hits a
    /// closed socket.
    reader: std::os::unix::net::UnixStream,
    writer: std::os::unix::net::UnixStream,
    result: Mutex<Option<Result<FlushReport, SyncError>>>,
}

impl Pending {
    fn finish(&self, result: Result<FlushReport, SyncError>) {
        use std::io::Write;
        *self.result.lock() = Some(result);
        // A socket pair's buffer always has room for one byte.
        let _ = (&self.writer).write_all(&[1]);
    }
}

/// A flush running in the background (see `Syncer.flush_in_background`).
#[pyclass(module = "ringmetrics._native", frozen)]
pub(crate) struct PendingFlush(Arc<Pending>);

#[pymethods]
impl PendingFlush {
    /// A file descriptor that becomes readable when the flush is done.
    fn fileno(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.0.reader.as_raw_fd()
    }

    /// True once the flush is done.
    fn done(&self) -> bool {
        self.0.result.lock().is_some()
    }

    /// The flush's report; raises as `Syncer.flush` would, or RuntimeError
    /// if it is not done yet.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        match self.0.result.lock().clone() {
            None => Err(pyo3::exceptions::PyRuntimeError::new_err("the flush is still running")),
            Some(r) => report(py, r.map_err(Error::from)?),
        }
    }
}
