//! Adversarial tests of the one-shot retry of a flush whose held connection
//! (`hold_connection`) turned out closed (thread.rs `State::flush`), and of
//! the catalog / read paths on odd stored rows (writer.rs, read.rs).
//!
//! The backend is killed at exact points by a trigger on the metrics table
//! that terminates its own backend (`pg_terminate_backend(pg_backend_pid())`)
//! a fixed number of times, counted in a sequence (non-transactional: it
//! also counts the attempts that were rolled back).

mod common;

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::small::{T0, config, setup};
use common::{Outage, client, commit_cutter, dsn, prefix};
use ringmetrics::{Aggregator, Config, Resolution};
use ringmetrics_postgres::{ReadQuery, Syncer, SyncerConfig, read_metrics};

const WAIT: Duration = Duration::from_secs(120);

fn held(agg: &Arc<Aggregator>, p: &str, dsn: &str) -> Syncer {
    Syncer::start(
        agg.clone(),
        SyncerConfig {
            hold_connection: true,
            ..config(p, dsn, "w")
        },
    )
    .unwrap()
}

/// (keys with data, sum of every total) at `res`.
fn grand_total(p: &str, res: i32) -> (i64, f64) {
    let r = client()
        .query_one(
            &format!(
                "SELECT count(DISTINCT d.key), coalesce(sum(u.t), 0)
                 FROM \"{p}metrics\" m JOIN \"{p}metric_definitions\" d ON d.id = m.metric_id
                 CROSS JOIN LATERAL unnest(m.totals) AS u(t) WHERE m.resolution = $1"
            ),
            &[&res],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

fn metric_id(p: &str, key: &str) -> i64 {
    client()
        .query_one(
            &format!("SELECT id FROM \"{p}metric_definitions\" WHERE key = $1"),
            &[&key],
        )
        .unwrap()
        .get(0)
}

/// A row trigger on `{p}metrics` that terminates its own backend at the
/// row of `metric_id` at resolution 60, the first `kills` times; the
/// sequence `{p}fires` counts every time that row was reached.
struct Killer {
    p: String,
}

impl Killer {
    fn install(p: &str, metric_id: i64, kills: i64) -> Killer {
        client()
            .batch_execute(&format!(
                "CREATE SEQUENCE \"{p}fires\" OWNED BY \"{p}metrics\".metric_id;
                 CREATE FUNCTION \"{p}kill\"() RETURNS trigger LANGUAGE plpgsql AS $f$
                 BEGIN
                     IF NEW.metric_id = {metric_id} AND NEW.resolution = 60 THEN
                         IF nextval('\"{p}fires\"') <= {kills} THEN
                             PERFORM pg_terminate_backend(pg_backend_pid());
                             PERFORM pg_sleep(10);
                         END IF;
                     END IF;
                     RETURN NEW;
                 END $f$;
                 CREATE TRIGGER kill BEFORE INSERT ON \"{p}metrics\"
                     FOR EACH ROW EXECUTE FUNCTION \"{p}kill\"();"
            ))
            .unwrap();
        Killer { p: p.to_owned() }
    }

    /// Times the row was reached (each a write attempt).
    fn fires(&self) -> i64 {
        let r = client()
            .query_one(&format!("SELECT last_value, is_called FROM \"{}fires\"", self.p), &[])
            .unwrap();
        if r.get::<_, bool>(1) { r.get(0) } else { 0 }
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        let p = &self.p;
        let _ = client().batch_execute(&format!(
            "DROP TRIGGER IF EXISTS kill ON \"{p}metrics\"; DROP FUNCTION IF EXISTS \"{p}kill\"() CASCADE;
             DROP SEQUENCE IF EXISTS \"{p}fires\""
        ));
    }
}

/// A flush of more than 50,000 rows is two transactions; the held
/// connection is killed inside the second (the first already committed).
/// The retry on a fresh connection writes the second batch: every total
/// exact, and the flush's report counts every row it wrote.
// (Found by the sixth adversarial review: the retry's report replaced the
// first attempt's, so this flush reported only the second batch's 2,000
// rows. `State::flush` now keeps one report across both attempts, and the
// status counts the rows of batches that committed before a failure too.)
#[test]
fn a_kill_in_the_second_transaction_is_retried_and_reports_every_row() {
    let p = prefix("rt2tx");
    let n = 13_000; // 52,000 rows: a transaction of 50,000, then one of 2,000
    let (a, _clock) = setup(Config::with_capacity(n));
    let s = held(&a, &p, &dsn());
    for i in 0..n {
        a.increment_counter(&format!("k{i}"), 1.0).unwrap();
    }
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 4 * n as u64);
    let killer = Killer::install(&p, metric_id(&p, &format!("k{}", n - 1)), 1);
    for i in 0..n {
        a.increment_counter(&format!("k{i}"), 1.0).unwrap();
    }
    let before = s.status().rows_written;
    let r = s.flush(WAIT);
    assert_eq!(killer.fires(), 2, "one kill, one retry");
    for res in [60, 300, 3600, 86400] {
        assert_eq!(grand_total(&p, res), (n as i64, 2.0 * n as f64), "res {res}");
    }
    let r = r.expect("the retry on a fresh connection succeeds");
    let after = s.status().rows_written;
    s.stop(WAIT).unwrap();
    assert_eq!(
        (r.rows_written, after - before),
        (4 * n as u64, 4 * n as u64),
        "the flush wrote 52,000 rows (50,000 on the first attempt, 2,000 on the retry)"
    );
}

/// The staged merge (more than 5,000 rows, COPY then INSERT ... SELECT) is
/// killed on the first attempt and on the retry: the flush fails once,
/// without a third attempt (no loop); the next flush saves everything
/// exactly once.
#[test]
fn a_retry_killed_again_is_not_retried_in_a_loop_and_loses_nothing() {
    let p = prefix("rtloop");
    let n = 1500; // 6,000 rows: the staging path
    let (a, _clock) = setup(Config::with_capacity(n));
    let s = held(&a, &p, &dsn());
    for i in 0..n {
        a.increment_counter(&format!("k{i}"), 1.0).unwrap();
    }
    s.flush(WAIT).unwrap();
    let killer = Killer::install(&p, metric_id(&p, "k700"), 2);
    for i in 0..n {
        a.increment_counter(&format!("k{i}"), 1.0).unwrap();
    }
    let e = s.flush(WAIT).unwrap_err();
    assert_eq!(killer.fires(), 2, "two attempts, then the error: {e}");
    assert_eq!(grand_total(&p, 60), (n as i64, n as f64), "both attempts rolled back");
    let r = s.flush(WAIT).unwrap();
    assert_eq!(killer.fires(), 3);
    assert_eq!(r.rows_written, 4 * n as u64);
    for res in [60, 300, 3600, 86400] {
        assert_eq!(grand_total(&p, res), (n as i64, 2.0 * n as f64), "res {res}");
    }
    assert_eq!(s.status().failures, 1);
    s.stop(WAIT).unwrap();
}

/// Killed from outside while the COPY of a large flush runs on the held
/// connection: the flush succeeds (the retry) and saves everything once.
#[test]
fn a_held_connection_killed_mid_copy_is_retried_once_and_exact() {
    let p = prefix("rtcopy");
    let n = 12_000; // 48,000 rows: one transaction, a COPY that takes a while
    let (a, _clock) = setup(Config::with_capacity(n));
    let app = format!("rtcopy-{}", std::process::id());
    let s = held(&a, &p, &format!("{} application_name={app}", dsn()));
    let mut expected = 0.0;
    let mut hit = false;
    for round in 0..4 {
        for i in 0..n {
            a.increment_counter(&format!("k{i}"), 1.0).unwrap();
        }
        expected += 1.0;
        if round == 0 {
            s.flush(WAIT).unwrap();
            continue;
        }
        let stop = AtomicBool::new(false);
        let (r, caught) = std::thread::scope(|scope| {
            let killer = scope.spawn(|| {
                let mut c = client();
                while !stop.load(Ordering::SeqCst) {
                    let k: i64 = c
                        .query_one(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                             WHERE application_name = $1 AND state = 'active' AND query ILIKE 'COPY%'",
                            &[&app],
                        )
                        .unwrap()
                        .get(0);
                    if k > 0 {
                        return true;
                    }
                }
                false
            });
            let r = s.flush(WAIT);
            stop.store(true, Ordering::SeqCst);
            (r, killer.join().unwrap())
        });
        let r = r.unwrap_or_else(|e| panic!("round {round} (killed: {caught}): {e}"));
        assert_eq!(r.rows_written, 4 * n as u64, "round {round}");
        for res in [60, 86400] {
            assert_eq!(
                grand_total(&p, res),
                (n as i64, expected * n as f64),
                "round {round} res {res}"
            );
        }
        if caught {
            hit = true;
            break;
        }
    }
    assert!(hit, "the kill never landed during the COPY");
    s.stop(WAIT).unwrap();
}

/// The held connection cut after the server committed a staged flush
/// (outcome unknown): the retry resends the same absolute buckets, nothing
/// doubles, the flush succeeds.
#[test]
fn a_held_connection_cut_at_a_staged_commit_never_doubles() {
    let p = prefix("rtcut");
    let cutter = commit_cutter();
    let n = 1500;
    let (a, _clock) = setup(Config::with_capacity(n));
    let s = held(&a, &p, &cutter.dsn);
    for round in 1..=3 {
        for i in 0..n {
            a.increment_counter(&format!("k{i}"), 1.0).unwrap();
        }
        if round == 2 {
            cutter.arm(1);
        }
        let r = s.flush(WAIT).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(r.rows_written, 4 * n as u64, "round {round}");
        for res in [60, 300, 3600, 86400] {
            assert_eq!(
                grand_total(&p, res),
                (n as i64, round as f64 * n as f64),
                "round {round} res {res}"
            );
        }
    }
    assert_eq!(cutter.fired(), 1);
    s.stop(WAIT).unwrap();
}

/// A statement timeout does not close the connection: the flush fails
/// once, with no retry (one attempt reached the table), and the next flush
/// after the cause is gone saves everything once.
#[test]
fn a_statement_timeout_on_a_held_connection_is_not_retried() {
    let p = prefix("rtstmt");
    let (a, _clock) = setup(Config::with_capacity(8));
    let s = Syncer::start(
        a.clone(),
        SyncerConfig {
            hold_connection: true,
            statement_timeout: Duration::from_millis(300),
            ..config(&p, &dsn(), "w")
        },
    )
    .unwrap();
    a.increment_counter("c", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    client()
        .batch_execute(&format!(
            "CREATE SEQUENCE \"{p}slow\" OWNED BY \"{p}metrics\".metric_id;
             CREATE FUNCTION \"{p}slow\"() RETURNS trigger LANGUAGE plpgsql AS $f$
             BEGIN PERFORM nextval('\"{p}slow\"'); PERFORM pg_sleep(2); RETURN NULL; END $f$;
             CREATE TRIGGER slow BEFORE INSERT ON \"{p}metrics\" FOR EACH STATEMENT EXECUTE FUNCTION \"{p}slow\"();"
        ))
        .unwrap();
    a.increment_counter("c", 2.0).unwrap();
    let t = Instant::now();
    let e = s.flush(WAIT).unwrap_err();
    let took = t.elapsed();
    let attempts: i64 = client()
        .query_one(&format!("SELECT last_value FROM \"{p}slow\""), &[])
        .unwrap()
        .get(0);
    client()
        .batch_execute(&format!(
            "DROP TRIGGER slow ON \"{p}metrics\"; DROP FUNCTION \"{p}slow\"()"
        ))
        .unwrap();
    assert!(e.to_string().contains("57014"), "{e}");
    assert_eq!(attempts, 1, "a statement timeout is not retried");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    s.flush(WAIT).unwrap();
    assert_eq!(grand_total(&p, 60), (1, 3.0));
    s.stop(WAIT).unwrap();
}

/// The held connection killed while idle before every flush: every flush
/// succeeds (one retry each), every total exact.
#[test]
fn repeated_idle_kills_each_cost_one_retry_and_nothing_else() {
    let p = prefix("rtrep");
    let (a, clock) = setup(Config::with_capacity(8));
    let app = format!("rtrep-{}", std::process::id());
    let s = held(&a, &p, &format!("{} application_name={app}", dsn()));
    a.increment_counter("c", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    for round in 1..=5 {
        let killed: i64 = client()
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .unwrap()
            .get(0);
        assert_eq!(killed, 1, "round {round}");
        // (let the backend go)
        std::thread::sleep(Duration::from_millis(100));
        clock.advance_secs(60);
        a.increment_counter("c", round as f64).unwrap();
        s.flush(WAIT).unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    assert_eq!(grand_total(&p, 60), (1, 16.0));
    assert_eq!(grand_total(&p, 86400), (1, 16.0));
    let st = s.status();
    assert_eq!((st.failures, st.flushes), (0, 6));
    s.stop(WAIT).unwrap();
}

/// A DSN of two hosts: the held connection on the first is cut and the
/// first host then refuses; the retry lands on the second host (the same
/// database), the flush succeeds, totals exact.
#[test]
fn the_retry_lands_on_the_next_host_of_a_multi_host_dsn() {
    let p = prefix("rthosts");
    let outage = Outage::start();
    let upstream: postgres::Config = dsn().parse().unwrap();
    let port = upstream.get_ports().first().copied().unwrap_or(5432);
    let first: postgres::Config = outage.dsn.parse().unwrap();
    let multi = format!(
        "host=127.0.0.1,127.0.0.1 port={},{port} user={} dbname={} sslmode=disable connect_timeout=5 \
         target_session_attrs=read-write",
        first.get_ports()[0],
        upstream.get_user().unwrap_or("postgres"),
        upstream.get_dbname().unwrap_or("postgres")
    );
    let (a, clock) = setup(Config::with_capacity(8));
    let s = held(&a, &p, &multi);
    a.increment_counter("c", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    outage.set_down(true);
    clock.advance_secs(60);
    a.increment_counter("c", 2.0).unwrap();
    let r = s.flush(WAIT);
    assert_eq!(grand_total(&p, 60), (1, 3.0), "{r:?}");
    r.expect("the retry connects to the second host");
    a.increment_counter("c", 4.0).unwrap();
    s.flush(WAIT).unwrap();
    outage.set_down(false);
    s.stop(WAIT).unwrap();
    assert_eq!(grand_total(&p, 60), (1, 7.0));
}

/// A proxy that forwards, or (black hole) cuts every open connection and
/// accepts new ones without ever answering: a connect attempt times out.
struct BlackHole {
    port: u16,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let upstream: postgres::Config = dsn().parse().unwrap();
        let port = upstream.get_ports().first().copied().unwrap_or(5432);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let me = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(0));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (m, o) = (mode.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if m.load(Ordering::SeqCst) == 1 {
                    // Held, never read or answered.
                    o.lock().unwrap().push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                o.lock().unwrap().push(client.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        BlackHole { port: me, mode, open }
    }

    fn black_hole(&self) {
        self.mode.store(1, Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// The server unreachable (connects time out) after the held connection
/// was cut: the flush costs one connect timeout, not two; `stop(1 s)`
/// returns `Timeout` within its timeout; nothing is lost once a syncer
/// can write again.
#[test]
fn an_unreachable_server_costs_one_connect_timeout_and_stop_keeps_its_timeout() {
    let p = prefix("rtdown");
    let hole = BlackHole::start();
    let upstream: postgres::Config = dsn().parse().unwrap();
    let via = format!(
        "host=127.0.0.1 port={} user={} dbname={} sslmode=disable connect_timeout=2",
        hole.port,
        upstream.get_user().unwrap_or("postgres"),
        upstream.get_dbname().unwrap_or("postgres")
    );
    let (a, clock) = setup(Config::with_capacity(8));
    let s = held(&a, &p, &via);
    a.increment_counter("c", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    hole.black_hole();
    a.increment_counter("c", 2.0).unwrap();
    let t = Instant::now();
    let e = s.flush(WAIT).unwrap_err();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "one connect timeout (2 s), took {took:?}: {e}"
    );
    clock.advance_secs(60);
    a.increment_counter("c", 4.0).unwrap();
    let t = Instant::now();
    let stopped = s.stop(Duration::from_secs(1));
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
    assert!(
        matches!(stopped, Err(ringmetrics_postgres::SyncError::Timeout)),
        "{stopped:?}"
    );
    // The final flush times out on its own; then the aggregator's session is
    // free and a syncer on the real server saves everything once.
    assert!(s.stop(WAIT).is_err());
    drop(s);
    let s = Syncer::start(a.clone(), config(&p, &dsn(), "w")).unwrap();
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
    assert_eq!(grand_total(&p, 60), (1, 7.0));
    assert_eq!(grand_total(&p, 86400), (1, 7.0));
}

// -- odd catalogs and stored rows --------------------------------------------

fn day(worker: Option<&str>) -> ReadQuery {
    ReadQuery {
        prefix: None,
        worker_id: worker.map(str::to_owned),
        resolution: Resolution::Day1,
        start_secs: T0 - T0.rem_euclid(86400),
        end_secs: T0 - T0.rem_euclid(86400) + 86400,
    }
}

fn minutes() -> ReadQuery {
    ReadQuery {
        prefix: None,
        worker_id: None,
        resolution: Resolution::Min1,
        start_secs: T0,
        end_secs: T0 + 600,
    }
}

/// Tables made by a syncer, holding "c" = 1 at T0.
fn tables(p: &str) {
    let (a, _clock) = setup(Config::with_capacity(8));
    let s = Syncer::start(a.clone(), config(p, &dsn(), "w")).unwrap();
    a.increment_counter("c", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
}

/// `read_metrics` never panics: run it, turning a panic into a message.
fn read(p: &str, q: &ReadQuery) -> Result<Result<Vec<ringmetrics_postgres::ReadSeries>, String>, String> {
    let (d, p, q) = (dsn(), p.to_owned(), q.clone());
    std::panic::catch_unwind(move || read_metrics(&d, &p, &q).map_err(|e| e.to_string())).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Rows another writer made: NULLs in the arrays, arrays of unequal length,
/// empty arrays, NULL sampled_at, a metric_type outside the three, a
/// definition without rows. Read back without a panic, by the rules.
#[test]
fn read_metrics_on_odd_stored_rows_never_panics() {
    let p = prefix("rdodd");
    tables(&p);
    let t = |s: i64| format!("to_timestamp({s})");
    client()
        .batch_execute(&format!(
            "ALTER TABLE \"{p}metric_definitions\" DROP CONSTRAINT \"{p}metric_definitions_metric_type_check\";
             ALTER TABLE \"{p}metrics\" ALTER COLUMN sampled_at DROP NOT NULL;
             INSERT INTO \"{p}metric_definitions\" (key, metric_type, unit) VALUES
                 ('nulls', 'counter', ''), ('uneven', 'histogram', 's'), ('empty', 'gauge', ''),
                 ('bogus', 'timer', 'ms'), ('lonely', 'counter', ''), ('nosample', 'gauge', '');
             INSERT INTO \"{p}metrics\" (metric_id, resolution, chunk, session_id, worker_id, buckets, counts,
                     totals, minimums, maximums, gauges, sampled_at)
             SELECT d.id, 60, {c}, gen_random_uuid(), 'x', v.b, v.n, v.t, v.lo, v.hi, v.g, v.s
             FROM \"{p}metric_definitions\" d JOIN (VALUES
                 ('nulls', ARRAY[{b0}, NULL, {b2}]::timestamptz[], NULL::int8[], ARRAY[1, NULL, 3]::float8[],
                  NULL::float8[], NULL::float8[], NULL::float8[], ARRAY[{b0}, {b0}, NULL]::timestamptz[]),
                 ('uneven', ARRAY[{b0}, {b1}, {b2}]::timestamptz[], ARRAY[2]::int8[], ARRAY[4, 6]::float8[],
                  ARRAY[1]::float8[], ARRAY[3, 5, 7, 9]::float8[], NULL, ARRAY[{b0}]::timestamptz[]),
                 ('empty', '{{}}'::timestamptz[], '{{}}'::int8[], NULL, NULL, NULL, '{{}}'::float8[],
                  '{{}}'::timestamptz[]),
                 ('bogus', ARRAY[{b0}]::timestamptz[], ARRAY[1]::int8[], ARRAY[5]::float8[], ARRAY[5]::float8[],
                  ARRAY[5]::float8[], ARRAY[5]::float8[], ARRAY[{b0}]::timestamptz[]),
                 ('nosample', ARRAY[{b0}]::timestamptz[], NULL, NULL, NULL, NULL, ARRAY[8]::float8[], NULL)
             ) AS v(key, b, n, t, lo, hi, g, s) ON v.key = d.key",
            c = t(T0 - T0.rem_euclid(3600)),
            b0 = t(T0),
            b1 = t(T0 + 60),
            b2 = t(T0 + 120),
        ))
        .unwrap();
    let got = read(&p, &minutes())
        .unwrap_or_else(|panic| panic!("read_metrics panicked: {panic}"))
        .unwrap();
    let by: std::collections::BTreeMap<&str, Vec<(i64, u64, f64, f64)>> = got
        .iter()
        .map(|s| {
            (
                s.key.as_str(),
                s.points.iter().map(|p| (p.start, p.count, p.sum, p.value)).collect(),
            )
        })
        .collect();
    assert_eq!(
        by.keys().copied().collect::<Vec<_>>(),
        ["bogus", "c", "empty", "lonely", "nosample", "nulls", "uneven"]
    );
    assert_eq!(by["c"], [(T0, 0, 1.0, 1.0)]);
    assert_eq!(by["lonely"], []);
    assert_eq!(by["empty"], []);
    // (the NULL bucket is skipped; a NULL total sums to nothing)
    assert_eq!(by["nulls"], [(T0, 0, 1.0, 1.0), (T0 + 120, 0, 3.0, 3.0)]);
    assert_eq!(
        by["uneven"],
        [(T0, 2, 4.0, 2.0), (T0 + 60, 0, 6.0, 6.0), (T0 + 120, 0, 0.0, 0.0)]
    );
    // an unknown type reads as a counter (its total)
    assert_eq!(by["bogus"], [(T0, 1, 5.0, 5.0)]);
    let nosample = &got.iter().find(|s| s.key == "nosample").unwrap().points;
    assert_eq!(
        (nosample.len(), nosample[0].value, nosample[0].sampled_at_nanos),
        (1, 8.0, 0)
    );
}

/// A catalog whose columns allow NULL (not made by Chancy's migrations):
/// a NULL metric_type or unit is a clear error from the writer and from
/// `read_metrics`, never a panic.
// (Found by the sixth adversarial review: `read_metrics` read the catalog
// with `Row::get`, which panics on a NULL or another type; it uses
// `try_get` now and returns a clear error.)

#[test]
fn a_null_catalog_column_is_an_error_never_a_panic() {
    let mut bad: Vec<String> = Vec::new();
    for (case, alter, insert) in [
        (
            "type",
            "ALTER COLUMN metric_type DROP NOT NULL",
            "INSERT INTO \"{p}metric_definitions\" (key, metric_type, unit) VALUES ('z', NULL, '')",
        ),
        (
            "unit",
            "ALTER COLUMN unit DROP NOT NULL",
            "INSERT INTO \"{p}metric_definitions\" (key, metric_type, unit) VALUES ('z', 'counter', NULL)",
        ),
        ("id", "ALTER COLUMN id TYPE int4", ""),
    ] {
        let p = prefix("rdnull");
        tables(&p);
        client()
            .batch_execute(&format!(
                "ALTER TABLE \"{p}metric_definitions\" {alter}; {}",
                insert.replace("{p}", &p)
            ))
            .unwrap();
        // The writer: a clear error, retried, no panic (its thread lives).
        let (a, _clock) = setup(Config::with_capacity(8));
        let s = Syncer::start(a.clone(), config(&p, &dsn(), "w2")).unwrap();
        a.increment_counter(if case == "id" { "c" } else { "z" }, 1.0).unwrap();
        let w = s.flush(WAIT);
        assert!(s.status().running, "{case}: the syncer thread died");
        let e = w.expect_err(case);
        assert!(e.to_string().contains("metric catalog"), "{case}: {e}");
        let _ = s.stop(Duration::from_secs(5));
        // The reader.
        match read(&p, &day(None)) {
            Err(panic) => bad.push(format!("{case}: read_metrics panicked: {panic}")),
            Ok(Ok(series)) if case != "id" => bad.push(format!("{case}: read {series:?}")),
            Ok(_) => {}
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Definitions are matched back byte for byte: a key column given a
/// case-insensitive nondeterministic collation (one row for "K" matches
/// "k") is a clear error, never a write under the wrong definition.
#[test]
fn a_nondeterministic_key_collation_is_a_clear_error_and_writes_nothing_wrong() {
    let p = prefix("rdcoll");
    tables(&p);
    let coll = format!("{p}ci");
    client()
        .batch_execute(&format!(
            "CREATE COLLATION IF NOT EXISTS \"{coll}\" (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
             ALTER TABLE \"{p}metric_definitions\" ALTER COLUMN key TYPE text COLLATE \"{coll}\";
             INSERT INTO \"{p}metric_definitions\" (key, metric_type, unit) VALUES ('K', 'counter', '')"
        ))
        .unwrap();
    let (a, _clock) = setup(Config::with_capacity(8));
    let s = Syncer::start(a.clone(), config(&p, &dsn(), "w2")).unwrap();
    a.increment_counter("k", 5.0).unwrap();
    let e = s.flush(WAIT).unwrap_err();
    assert!(e.to_string().contains("byte for byte"), "{e}");
    let _ = s.stop(Duration::from_secs(5));
    let rows: i64 = client()
        .query_one(
            &format!("SELECT count(*) FROM \"{p}metrics\" m JOIN \"{p}metric_definitions\" d ON d.id = m.metric_id WHERE d.key = 'K'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "nothing written under 'K'");
    let _ = client().batch_execute(&format!(
        "DROP TABLE IF EXISTS \"{p}metrics\", \"{p}metric_definitions\" CASCADE; DROP COLLATION IF EXISTS \"{coll}\""
    ));
}
