//! The syncer against a real PostgreSQL: exact rows, no rewrites, faults,
//! schema, conflicts, cleanup, reads.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client, dsn, prefix, syncer};
use ringmetrics::{Aggregator, Config, Kind, ManualClock, Resolution};
use ringmetrics_postgres::{ReadQuery, SyncError, Syncer, SyncerConfig, cleanup, read_metrics};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const WAIT: Duration = Duration::from_secs(30);

fn setup(config: Config, t: i64) -> (Arc<Aggregator>, ManualClock) {
    let clock = ManualClock::from_secs(t);
    (
        Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap()),
        clock,
    )
}

/// Sum of totals (counters) for `key` at `resolution` over all rows.
fn stored_total(prefix: &str, key: &str, resolution: i32) -> f64 {
    client()
        .query_one(
            &format!(
                "SELECT coalesce(sum(t), 0) FROM \"{prefix}metrics\" m JOIN \"{prefix}metric_definitions\" d
                 ON d.id = m.metric_id CROSS JOIN LATERAL unnest(m.totals) t WHERE d.key = $1 AND m.resolution = $2"
            ),
            &[&key, &resolution],
        )
        .unwrap()
        .get(0)
}

#[test]
fn round_trip_rows_are_chancys() {
    let p = prefix("rt");
    let (agg, clock) = setup(Config::default(), T0 + 5);
    agg.increment_counter("jobs:done", 1.0).unwrap();
    agg.increment_counter("jobs:done", 2.0).unwrap();
    agg.record_gauge("queue:depth", 7.0).unwrap();
    agg.record_key(Kind::Histogram, "job:x:execution_time", "seconds", 0.5)
        .unwrap();
    clock.advance_secs(60);
    agg.increment_counter("jobs:done", 4.0).unwrap();
    agg.record_gauge("queue:depth", 3.0).unwrap();
    agg.record_key(Kind::Histogram, "job:x:execution_time", "seconds", 1.5)
        .unwrap();
    let s = syncer(&agg, &p, "w1");
    let report = s.flush(WAIT).unwrap();
    // 3 series x 4 resolutions, one chunk each.
    assert_eq!(report.rows_written, 12);
    assert_eq!(report.definitions_created, 3);
    let mut c = client();
    let rows = c
        .query(
            &format!(
                "SELECT d.key, d.metric_type, d.unit, m.resolution, extract(epoch FROM m.chunk)::int8,
                        m.worker_id, m.session_id::text, cardinality(m.buckets),
                        m.counts IS NULL, m.totals IS NULL, m.minimums IS NULL, m.maximums IS NULL,
                        m.gauges IS NULL, cardinality(m.sampled_at),
                        m.totals::text, m.gauges::text, m.counts::text, m.minimums::text, m.maximums::text,
                        array(SELECT extract(epoch FROM b)::int8 FROM unnest(m.buckets) b),
                        array(SELECT (extract(epoch FROM x) * 1000000)::int8 FROM unnest(m.sampled_at) x)
                 FROM \"{p}metrics\" m JOIN \"{p}metric_definitions\" d ON d.id = m.metric_id
                 WHERE m.resolution = 60 ORDER BY d.key"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let key: String = r.get(0);
        assert_eq!(r.get::<_, i64>(4), T0, "chunk start");
        assert_eq!(r.get::<_, String>(5), "w1");
        assert_eq!(r.get::<_, String>(6), s.session_id().to_string());
        assert_eq!(r.get::<_, i32>(7), 2, "two minute buckets for {key}");
        assert_eq!(r.get::<_, i32>(13), 2);
        assert_eq!(r.get::<_, Vec<i64>>(19), vec![T0, T0 + 60]);
        assert_eq!(
            r.get::<_, Vec<i64>>(20),
            vec![(T0 + 5) * 1_000_000, (T0 + 65) * 1_000_000],
            "sampled_at of {key}"
        );
        let nulls: (bool, bool, bool, bool, bool) = (r.get(8), r.get(9), r.get(10), r.get(11), r.get(12));
        match key.as_str() {
            "jobs:done" => {
                assert_eq!((r.get::<_, &str>(1), r.get::<_, &str>(2)), ("counter", "count"));
                assert_eq!(nulls, (true, false, true, true, true));
                assert_eq!(r.get::<_, String>(14), "{3,4}");
            }
            "queue:depth" => {
                assert_eq!((r.get::<_, &str>(1), r.get::<_, &str>(2)), ("gauge", "number"));
                assert_eq!(nulls, (true, true, true, true, false));
                assert_eq!(r.get::<_, String>(15), "{7,3}");
            }
            _ => {
                assert_eq!((r.get::<_, &str>(1), r.get::<_, &str>(2)), ("histogram", "seconds"));
                assert_eq!(nulls, (false, false, false, false, true));
                assert_eq!(r.get::<_, String>(16), "{1,1}");
                assert_eq!(r.get::<_, String>(17), "{0.5,1.5}");
                assert_eq!(r.get::<_, String>(18), "{0.5,1.5}");
            }
        }
    }
    // Cluster-wide read with Chancy's merge rules.
    let q = ReadQuery {
        prefix: None,
        worker_id: None,
        resolution: Resolution::Min5,
        start_secs: T0,
        end_secs: T0 + 600,
    };
    let read = read_metrics(&dsn(), &p, &q).unwrap();
    assert_eq!(read.len(), 3);
    let by = |k: &str| read.iter().find(|s| s.key == k).unwrap();
    assert_eq!(by("jobs:done").points[0].value, 7.0);
    assert_eq!(by("queue:depth").points[0].value, 3.0);
    let h = by("job:x:execution_time").points[0];
    assert_eq!((h.count, h.sum, h.min, h.max, h.value), (2, 2.0, 0.5, 1.5, 1.0));
    s.stop(WAIT).unwrap();
}

#[test]
fn second_flush_without_records_writes_nothing() {
    let p = prefix("norewrite");
    let (agg, clock) = setup(Config::default().persisted(), T0);
    for i in 0..50 {
        agg.increment_counter(&format!("k:{i}"), 1.0).unwrap();
    }
    let s = syncer(&agg, &p, "w");
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 200);
    let versions = |c: &mut postgres::Client| -> Vec<String> {
        c.query(
            &format!("SELECT xmin::text FROM \"{p}metrics\" ORDER BY metric_id, resolution, chunk"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let before = versions(&mut client());
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 0);
    assert_eq!(versions(&mut client()), before, "unchanged rows were rewritten");
    // One more record touches exactly its four chunks.
    clock.advance_secs(30);
    agg.increment_counter("k:7", 1.0).unwrap();
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 4);
    s.stop(WAIT).unwrap();
}

#[test]
fn small_rings_never_lose_persisted_buckets() {
    // A 1min ring of 12 buckets wraps while a chunk is still open; the row
    // must keep the buckets the ring no longer holds.
    let p = prefix("smallring");
    let config = Config {
        buckets: [12, 12, 12, 12],
        ..Config::with_capacity(4)
    };
    let (agg, clock) = setup(config, T0);
    let s = syncer(&agg, &p, "w");
    for _ in 0..30 {
        agg.increment_counter("c", 1.0).unwrap();
        s.flush(WAIT).unwrap();
        clock.advance_secs(60);
    }
    assert_eq!(stored_total(&p, "c", 60), 30.0);
    assert_eq!(stored_total(&p, "c", 300), 30.0);
    s.stop(WAIT).unwrap();
}

#[test]
fn killed_connection_never_loses_or_doubles() {
    let p = prefix("faults");
    let (agg, clock) = setup(Config::default().persisted(), T0);
    let config = SyncerConfig {
        prefix: p.0.clone(),
        worker_id: "w".into(),
        interval: Duration::from_secs(3600),
        // Keep the connection between flushes, so there is one to kill.
        hold_connection: true,
        // Its own name, so killing it spares the other tests' syncers.
        ..SyncerConfig::new(format!("{} application_name=ringmetrics-faults-test", dsn()))
    };
    let s = Syncer::start(agg.clone(), config).unwrap();
    let mut expected = 0.0;
    for round in 0..6 {
        for _ in 0..100 {
            agg.increment_counter("c", 1.0).unwrap();
            expected += 1.0;
        }
        if round % 2 == 1 {
            // Kill the syncer's backend between flushes, while recording.
            let killed = client()
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ringmetrics-faults-test'",
                    &[],
                )
                .unwrap()
                .len();
            assert_eq!(killed, 1, "the syncer's connection");
            // The held connection fails the flush's first statement; the
            // flush tries once more on a fresh connection and succeeds.
            s.flush(WAIT).unwrap();
            assert_eq!(stored_total(&p, "c", 86400), expected);
            for _ in 0..10 {
                agg.increment_counter("c", 1.0).unwrap();
                expected += 1.0;
            }
        }
        s.flush(WAIT).unwrap();
        assert_eq!(stored_total(&p, "c", 86400), expected);
        clock.advance_secs(61);
    }
    let st = s.status();
    assert!(
        st.failures == 0 && st.flushes >= 9 && st.last_error.is_none() && st.pending_series == 0,
        "{st:?}"
    );
    assert_eq!(stored_total(&p, "c", 60), expected);
    s.stop(WAIT).unwrap();
}

