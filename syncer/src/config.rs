//! What the syncer needs to know.

use std::time::Duration;

use crate::connect::{Connector, Timeouts};
use crate::error::SyncError;
use crate::schema_v1::Schema;

/// Syncer settings. `SyncerConfig::new(dsn)` gives Chancy's defaults.
#[derive(Clone)]
pub struct SyncerConfig {
    /// A libpq connection string: `key=value` pairs or a `postgresql://`
    /// URI, completed from the service file, the `PG*` environment
    /// variables and the password file as libpq does (see
    /// [`Connector`](crate::Connector) for the keywords supported).
    pub dsn: String,
    /// Table prefix (Chancy's `prefix`), default `"chancy_"`: any string
    /// without a NUL character (table names are quoted identifiers, as
    /// Chancy builds them).
    pub prefix: String,
    /// The worker id stored in each row. Default `""`.
    pub worker_id: String,
    /// The session stored in each row. `None` (the default): the
    /// aggregator's own session, a fresh uuid4 the first time it is
    /// written, so a reused worker id never overwrites earlier history and
    /// a restarted syncer continues the same session. `Some(id)` fixes a new
    /// aggregator's session to `id`; an aggregator already saved under
    /// another id is refused.
    pub session_id: Option<uuid::Uuid>,
    /// How often to write changed chunks. Default 60 s.
    pub interval: Duration,
    /// Flush every `interval` by itself. Default true; false flushes only
    /// when asked ([`crate::Syncer::flush`], stop, detach), as Chancy's
    /// plugin does from its own loop.
    pub periodic: bool,
    /// Keep the connection open between flushes. Default false: the syncer
    /// connects for a flush that has rows to write and disconnects after
    /// it, so between flushes it holds no server backend (and no pooler
    /// slot). Reconnecting costs one handshake per flush.
    pub hold_connection: bool,
    /// Chancy's retention per resolution in seconds, finest first
    /// (`min(max_points * width, maximum_metric_age)`); chunks older than
    /// `cleanup` keeps are never written. Default Chancy's
    /// (1 hour, 1 day, 1 week, 90 days).
    pub retention_secs: [i64; 4],
    /// After failures, retries back off exponentially: the first retry
    /// waits `min(interval, 1 s)`, each further failure doubles the wait, up
    /// to this cap. A success goes back to `interval`. Default 300 s.
    pub max_backoff: Duration,
    /// Create Chancy's tables when missing. Default true.
    pub create_schema: bool,
    /// Run the syncer thread at the lowest priority (Linux `SCHED_IDLE`;
    /// elsewhere ignored), so that any other thread of the process waking
    /// up, such as an asyncio event loop, runs first. Under CPU saturation
    /// flushes then take longer. Default false.
    pub low_priority: bool,
    /// The bound on one connection attempt to one host, TCP, TLS and
    /// authentication together. The DSN's `connect_timeout` (seconds)
    /// overrides it. Default 10 s.
    pub connect_timeout: Duration,
    /// `statement_timeout` of the syncer's own statements (set with
    /// `SET LOCAL` in each transaction); zero: none. Default 30 s.
    pub statement_timeout: Duration,
    /// `lock_timeout` of the syncer's own statements (`SET LOCAL`); zero:
    /// none. Default 10 s.
    pub lock_timeout: Duration,
    /// The layout written: [`Schema::V2`] (Chancy 0.26, the default) or
    /// [`Schema::V1`] (Chancy 0.25's one row per key, resolution and
    /// worker id; `session_id` and `retention_secs` are then unused, 0.25
    /// keeps `max_points` buckets and its `cleanup` deletes whole rows).
    /// The tables found must be at the matching version.
    pub schema: Schema,
}

