//! Schema 1 (Chancy 0.25): one row per (key, resolution, worker id) with
//! newest-first arrays `timestamps` and `values` (JSON as 0.25 writes it),
//! at most `max_points` buckets.
//!
//! The same guarantee as the chunk writer: the writer sends only the
//! buckets that changed since the last save (see `source.rs`) and the
//! server merges them into the stored arrays by timestamp (sent values
//! win, stored buckets the writer no longer holds stay, the newest
//! `max_points` are kept). So a ring shallower than `max_points` never
//! drops a saved bucket, the process never holds `max_points` buckets per
//! series, and a retry (values are absolute) is idempotent.
//!
//! 0.25 has no sessions: a worker id's rows are that worker's alone. Two
//! aggregators on one syncer writing the same key under the same worker id
//! are refused; across processes that is the caller's to avoid.

use std::collections::HashSet;
use std::fmt::Write as _;

use postgres::Client;
use postgres::types::Type;
use ringmetrics::{Bucket, Kind, Resolution};

use crate::config::ident;
use crate::connect::begin;
use crate::error::{SyncError, db};
use crate::source::Change;
use crate::thread::FlushReport;
use crate::writer::Writer;

/// A number as JSON the way Python's `json.dumps` writes what 0.25 holds:
/// an integral value as an integer (0.25 keeps Python ints), anything else
/// as the shortest round-tripping float. JSON has no infinity or NaN (the
/// core never stores them; `null` if one ever appears).
pub(crate) fn number(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
    } else if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// A float as JSON, always with a fraction or exponent (Python's `float`).
fn float(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// One bucket's value as 0.25 stores it: the sum for a counter, the last
/// value for a gauge, `{count, sum, avg, min, max}` for a histogram.
pub(crate) fn json_value(kind: Kind, b: &Bucket) -> String {
    let mut s = String::with_capacity(16);
    match kind {
        Kind::Counter => number(&mut s, b.sum),
        Kind::Gauge => number(&mut s, b.last),
        Kind::Histogram => {
            let _ = write!(s, "{{\"count\": {}, \"sum\": ", b.count);
            number(&mut s, b.sum);
            s.push_str(", \"avg\": ");
            float(&mut s, b.sum / b.count.max(1) as f64);
            s.push_str(", \"min\": ");
            number(&mut s, b.min);
            s.push_str(", \"max\": ");
            number(&mut s, b.max);
            s.push('}');
        }
    }
    s
}

/// The upsert. `$1..$6` describe rows (each takes `[off, off + len)` of
/// the bucket columns `$7`, `$8`, newest first); on conflict the stored
/// and sent buckets merge by timestamp, the sent winning, the newest
/// `max_points` kept.
pub(crate) fn upsert_sql(metrics: &str, max_points: [usize; 4]) -> String {
    let limit = |col: &str| {
        let arms: String = Resolution::ALL
            .iter()
            .map(|r| format!(" WHEN '{}' THEN {}", r.name(), max_points[r.index()]))
            .collect();
        format!("(CASE {col}{arms} END)")
    };
    let general = |col: &str| {
        format!(
            "(SELECT array_agg(d.{col} ORDER BY d.t DESC) FROM (
                 SELECT u.t, u.v, row_number() OVER (ORDER BY u.t DESC) AS rn FROM (
                     SELECT DISTINCT ON (x.t) x.t, x.v FROM (
                         SELECT e.t, e.v, 0 AS p FROM unnest(EXCLUDED.timestamps, EXCLUDED.values) AS e(t, v)
                         UNION ALL
                         SELECT o.t, o.v, 1 FROM unnest(m.timestamps, m.values) AS o(t, v)
                     ) x ORDER BY x.t, x.p
                 ) u
             ) d WHERE d.rn <= {})",
            limit("EXCLUDED.resolution")
        )
    };
    // Two shapes cover the steady state and cost a concatenation: every
    // sent bucket is newer than the stored newest (new buckets), or the
    // oldest sent is the stored newest (it changed, maybe newer ones too).
    // Any other shape (a late record into an older bucket, a resend after
    // a restart) takes the general merge.
    let merged = |col: &str, name: &str| {
        let max = limit("EXCLUDED.resolution");
        format!(
            "CASE WHEN EXCLUDED.timestamps[cardinality(EXCLUDED.timestamps)] > m.timestamps[1]
                      THEN (EXCLUDED.{name} || m.{name})[1:{max}]
                  WHEN EXCLUDED.timestamps[cardinality(EXCLUDED.timestamps)] = m.timestamps[1]
                      THEN (EXCLUDED.{name} || m.{name}[2:])[1:{max}]
                  ELSE {}
             END",
            general(col)
        )
    };
    format!(
        "WITH a AS (SELECT $7::timestamptz[] AS t, $8::text[]::jsonb[] AS v)
         INSERT INTO {metrics} AS m (metric_key, resolution, worker_id, timestamps, values, metric_type, updated_at)
         SELECT r.metric_key, r.resolution, r.worker_id,
                a.t[r.off:r.off + least(r.len, {lim}) - 1],
                a.v[r.off:r.off + least(r.len, {lim}) - 1],
                r.metric_type, now()
         FROM a, unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[])
              AS r(metric_key, resolution, worker_id, metric_type, off, len)
         ON CONFLICT (metric_key, resolution, worker_id) DO UPDATE SET
             timestamps = {ts},
             values = {vs},
             metric_type = EXCLUDED.metric_type,
             updated_at = now()",
        lim = limit("r.resolution"),
        ts = merged("t", "timestamps"),
        vs = merged("v", "values"),
    )
}

