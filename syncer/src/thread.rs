//! The syncer thread: one `postgres::Client`, created, used and dropped on
//! this thread alone, driven by one `select!` over a tick and a command
//! channel.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender, after, bounded, select, unbounded};
use parking_lot::Mutex;
use postgres::Client;
use ringmetrics::Aggregator;

use crate::config::SyncerConfig;
use crate::connect::Connector;
use crate::error::SyncError;
use crate::schema;
use crate::writer::Writer;

/// What one flush wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Chunk rows inserted or updated.
    pub rows_written: u64,
    /// Series with at least one row written.
    pub series_written: u64,
    /// New keys added to `{prefix}metric_definitions`.
    pub definitions_created: u64,
}

/// The syncer's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// When a flush last succeeded.
    pub last_success: Option<SystemTime>,
    /// The last failure's message (cleared by a success).
    pub last_error: Option<String>,
    /// Series with changes not yet saved (as of the last flush attempt).
    pub pending_series: u64,
    /// Chunk rows not yet saved (as of the last flush attempt).
    pub pending_chunks: u64,
    /// Successful flushes.
    pub flushes: u64,
    /// Failed flushes.
    pub failures: u64,
    /// Rows written since start.
    pub rows_written: u64,
    /// Series dropped because the database stores their key with another
    /// type or unit.
    pub conflicts_dropped: u64,
    /// The thread is alive.
    pub running: bool,
}

type Reply = Sender<Result<FlushReport, SyncError>>;

enum Command {
    Flush(Reply),
    Shutdown(Reply),
}

/// A background thread writing an aggregator into Chancy's tables.
///
/// Dropping it asks for a final flush and waits for it at most 10 seconds
/// (the thread finishes on its own after that); use [`Syncer::stop`] to
/// choose the wait and see the result.
pub struct Syncer {
    commands: Option<Sender<Command>>,
    handle: Option<JoinHandle<()>>,
    status: Arc<Mutex<SyncStatus>>,
    session_id: uuid::Uuid,
    worker_id: String,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("session_id", &self.session_id)
            .field("worker_id", &self.worker_id)
            .finish()
    }
}

impl Syncer {
    /// Validate `config` and start the thread `ringmetrics-syncer`. The
    /// database need not be up: the thread connects when it first flushes
    /// and keeps retrying.
    pub fn start(aggregator: Arc<Aggregator>, config: SyncerConfig) -> Result<Syncer, SyncError> {
        let pg = config.validate()?;
        let (tx, rx) = unbounded();
        let status = Arc::new(Mutex::new(SyncStatus {
            running: true,
            ..SyncStatus::default()
        }));
        let (session_id, worker_id) = (config.session_id, config.worker_id.clone());
        let thread_status = status.clone();
        let handle = std::thread::Builder::new()
            .name("ringmetrics-syncer".into())
            .spawn(move || {
                // Marks the syncer stopped however the thread ends, panics
                // included.
                struct Running(Arc<Mutex<SyncStatus>>);
                impl Drop for Running {
                    fn drop(&mut self) {
                        self.0.lock().running = false;
                    }
                }
                let _running = Running(thread_status.clone());
                if config.low_priority {
                    lower_priority();
                }
                let mut state = State::new(aggregator, config, pg, thread_status);
                state.run(rx);
            })
            .map_err(|e| SyncError::InvalidConfig(format!("cannot start the syncer thread: {e}")))?;
        Ok(Syncer {
            commands: Some(tx),
            handle: Some(handle),
            status,
            session_id,
            worker_id,
        })
    }

    /// Write every changed chunk now and wait for the result, at most
    /// `timeout` (after which the flush still completes in the background).
    pub fn flush(&self, timeout: Duration) -> Result<FlushReport, SyncError> {
        self.ask(Command::Flush, timeout)
    }

    fn ask(&self, make: impl FnOnce(Reply) -> Command, timeout: Duration) -> Result<FlushReport, SyncError> {
        let (reply, answer) = bounded(1);
        let commands = self.commands.as_ref().ok_or(SyncError::Stopped)?;
        commands.send(make(reply)).map_err(|_| SyncError::Stopped)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(SyncError::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(SyncError::Stopped),
        }
    }

    /// A copy of the current status.
    pub fn status(&self) -> SyncStatus {
        self.status.lock().clone()
    }

    /// The session id written in every row.
    pub fn session_id(&self) -> uuid::Uuid {
        self.session_id
    }

