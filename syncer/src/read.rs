//! Reading every worker's rows back with Chancy's merge rules, and Chancy's
//! cleanup. Both open a short-lived connection of their own.

use std::time::{SystemTime, UNIX_EPOCH};

use postgres::Client;
use postgres::types::Type;
use ringmetrics::{Kind, Resolution};

use crate::config::{ident, validate_prefix};
use crate::connect::{Connector, Timeouts, begin};
use crate::error::{SyncError, db};
use crate::retention::{MAX_SECS, first_kept_chunk};
use crate::writer::time;

/// Which series and window to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadQuery {
    /// The key itself and its `:`-separated descendants (`%` and `_` are
    /// literal); `None` or `""` for every key (Chancy reads a falsy prefix
    /// as "all").
    pub prefix: Option<String>,
    /// Only this worker's rows; `None` or `""` for every worker (as
    /// Chancy's `get_metrics` treats a falsy worker id).
    pub worker_id: Option<String>,
    /// Bucket width.
    pub resolution: Resolution,
    /// Inclusive window start, seconds since the epoch.
    pub start_secs: i64,
    /// Exclusive window end, seconds since the epoch.
    pub end_secs: i64,
}

/// One series, merged across workers and sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSeries {
    /// The key.
    pub key: String,
    /// The kind.
    pub kind: Kind,
    /// The unit.
    pub unit: String,
    /// Buckets with data, oldest first (missing buckets are absent).
    pub points: Vec<ReadPoint>,
}

/// One merged bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadPoint {
    /// Bucket start, seconds since the epoch.
    pub start: i64,
    /// Histograms: observations (summed); others: 0.
    pub count: u64,
    /// Counters and histograms: the summed total.
    pub sum: f64,
    /// Histograms: smallest minimum.
    pub min: f64,
    /// Histograms: largest maximum.
    pub max: f64,
    /// What Chancy shows: the counter total, the gauge value with the latest
    /// sample (ties: greater session id), or the histogram average.
    pub value: f64,
    /// Latest sample time, nanoseconds (microsecond precision).
    pub sampled_at_nanos: i64,
}

/// A short-lived connection of its own, with the syncer's default
/// timeouts; returns it with the password to scrub from messages.
fn connect(dsn: &str) -> Result<(Client, Option<String>, Timeouts), SyncError> {
    let pg = Connector::new(dsn, Timeouts::default())?;
    let client = pg.connect()?;
    Ok((client, pg.secret(), pg.timeouts()))
}

/// Read the series matching `query` from every worker, merged by Chancy's
/// rules: counters sum totals; histograms sum counts and totals and take the
/// smallest minimum and largest maximum; gauges take the value with the
/// latest `sampled_at` (ties: the greater session id). Series are ordered by
/// key; a matching key with no data in the window has no points.
pub fn read_metrics(dsn: &str, prefix: &str, query: &ReadQuery) -> Result<Vec<ReadSeries>, SyncError> {
    validate_prefix(prefix)?;
    let width = query.resolution.seconds();
    if query.end_secs <= query.start_secs
        || query.start_secs.rem_euclid(width) != 0
        || query.end_secs.rem_euclid(width) != 0
        || query.start_secs < -MAX_SECS
        || query.end_secs > MAX_SECS
    {
        return Err(SyncError::InvalidConfig(format!(
            "window [{}, {}) must be non-empty, aligned to {} buckets and within {MAX_SECS} seconds of the epoch",
            query.start_secs, query.end_secs, query.resolution
        )));
    }
    let (mut client, secret, timeouts) = connect(dsn)?;
    let err = |e: postgres::Error| db(&e, secret.as_deref());
    let definitions = ident(prefix, "metric_definitions");
    let metrics = ident(prefix, "metrics");
    // One read-only transaction, unnamed statements only: PgBouncer-safe.
    let mut client = begin(&mut client, &timeouts).map_err(err)?;
    let worker_id = query.worker_id.as_deref().filter(|w| !w.is_empty());
    let (exact, children) = match query.prefix.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => {
            let escaped = p.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            (Some(p.to_owned()), Some(format!("{escaped}:%")))
        }
        None => (None, None),
    };
    let defs = client
        .query_typed(
            &format!(
                "SELECT id, key, metric_type, unit FROM {definitions}
                 WHERE $1::text IS NULL OR key = $1 OR key LIKE $2 ORDER BY key"
            ),
            &[(&exact, Type::TEXT), (&children, Type::TEXT)],
        )
        .map_err(err)?;
    let mut out: Vec<ReadSeries> = Vec::with_capacity(defs.len());
    let mut ids: Vec<i64> = Vec::with_capacity(defs.len());
    // A column of another type or a NULL (a catalog not made by Chancy's
    // migrations) is an error, never a panic.
    let catalog = |e: postgres::Error| SyncError::Database(format!("reading the metric catalog: {e}"));
    for row in &defs {
        let kind: &str = row.try_get(2).map_err(catalog)?;
        ids.push(row.try_get(0).map_err(catalog)?);
        out.push(ReadSeries {
            key: row.try_get(1).map_err(catalog)?,
            kind: Kind::from_name(kind).unwrap_or(Kind::Counter),
            unit: row.try_get(3).map_err(catalog)?,
            points: Vec::new(),
        });
    }
    if ids.is_empty() {
        return Ok(out);
    }
    let chunk_start = query
        .resolution
        .chunk_start(query.resolution.bucket_of(query.start_secs));
    let rows = client
        .query_typed(
            &format!(
                "SELECT d.key,
                        extract(epoch FROM p.bucket)::int8,
                        coalesce(sum(p.count), 0)::int8,
                        sum(p.total),
                        min(p.minimum),
                        max(p.maximum),
                        (array_agg(p.value ORDER BY p.sampled_at DESC, m.session_id DESC)
                            FILTER (WHERE d.metric_type = 'gauge'))[1],
                        (extract(epoch FROM max(p.sampled_at)) * 1000000)::int8
                 FROM {metrics} m
                 JOIN {definitions} d ON d.id = m.metric_id
                 CROSS JOIN LATERAL unnest(m.buckets, m.counts, m.totals, m.minimums, m.maximums, m.gauges,
                                           m.sampled_at)
                     AS p(bucket, count, total, minimum, maximum, value, sampled_at)
                 WHERE m.metric_id = ANY($1)
                   AND m.resolution = $2
                   AND m.chunk >= $3 AND m.chunk < $5
                   AND p.bucket >= $4 AND p.bucket < $5
                   AND ($6::text IS NULL OR m.worker_id = $6)
                 GROUP BY d.id, d.key, p.bucket
                 ORDER BY d.key, p.bucket"
            ),
            &[
                (&ids, Type::INT8_ARRAY),
                (&(query.resolution.seconds() as i32), Type::INT4),
                (&time(chunk_start * 1_000_000_000), Type::TIMESTAMPTZ),
                (&time(query.start_secs * 1_000_000_000), Type::TIMESTAMPTZ),
                (&time(query.end_secs * 1_000_000_000), Type::TIMESTAMPTZ),
                (&worker_id, Type::TEXT),
            ],
        )
        .map_err(err)?;
    let mut at = 0;
    for row in rows {
        let key: String = row.get(0);
        while out[at].key != key {
            at += 1;
        }
        let series = &mut out[at];
        let count: i64 = row.get(2);
        let sum: Option<f64> = row.get(3);
        let value = match series.kind {
            Kind::Counter => sum.unwrap_or(0.0),
            Kind::Gauge => row.get::<_, Option<f64>>(6).unwrap_or(f64::NAN),
            Kind::Histogram => sum.unwrap_or(0.0) / count.max(1) as f64,
        };
        series.points.push(ReadPoint {
            start: row.get(1),
            count: count as u64,
            sum: sum.unwrap_or(0.0),
            min: row.get::<_, Option<f64>>(4).unwrap_or(f64::NAN),
            max: row.get::<_, Option<f64>>(5).unwrap_or(f64::NAN),
            value,
            // (NULL where no sample time was stored: a row another writer made)
            sampled_at_nanos: row.get::<_, Option<i64>>(7).unwrap_or(0).saturating_mul(1000),
        });
    }
    client.commit().map_err(err)?;
    Ok(out)
}

