//! What the syncer needs to know.

use std::str::FromStr;
use std::time::Duration;

use crate::error::SyncError;

/// Syncer settings. `SyncerConfig::new(dsn)` gives Chancy's defaults.
#[derive(Clone)]
pub struct SyncerConfig {
    /// libpq `key=value` string or `postgresql://` URL.
    pub dsn: String,
    /// Table prefix (Chancy's `prefix`), default `"chancy_"`: letters,
    /// digits and `_`, at most 40 characters.
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
}

impl std::fmt::Debug for SyncerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncerConfig")
            .field("dsn", &redact(&self.dsn))
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
            .finish()
    }
}

impl SyncerConfig {
    /// Defaults for `dsn`.
    pub fn new(dsn: impl Into<String>) -> Self {
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
        }
    }

    /// Where a syncer with this configuration writes: a writer's memory of
    /// what it saved is reused only by a later writer to the same place.
    pub(crate) fn target(&self) -> String {
        format!("{}\0{}", self.dsn, self.prefix)
    }

    /// Check everything that can be checked without connecting; returns the
    /// parsed connection settings.
    pub(crate) fn validate(&self) -> Result<postgres::Config, SyncError> {
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
        pg_config(&self.dsn)
    }
}

/// Parse a DSN, with ringmetrics' connection defaults.
pub(crate) fn pg_config(dsn: &str) -> Result<postgres::Config, SyncError> {
    let mut c = postgres::Config::from_str(dsn)
        .map_err(|e| SyncError::InvalidConfig(format!("cannot parse the DSN {}: {e}", redact(dsn))))?;
    if c.get_application_name().is_none() {
        c.application_name("ringmetrics-syncer");
    }
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    c.keepalives_idle(Duration::from_secs(30));
    Ok(c)
}

/// The password of a parsed DSN, to scrub from messages.
pub(crate) fn password(c: &postgres::Config) -> Option<String> {
    c.get_password().map(|p| String::from_utf8_lossy(p).into_owned())
}

/// Letters, digits and `_`, at most 40 characters (quoted anyway).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), SyncError> {
    if prefix.len() > 40 || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(SyncError::InvalidConfig(format!(
            "table prefix {prefix:?} must be at most 40 letters, digits or underscores"
        )));
    }
    Ok(())
}

/// `"{prefix}{name}"` quoted as an identifier.
pub(crate) fn ident(prefix: &str, name: &str) -> String {
    format!("\"{}{}\"", prefix.replace('"', "\"\""), name)
}

/// The DSN with any password replaced by `***`.
pub(crate) fn redact(dsn: &str) -> String {
    if let Some(rest) = dsn
        .strip_prefix("postgres://")
        .or_else(|| dsn.strip_prefix("postgresql://"))
    {
        let scheme = &dsn[..dsn.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let (userinfo, host) = rest.split_at(at);
            if let Some(colon) = userinfo.find(':') {
                return format!("{scheme}{}:***{host}", &userinfo[..colon]);
            }
        }
        return dsn.to_owned();
    }
    dsn.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
