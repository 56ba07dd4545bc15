//! Large flushes (more than 5,000 chunk rows: copied through the staging
//! table) under faults and concurrency: a commit whose outcome is unknown,
//! two syncers staging at once, a flush of several transactions, a
//! conflicting definition inside the batch, an odd prefix (backends killed
//! at the COPY and at the merge: `attack_staging.rs`).
//! Every total is read back exactly: nothing lost, nothing doubled.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client, prefix};
use ringmetrics::{Aggregator, Config, Kind};
use ringmetrics_postgres::{Syncer, SyncerConfig};

const WAIT: Duration = Duration::from_secs(60);

/// Sum of every stored total of `resolution` per key, as (keys, total).
fn stored(p: &str, resolution: i32) -> (i64, f64) {
    let row = client()
        .query_one(
            &format!(
                "SELECT count(DISTINCT d.key), coalesce(sum(t), 0) FROM \"{p}metrics\" m
                 JOIN \"{p}metric_definitions\" d ON d.id = m.metric_id
                 CROSS JOIN LATERAL unnest(m.totals) t WHERE m.resolution = $1"
            ),
            &[&resolution],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn agg(n: usize) -> Arc<Aggregator> {
    Arc::new(Aggregator::new(Config::with_capacity(n).persisted()).unwrap())
}

fn record_all(agg: &Aggregator, n: usize, tag: &str) {
    for i in 0..n {
        agg.increment_counter(&format!("{tag}{i}"), 1.0).unwrap();
    }
}

fn start(agg: &Arc<Aggregator>, dsn: String, p: &str, worker: &str) -> Syncer {
    Syncer::start(
        agg.clone(),
        SyncerConfig {
            prefix: p.into(),
            worker_id: worker.into(),
            periodic: false,
            ..SyncerConfig::new(dsn)
        },
    )
    .unwrap()
}

#[test]
fn an_unknown_commit_of_a_staged_flush_is_retried_without_doubling() {
    let p = prefix("stagecut");
    let cutter = common::commit_cutter();
    let n = 1500;
    let a = agg(n + 1);
    let s = start(&a, cutter.dsn.clone(), &p, "w");
    // The tables first (their creation commits too).
    a.increment_counter("first", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    record_all(&a, n, "k");
    cutter.arm(1);
    let e = s.flush(WAIT).unwrap_err();
    assert!(e.to_string().contains("outcome unknown"), "{e}");
    assert_eq!(stored(&p, 60), (n as i64 + 1, n as f64 + 1.0), "it did commit");
    let report = s.flush(WAIT).unwrap();
    assert_eq!(report.rows_written, 4 * n as u64, "the retry rewrites the same rows");
    for r in [60, 300, 3600, 86400] {
        assert_eq!(stored(&p, r), (n as i64 + 1, n as f64 + 1.0), "resolution {r}");
    }
    s.stop(WAIT).unwrap();
}

#[test]
fn two_syncers_staging_the_same_keys_at_once_save_each_exactly() {
    let p = prefix("stagetwo");
    let n = 1500;
    let (a, b) = (agg(n), agg(n));
    let sa = start(&a, common::dsn(), &p, "a");
    let sb = start(&b, common::dsn(), &p, "b");
    for round in 1..=3 {
        record_all(&a, n, "k");
        record_all(&b, n, "k");
        std::thread::scope(|scope| {
            let ja = scope.spawn(|| sa.flush(WAIT));
            let jb = scope.spawn(|| sb.flush(WAIT));
            ja.join().unwrap().unwrap();
            jb.join().unwrap().unwrap();
        });
        assert_eq!(
            stored(&p, 60),
            (n as i64, 2.0 * round as f64 * n as f64),
            "round {round}"
        );
    }
    sa.stop(WAIT).unwrap();
    sb.stop(WAIT).unwrap();
}

#[test]
fn a_flush_of_several_transactions_saves_every_row() {
    let p = prefix("stagemany");
    let n = 13_000; // 52,000 rows: more than one 50,000-row transaction
    let a = agg(n);
    let s = start(&a, common::dsn(), &p, "w");
    record_all(&a, n, "k");
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 4 * n as u64);
    record_all(&a, n, "k");
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 4 * n as u64);
    for r in [60, 300, 3600, 86400] {
        assert_eq!(stored(&p, r), (n as i64, 2.0 * n as f64), "resolution {r}");
    }
    s.stop(WAIT).unwrap();
}

#[test]
fn a_conflicting_definition_inside_a_staged_flush_drops_only_that_series() {
    let p = prefix("stageconflict");
    let n = 1500;
    let a = agg(n + 1);
    // A Chancy worker stored "k7" as a gauge first.
    let first = agg(1);
    first.record_key(Kind::Gauge, "k7", "number", 5.0).unwrap();
    let s0 = start(&first, common::dsn(), &p, "x");
    s0.flush(WAIT).unwrap();
    s0.stop(WAIT).unwrap();
    let s = start(&a, common::dsn(), &p, "w");
    record_all(&a, n, "k");
    let report = s.flush(WAIT).unwrap();
    assert_eq!(report.rows_written, 4 * (n as u64 - 1));
    assert_eq!(s.status().conflicts_dropped, 1);
    // Every other counter is saved once (k7's stored row is the gauge's).
    assert_eq!(stored(&p, 60), (n as i64 - 1, n as f64 - 1.0));
    s.stop(WAIT).unwrap();
}

#[test]
fn an_odd_prefix_stages_like_any_other() {
    let p = format!("Odd \"P\" x.{}_", std::process::id());
    let n = 1500;
    let a = agg(n);
    let s = start(&a, common::dsn(), &p, "w");
    record_all(&a, n, "k");
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 4 * n as u64);
    let quoted = p.replace('"', "\"\"");
    let total: f64 = client()
        .query_one(
            &format!("SELECT coalesce(sum(t), 0) FROM \"{quoted}metrics\" CROSS JOIN LATERAL unnest(totals) t WHERE resolution = 60"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(total, n as f64);
    s.stop(WAIT).unwrap();
    for t in ["metrics", "metric_definitions", "schema_version"] {
        client()
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{quoted}{t}\" CASCADE"))
            .unwrap();
    }
}