#[test]
fn unknown_commit_outcome_is_retried_without_double_counting() {
    // The connection drops after the server received COMMIT and before its
    // answer arrived: committed, but the syncer sees a failure and retries.
    let p = prefix("ambiguous");
    let cutter = common::commit_cutter();
    let (agg, clock) = setup(Config::default().persisted(), T0);
    let config = SyncerConfig {
        prefix: p.0.clone(),
        interval: Duration::from_secs(3600),
        ..SyncerConfig::new(cutter.dsn.clone())
    };
    let s = Syncer::start(agg.clone(), config).unwrap();
    let mut expected = 0.0;
    for round in 0..4 {
        for _ in 0..50 {
            agg.increment_counter("c", 1.0).unwrap();
            agg.record_key(Kind::Histogram, "h", "seconds", 2.0).unwrap();
            expected += 1.0;
        }
        if round % 2 == 1 {
            cutter.arm(1);
            let e = s.flush(WAIT).unwrap_err();
            assert!(e.to_string().contains("outcome unknown"), "{e}");
            assert_eq!(cutter.fired() as usize, round / 2 + 1);
            let st = s.status();
            assert!(st.pending_series == 2 && st.last_error.is_some(), "{st:?}");
            // It did commit.
            assert_eq!(stored_total(&p, "c", 60), expected);
        }
        let report = s.flush(WAIT).unwrap();
        assert_eq!(
            report.rows_written, 8,
            "round {round}: the retry rewrites the same rows"
        );
        assert_eq!(stored_total(&p, "c", 60), expected);
        assert_eq!(stored_total(&p, "c", 86400), expected);
        assert_eq!(stored_total(&p, "h", 3600), 2.0 * expected);
        let n: i64 = client()
            .query_one(
                &format!(
                    "SELECT sum(n)::int8 FROM \"{p}metrics\" m CROSS JOIN LATERAL unnest(m.counts) n WHERE m.resolution = 300"
                ),
                &[],
            )
            .unwrap()
            .get::<_, Option<i64>>(0)
            .unwrap();
        assert_eq!(n as f64, expected, "histogram counts");
        clock.advance_secs(61);
    }
    let st = s.status();
    assert!(
        st.failures == 2 && st.last_error.is_none() && st.pending_series == 0,
        "{st:?}"
    );
    s.stop(WAIT).unwrap();
}

