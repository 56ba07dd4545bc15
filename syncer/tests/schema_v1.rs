//! The schema-1 (Chancy 0.25) writer against a real PostgreSQL: exact rows
//! and JSON, retention by bucket count, merges that never lose a saved
//! bucket, idempotent resends, restarts under a fixed worker id, and the
//! version checks both ways.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client, dsn, prefix};
use ringmetrics::{Aggregator, Config, Kind, ManualClock};
use ringmetrics_postgres::{Schema, SyncError, Syncer, SyncerConfig, V1_DEFAULT_MAX_POINTS, schema_sql};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const WAIT: Duration = Duration::from_secs(30);

fn setup(config: Config, t: i64) -> (Arc<Aggregator>, ManualClock) {
    let clock = ManualClock::from_secs(t);
    (
        Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap()),
        clock,
    )
}

fn v1(prefix: &str, worker: &str, max_points: [usize; 4]) -> SyncerConfig {
    SyncerConfig {
        prefix: prefix.into(),
        worker_id: worker.into(),
        interval: Duration::from_secs(3600),
        schema: Schema::V1 { max_points },
        ..SyncerConfig::new(dsn())
    }
}

/// `(timestamps as epoch seconds, values as JSON text)` of one row.
fn row(prefix: &str, key: &str, resolution: &str, worker: &str) -> (Vec<i64>, Vec<String>, String) {
    let r = client()
        .query_one(
            &format!(
                "SELECT ARRAY(SELECT extract(epoch FROM t)::int8 FROM unnest(timestamps) WITH ORDINALITY AS u(t, i)
                              ORDER BY i),
                        ARRAY(SELECT v::text FROM unnest(values) WITH ORDINALITY AS u(v, i) ORDER BY i),
                        metric_type
                 FROM \"{prefix}metrics\" WHERE metric_key = $1 AND resolution = $2 AND worker_id = $3"
            ),
            &[&key, &resolution, &worker],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// Every row's content except `updated_at`, in key order.
fn all_rows(prefix: &str) -> Vec<(String, String, String, String, String, String)> {
    client()
        .query(
            &format!(
                "SELECT metric_key::text, resolution::text, worker_id::text, timestamps::text, values::text,
                        metric_type::text
                 FROM \"{prefix}metrics\" ORDER BY 1, 2, 3"
            ),
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

#[test]
fn rows_and_json_are_chancy_025s() {
    let p = prefix("v1rows");
    let (agg, clock) = setup(Config::default(), T0 + 5);
    agg.increment_counter("jobs:done", 1.0).unwrap();
    agg.increment_counter("jobs:done", 2.0).unwrap();
    agg.record_gauge("queue:depth", 7.0).unwrap();
    agg.record_key(Kind::Histogram, "job:x:execution_time", "seconds", 0.5)
        .unwrap();
    clock.advance_secs(60);
    agg.increment_counter("jobs:done", 0.25).unwrap();
    agg.record_gauge("queue:depth", 3.0).unwrap();
    agg.record_key(Kind::Histogram, "job:x:execution_time", "seconds", 1.5)
        .unwrap();
    agg.record_key(Kind::Histogram, "job:x:execution_time", "seconds", 2.0)
        .unwrap();
    let s = Syncer::start(agg.clone(), v1(&p, "w1", V1_DEFAULT_MAX_POINTS)).unwrap();
    let report = s.flush(WAIT).unwrap();
    assert_eq!(report.rows_written, 12);
    assert_eq!(
        row(&p, "jobs:done", "1min", "w1"),
        (vec![T0 + 60, T0], vec!["0.25".into(), "3".into()], "counter".into())
    );
    assert_eq!(
        row(&p, "jobs:done", "5min", "w1"),
        (vec![T0], vec!["3.25".into()], "counter".into())
    );
    assert_eq!(
        row(&p, "queue:depth", "1day", "w1"),
        (vec![T0], vec!["3".into()], "gauge".into())
    );
    let (ts, vs, ty) = row(&p, "job:x:execution_time", "1min", "w1");
    assert_eq!((ts, ty.as_str()), (vec![T0 + 60, T0], "histogram"));
    assert_eq!(
        vs,
        [
            r#"{"avg": 1.75, "max": 2, "min": 1.5, "sum": 3.5, "count": 2}"#,
            r#"{"avg": 0.5, "max": 0.5, "min": 0.5, "sum": 0.5, "count": 1}"#
        ]
    );
    // The version row and the table are 0.25's.
    let mut c = client();
    let version: i32 = c
        .query_one(
            &format!("SELECT version FROM \"{p}schema_version\" WHERE version_of = 'metrics'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
    let updated: bool = c
        .query_one(
            &format!("SELECT bool_and(updated_at > now() - interval '1 minute') FROM \"{p}metrics\""),
            &[],
        )
        .unwrap()
        .get(0);
    assert!(updated);
    // Nothing new: nothing written.
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 0);
    // A late record into the older minute (the general merge): that bucket
    // changes, the newer one stays.
    clock.set(T0 * 1_000_000_000 + 30_000_000_000);
    agg.increment_counter("jobs:done", 1.0).unwrap();
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 4);
    assert_eq!(
        row(&p, "jobs:done", "1min", "w1"),
        (vec![T0 + 60, T0], vec!["0.25".into(), "4".into()], "counter".into())
    );
    // A newer minute (a concatenation) and the current 5min bucket again
    // (from the stored newest on).
    clock.set((T0 + 120) * 1_000_000_000);
    agg.increment_counter("jobs:done", 2.0).unwrap();
    s.flush(WAIT).unwrap();
    assert_eq!(row(&p, "jobs:done", "1min", "w1").1, ["2", "0.25", "4"]);
    assert_eq!(row(&p, "jobs:done", "5min", "w1").1, ["6.25"]);
    s.stop(WAIT).unwrap();
}

#[test]
fn retention_counts_buckets_and_a_shallow_ring_loses_nothing() {
    let p = prefix("v1retain");
    // Rings of 12 buckets, shallower than max_points at every resolution.
    let config = Config {
        buckets: [12, 12, 12, 12],
        ..Config::with_capacity(4)
    };
    let (agg, clock) = setup(config, T0);
    let s = Syncer::start(agg.clone(), v1(&p, "w", [60, 288, 168, 90])).unwrap();
    // 61 distinct minutes, flushed every 5 minutes: the ring wraps many
    // times between the first and the last save.
    for m in 0..61 {
        agg.increment_counter("c", 1.0).unwrap();
        if m % 5 == 4 {
            s.flush(WAIT).unwrap();
        }
        clock.advance_secs(60);
    }
    s.flush(WAIT).unwrap();
    let (ts, vs, _) = row(&p, "c", "1min", "w");
    assert_eq!(ts.len(), 60);
    assert_eq!(ts[0], T0 + 60 * 60);
    assert_eq!(ts[59], T0 + 60);
    assert!(vs.iter().all(|v| v == "1"));
    // 5min: 13 buckets (minutes 0..60), more than the ring's 12.
    let (ts, vs, _) = row(&p, "c", "5min", "w");
    assert_eq!(ts.len(), 13);
    assert_eq!(ts[0], T0 + 60 * 60);
    assert_eq!(vs[0], "1");
    assert!(vs[1..].iter().all(|v| v == "5"), "{vs:?}");
    s.stop(WAIT).unwrap();

    // A smaller max_points trims to the newest.
    let p = prefix("v1trim");
    let (agg, clock) = setup(Config::default(), T0);
    let s = Syncer::start(agg.clone(), v1(&p, "w", [3, 2, 2, 2])).unwrap();
    for _ in 0..5 {
        agg.increment_counter("c", 1.0).unwrap();
        clock.advance_secs(60);
    }
    // One flush sends 5 buckets: trimmed on insert.
    s.flush(WAIT).unwrap();
    assert_eq!(row(&p, "c", "1min", "w").0, vec![T0 + 240, T0 + 180, T0 + 120]);
    agg.increment_counter("c", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    assert_eq!(row(&p, "c", "1min", "w").0, vec![T0 + 300, T0 + 240, T0 + 180]);
    assert_eq!(row(&p, "c", "5min", "w").0, vec![T0 + 300, T0]);
    s.stop(WAIT).unwrap();
}

#[test]
fn resends_are_idempotent_and_a_restart_keeps_history() {
    let p = prefix("v1idem");
    let (agg, clock) = setup(Config::default(), T0);
    for _ in 0..3 {
        agg.increment_counter("c", 2.0).unwrap();
        agg.record_key(Kind::Histogram, "h", "seconds", 1.0).unwrap();
        clock.advance_secs(60);
    }
    let s = Syncer::start(agg.clone(), v1(&p, "w", V1_DEFAULT_MAX_POINTS)).unwrap();
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
    let before = all_rows(&p);
    // Another target (same database, another connection string) has no
    // memory of the save: it resends every bucket, and the rows stay.
    let again = SyncerConfig {
        dsn: format!("{} application_name=resend", dsn()),
        ..v1(&p, "w", V1_DEFAULT_MAX_POINTS)
    };
    let s = Syncer::start(agg.clone(), again).unwrap();
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 8);
    s.stop(WAIT).unwrap();
    assert_eq!(all_rows(&p), before);

    // A restarted worker (a fresh aggregator, the same worker id) adds to
    // the stored history instead of replacing it.
    let (agg2, clock2) = setup(Config::default(), T0 + 600);
    agg2.increment_counter("c", 5.0).unwrap();
    clock2.advance_secs(60);
    agg2.increment_counter("c", 1.0).unwrap();
    let s = Syncer::start(agg2.clone(), v1(&p, "w", V1_DEFAULT_MAX_POINTS)).unwrap();
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
    let (ts, vs, _) = row(&p, "c", "1min", "w");
    assert_eq!(ts, vec![T0 + 660, T0 + 600, T0 + 120, T0 + 60, T0]);
    assert_eq!(vs, ["1", "5", "2", "2", "2"]);
    // The 5min bucket of T0 + 600 is the restarted worker's.
    let (ts, vs, _) = row(&p, "c", "5min", "w");
    assert_eq!((ts, vs), (vec![T0 + 600, T0], vec!["6".into(), "6".into()]));
}

#[test]
fn one_worker_id_per_aggregator_on_one_syncer() {
    let p = prefix("v1dup");
    let (a, _c1) = setup(Config::default(), T0);
    let (b, _c2) = setup(Config::default(), T0);
    a.increment_counter("c", 1.0).unwrap();
    b.increment_counter("c", 1.0).unwrap();
    let s = Syncer::start(a.clone(), v1(&p, "w", V1_DEFAULT_MAX_POINTS)).unwrap();
    s.attach(b.clone(), "w", None).unwrap();
    let e = s.flush(WAIT).unwrap_err();
    assert!(e.to_string().contains("own worker id"), "{e}");
    s.detach(&b, WAIT).unwrap_err();
    s.stop(WAIT).unwrap_err();
    // Under distinct ids both are written.
    let s = Syncer::start(a.clone(), v1(&p, "w1", V1_DEFAULT_MAX_POINTS)).unwrap();
    s.attach(b.clone(), "w2", None).unwrap();
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 8);
    s.stop(WAIT).unwrap();
}

#[test]
fn versions_are_checked_both_ways() {
    // Schema 1 refuses a database at version 2 and touches nothing.
    let p = prefix("v1onv2");
    let mut c = client();
    c.batch_execute(&schema_sql(&p).unwrap()).unwrap();
    let (agg, _clock) = setup(Config::default(), T0);
    agg.increment_counter("c", 1.0).unwrap();
    let s = Syncer::start(agg.clone(), v1(&p, "w", V1_DEFAULT_MAX_POINTS)).unwrap();
    let e = s.flush(WAIT).unwrap_err();
    assert_eq!(e, SyncError::SchemaVersion { found: 2, expected: 1 });
    assert!(
        e.to_string()
            .contains("Chancy 0.25 cannot use a database migrated by Chancy 0.26"),
        "{e}"
    );
    s.stop(WAIT).unwrap_err();
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM \"{p}metrics\""), &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // Schema 2 refuses a database that schema 1 created.
    let p = prefix("v2onv1");
    let s = Syncer::start(agg.clone(), v1(&p, "w", V1_DEFAULT_MAX_POINTS)).unwrap();
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
    let config = SyncerConfig {
        prefix: p.to_string(),
        worker_id: "w".into(),
        ..SyncerConfig::new(dsn())
    };
    let (agg2, _clock) = setup(Config::default(), T0);
    agg2.increment_counter("c", 1.0).unwrap();
    let s = Syncer::start(agg2, config).unwrap();
    let e = s.flush(WAIT).unwrap_err();
    assert_eq!(e, SyncError::SchemaVersion { found: 1, expected: 2 });
    s.stop(WAIT).unwrap_err();

    // Bad max_points are refused up front.
    let (agg3, _clock) = setup(Config::default(), T0);
    let e = Syncer::start(agg3, v1(&p, "w", [60, 0, 1, 1])).unwrap_err();
    assert!(matches!(e, SyncError::InvalidConfig(_)), "{e}");
}