/// Chancy's `cleanup()`: delete chunks older than each resolution's
/// retention (`retention_secs`, finest first) in batches of 10,000 rows,
/// then definitions no row refers to (batches of 1,000). Returns the chunk
/// rows removed.
pub fn cleanup(dsn: &str, prefix: &str, retention_secs: [i64; 4]) -> Result<u64, SyncError> {
    validate_prefix(prefix)?;
    if retention_secs.iter().any(|r| *r <= 0) {
        return Err(SyncError::InvalidConfig("retention must be positive".into()));
    }
    let (mut client, secret, timeouts) = connect(dsn)?;
    let err = |e: postgres::Error| db(&e, secret.as_deref());
    let metrics = ident(prefix, "metrics");
    let definitions = ident(prefix, "metric_definitions");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut resolutions = Vec::new();
    let mut cutoffs = Vec::new();
    for r in Resolution::ALL {
        resolutions.push(r.seconds() as i32);
        cutoffs.push(time(
            first_kept_chunk(r, now, retention_secs[r.index()]) * 1_000_000_000,
        ));
    }
    let mut removed = 0u64;
    loop {
        let mut tx = begin(&mut client, &timeouts).map_err(err)?;
        let n = tx
            .execute_typed(
                &format!(
                    "WITH expired AS (
                         SELECT m.ctid FROM {metrics} m
                         JOIN unnest($1::int4[], $2::timestamptz[]) AS c(resolution, cutoff)
                           ON m.resolution = c.resolution AND m.chunk < c.cutoff
                         LIMIT 10000 FOR UPDATE OF m SKIP LOCKED)
                     DELETE FROM {metrics} WHERE ctid IN (SELECT ctid FROM expired)"
                ),
                &[(&resolutions, Type::INT4_ARRAY), (&cutoffs, Type::TIMESTAMPTZ_ARRAY)],
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        removed += n;
        if n < 10000 {
            break;
        }
    }
    loop {
        let mut tx = begin(&mut client, &timeouts).map_err(err)?;
        let orphans: Vec<i64> = tx
            .query_typed(
                &format!(
                    "SELECT d.id FROM {definitions} d
                     WHERE NOT EXISTS (SELECT 1 FROM {metrics} m WHERE m.metric_id = d.id)
                     ORDER BY d.id LIMIT 1000 FOR UPDATE SKIP LOCKED"
                ),
                &[],
            )
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !orphans.is_empty() {
            tx.execute_typed(
                &format!(
                    "DELETE FROM {definitions} d WHERE id = ANY($1)
                     AND NOT EXISTS (SELECT 1 FROM {metrics} m WHERE m.metric_id = d.id)"
                ),
                &[(&orphans, Type::INT8_ARRAY)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        if orphans.len() < 1000 {
            break;
        }
    }
    Ok(removed)
}
