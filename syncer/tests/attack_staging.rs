//! Attacks on the staged path of large flushes (more than 5,000 chunk rows
//! copied into a temporary table, then merged in one statement): stored
//! rows compared byte for byte with the array path's, edge values and
//! times, held connections, backends killed at the COPY and at the merge,
//! tiny timeouts and restarts, concurrent cleanup, several aggregators with
//! the same keys, tables a DBA has extended, and search paths.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{client, dsn, prefix};
use ringmetrics::{Aggregator, Clock, Config, Kind, ManualClock, Resolution};
use ringmetrics_postgres::{ReadQuery, Syncer, SyncerConfig, cleanup, read_metrics};

const WAIT: Duration = Duration::from_secs(120);

fn start_with(agg: &Arc<Aggregator>, dsn: String, p: &str, worker: &str, f: impl FnOnce(&mut SyncerConfig)) -> Syncer {
    let mut config = SyncerConfig {
        prefix: p.into(),
        worker_id: worker.into(),
        periodic: false,
        ..SyncerConfig::new(dsn)
    };
    f(&mut config);
    Syncer::start(agg.clone(), config).unwrap()
}

fn start(agg: &Arc<Aggregator>, dsn: String, p: &str, worker: &str) -> Syncer {
    start_with(agg, dsn, p, worker, |_| {})
}

fn quoted(p: &str, t: &str) -> String {
    format!("\"{}\"", format!("{p}{t}").replace('"', "\"\""))
}

/// Every stored row of the keys not starting with `pad`, as text (UTC), in
/// a stable order: what the two paths must agree on exactly.
fn rows_text(p: &str) -> Vec<String> {
    let mut c = client();
    c.batch_execute("SET TimeZone = 'UTC'").unwrap();
    c.query(
        &format!(
            "SELECT concat_ws(' | ', d.key, d.metric_type, d.unit, m.resolution, m.chunk, m.worker_id,
                    m.buckets, coalesce(m.counts::text, 'NULL'), coalesce(m.totals::text, 'NULL'),
                    coalesce(m.minimums::text, 'NULL'), coalesce(m.maximums::text, 'NULL'),
                    coalesce(m.gauges::text, 'NULL'), m.sampled_at,
                    array_lower(m.buckets, 1), array_lower(m.sampled_at, 1))
             FROM {} m JOIN {} d ON d.id = m.metric_id
             WHERE d.key NOT LIKE 'pad%'
             ORDER BY d.key, m.resolution, m.chunk",
            quoted(p, "metrics"),
            quoted(p, "metric_definitions")
        ),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect()
}

