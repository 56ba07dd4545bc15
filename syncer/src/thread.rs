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
use crate::schema_v1::{self, Schema};
use crate::source::Source;
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
    /// Series held back because the database stores their key with another
    /// type or unit (kept in memory, checked again on every flush).
    pub conflicts_dropped: u64,
    /// The last warning: a conflicting stored definition (also logged
    /// through the `log` crate, at most once a minute).
    pub last_warning: Option<String>,
    /// The thread is alive.
    pub running: bool,
}

type Reply = Sender<Result<FlushReport, SyncError>>;

enum Command {
    Flush(Reply),
    /// Add an aggregator (its session already claimed).
    Attach(Source),
    /// Final flush of one aggregator, then forget it (on success only).
    Detach(Arc<Aggregator>, Reply),
    Shutdown(Reply),
}

/// A background thread writing aggregators into Chancy's tables.
///
/// Each attached aggregator is written under its own session id (the
/// aggregator's for life, see [`ringmetrics::Session`]) and worker id, all
/// of them through one connection and, per flush, one transaction per
/// 5,000 chunk rows.
///
/// Dropping it asks for a final flush and waits for it at most 10 seconds
/// (the thread finishes on its own after that); use [`Syncer::stop`] to
/// choose the wait and see the result.
pub struct Syncer {
    /// `None` once stopping began (every later call fails `Stopped`).
    commands: Mutex<Option<Sender<Command>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
    /// Once [`Syncer::stop`] asked: where the final flush's result arrives,
    /// and that result once it has.
    stopping: Mutex<
        Option<(
            Receiver<Result<FlushReport, SyncError>>,
            Option<Result<FlushReport, SyncError>>,
        )>,
    >,
    status: Arc<Mutex<SyncStatus>>,
    session_id: uuid::Uuid,
    worker_id: String,
    /// The process that started the thread: in a forked child the thread
    /// does not exist, so every call fails at once.
    pid: u32,
    /// Where it writes (see `SyncerConfig::target`).
    target: String,
    /// Session ids of the attached aggregators: one aggregator per session
    /// (two would write the same rows).
    sessions: Mutex<std::collections::HashSet<uuid::Uuid>>,
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
    /// Validate `config`, attach `aggregator` (under `config.worker_id`
    /// and `config.session_id`) and start the thread `ringmetrics-syncer`.
    /// The database need not be up: the thread connects when it first
    /// flushes and keeps retrying.
    ///
    /// Fails if the aggregator already has a running syncer, if its data is
    /// already saved under another session id than `config.session_id`, or
    /// in a forked child of the process that created it.
    pub fn start(aggregator: Arc<Aggregator>, config: SyncerConfig) -> Result<Syncer, SyncError> {
        let source = Source::attach(aggregator, config.target(), config.worker_id.clone(), config.session_id)?;
        let mut syncer = Syncer::spawn(config)?;
        syncer.session_id = source.session_id;
        syncer.sessions.lock().insert(source.session_id);
        syncer.send(Command::Attach(source))?;
        Ok(syncer)
    }