impl std::fmt::Debug for SyncerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The DSN is shown as parsed, with secrets hidden; a DSN that does
        // not parse is not shown at all (it could hold a password anywhere).
        let dsn: &dyn std::fmt::Debug = &match crate::dsn::resolve(&self.dsn, &crate::dsn::ProcessEnv) {
            Ok(options) => format!("{options:?}"),
            Err(_) => "<a connection string that does not parse>".to_owned(),
        };
        f.debug_struct("SyncerConfig")
            .field("dsn", dsn)
            .field("prefix", &self.prefix)
            .field("worker_id", &self.worker_id)
            .field("session_id", &self.session_id)
            .field("interval", &self.interval)
            .field("periodic", &self.periodic)
            .field("hold_connection", &self.hold_connection)
            .field("retention_secs", &self.retention_secs)
            .field("max_backoff", &self.max_backoff)
            .field("create_schema", &self.create_schema)
            .field("low_priority", &self.low_priority)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("schema", &self.schema)
            .finish()
    }
}

impl SyncerConfig {
    /// Defaults for `dsn`.
    pub fn new(dsn: impl Into<String>) -> Self {
        let t = Timeouts::default();
        SyncerConfig {
            dsn: dsn.into(),
            prefix: "chancy_".into(),
            worker_id: String::new(),
            session_id: None,
            interval: Duration::from_secs(60),
            periodic: true,
            hold_connection: false,
            retention_secs: crate::retention::DEFAULT_RETENTION_SECS,
            max_backoff: Duration::from_secs(300),
            create_schema: true,
            low_priority: false,
            connect_timeout: t.connect,
            statement_timeout: t.statement,
            lock_timeout: t.lock,
            schema: Schema::V2,
        }
    }

    /// The timeouts as configured here (before the DSN's
    /// `connect_timeout`).
    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            statement: self.statement_timeout,
            lock: self.lock_timeout,
        }
    }

    /// Where a syncer with this configuration writes: a writer's memory of
    /// what it saved is reused only by a later writer to the same place.
    pub(crate) fn target(&self) -> String {
        format!("{}\0{}", self.dsn, self.prefix)
    }

    /// Check everything that can be checked without connecting; returns the
    /// parsed connection settings.
    pub(crate) fn validate(&self) -> Result<Connector, SyncError> {
        validate_prefix(&self.prefix)?;
        if self.interval.is_zero() {
            return Err(SyncError::InvalidConfig("interval must be positive".into()));
        }
        if self.retention_secs.iter().any(|r| *r <= 0) {
            return Err(SyncError::InvalidConfig(format!(
                "retention_secs must be positive, got {:?}",
                self.retention_secs
            )));
        }
        if self.max_backoff.is_zero() {
            return Err(SyncError::InvalidConfig("max_backoff must be positive".into()));
        }
        self.schema.validate()?;
        if self.connect_timeout.is_zero() {
            return Err(SyncError::InvalidConfig("connect_timeout must be positive".into()));
        }
        Connector::new(&self.dsn, self.timeouts())
    }
}

/// Any prefix Chancy accepts: Chancy quotes `f"{prefix}metrics"` as an
/// identifier and checks nothing, so only what PostgreSQL refuses in any
/// identifier (a NUL character) is refused here.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), SyncError> {
    if prefix.contains('\0') {
        return Err(SyncError::InvalidConfig(
            "the table prefix contains a NUL character, which PostgreSQL identifiers cannot hold".into(),
        ));
    }
    Ok(())
}

/// `"{prefix}{name}"` quoted as an identifier (every `"` doubled).
pub(crate) fn ident(prefix: &str, name: &str) -> String {
    format!("\"{}\"", format!("{prefix}{name}").replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_quoted_identifiers() {
        assert_eq!(ident("chancy_", "metrics"), "\"chancy_metrics\"");
        assert_eq!(ident("a\"b; DROP ", "metrics"), "\"a\"\"b; DROP metrics\"");
        assert!(validate_prefix("").is_ok() && validate_prefix("Été-1 \"x\"").is_ok());
        assert!(validate_prefix("a\0b").is_err());
    }

    #[test]
    fn debug_never_shows_a_password() {
        for dsn in [
            "host=h password=hunter2",
            "host=h password = 'hunter 2'",
            "postgresql://u:hunter2@h/db",
            "postgresql://u@h/db?password=hunter2",
            "host=h password=hunter 2",
            "host=h password='hunter2",
        ] {
            let c = SyncerConfig::new(dsn);
            let shown = format!("{c:?}");
            assert!(!shown.contains("hunter"), "{dsn}: {shown}");
        }
    }
}