/// Sum of every stored total at `resolution`, per key.
fn totals(p: &str, resolution: i32) -> BTreeMap<String, f64> {
    client()
        .query(
            &format!(
                "SELECT d.key, coalesce(sum(t), 0) FROM {} m JOIN {} d ON d.id = m.metric_id
                 CROSS JOIN LATERAL unnest(m.totals) t WHERE m.resolution = $1 GROUP BY d.key",
                quoted(p, "metrics"),
                quoted(p, "metric_definitions")
            ),
            &[&resolution],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn grand_total(p: &str, resolution: i32) -> (usize, f64) {
    let t = totals(p, resolution);
    (t.len(), t.values().sum())
}

const EDGES: [f64; 8] = [
    1e308,
    -1e308,
    -0.0,
    5e-324,
    123_456_789.123_456_79,
    -42.5,
    0.1,
    9.007_199_254_740_993e15,
];

/// Record the same edge values into `agg` (and `pad` padding counters, so
/// the flush goes through the staging table).
fn record_edges(agg: &Aggregator, round: usize, pad: usize) {
    for j in 0..EDGES.len() {
        let v = EDGES[(j + round) % EDGES.len()];
        agg.record_key(Kind::Counter, &format!("c{j}"), "count", v).unwrap();
        agg.record_key(Kind::Gauge, &format!("g{j}"), "number", v).unwrap();
        agg.record_key(Kind::Histogram, &format!("h{j}"), "seconds", v).unwrap();
        agg.record_key(Kind::Histogram, &format!("h{j}"), "seconds", -v / 3.0)
            .unwrap();
    }
    for i in 0..pad {
        agg.increment_counter(&format!("pad{i}"), 1.0).unwrap();
    }
}

/// Late records into an earlier minute, at an explicit time.
fn record_late(agg: &Aggregator, at: i64, pad: usize) {
    for j in 0..EDGES.len() {
        let v = EDGES[(j * 3) % EDGES.len()];
        agg.record_key_at(Kind::Counter, &format!("c{j}"), "count", v, at)
            .unwrap();
        agg.record_key_at(Kind::Gauge, &format!("g{j}"), "number", v, at)
            .unwrap();
        agg.record_key_at(Kind::Histogram, &format!("h{j}"), "seconds", v, at)
            .unwrap();
    }
    for i in 0..pad {
        agg.record_key_at(Kind::Counter, &format!("pad{i}"), "count", 1.0, at)
            .unwrap();
    }
}

/// The same records through the array path (no padding) and the staged
/// path (1,300 padding series: more than 5,000 rows), at times around the
/// Unix epoch, just before PostgreSQL's epoch (negative microseconds,
/// sub-microsecond sample times), today and far in the future; with late
/// records into earlier buckets, buckets crossing chunk boundaries, and
/// syncers restarted without memory (resending). Every stored row of the
/// shared series must be identical, text for text.
#[test]
fn staged_rows_equal_array_rows_for_every_kind_edge_value_and_time() {
    const PAD: usize = 1300;
    for (n, t) in [
        3_600i64 * 1_000_000_000 + 7,      // 1970-01-01 01:00
        946_684_000 * 1_000_000_000 + 999, // 1999-12-31 23:46:40, before PG's epoch
        1_767_225_600 * 1_000_000_000 + 123_456_789,
        7_258_118_400 * 1_000_000_000 + 1, // 2200-01-01
    ]
    .into_iter()
    .enumerate()
    {
        let small = prefix(&format!("diffa{n}"));
        let large = prefix(&format!("diffb{n}"));
        let clock = ManualClock::new(t);
        let make =
            || Arc::new(Aggregator::with_clock(Config::with_capacity(PAD + 64), Arc::new(clock.clone())).unwrap());
        let (a, b) = (make(), make());
        let mut sa = start(&a, dsn(), &small, "w");
        let mut sb = start(&b, dsn(), &large, "w");
        for round in 0..6 {
            match round {
                // Late records into a minute already stored.
                2 | 4 => {
                    let at = clock.now() - 150 * 1_000_000_000 - 333;
                    record_late(&a, at, 0);
                    record_late(&b, at, PAD);
                }
                // Restarted without memory: everything in the ring resent.
                3 => {
                    sa.stop(WAIT).unwrap();
                    sb.stop(WAIT).unwrap();
                    let other = format!("{} application_name=attack-resend", dsn());
                    sa = start(&a, other.clone(), &small, "w");
                    sb = start(&b, other, &large, "w");
                }
                _ => {}
            }
            record_edges(&a, round, 0);
            record_edges(&b, round, PAD);
            let ra = sa.flush(WAIT).unwrap();
            let rb = sb.flush(WAIT).unwrap();
            assert!(ra.rows_written < 5000, "time {t} round {round}: {ra:?}");
            assert!(rb.rows_written > 5000, "time {t} round {round}: {rb:?}");
            let (x, y) = (rows_text(&small), rows_text(&large));
            assert!(!x.is_empty());
            assert_eq!(x.len(), y.len(), "time {t} round {round}");
            for (x, y) in x.iter().zip(&y) {
                assert_eq!(x, y, "time {t} round {round}: array path vs staged path");
            }
            // 7 minutes and a bit: 1min buckets cross 12-minute chunks.
            clock.advance(7 * 60 * 1_000_000_000 + 13_579);
        }
        sa.stop(WAIT).unwrap();
        sb.stop(WAIT).unwrap();
    }
}

/// A held connection keeps its session: the staging table of one flush
/// must be gone before the next one creates it again (ON COMMIT DROP), for
/// flushes that succeed and for one that failed after creating it.
#[test]
fn a_held_connection_stages_flush_after_flush() {
    let p = prefix("held");
    let n = 1400;
    let a = Arc::new(Aggregator::new(Config::with_capacity(n + 1).persisted()).unwrap());
    let app = format!("attack-held-{}", std::process::id());
    let s = start_with(&a, format!("{} application_name={app}", dsn()), &p, "w", |c| {
        c.hold_connection = true;
    });
    for round in 1..=4 {
        for i in 0..n {
            a.increment_counter(&format!("k{i}"), 1.0).unwrap();
        }
        let r = s.flush(WAIT).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(r.rows_written, 4 * n as u64, "round {round}");
        assert_eq!(grand_total(&p, 86400), (n, (round * n) as f64), "round {round}");
    }
    // The same backend did all four (the connection was held).
    let backends: i64 = client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap()
        .get(0);
    assert_eq!(backends, 1);
    s.stop(WAIT).unwrap();
}

/// Wait for the syncer's backend (by application name) to run a statement
/// starting with `what`, then terminate it. Returns whether it was caught.
fn kill_when(app: &str, what: &str, stop: &AtomicBool) -> bool {
    let mut c = client();
    while !stop.load(Ordering::SeqCst) {
        let killed: i64 = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND state = 'active' AND query ILIKE $2",
                &[&app, &format!("{what}%")],
            )
            .unwrap()
            .get(0);
        if killed > 0 {
            return true;
        }
    }
    false
}

/// The backend is killed exactly while the COPY runs, and exactly while the
/// merge from the staging table runs; the next flush saves everything once.
#[test]
fn a_backend_killed_at_the_copy_or_at_the_merge_loses_and_doubles_nothing() {
    let p = prefix("killat");
    let n = 12_000; // 48,000 rows: one transaction, a COPY that takes a while
    let a = Arc::new(Aggregator::new(Config::with_capacity(n).persisted()).unwrap());
    let app = format!("attack-killat-{}", std::process::id());
    let s = start(&a, format!("{} application_name={app}", dsn()), &p, "w");
    let mut expected = 0.0;
    let mut caught = 0;
    for (round, what) in ["", "COPY", "INSERT INTO", "COPY", "INSERT INTO"]
        .into_iter()
        .enumerate()
    {
        for i in 0..n {
            a.increment_counter(&format!("k{i}"), 1.0).unwrap();
        }
        expected += 1.0;
        if what.is_empty() {
            s.flush(WAIT).unwrap();
        } else {
            let stop = AtomicBool::new(false);
            let hit = std::thread::scope(|scope| {
                let killer = scope.spawn(|| kill_when(&app, what, &stop));
                let r = s.flush(WAIT);
                stop.store(true, Ordering::SeqCst);
                let hit = killer.join().unwrap();
                if hit {
                    assert!(r.is_err(), "round {round}: killed at {what} yet {r:?}");
                }
                hit
            });
            caught += hit as usize;
            let r = s.flush(WAIT).unwrap();
            if hit {
                assert_eq!(r.rows_written, 4 * n as u64, "round {round}: the retry sends it all");
            }
        }
        for res in [60, 300, 3600, 86400] {
            assert_eq!(
                grand_total(&p, res),
                (n, expected * n as f64),
                "round {round} res {res}"
            );
        }
    }
    eprintln!("caught {caught} of 4");
    assert!(caught >= 2, "the kills never landed ({caught})");
    s.stop(WAIT).unwrap();
}

/// A statement timeout far too small for a large flush: every attempt
/// fails and is rolled back; a syncer started again on the aggregator with
/// a sane timeout saves every record exactly once.
#[test]
fn a_tiny_statement_timeout_then_a_restart_saves_everything_once() {
    let p = prefix("tinyto");
    let n = 5000;
    let a = Arc::new(Aggregator::new(Config::with_capacity(n).persisted()).unwrap());
    // Tables first.
    let s = start(&a, dsn(), &p, "w");
    a.increment_counter("k0", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
    let s = start_with(&a, dsn(), &p, "w", |c| {
        c.statement_timeout = Duration::from_millis(1);
        c.hold_connection = true;
    });
    for round in 0..3 {
        for i in 0..n {
            a.increment_counter(&format!("k{i}"), 1.0).unwrap();
        }
        let e = s.flush(WAIT).unwrap_err();
        assert!(
            e.to_string().contains("57014") || e.to_string().contains("timeout"),
            "round {round}: {e}"
        );
    }
    assert!(s.stop(WAIT).is_err());
    let s = start(&a, dsn(), &p, "w");
    let r = s.flush(WAIT).unwrap();
    assert_eq!(r.rows_written, 4 * n as u64);
    let t = totals(&p, 86400);
    assert_eq!(t.len(), n);
    assert_eq!(t["k0"], 4.0);
    assert_eq!(t["k1"], 3.0);
    assert_eq!(t.values().sum::<f64>(), 3.0 * n as f64 + 1.0);
    s.stop(WAIT).unwrap();
}

/// Chancy's cleanup running in a loop while large flushes merge: whatever
/// the interleaving, flushes succeed (at worst after a retry) and totals
/// are exact.
#[test]
fn cleanup_running_during_large_flushes() {
    let p = prefix("cleanrace");
    let n = 3000;
    let a = Arc::new(Aggregator::new(Config::with_capacity(5 * n + 1).persisted()).unwrap());
    let s = start(&a, dsn(), &p, "w");
    a.increment_counter("k0", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    let stop = AtomicBool::new(false);
    let mut failures = 0;
    std::thread::scope(|scope| {
        let cleaner = scope.spawn(|| {
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) {
                // Chancy's defaults: nothing today is expired; the orphan
                // pass still races the definitions of new keys.
                cleanup(&dsn(), &p, [3600, 86400, 604_800, 7_776_000]).unwrap();
                runs += 1;
            }
            runs
        });
        // However this thread ends, the cleaner stops.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = Stop(&stop);
        for round in 0..5 {
            for i in 0..n {
                a.increment_counter(&format!("r{round}k{i}"), 1.0).unwrap();
            }
            let mut tries = 0;
            while let Err(e) = s.flush(WAIT) {
                failures += 1;
                tries += 1;
                assert!(tries < 5, "round {round}: {e}");
            }
        }
        drop(guard);
        assert!(cleaner.join().unwrap() > 0);
    });
    eprintln!("{failures} flushes retried");
    assert_eq!(grand_total(&p, 86400), (5 * n + 1, 5.0 * n as f64 + 1.0));
    s.stop(WAIT).unwrap();
}

/// Three aggregators attached to one syncer record the same 1,300 keys
/// (three sessions: three rows per chunk, no row twice in one statement),
/// one of them with some keys under another type: exact per-key totals, the
/// conflicting series dropped, read back with read_metrics.
#[test]
fn the_same_keys_in_three_aggregators_of_one_syncer() {
    let p = prefix("threeaggs");
    let n = 1300;
    let make = || Arc::new(Aggregator::new(Config::with_capacity(n + 10).persisted()).unwrap());
    let (a, b, c) = (make(), make(), make());
    let s = start(&a, dsn(), &p, "wa");
    s.attach(b.clone(), "wb", None).unwrap();
    s.attach(c.clone(), "wc", None).unwrap();
    for round in 1..=3u32 {
        for i in 0..n {
            let k = format!("k{i}");
            a.increment_counter(&k, 1.0).unwrap();
            b.increment_counter(&k, 2.0).unwrap();
            if i % 100 == 7 {
                // Stored as a counter by a and b: a conflict.
                c.record_gauge(&k, -1e300).unwrap();
            } else {
                c.increment_counter(&k, -4.0).unwrap();
            }
        }
        let r = s.flush(WAIT).unwrap();
        let conflicting = (0..n).filter(|i| i % 100 == 7).count() as u64;
        assert_eq!(r.rows_written, 4 * (3 * n as u64 - conflicting), "round {round}");
        let read = read_metrics(&dsn(), &p, &common::around_today(None)).unwrap();
        assert_eq!(read.len(), n);
        for series in &read {
            let i: usize = series.key[1..].parse().unwrap();
            let want = if i % 100 == 7 { 3.0 } else { -1.0 } * round as f64;
            let got: f64 = series.points.iter().map(|p| p.value).sum();
            assert_eq!(got, want, "round {round} {}", series.key);
        }
        for (w, per) in [("wa", 1.0), ("wb", 2.0)] {
            let read = read_metrics(&dsn(), &p, &common::around_today(Some(w.into()))).unwrap();
            let got: f64 = read.iter().flat_map(|s| &s.points).map(|p| p.value).sum();
            assert_eq!(got, per * (n as f64) * round as f64, "round {round} worker {w}");
        }
    }
    s.stop(WAIT).unwrap();
}

/// Exactly at the threshold: 1,250 series (5,000 rows, one array
/// statement) and 1,251 (5,004 rows, staged), then 12,501 (50,004 rows:
/// two transactions, the second of 4 rows through the array path).
#[test]
fn the_thresholds_either_side() {
    for n in [1250usize, 1251, 12_501] {
        let p = prefix(&format!("edge{n}"));
        let a = Arc::new(Aggregator::new(Config::with_capacity(n).persisted()).unwrap());
        let s = start(&a, dsn(), &p, "w");
        for round in 1..=2 {
            for i in 0..n {
                a.increment_counter(&format!("k{i}"), i as f64).unwrap();
            }
            let r = s.flush(WAIT).unwrap();
            assert_eq!(r.rows_written, 4 * n as u64, "{n} round {round}");
            let want: f64 = (0..n).map(|i| i as f64).sum::<f64>() * round as f64;
            for res in [60, 300, 3600, 86400] {
                let (k, got) = grand_total(&p, res);
                assert_eq!((k, got), (n, want), "{n} round {round} res {res}");
            }
        }
        s.stop(WAIT).unwrap();
    }
}

/// A DBA added a column with a default to Chancy's metrics table (an audit
/// timestamp): the array statement names its columns and the default fills
/// the rest, so small flushes work. A large flush must work too.
#[test]
fn a_metrics_table_with_an_added_defaulted_column() {
    let p = prefix("extracol");
    let n = 1500;
    let a = Arc::new(Aggregator::new(Config::with_capacity(n).persisted()).unwrap());
    let s = start(&a, dsn(), &p, "w");
    a.increment_counter("k0", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    client()
        .batch_execute(&format!(
            "ALTER TABLE {} ADD COLUMN written_at timestamptz NOT NULL DEFAULT now()",
            quoted(&p, "metrics")
        ))
        .unwrap();
    a.increment_counter("k0", 1.0).unwrap();
    s.flush(WAIT).expect("a small flush");
    for i in 0..n {
        a.increment_counter(&format!("k{i}"), 1.0).unwrap();
    }
    let r = s.flush(WAIT).expect("a large flush into the extended table");
    assert_eq!(r.rows_written, 4 * n as u64);
    assert_eq!(grand_total(&p, 60), (n, n as f64 + 2.0));
    s.stop(WAIT).unwrap();
}

/// A session whose search_path puts pg_temp last (as PostgreSQL advises
/// for SECURITY DEFINER code), in a database that has an ordinary table
/// named like the staging table: the staged rows must still be the ones
/// sent, not that table's.
#[test]
fn a_search_path_with_pg_temp_last_and_a_table_named_like_the_staging_table() {
    let p = prefix("srchpath");
    let schema = format!("attack_sp_{}", std::process::id());
    let mut admin = client();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ))
        .unwrap();
    let n = 1500;
    let a = Arc::new(Aggregator::new(Config::with_capacity(n).persisted()).unwrap());
    let s = start(
        &a,
        format!("{} options='-csearch_path={schema},public,pg_temp'", dsn()),
        &p,
        "w",
    );
    a.increment_counter("k0", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    // Someone's table of the same name, earlier on the path (empty).
    admin
        .batch_execute(&format!(
            "CREATE TABLE {schema}.ringmetrics_staged_rows (LIKE {schema}.{} )",
            quoted(&p, "metrics")
        ))
        .unwrap();
    // Two large flushes: the first should leave that table alone, the
    // second must not re-merge (or trip over) the first one's rows.
    let mut results = Vec::new();
    for _ in 0..2 {
        for i in 0..n {
            a.increment_counter(&format!("k{i}"), 1.0).unwrap();
        }
        results.push(s.flush(WAIT));
    }
    let left: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {schema}.ringmetrics_staged_rows"), &[])
        .unwrap()
        .get(0);
    let stored = grand_total_in(&format!("{schema}."), &p);
    s.stop(WAIT).ok();
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).unwrap();
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("large flush {i}: {e}"));
        assert_eq!(r.rows_written, 4 * n as u64, "large flush {i}");
    }
    assert_eq!(stored, (n, 2.0 * n as f64 + 1.0));
    assert_eq!(left, 0, "rows were copied into someone else's table");
}