    /// Validate `config` and start the thread with no aggregator attached
    /// (`config.worker_id` and `config.session_id` are unused): add them
    /// with [`Syncer::attach`].
    pub fn spawn(config: SyncerConfig) -> Result<Syncer, SyncError> {
        let pg = config.validate()?;
        let (tx, rx) = unbounded();
        let status = Arc::new(Mutex::new(SyncStatus {
            running: true,
            ..SyncStatus::default()
        }));
        let worker_id = config.worker_id.clone();
        let target = config.target();
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
                let mut state = State::new(config, pg, thread_status);
                state.run(rx);
            })
            .map_err(|e| SyncError::InvalidConfig(format!("cannot start the syncer thread: {e}")))?;
        Ok(Syncer {
            commands: Mutex::new(Some(tx)),
            handle: Mutex::new(Some(handle)),
            stopping: Mutex::new(None),
            status,
            session_id: uuid::Uuid::nil(),
            worker_id,
            pid: std::process::id(),
            target,
            sessions: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Write `aggregator` too, under `worker_id` and its session (fixed to
    /// `session_id` if it has none yet; a fresh uuid4 when `None`). Returns
    /// the session id. Fails as [`Syncer::start`] does.
    pub fn attach(
        &self,
        aggregator: Arc<Aggregator>,
        worker_id: impl Into<String>,
        session_id: Option<uuid::Uuid>,
    ) -> Result<uuid::Uuid, SyncError> {
        self.check_process()?;
        if let Some(wanted) = session_id
            && self.sessions.lock().contains(&wanted)
        {
            return Err(SyncError::InvalidConfig(format!(
                "session {wanted} is already written by another aggregator of this syncer"
            )));
        }
        let source = Source::attach(aggregator, self.target.clone(), worker_id.into(), session_id)?;
        let id = source.session_id;
        if !self.sessions.lock().insert(id) {
            // Another aggregator adopted the same id: give this one back.
            drop(source);
            return Err(SyncError::InvalidConfig(format!(
                "session {id} is already written by another aggregator of this syncer"
            )));
        }
        self.send(Command::Attach(source))?;
        Ok(id)
    }

    /// Write what `aggregator` still holds unsaved, then stop writing it
    /// (its session can then be taken by another syncer). On failure or
    /// timeout it stays attached, its data pending. Detaching an aggregator
    /// that is not attached is a successful no-op.
    pub fn detach(&self, aggregator: &Arc<Aggregator>, timeout: Duration) -> Result<FlushReport, SyncError> {
        let agg = aggregator.clone();
        let report = self.ask(move |reply| Command::Detach(agg, reply), timeout)?;
        if let Some(id) = aggregator.session().id() {
            self.sessions.lock().remove(&uuid::Uuid::from_u128(id));
        }
        Ok(report)
    }

    fn check_process(&self) -> Result<(), SyncError> {
        if std::process::id() == self.pid {
            Ok(())
        } else {
            Err(SyncError::InvalidConfig(format!(
                "this syncer belongs to process {}: its thread does not exist after fork(); start a new syncer \
                 on a new aggregator in the child",
                self.pid
            )))
        }
    }

    fn send(&self, command: Command) -> Result<(), SyncError> {
        self.check_process()?;
        let commands = self.commands.lock().clone().ok_or(SyncError::Stopped)?;
        commands.send(command).map_err(|_| SyncError::Stopped)
    }

    /// Write every changed chunk now and wait for the result, at most
    /// `timeout` (after which the flush still completes in the background).
    pub fn flush(&self, timeout: Duration) -> Result<FlushReport, SyncError> {
        self.ask(Command::Flush, timeout)
    }

    fn ask(&self, make: impl FnOnce(Reply) -> Command, timeout: Duration) -> Result<FlushReport, SyncError> {
        let (reply, answer) = bounded(1);
        self.send(make(reply))?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(SyncError::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(SyncError::Stopped),
        }
    }

    /// A copy of the current status. Never waits on a flush. In a forked
    /// child it reports the syncer as not running.
    pub fn status(&self) -> SyncStatus {
        let mut status = self.status.lock().clone();
        if self.check_process().is_err() {
            status.running = false;
        }
        status
    }

    /// The session id of the aggregator given to [`Syncer::start`] (nil
    /// for [`Syncer::spawn`]).
    pub fn session_id(&self) -> uuid::Uuid {
        self.session_id
    }

    /// The worker id of the aggregator given to [`Syncer::start`].
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Final flush, then join the thread. Waits at most `timeout` for the
    /// flush: on `Timeout` the thread goes on to finish it, and a later
    /// `stop` waits again; once it is done, every `stop` returns its result.
    /// The syncer takes no other command once stopping began. Takes
    /// `&self`, so a syncer shared through an `Arc` can be stopped while
    /// calls elsewhere wait on it.
    pub fn stop(&self, timeout: Duration) -> Result<FlushReport, SyncError> {
        if let Err(e) = self.check_process() {
            // The thread is the parent's: nothing to join here.
            self.commands.lock().take();
            if let Some(handle) = self.handle.lock().take() {
                std::mem::forget(handle);
            }
            return Err(e);
        }
        let answer = {
            let mut stopping = self.stopping.lock();
            if stopping.is_none() {
                let (reply, answer) = bounded(1);
                let sent = self
                    .commands
                    .lock()
                    .take()
                    .is_some_and(|c| c.send(Command::Shutdown(reply)).is_ok());
                if !sent {
                    return Err(SyncError::Stopped);
                }
                *stopping = Some((answer, None));
            }
            let (answer, result) = stopping.as_ref().expect("set above");
            if let Some(result) = result {
                return result.clone();
            }
            answer.clone()
        };
        let result = match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Err(SyncError::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(SyncError::Stopped),
        };
        if let Some((_, done)) = self.stopping.lock().as_mut() {
            *done = Some(result.clone());
        }
        // The thread only has cleanup left; a panic there is already
        // reported in the status, so it is not re-raised.
        let _ = self.handle.lock().take().map(JoinHandle::join);
        result
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if self.handle.get_mut().is_some() {
            let _ = self.stop(Duration::from_secs(10));
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
    /// The tables were found (or created) at version 2; checked once per
    /// syncer, again only after a write finds a table missing.
    schema_checked: bool,
    writer: Writer,
    status: Arc<Mutex<SyncStatus>>,
}

impl State {
    fn new(config: SyncerConfig, pg: Connector, status: Arc<Mutex<SyncStatus>>) -> Self {
        // Schema 1 keeps buckets by count, not age: nothing is too old.
        let retention = match config.schema {
            Schema::V2 => config.retention_secs,
            Schema::V1 { .. } => [1 << 50; 4],
        };
        let mut writer = Writer::new(config.prefix.clone(), pg.secret(), pg.timeouts(), retention);
        writer.schema = config.schema;
        State {
            config,
            pg,
            client: None,
            schema_checked: false,
            writer,
            status,
        }
    }

    /// Flush every `interval` (when `periodic`); after `k` failures in a
    /// row, retry after `min(interval, 1 s) * 2^(k-1)`, capped at
    /// `max_backoff`.
    fn run(&mut self, commands: Receiver<Command>) {
        let mut delay = self.config.interval;
        let mut failures = 0u32;
        loop {
            let tick = if self.config.periodic {
                after(delay)
            } else {
                crossbeam_channel::never()
            };
            select! {
                recv(commands) -> command => match command {
                    Ok(Command::Flush(reply)) => {
                        let _ = reply.send(self.flush());
                    }
                    Ok(Command::Attach(source)) => self.writer.sources.push(source),
                    Ok(Command::Detach(agg, reply)) => {
                        let _ = reply.send(self.detach(&agg));
                    }
                    Ok(Command::Shutdown(reply)) => {
                        let result = self.flush();
                        // Give the sessions back before answering, so the
                        // caller can attach them to a new syncer at once.
                        self.writer.sources.clear();
                        let _ = reply.send(result);
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

    fn detach(&mut self, agg: &Arc<Aggregator>) -> Result<FlushReport, SyncError> {
        let Some(i) = self.writer.sources.iter().position(|s| Arc::ptr_eq(&s.agg, agg)) else {
            return Ok(FlushReport::default());
        };
        let report = self.flush()?;
        // Saved up to the flush's read; anything recorded since is the
        // caller's to lose (it asked to stop writing this aggregator).
        self.writer.sources.swap_remove(i);
        Ok(report)
    }

    /// Connect (or reuse the held connection) and write what was
    /// collected, adding what commits to `report`.
    fn write(&mut self, report: &mut FlushReport) -> Result<(), SyncError> {
        self.connect()?;
        let client = self.client.as_mut().expect("connected");
        self.writer.write(client, report)
    }

    fn connect(&mut self) -> Result<&mut Client, SyncError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let client = connect_bounded(&self.pg)?;
            self.client = Some(client);
        }
        let client = self.client.as_mut().expect("connected above");
        if !self.schema_checked {
            match self.config.schema {
                Schema::V2 => schema::ensure(client, &self.config.prefix, self.config.create_schema, &self.pg)?,
                Schema::V1 { .. } => {
                    schema_v1::ensure(client, &self.config.prefix, self.config.create_schema, &self.pg)?
                }
            }
            self.schema_checked = true;
        }
        Ok(client)
    }

    fn flush(&mut self) -> Result<FlushReport, SyncError> {
        let (series, chunks) = self.writer.collect();
        // Nothing to write: no connection, no transaction.
        // What committed, also when a later batch failed.
        let mut report = FlushReport::default();
        let result = if !self.writer.has_rows() {
            self.writer.write_nothing()
        } else {
            let held = self.client.as_ref().is_some_and(|c| !c.is_closed());
            let mut result = self.write(&mut report);
            // A held connection the server closed while it sat idle (a
            // restart, pg_terminate_backend, idle_session_timeout, a
            // pooler's or a NAT's idle timeout) shows it only when the
            // flush uses it: try once more on a fresh connection. Safe
            // whatever the failed attempt did: what is pending is absolute
            // and the upsert merges it idempotently. The client may not
            // have seen the socket close yet when the server's last words
            // (57P01, 57P05) come back as the statement's error: an empty
            // round trip tells (only after a failure, bounded by the
            // connect timeout). A live connection (a statement timeout, a
            // refused row) is not tried again.
            let probe = self.pg.timeouts().connect;
            if held
                && let Err(e) = &result
                && self
                    .client
                    .as_mut()
                    .is_some_and(|c| c.is_closed() || c.is_valid(probe).is_err())
            {
                log::info!("ringmetrics: the held connection was closed by the server ({e}); reconnecting");
                self.client = None;
                result = self.write(&mut report);
            }
            result
        };
        if !self.config.hold_connection {
            // Hold a connection only while writing: between flushes the
            // syncer costs the server no backend.
            self.client = None;
        }
        let mut status = self.status.lock();
        status.conflicts_dropped = self.writer.conflicts();
        if let Some(w) = self.writer.warning.take() {
            status.last_warning = Some(w);
        }
        status.rows_written += report.rows_written;
        match &result {
            Ok(()) => {
                status.last_success = Some(SystemTime::now());
                status.last_error = None;
                status.pending_series = 0;
                status.pending_chunks = 0;
                status.flushes += 1;
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
                // Tables dropped under us: check (and create) them again.
                if let SyncError::Database(m) = e
                    && m.starts_with("42P01")
                {
                    self.schema_checked = false;
                }
            }
        }
        result.map(|()| report)
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
