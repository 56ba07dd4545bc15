//! Chancy 0.25's metrics schema (version 1 of migrate key `metrics`):
//! which schema a syncer writes, and the version-1 table created when
//! missing, checked when present. Never drops or alters data.

use postgres::Client;

use crate::config::ident;
use crate::connect::Connector;
use crate::error::SyncError;

/// The schema version Chancy 0.25 uses.
pub(crate) const VERSION: i32 = 1;

/// Chancy 0.25's default `max_points` per resolution, finest first.
pub const V1_DEFAULT_MAX_POINTS: [usize; 4] = [60, 288, 168, 90];

/// Which metrics layout a syncer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    /// Chancy 0.26 (version 2): 12-bucket chunk rows per session.
    #[default]
    V2,
    /// Chancy 0.25 (version 1): one row per (key, resolution, worker id)
    /// with newest-first arrays of at most `max_points` buckets per
    /// resolution (finest first; Chancy 0.25's `max_points`).
    ///
    /// 0.25 has no sessions: the row of a worker id is that worker's, so
    /// two aggregators written under one worker id (in one process or
    /// two) must never both write it. Give every worker its own id, as
    /// Chancy's worker does.
    V1 {
        /// Buckets kept per resolution, finest first (each at least 1).
        max_points: [usize; 4],
    },
}

impl Schema {
    /// Schema 1 with Chancy 0.25's default `max_points`.
    pub const fn v1() -> Schema {
        Schema::V1 {
            max_points: V1_DEFAULT_MAX_POINTS,
        }
    }

    /// The migrate version (`{prefix}schema_version`) of this layout.
    pub const fn version(self) -> i32 {
        match self {
            Schema::V2 => crate::schema::VERSION,
            Schema::V1 { .. } => VERSION,
        }
    }

    pub(crate) fn validate(self) -> Result<(), SyncError> {
        if let Schema::V1 { max_points } = self
            && max_points.iter().any(|m| *m == 0 || *m > i32::MAX as usize)
        {
            return Err(SyncError::InvalidConfig(format!(
                "schema 1 max_points must be between 1 and {} per resolution, got {max_points:?}",
                i32::MAX
            )));
        }
        Ok(())
    }
}

/// Make sure `{prefix}metrics` exists at version 1 (Chancy 0.25's
/// layout), creating it (with the version row) when missing and `create`
/// is set. A database at version 2 (migrated by Chancy 0.26) is refused.
/// Serialized across workers by the same advisory lock as version 2.
pub(crate) fn ensure(client: &mut Client, prefix: &str, create: bool, pg: &Connector) -> Result<(), SyncError> {
    crate::schema::ensure_version(
        client,
        prefix,
        create,
        pg,
        &crate::schema::Layout {
            version: VERSION,
            create_sql,
            untagged: |prefix| {
                SyncError::InvalidConfig(format!(
                    "a table {} exists without a metrics version row: not Chancy's, left alone",
                    ident(prefix, "metrics")
                ))
            },
            migrate: "run Chancy 0.25's migrations (`await chancy.migrate()`)",
        },
    )
}

/// Chancy 0.25's DDL for `prefix` (chancy/migrate.py's version table and
/// metrics/migrations/v1.py) plus the `('metrics', 1)` version row. Fails
/// on a prefix with a NUL character.
pub fn schema_v1_sql(prefix: &str) -> Result<String, SyncError> {
    crate::config::validate_prefix(prefix)?;
    Ok(create_sql(prefix))
}

pub(crate) fn create_sql(prefix: &str) -> String {
    let versions = ident(prefix, "schema_version");
    let metrics = ident(prefix, "metrics");
    let index = ident(prefix, "metrics_updated_idx");
    format!(
        r#"
        CREATE TABLE IF NOT EXISTS {versions} (
            version_of VARCHAR(255) PRIMARY KEY,
            version INT
        );
        CREATE TABLE IF NOT EXISTS {metrics} (
            metric_key VARCHAR(255) NOT NULL,
            resolution VARCHAR(10) NOT NULL,
            worker_id VARCHAR(255) NOT NULL,
            timestamps TIMESTAMPTZ[] NOT NULL,
            values JSONB[] NOT NULL,
            metric_type VARCHAR(20) NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            metadata JSONB NOT NULL DEFAULT '{{}}',
            PRIMARY KEY (metric_key, resolution, worker_id)
        );
        CREATE INDEX IF NOT EXISTS {index} ON {metrics} (updated_at);
        INSERT INTO {versions} (version_of, version) VALUES ('metrics', {VERSION})
            ON CONFLICT (version_of) DO UPDATE SET version = EXCLUDED.version;
        "#
    )
}