/// [`grand_total`] of the 1min rows in a schema.
fn grand_total_in(schema: &str, p: &str) -> (usize, f64) {
    let row = client()
        .query_one(
            &format!(
                "SELECT count(DISTINCT m.metric_id), coalesce(sum(t), 0) FROM {schema}{} m
                 CROSS JOIN LATERAL unnest(m.totals) t WHERE m.resolution = 60",
                quoted(p, "metrics")
            ),
            &[],
        )
        .unwrap();
    (row.get::<_, i64>(0) as usize, row.get(1))
}

/// Histograms and gauges only (no counters) in a large flush after an
/// outage: multi-bucket rows crossing chunk boundaries, then late records
/// and a restart; read back with read_metrics against a model.
#[test]
fn histograms_and_gauges_after_an_outage_match_a_model() {
    const T0: i64 = 1_767_225_600;
    let p = prefix("outage");
    let n = 700; // x2 kinds x 4 resolutions = 5,600 rows in the first flush
    let clock = ManualClock::from_secs(T0 + 30);
    let agg = Arc::new(
        Aggregator::with_clock(
            Config::with_capacity(2 * n).buckets_for(Resolution::Min1, 40),
            Arc::new(clock.clone()),
        )
        .unwrap(),
    );
    // Model at 1min: (count, sum, min, max) per histogram bucket, (value,
    // sampled_at) per gauge bucket.
    let mut h: HModel = BTreeMap::new();
    let mut g: GModel = BTreeMap::new();
    let s = syncer_at(&agg, &p, 0);
    // A 25-minute outage: one record a minute, nothing flushed.
    for m in 0..25 {
        clock.set((T0 + 30 + m * 60) * 1_000_000_000 + 17);
        record(&agg, clock.now(), m as usize, n, &mut h, &mut g);
    }
    let r = s.flush(WAIT).unwrap();
    assert!(r.rows_written > 5000, "{r:?}");
    check_model(&p, n, &h, &g, "after the outage");
    // Late records into minutes 3 and 14 (two chunks), plus the current one.
    for (salt, m) in [(100, 3), (101, 14), (102, 24)] {
        record(&agg, (T0 + 45 + m * 60) * 1_000_000_000, salt, n, &mut h, &mut g);
    }
    s.flush(WAIT).unwrap();
    check_model(&p, n, &h, &g, "after late records");
    // Restarted without memory: resends all 25 minutes over the stored rows.
    s.stop(WAIT).unwrap();
    let s = syncer_at(&agg, &p, 1);
    clock.advance_secs(60);
    record(&agg, clock.now(), 200, n, &mut h, &mut g);
    let r = s.flush(WAIT).unwrap();
    assert!(r.rows_written > 5000, "{r:?}");
    check_model(&p, n, &h, &g, "after a resend");
    s.stop(WAIT).unwrap();
}