    /// The worker id written in every row.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Final flush, then join the thread. Waits at most `timeout` for the
    /// flush; if it is not done by then, the thread is left to finish alone.
    pub fn stop(mut self, timeout: Duration) -> Result<FlushReport, SyncError> {
        self.shutdown(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<FlushReport, SyncError> {
        let result = self.ask(Command::Shutdown, timeout);
        self.commands = None;
        if let Some(handle) = self.handle.take()
            && (result.is_ok() || handle.is_finished())
        {
            // The thread only has cleanup left; a panic there is already
            // reported in the status, so it is not re-raised.
            let _ = handle.join();
        }
        result
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if self.commands.is_some() {
            let _ = self.shutdown(Duration::from_secs(10));
        }
    }
}

/// Make the calling thread `SCHED_IDLE`: a waking thread of normal policy
/// preempts it at once, and its CPU counts as idle when a woken thread is
/// placed. Best effort: a refusal leaves the thread as it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        /// `struct sched_param` (<sched.h>).
        #[repr(C)]
        struct SchedParam {
            sched_priority: std::ffi::c_int,
        }
        /// `SCHED_IDLE` (<sched.h>, Linux).
        const SCHED_IDLE: std::ffi::c_int = 5;
        unsafe extern "C" {
            // The C library's wrapper (this crate does not depend on libc).
            fn sched_setscheduler(
                pid: std::ffi::c_int,
                policy: std::ffi::c_int,
                param: *const SchedParam,
            ) -> std::ffi::c_int;
        }
        let param = SchedParam { sched_priority: 0 };
        // SAFETY: the declaration matches <sched.h>; `param` is valid for the
        // call; pid 0 is the calling thread (Linux schedules threads).
        let rc = unsafe { sched_setscheduler(0, SCHED_IDLE, &param) };
        if rc != 0 {
            log::debug!(
                "ringmetrics: cannot lower the syncer thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Connect, bounding the whole handshake (see `connect.rs`).
pub(crate) fn connect_bounded(pg: &Connector) -> Result<Client, SyncError> {
    pg.connect()
}

/// How long to wait before the next flush after `failures` failed flushes
/// in a row: `interval` when none, else `min(interval, 1 s)` doubled per
/// further failure, capped at `max_backoff`.
pub(crate) fn backoff(interval: Duration, max_backoff: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let base = interval.min(Duration::from_secs(1));
    base.saturating_mul(1u32 << (failures - 1).min(30)).min(max_backoff)
}

/// Everything the thread owns.
struct State {
    config: SyncerConfig,
    pg: Connector,
    client: Option<Client>,
    schema_checked: bool,
    writer: Writer,
    status: Arc<Mutex<SyncStatus>>,
}

impl State {
    fn new(agg: Arc<Aggregator>, config: SyncerConfig, pg: Connector, status: Arc<Mutex<SyncStatus>>) -> Self {
        let secret = pg.secret();
        let writer = Writer::new(
            agg,
            config.prefix.clone(),
            config.worker_id.clone(),
            config.session_id,
            secret,
        );
        State {
            config,
            pg,
            client: None,
            schema_checked: false,
            writer,
            status,
        }
    }

    /// Flush every `interval`; after `k` failures in a row, retry after
    /// `min(interval, 1 s) * 2^(k-1)`, capped at `max_backoff`.
    fn run(&mut self, commands: Receiver<Command>) {
        let mut delay = self.config.interval;
        let mut failures = 0u32;
        loop {
            let tick = after(delay);
            select! {
                recv(commands) -> command => match command {
                    Ok(Command::Flush(reply)) => {
                        let _ = reply.send(self.flush());
                    }
                    Ok(Command::Shutdown(reply)) => {
                        let _ = reply.send(self.flush());
                        return;
                    }
                    Err(_) => {
                        // Every handle is gone: save what we have, then stop.
                        let _ = self.flush();
                        return;
                    }
                },
                recv(tick) -> _ => {
                    failures = match self.flush() {
                        Ok(_) => 0,
                        Err(_) => failures.saturating_add(1),
                    };
                    delay = backoff(self.config.interval, self.config.max_backoff, failures);
                }
            }
        }
    }

    fn connect(&mut self) -> Result<&mut Client, SyncError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let client = connect_bounded(&self.pg)?;
            self.client = Some(client);
            self.schema_checked = false;
        }
        let client = self.client.as_mut().expect("connected above");
        if !self.schema_checked {
            schema::ensure(client, &self.config.prefix, self.config.create_schema, &self.pg)?;
            self.schema_checked = true;
        }
        Ok(client)
    }

    fn flush(&mut self) -> Result<FlushReport, SyncError> {
        let (series, chunks) = self.writer.collect();
        let result = match self.connect() {
            Ok(_) => {
                let client = self.client.as_mut().expect("connected");
                self.writer.write(client)
            }
            Err(e) => Err(e),
        };
        let mut status = self.status.lock();
        status.conflicts_dropped = self.writer.conflicts();
        match &result {
            Ok(report) => {
                status.last_success = Some(SystemTime::now());
                status.last_error = None;
                status.pending_series = 0;
                status.pending_chunks = 0;
                status.flushes += 1;
                status.rows_written += report.rows_written;
            }
            Err(e) => {
                log::warn!("ringmetrics: metrics flush failed, will retry: {e}");
                status.last_error = Some(e.to_string());
                status.pending_series = series;
                status.pending_chunks = chunks;
                status.failures += 1;
                drop(status);
                // An unknown connection state is never reused.
                self.client = None;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_starts_small_doubles_and_caps() {
        let (i, max) = (Duration::from_secs(60), Duration::from_secs(300));
        assert_eq!(backoff(i, max, 0), i);
        assert_eq!(backoff(i, max, 1), Duration::from_secs(1));
        assert_eq!(backoff(i, max, 2), Duration::from_secs(2));
        assert_eq!(backoff(i, max, 9), Duration::from_secs(256));
        assert_eq!(backoff(i, max, 10), max);
        assert_eq!(backoff(i, max, u32::MAX), max);
        let fast = Duration::from_millis(200);
        assert_eq!(backoff(fast, max, 1), fast);
        assert_eq!(backoff(fast, max, 3), Duration::from_millis(800));
    }
}
