//! Chancy 0.26's metrics schema (version 2 of migrate key `metrics`),
//! created when missing, checked when present. Never drops or alters data.

use postgres::Client;
use postgres::types::Type;

use crate::config::ident;
use crate::connect::{Connector, begin};
use crate::error::{SyncError, db};

/// The schema version ringmetrics writes.
pub(crate) const VERSION: i32 = 2;

/// Make sure `{prefix}metrics` and `{prefix}metric_definitions` exist at
/// version 2 (see [`ensure_version`]).
pub(crate) fn ensure(client: &mut Client, prefix: &str, create: bool, pg: &Connector) -> Result<(), SyncError> {
    ensure_version(
        client,
        prefix,
        create,
        pg,
        &Layout {
            version: VERSION,
            create_sql,
            // Tables without a version row: Chancy's 0.25 layout or
            // someone else's. Don't touch them.
            untagged: |_| SyncError::SchemaVersion {
                found: 1,
                expected: VERSION,
            },
            migrate: "run Chancy's migrations",
        },
    )
}

/// What differs between the schema versions the syncer writes.
pub(crate) struct Layout {
    /// The `metrics` version it writes.
    pub(crate) version: i32,
    /// Its DDL for a prefix, with the version row.
    pub(crate) create_sql: fn(&str) -> String,
    /// The error for a `{prefix}metrics` table without a version row.
    pub(crate) untagged: fn(&str) -> SyncError,
    /// What to tell a user whose tables are missing.
    pub(crate) migrate: &'static str,
}

/// Make sure the metrics tables exist at `layout.version`, creating them
/// (with the version row) when missing and `create` is set; another version
/// is refused. Serialized across workers by a transaction-scoped advisory
/// lock, so two workers starting at once don't race. Unnamed statements
/// only (`query_typed`, simple queries), inside one transaction with the
/// syncer's timeouts: safe behind PgBouncer's transaction pooling.
pub(crate) fn ensure_version(
    client: &mut Client,
    prefix: &str,
    create: bool,
    pg: &Connector,
    layout: &Layout,
) -> Result<(), SyncError> {
    let secret = pg.secret();
    let err = |e: postgres::Error| db(&e, secret.as_deref());
    let mut tx = begin(client, &pg.timeouts()).map_err(err)?;
    tx.query_typed(
        "SELECT pg_advisory_xact_lock(hashtext('ringmetrics.schema:' || $1::text))",
        &[(&prefix, Type::TEXT)],
    )
    .map_err(err)?;
    let versions = ident(prefix, "schema_version");
    let has_versions: bool = tx
        .query_typed_one("SELECT to_regclass($1) IS NOT NULL", &[(&versions, Type::TEXT)])
        .map_err(err)?
        .get(0);
    let found: Option<i32> = if has_versions {
        tx.query_typed_opt(
            &format!("SELECT version FROM {versions} WHERE version_of = 'metrics'"),
            &[],
        )
        .map_err(err)?
        .and_then(|r| r.get(0))
    } else {
        None
    };
    match found {
        Some(v) if v == layout.version => {}
        Some(other) => {
            return Err(SyncError::SchemaVersion {
                found: other,
                expected: layout.version,
            });
        }
        None => {
            let has_metrics: bool = tx
                .query_typed_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[(&ident(prefix, "metrics"), Type::TEXT)],
                )
                .map_err(err)?
                .get(0);
            if has_metrics {
                return Err((layout.untagged)(prefix));
            }
            if !create {
                return Err(SyncError::InvalidConfig(format!(
                    "the metrics tables for prefix {prefix:?} are missing and create_schema is off: {}",
                    layout.migrate
                )));
            }
            tx.batch_execute(&(layout.create_sql)(prefix)).map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

/// Chancy 0.26's DDL for `prefix` (chancy/migrate.py's version table and
/// metrics/migrations/v2.py), plus the `('metrics', 2)` version row: what
/// the syncer runs when the tables are missing. Fails on a prefix with a
/// NUL character.
pub fn schema_sql(prefix: &str) -> Result<String, SyncError> {
    crate::config::validate_prefix(prefix)?;
    Ok(create_sql(prefix))
}

/// Exactly Chancy's DDL (chancy/migrate.py and metrics/migrations/v2.py).
pub(crate) fn create_sql(prefix: &str) -> String {
    let versions = ident(prefix, "schema_version");
    let metrics = ident(prefix, "metrics");
    let definitions = ident(prefix, "metric_definitions");
    let index = ident(prefix, "metrics_expiry_idx");
    format!(
        r#"
        CREATE TABLE IF NOT EXISTS {versions} (
            version_of VARCHAR(255) PRIMARY KEY,
            version INT
        );
        CREATE TABLE {definitions} (
            id BIGSERIAL PRIMARY KEY,
            key TEXT COLLATE "C" NOT NULL UNIQUE,
            metric_type TEXT NOT NULL CHECK (
                metric_type IN ('counter', 'gauge', 'histogram')
            ),
            unit TEXT NOT NULL
        );
        CREATE TABLE {metrics} (
            metric_id BIGINT NOT NULL
                REFERENCES {definitions}(id) ON DELETE RESTRICT,
            resolution INTEGER NOT NULL,
            chunk TIMESTAMPTZ NOT NULL,
            session_id UUID NOT NULL,
            worker_id TEXT NOT NULL,
            buckets TIMESTAMPTZ[] NOT NULL,
            counts BIGINT[],
            totals DOUBLE PRECISION[],
            minimums DOUBLE PRECISION[],
            maximums DOUBLE PRECISION[],
            gauges DOUBLE PRECISION[],
            sampled_at TIMESTAMPTZ[] NOT NULL,
            PRIMARY KEY (metric_id, resolution, chunk, session_id)
        );
        CREATE INDEX {index} ON {metrics} (resolution, chunk);
        INSERT INTO {versions} (version_of, version) VALUES ('metrics', {VERSION})
            ON CONFLICT (version_of) DO UPDATE SET version = EXCLUDED.version;
        "#
    )
}
