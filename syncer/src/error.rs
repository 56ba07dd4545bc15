//! The syncer's error type.

use std::fmt;

/// Why a syncer call failed. Messages never contain the DSN's password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncError {
    /// The configuration is unusable (bad DSN syntax, bad prefix, ...).
    InvalidConfig(String),
    /// PostgreSQL refused or the connection failed.
    Database(String),
    /// `{prefix}schema_version` holds another version for `metrics`.
    SchemaVersion {
        /// The version found.
        found: i32,
        /// The version this syncer writes (2: Chancy 0.26, 1: Chancy 0.25).
        expected: i32,
    },
    /// No reply within the timeout (the work goes on in the background).
    Timeout,
    /// The syncer thread has stopped.
    Stopped,
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::InvalidConfig(m) => write!(f, "invalid syncer configuration: {m}"),
            SyncError::Database(m) => write!(f, "database error: {m}"),
            SyncError::SchemaVersion { found: 1, expected: 2 } => f.write_str(
                "the metrics tables are at schema version 1 (Chancy 0.25's layout), this syncer writes version 2 \
                 (Chancy 0.26): run Chancy 0.26's migrations (`await chancy.migrate()`, which drops the version-1 \
                 table) or configure the syncer for schema 1",
            ),
            SyncError::SchemaVersion { found: 2, expected: 1 } => f.write_str(
                "the metrics tables are at schema version 2 (Chancy 0.26's layout), this syncer writes version 1 \
                 (Chancy 0.25): Chancy 0.25 cannot use a database migrated by Chancy 0.26; use Chancy 0.26 (schema \
                 2) or another database or prefix",
            ),
            SyncError::SchemaVersion { found, expected } => write!(
                f,
                "the metrics tables are at schema version {found}, this syncer writes version {expected}: \
                 run the migrations of the matching Chancy release (`await chancy.migrate()`)"
            ),
            SyncError::Timeout => f.write_str("timed out waiting for the syncer"),
            SyncError::Stopped => f.write_str("the syncer has stopped"),
        }
    }
}

impl std::error::Error for SyncError {}

/// A database error as text, with `secret` (the password) scrubbed.
pub(crate) fn db(e: &postgres::Error, secret: Option<&str>) -> SyncError {
    let mut msg = match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    };
    if let Some(s) = secret.filter(|s| !s.is_empty()) {
        msg = msg.replace(s, "***");
    }
    SyncError::Database(msg)
}