/// The flat parameter columns of one schema-1 upsert.
#[derive(Default)]
struct Columns {
    keys: Vec<String>,
    resolutions: Vec<&'static str>,
    workers: Vec<String>,
    types: Vec<&'static str>,
    offs: Vec<i32>,
    lens: Vec<i32>,
    timestamps: Vec<std::time::SystemTime>,
    values: Vec<String>,
}

/// Write one batch in one transaction (schema 1). Never reports conflicts:
/// 0.25 stores the type per row and the last writer's type wins, as in
/// 0.25 itself.
pub(crate) fn write_batch(
    w: &Writer,
    client: &mut Client,
    batch: &[(usize, Change)],
    report: &mut FlushReport,
    max_points: [usize; 4],
) -> Result<Vec<(usize, u32)>, SyncError> {
    let secret = w.secret.clone();
    let err = |e: postgres::Error| db(&e, secret.as_deref());
    let metrics = ident(&w.prefix, "metrics");
    let mut cols = Columns::default();
    let mut seen: HashSet<(String, Resolution, String)> = HashSet::new();
    let mut series = 0u64;
    for (i, change) in batch {
        if change.rows.is_empty() {
            continue;
        }
        series += 1;
        let source = &w.sources[*i];
        let info = source.agg.info(change.id).expect("registered series");
        for r in Resolution::ALL {
            // The changed buckets of this resolution, oldest first across
            // the chunk rows; sent newest first.
            let start = cols.timestamps.len();
            for row in change.rows.iter().filter(|row| row.resolution == r) {
                for b in change.buckets(row) {
                    cols.timestamps.push(crate::writer::time(b.start * 1_000_000_000));
                    cols.values.push(json_value(info.kind, b));
                }
            }
            let n = cols.timestamps.len() - start;
            if n == 0 {
                continue;
            }
            cols.timestamps[start..].reverse();
            cols.values[start..].reverse();
            if !seen.insert((info.key.to_owned(), r, source.worker_id.clone())) {
                return Err(SyncError::InvalidConfig(format!(
                    "two aggregators write {:?} under worker id {:?}: schema 1 keeps one row per worker id, \
                     give each aggregator its own worker id",
                    info.key, source.worker_id
                )));
            }
            cols.keys.push(info.key.to_owned());
            cols.resolutions.push(r.name());
            cols.workers.push(source.worker_id.clone());
            cols.types.push(info.kind.name());
            cols.offs.push(start as i32 + 1);
            cols.lens.push(n as i32);
        }
    }
    if cols.keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = begin(client, &w.timeouts).map_err(err)?;
    let written = tx
        .execute_typed(
            &upsert_sql(&metrics, max_points),
            &[
                (&cols.keys, Type::TEXT_ARRAY),
                (&cols.resolutions, Type::TEXT_ARRAY),
                (&cols.workers, Type::TEXT_ARRAY),
                (&cols.types, Type::TEXT_ARRAY),
                (&cols.offs, Type::INT4_ARRAY),
                (&cols.lens, Type::INT4_ARRAY),
                (&cols.timestamps, Type::TIMESTAMPTZ_ARRAY),
                (&cols.values, Type::TEXT_ARRAY),
            ],
        )
        .map_err(err)?;
    // As for schema 2: a commit whose outcome is unknown is retried, and
    // the retry merges the same absolute buckets again.
    tx.commit().map_err(|e| match db(&e, secret.as_deref()) {
        SyncError::Database(m) => SyncError::Database(format!("commit outcome unknown, will retry: {m}")),
        other => other,
    })?;
    report.rows_written += written;
    report.series_written += series;
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_like_python() {
        let mut b = Bucket::single(0, 3.0, 0);
        assert_eq!(json_value(Kind::Counter, &b), "3");
        assert_eq!(json_value(Kind::Gauge, &b), "3");
        assert_eq!(
            json_value(Kind::Histogram, &b),
            "{\"count\": 1, \"sum\": 3, \"avg\": 3.0, \"min\": 3, \"max\": 3}"
        );
        b.merge(&Bucket::single(0, 0.5, 1));
        assert_eq!(json_value(Kind::Counter, &b), "3.5");
        assert_eq!(json_value(Kind::Gauge, &b), "0.5");
        assert_eq!(
            json_value(Kind::Histogram, &b),
            "{\"count\": 2, \"sum\": 3.5, \"avg\": 1.75, \"min\": 0.5, \"max\": 3}"
        );
        let mut s = String::new();
        number(&mut s, 1e300);
        assert_eq!(s, "1e300");
    }
}
