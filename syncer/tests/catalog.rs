//! Metric catalogs not made by Chancy's migrations. One whose `key` column
//! matches keys that differ (a nondeterministic collation, not Chancy's
//! "C"), or a NULL where Chancy's schema says NOT NULL: the flush fails
//! with a clear error and keeps the data, the syncer thread survives, and
//! once the catalog is put right everything is saved under the recorded key.

mod common;

use std::sync::Arc;

use common::small::{WAIT, setup, small, start, totals};
use common::{client, dsn, prefix};
use ringmetrics::Aggregator;
use ringmetrics_postgres::Syncer;

/// A small aggregator and its syncer, one flush done (the tables exist).
fn warmed(prefix: &str) -> (Arc<Aggregator>, Syncer) {
    let (agg, _clock) = setup(small());
    let s = start(&agg, prefix, &dsn());
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    (agg, s)
}

#[test]
fn a_catalog_matching_other_keys_is_a_clear_error_never_a_panic() {
    let p = prefix("catci");
    let (agg, s) = warmed(&p);
    let defs = format!("\"{p}metric_definitions\"");
    let collation = format!("\"{p}ci\"");
    let mut c = client();
    c.batch_execute(&format!(
        "CREATE COLLATION {collation} (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         ALTER TABLE {defs} ALTER COLUMN key TYPE text COLLATE {collation};
         INSERT INTO {defs} (key, metric_type, unit) VALUES ('ABC', 'counter', 'count')"
    ))
    .unwrap();
    agg.increment_counter("abc", 2.0).unwrap();
    for _ in 0..2 {
        let e = s.flush(WAIT).expect_err("'ABC' is not 'abc'");
        assert!(e.to_string().contains("byte for byte"), "{e}");
    }
    assert!(s.status().last_error.is_some());
    c.batch_execute(&format!(
        "ALTER TABLE {defs} ALTER COLUMN key TYPE text COLLATE \"C\";
         DROP COLLATION {collation}"
    ))
    .unwrap();
    s.flush(WAIT).unwrap();
    assert_eq!(totals(&p, "abc", 60).iter().map(|t| t.1).sum::<f64>(), 2.0);
    assert!(totals(&p, "ABC", 60).is_empty());
    s.stop(WAIT).unwrap();
}

/// A catalog whose `unit` takes NULL (not Chancy's schema: NOT NULL) and
/// holds a NULL for a recorded key: a clear error, the data kept.
#[test]
fn a_null_in_the_catalog_is_a_clear_error_never_a_panic() {
    let p = prefix("catnull");
    let (agg, s) = warmed(&p);
    let defs = format!("\"{p}metric_definitions\"");
    let mut c = client();
    c.batch_execute(&format!(
        "ALTER TABLE {defs} ALTER COLUMN unit DROP NOT NULL;
         INSERT INTO {defs} (key, metric_type, unit) VALUES ('n', 'counter', NULL)"
    ))
    .unwrap();
    agg.increment_counter("n", 3.0).unwrap();
    let e = s.flush(WAIT).expect_err("a NULL unit");
    assert!(e.to_string().contains("metric catalog"), "{e}");
    c.batch_execute(&format!("UPDATE {defs} SET unit = 'count' WHERE key = 'n'"))
        .unwrap();
    s.flush(WAIT).unwrap();
    assert_eq!(totals(&p, "n", 60).iter().map(|t| t.1).sum::<f64>(), 3.0);
    s.stop(WAIT).unwrap();
}

/// A stored row without sample times (another writer's: its `sampled_at`
/// array holds a NULL) reads back with its values, never a panic.
#[test]
fn a_row_without_sample_times_reads_back() {
    let p = prefix("catsamp");
    let (_agg, s) = warmed(&p);
    s.stop(WAIT).unwrap();
    let (defs, metrics) = (format!("\"{p}metric_definitions\""), format!("\"{p}metrics\""));
    client()
        .batch_execute(&format!(
            "INSERT INTO {defs} (key, metric_type, unit) VALUES ('other', 'counter', 'count');
             INSERT INTO {metrics} (metric_id, resolution, chunk, session_id, worker_id, buckets, totals, sampled_at)
             SELECT id, 60, to_timestamp(0), gen_random_uuid(), 'x', ARRAY[to_timestamp(60)], ARRAY[4.0],
                    ARRAY[NULL::timestamptz]
             FROM {defs} WHERE key = 'other'"
        ))
        .unwrap();
    let query = ringmetrics_postgres::ReadQuery {
        prefix: Some("other".into()),
        worker_id: None,
        resolution: ringmetrics::Resolution::Min1,
        start_secs: 0,
        end_secs: 3600,
    };
    let read = ringmetrics_postgres::read_metrics(&dsn(), &p, &query).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].points.len(), 1);
    assert_eq!((read[0].points[0].start, read[0].points[0].value), (60, 4.0));
    assert_eq!(read[0].points[0].sampled_at_nanos, 0);
}