#[test]
fn server_restart_during_recording() {
    // A private cluster: restarting the shared one would cut the other
    // tests' connections (tests run in parallel). The port survives restarts.
    let (dir, dsn) = {
        let d = std::env::temp_dir().join(format!("ringmetrics-restart-{}", std::process::id()));
        let out = std::process::Command::new(common::root().join("scripts/pg-throwaway.sh"))
            .arg("start")
            .arg(&d)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (
            d.to_string_lossy().into_owned(),
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        )
    };
    // Stops the private cluster however the test ends.
    struct Cluster(String);
    impl Drop for Cluster {
        fn drop(&mut self) {
            let _ = std::process::Command::new(common::root().join("scripts/pg-throwaway.sh"))
                .arg("stop")
                .arg(&self.0)
                .status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cluster = Cluster(dir.clone());
    let p = format!("t{}_restart_", std::process::id());
    let (agg, clock) = setup(Config::default().persisted(), T0);
    let config = SyncerConfig {
        prefix: p.clone(),
        interval: Duration::from_millis(200),
        max_backoff: Duration::from_millis(400),
        ..SyncerConfig::new(dsn.clone())
    };
    let s = Syncer::start(agg.clone(), config).unwrap();
    let pg_ctl = |args: &[&str]| {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path().join("bin/pg_ctl"))
            .unwrap_or_else(|| "pg_ctl".into());
        // SAFETY: getuid has no preconditions and cannot fail.
        let mut cmd = if unsafe { libc::getuid() } == 0 {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            std::process::Command::new(bin)
        };
        cmd.args(["-D", &format!("{dir}/data"), "-w", "-t", "60"]).args(args);
        assert!(cmd.output().unwrap().status.success(), "pg_ctl {args:?}");
    };
    let port = dsn
        .split("port=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut expected = 0.0;
    for _ in 0..200 {
        agg.increment_counter("c", 1.0).unwrap();
        expected += 1.0;
    }
    s.flush(WAIT).unwrap();
    pg_ctl(&["-m", "fast", "stop"]);
    // Recording goes on while the server is down.
    for _ in 0..300 {
        agg.increment_counter("c", 1.0).unwrap();
        expected += 1.0;
        clock.advance_secs(1);
    }
    assert!(s.flush(WAIT).is_err());
    let opts = format!("-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200");
    pg_ctl(&["-l", &format!("{dir}/server.log"), "-o", &opts, "start"]);
    s.flush(WAIT).unwrap();
    let mut c = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
    let total: f64 = c
        .query_one(
            &format!(
                "SELECT sum(t) FROM \"{p}metrics\" m CROSS JOIN LATERAL unnest(m.totals) t WHERE m.resolution = 86400"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(total, expected);
    let st = s.status();
    assert!(
        st.failures >= 1 && st.last_error.is_none() && st.pending_series == 0,
        "{st:?}"
    );
    s.stop(WAIT).unwrap();
}

#[test]
fn conflicting_stored_definition_drops_only_that_series() {
    let p = prefix("conflict");
    let (agg, _clock) = setup(Config::default().persisted(), T0);
    let s = syncer(&agg, &p, "w");
    agg.increment_counter("z", 1.0).unwrap();
    s.flush(WAIT).unwrap(); // creates the schema
    client()
        .execute(
            &format!("INSERT INTO \"{p}metric_definitions\" (key, metric_type, unit) VALUES ('x', 'gauge', 'bytes')"),
            &[],
        )
        .unwrap();
    agg.increment_counter("x", 1.0).unwrap();
    agg.increment_counter("y", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    assert_eq!(s.status().conflicts_dropped, 1);
    assert_eq!(stored_total(&p, "y", 60), 1.0);
    let n: i64 = client()
        .query_one(&format!("SELECT count(*) FROM \"{p}metrics\" m JOIN \"{p}metric_definitions\" d ON d.id = m.metric_id WHERE d.key = 'x'"), &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    s.stop(WAIT).unwrap();
}

#[test]
fn schema_version_mismatch_is_a_clear_error_and_touches_nothing() {
    let p = prefix("version");
    let mut c = client();
    c.batch_execute(&format!(
        "CREATE TABLE \"{p}schema_version\" (version_of VARCHAR(255) PRIMARY KEY, version INT);
         INSERT INTO \"{p}schema_version\" VALUES ('metrics', 1);
         CREATE TABLE \"{p}metrics\" (metric_key TEXT PRIMARY KEY);
         INSERT INTO \"{p}metrics\" VALUES ('old');"
    ))
    .unwrap();
    let (agg, _clock) = setup(Config::default().persisted(), T0);
    agg.increment_counter("c", 1.0).unwrap();
    let s = syncer(&agg, &p, "w");
    let e = s.flush(WAIT).unwrap_err();
    assert_eq!(e, SyncError::SchemaVersion { found: 1, expected: 2 });
    assert!(e.to_string().contains("run Chancy 0.26's migrations"), "{e}");
    let old: String = c
        .query_one(&format!("SELECT metric_key FROM \"{p}metrics\""), &[])
        .unwrap()
        .get(0);
    assert_eq!(old, "old");
    s.stop(WAIT).unwrap_err();
}

#[test]
fn concurrent_starts_create_the_schema_once() {
    let p = prefix("concurrent");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let p = p.0.clone();
            std::thread::spawn(move || {
                let (agg, _clock) = setup(Config::default().persisted(), T0);
                agg.increment_counter("c", 1.0).unwrap();
                let s = syncer(&agg, &p, &format!("w{i}"));
                s.flush(WAIT).unwrap();
                s.stop(WAIT).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(stored_total(&p, "c", 60), 4.0);
}

#[test]
fn cleanup_expires_chunks_and_orphans() {
    let p = prefix("cleanup");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (agg, clock) = setup(Config::default(), now - 30 * 86400);
    agg.increment_counter("old", 1.0).unwrap();
    let s = syncer(&agg, &p, "w");
    s.flush(WAIT).unwrap();
    clock.set(now * 1_000_000_000);
    agg.increment_counter("new", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    // Retention: 1 hour of minutes, a day of 5min, a week of hours, 90 days.
    let removed = cleanup(&dsn(), &p, [3600, 86400, 7 * 86400, 90 * 86400]).unwrap();
    assert_eq!(removed, 3, "old's 1min, 5min and 1hour chunks expire");
    let keys: Vec<String> = client()
        .query(&format!("SELECT key FROM \"{p}metric_definitions\" ORDER BY key"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["new", "old"], "old still has hour/day rows");
    let removed = cleanup(&dsn(), &p, [3600, 86400, 7 * 86400, 86400]).unwrap();
    assert_eq!(removed, 1, "old's day chunk expires");
    let keys: i64 = client()
        .query_one(
            &format!("SELECT count(*) FROM \"{p}metric_definitions\" WHERE key = 'old'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(keys, 0, "orphan definition removed");
    assert!(stored_total(&p, "new", 60) == 1.0 && stored_total(&p, "new", 86400) == 1.0);
    s.stop(WAIT).unwrap();
}

#[test]
fn prefix_reads_are_literal() {
    let p = prefix("literal");
    let (agg, _clock) = setup(Config::default().persisted(), T0);
    for k in ["a_b", "a_b:c", "axb", "a%b", "a_b_c", "a"] {
        agg.increment_counter(k, 1.0).unwrap();
    }
    let s = syncer(&agg, &p, "w");
    s.flush(WAIT).unwrap();
    let q = |prefix: &str| {
        let q = ReadQuery {
            prefix: Some(prefix.into()),
            worker_id: None,
            resolution: Resolution::Min1,
            start_secs: T0,
            end_secs: T0 + 60,
        };
        read_metrics(&dsn(), &p, &q)
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(q("a_b"), ["a_b", "a_b:c"]);
    assert_eq!(q("a%b"), ["a%b"]);
    assert_eq!(q("a"), ["a"]);
    let mut w = ReadQuery {
        prefix: None,
        worker_id: Some("other".into()),
        resolution: Resolution::Min1,
        start_secs: T0,
        end_secs: T0 + 60,
    };
    assert!(
        read_metrics(&dsn(), &p, &w)
            .unwrap()
            .iter()
            .all(|s| s.points.is_empty())
    );
    w.start_secs += 1;
    assert!(matches!(read_metrics(&dsn(), &p, &w), Err(SyncError::InvalidConfig(_))));
    s.stop(WAIT).unwrap();
}

#[test]
fn passwords_never_appear_in_errors() {
    let (agg, _clock) = setup(Config::default().persisted(), T0);
    agg.increment_counter("c", 1.0).unwrap();
    let config = SyncerConfig::new("host=127.0.0.1 port=1 user=postgres password=hunter2 connect_timeout=2");
    assert!(!format!("{config:?}").contains("hunter2"));
    let s = Syncer::start(agg.clone(), config).unwrap();
    let e = s.flush(WAIT).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(!s.status().last_error.unwrap().contains("hunter2"));
    let e = read_metrics(
        "postgresql://postgres:hunter2@127.0.0.1:1/postgres?connect_timeout=2",
        "chancy_",
        &ReadQuery {
            prefix: None,
            worker_id: None,
            resolution: Resolution::Min1,
            start_secs: 0,
            end_secs: 60,
        },
    )
    .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = Syncer::start(agg.clone(), SyncerConfig::new("host=x password=hunter2 bogus_key=1")).unwrap_err();
    assert!(
        matches!(e, SyncError::InvalidConfig(_)) && !e.to_string().contains("hunter2"),
        "{e}"
    );
    let e = Syncer::start(
        agg,
        SyncerConfig {
            prefix: "bad\0prefix".into(),
            ..SyncerConfig::new(dsn())
        },
    )
    .unwrap_err();
    assert!(matches!(e, SyncError::InvalidConfig(_)));
    drop(s); // Drop with a dead server returns within its bound.
}

/// A role without the TEMPORARY privilege (a locked-down database): a
/// flush too large for one statement cannot use the staging table, so it
/// is sent as several statements instead, and nothing is lost or doubled.
#[test]
fn large_flushes_without_the_temporary_privilege() {
    let mut admin = client();
    let name = format!("rm_notemp_{}", std::process::id());
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {name}"));
    admin.batch_execute(&format!("CREATE ROLE {name} LOGIN")).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {name}"))
        .unwrap();
    admin
        .batch_execute(&format!("REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC, {name}"))
        .unwrap();
    let dsn = format!("{} user={name} dbname={name}", dsn());
    let mut role = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
    let denied = role.batch_execute("CREATE TEMPORARY TABLE t (x int)").unwrap_err();
    assert_eq!(denied.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    drop(role);

    let keys = 1500;
    let agg = Arc::new(Aggregator::new(Config::with_capacity(keys).persisted()).unwrap());
    let s = Syncer::start(
        agg.clone(),
        SyncerConfig {
            prefix: "p_".into(),
            worker_id: "w".into(),
            periodic: false,
            ..SyncerConfig::new(dsn.clone())
        },
    )
    .unwrap();
    for round in 0..2 {
        for i in 0..keys {
            agg.increment_counter(&format!("k{i}"), 1.0).unwrap();
        }
        let report = s.flush(WAIT).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(report.rows_written, 4 * keys as u64, "round {round}");
    }
    s.stop(WAIT).unwrap();
    let q = common::around_today(None);
    let read = read_metrics(&dsn, "p_", &q).unwrap();
    assert_eq!(read.len(), keys);
    for series in &read {
        assert_eq!(
            series.points.iter().map(|p| p.value).sum::<f64>(),
            2.0,
            "{}",
            series.key
        );
    }
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
    admin.batch_execute(&format!("DROP ROLE {name}")).unwrap();
}