type HModel = BTreeMap<(usize, i64), (u64, f64, f64, f64)>;
type GModel = BTreeMap<(usize, i64), f64>;

fn record(agg: &Aggregator, at: i64, salt: usize, n: usize, h: &mut HModel, g: &mut GModel) {
    let minute = at.div_euclid(60_000_000_000) * 60;
    for i in 0..n {
        let v = ((i * 7919 + salt * 104_729) % 2001) as f64 * 1e150 - 1e153;
        agg.record_key_at(Kind::Histogram, &format!("h{i}"), "seconds", v, at)
            .unwrap();
        let e = h
            .entry((i, minute))
            .or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.min(v);
        e.3 = e.3.max(v);
        agg.record_key_at(Kind::Gauge, &format!("g{i}"), "number", -v, at)
            .unwrap();
        g.insert((i, minute), -v);
    }
}

fn syncer_at(agg: &Arc<Aggregator>, p: &str, spelling: u32) -> Syncer {
    start(
        agg,
        format!("{} application_name=attack-outage-{spelling}", dsn()),
        p,
        "w",
    )
}

fn check_model(
    p: &str,
    n: usize,
    h: &BTreeMap<(usize, i64), (u64, f64, f64, f64)>,
    g: &BTreeMap<(usize, i64), f64>,
    when: &str,
) {
    const T0: i64 = 1_767_225_600;
    let q = ReadQuery {
        prefix: None,
        worker_id: None,
        resolution: Resolution::Min1,
        start_secs: T0 - 3600,
        end_secs: T0 + 7200,
    };
    let read = read_metrics(&dsn(), p, &q).unwrap();
    assert_eq!(read.len(), 2 * n, "{when}");
    let mut seen = 0;
    for s in &read {
        let i: usize = s.key[1..].parse().unwrap();
        for pt in &s.points {
            seen += 1;
            if s.key.starts_with('h') {
                let want = h[&(i, pt.start)];
                assert_eq!(
                    (pt.count, pt.sum, pt.min, pt.max),
                    want,
                    "{when}: {} at {}",
                    s.key,
                    pt.start
                );
            } else {
                assert_eq!(pt.value, g[&(i, pt.start)], "{when}: {} at {}", s.key, pt.start);
            }
        }
    }
    assert_eq!(seen, h.len() + g.len(), "{when}: every bucket stored");
}
