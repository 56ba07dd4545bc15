//! Flushing 10,000 changed series (40,000 chunk rows, every resolution) into
//! Chancy's tables, side by side against one database:
//!
//! - `ringmetrics`: [`Syncer::flush`] (definitions, then batched upserts),
//!   connecting for the flush as by default (`hold_connection: false`);
//! - `ringmetrics-held`: the same with `hold_connection: true` (the
//!   connection kept from the flush before, as the floor's and Chancy's
//!   pooled connections are);
//! - `chancy`: Chancy 0.26's own `Metrics.flush` (Python, psycopg);
//! - `floor`: the same upsert generated inside PostgreSQL by one
//!   `INSERT ... SELECT` over `generate_series` (no client, no definitions).
//!
//! Every timed run first changes every series, so all 40,000 rows are
//! rewritten (the steady state: rows exist, `ON CONFLICT DO UPDATE`), and
//! vacuums the contender's tables untimed, as autovacuum keeps a server in
//! its steady state (the test server runs without autovacuum: unvacuumed,
//! every contender slows down run by run as dead rows pile up). Prints
//! medians, ratios to the floor and WAL bytes per flush.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-syncer cargo bench -p ringmetrics-postgres --bench flush
//! ```
//! Environment: `RINGMETRICS_BENCH_DSN` (default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`),
//! `RINGMETRICS_BENCH_RUNS` (default 7), `RINGMETRICS_BENCH_SERIES`
//! (default 10000), `RINGMETRICS_PYTHON` (a Python with chancy 0.26).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use ringmetrics::{Aggregator, Config, Kind, ManualClock};
use ringmetrics_postgres::{Syncer, SyncerConfig, schema_sql};

const CHANCY: &str = r#"
import asyncio, json, os, time
import psycopg
from chancy import Chancy
from chancy.plugins.metrics import Metrics

async def main():
    dsn, prefix = os.environ["DSN"], os.environ["PREFIX"]
    n, runs = int(os.environ["SERIES"]), int(os.environ["RUNS"])
    plugin = Metrics(max_buffered_points=8 * n)
    async with Chancy(dsn, prefix=prefix, no_default_plugins=True, plugins=[plugin]) as chancy:
        await chancy.migrate()
        async def record(v):
            for i in range(n):
                key = f"bench:{i}"
                if i % 3 == 0:
                    await plugin.increment_counter(key, v)
                elif i % 3 == 1:
                    await plugin.record_gauge(key, v)
                else:
                    await plugin.record_histogram_value(key, v)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            async def lsn():
                return (await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone())[0]
            async def wal(a, b):
                q = "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::int8"
                return (await (await conn.execute(q, (b, a))).fetchone())[0]
            await record(1)
            await plugin.flush(chancy)
            out = []
            for run in range(runs):
                await record(run + 2)
                await conn.execute(f'VACUUM "{prefix}metrics", "{prefix}metric_definitions"')
                a = await lsn()
                t = time.perf_counter()
                await plugin.flush(chancy)
                dt = time.perf_counter() - t
                out.append([dt, await wal(a, await lsn())])
    print(json.dumps(out))

asyncio.run(main())
"#;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn python() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    [
        std::env::var("RINGMETRICS_PYTHON").ok(),
        Some(format!("{root}/.venv/bin/python")),
        Some("python3".into()),
    ]
    .into_iter()
    .flatten()
    .find(|p| {
        Command::new(p)
            .args(["-c", "import chancy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .expect("no Python with chancy 0.26: set RINGMETRICS_PYTHON")
}

fn lsn(c: &mut Client) -> String {
    c.query_one("SELECT pg_current_wal_lsn()::text", &[]).unwrap().get(0)
}

fn wal_since(c: &mut Client, before: &str) -> i64 {
    let after = lsn(c);
    c.query_one(
        "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::int8",
        &[&after, &before],
    )
    .unwrap()
    .get(0)
}

fn drop_prefix(c: &mut Client, prefix: &str) {
    let tables: Vec<String> = c
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND starts_with(tablename, $1)",
            &[&prefix],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in tables {
        c.batch_execute(&format!("DROP TABLE IF EXISTS \"{t}\" CASCADE"))
            .unwrap();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (seconds, WAL bytes) per run.
type Runs = Vec<(f64, i64)>;

/// One timed flush: (seconds, WAL bytes).
type Run<'a> = Box<dyn FnMut(usize) -> (f64, i64) + 'a>;

fn ringmetrics<'a>(dsn: &'a str, prefix: &str, n: usize, hold_connection: bool) -> Run<'a> {
    let clock = ManualClock::from_secs(now_secs());
    let agg = Arc::new(Aggregator::with_clock(Config::with_capacity(n).persisted(), Arc::new(clock)).unwrap());
    let series: Vec<_> = (0..n)
        .map(|i| {
            let kind = [Kind::Counter, Kind::Gauge, Kind::Histogram][i % 3];
            agg.register(kind, &format!("bench:{i}"), kind.default_unit()).unwrap()
        })
        .collect();
    let record = move |agg: &Aggregator, v: f64| {
        for s in &series {
            agg.record(*s, v).unwrap();
        }
    };
    let config = SyncerConfig {
        prefix: prefix.into(),
        worker_id: "bench".into(),
        interval: Duration::from_secs(3600),
        hold_connection,
        ..SyncerConfig::new(dsn)
    };
    let syncer = Syncer::start(agg.clone(), config).unwrap();
    let timeout = Duration::from_secs(300);
    record(&agg, 1.0);
    let first = syncer.flush(timeout).unwrap();
    assert_eq!(first.rows_written, 4 * n as u64);
    let mut c = Client::connect(dsn, NoTls).unwrap();
    let vacuum = format!("VACUUM \"{prefix}metrics\", \"{prefix}metric_definitions\"");
    Box::new(move |run| {
        record(&agg, run as f64 + 2.0);
        c.batch_execute(&vacuum).unwrap();
        let before = lsn(&mut c);
        let t = Instant::now();
        let report = syncer.flush(timeout).unwrap();
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(report.rows_written, 4 * n as u64);
        (dt, wal_since(&mut c, &before))
    })
}

fn chancy(dsn: &str, prefix: &str, n: usize, runs: usize) -> Runs {
    let out = Command::new(python())
        .args(["-c", CHANCY])
        .env("DSN", dsn)
        .env("PREFIX", prefix)
        .env("SERIES", n.to_string())
        .env("RUNS", runs.to_string())
        .output()
        .expect("run python");
    assert!(out.status.success(), "chancy: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // [[seconds, wal], ...]
    text.trim()
        .trim_start_matches("[[")
        .trim_end_matches("]]")
        .split("], [")
        .map(|pair| {
            let (s, w) = pair.split_once(", ").unwrap();
            (s.parse().unwrap(), w.parse().unwrap())
        })
        .collect()
}

fn floor<'a>(dsn: &'a str, prefix: &str, n: usize) -> Run<'a> {
    let mut c = Client::connect(dsn, NoTls).unwrap();
    c.batch_execute(&schema_sql(prefix).unwrap()).unwrap();
    c.execute(
        &format!(
            "INSERT INTO \"{prefix}metric_definitions\" (key, metric_type, unit)
             SELECT 'bench:' || i, (ARRAY['counter', 'gauge', 'histogram'])[i % 3 + 1],
                    (ARRAY['count', 'number', 'number'])[i % 3 + 1]
             FROM generate_series(0, $1 - 1) i ORDER BY 1"
        ),
        &[&(n as i32)],
    )
    .unwrap();
    let session = uuid::Uuid::new_v4();
    let upsert = format!(
        "INSERT INTO \"{prefix}metrics\" (metric_id, resolution, chunk, session_id, worker_id, buckets,
                                          counts, totals, minimums, maximums, gauges, sampled_at)
         SELECT d.id, r.s, to_timestamp(floor($1::float8 / (12 * r.s)) * 12 * r.s), $2, 'bench',
                ARRAY[to_timestamp(floor($1::float8 / r.s) * r.s)],
                CASE WHEN d.metric_type = 'histogram' THEN ARRAY[$3::int8] END,
                CASE WHEN d.metric_type <> 'gauge' THEN ARRAY[$3::float8] END,
                CASE WHEN d.metric_type = 'histogram' THEN ARRAY[$3::float8] END,
                CASE WHEN d.metric_type = 'histogram' THEN ARRAY[$3::float8] END,
                CASE WHEN d.metric_type = 'gauge' THEN ARRAY[$3::float8] END,
                ARRAY[clock_timestamp()]
         FROM \"{prefix}metric_definitions\" d CROSS JOIN generate_series(0, 3) g
         CROSS JOIN LATERAL (SELECT (ARRAY[60, 300, 3600, 86400])[g + 1] AS s) r
         ON CONFLICT (metric_id, resolution, chunk, session_id) DO UPDATE SET
             buckets = EXCLUDED.buckets, counts = EXCLUDED.counts, totals = EXCLUDED.totals,
             minimums = EXCLUDED.minimums, maximums = EXCLUDED.maximums,
             gauges = EXCLUDED.gauges, sampled_at = EXCLUDED.sampled_at"
    );
    let now = now_secs() as f64;
    let rows = c.execute(&upsert, &[&now, &session, &1i64]).unwrap();
    assert_eq!(rows, 4 * n as u64);
    let vacuum = format!("VACUUM \"{prefix}metrics\", \"{prefix}metric_definitions\"");
    Box::new(move |run| {
        c.batch_execute(&vacuum).unwrap();
        let before = lsn(&mut c);
        let t = Instant::now();
        c.execute(&upsert, &[&now, &session, &(run as i64 + 2)]).unwrap();
        let dt = t.elapsed().as_secs_f64();
        (dt, wal_since(&mut c, &before))
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn main() {
    // Only `cargo bench` (which passes `--bench`) runs it: `cargo test
    // --all-targets` and `--list` probes must not hit the database.
    if !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--list") {
        return;
    }
    let dsn = env_or(
        "RINGMETRICS_BENCH_DSN",
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
    );
    let runs: usize = env_or("RINGMETRICS_BENCH_RUNS", "7").parse().unwrap();
    let n: usize = env_or("RINGMETRICS_BENCH_SERIES", "10000").parse().unwrap();
    let only = std::env::var("RINGMETRICS_BENCH_ONLY").ok();
    let tag = format!("bench{}_", std::process::id());
    let mut admin = Client::connect(&dsn, NoTls).unwrap();
    let want = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == name));
    // Floor and ringmetrics alternate run by run, so load from anything
    // else on the machine hits both alike; Chancy runs after them.
    let mut contenders: Vec<(&str, Run)> = Vec::new();
    if want("floor") {
        contenders.push(("floor", floor(&dsn, &format!("{tag}floor_"), n)));
    }
    if want("ringmetrics") {
        contenders.push((
            "ringmetrics",
            ringmetrics(&dsn, &format!("{tag}ringmetrics_"), n, false),
        ));
    }
    if want("ringmetrics-held") {
        contenders.push((
            "ringmetrics-held",
            ringmetrics(&dsn, &format!("{tag}ringmetrics_held_"), n, true),
        ));
    }
    let mut results: Vec<(&str, Runs)> = contenders.iter().map(|(name, _)| (*name, Vec::new())).collect();
    for run in 0..runs {
        for (i, (_, f)) in contenders.iter_mut().enumerate() {
            results[i].1.push(f(run));
        }
    }
    drop(contenders);
    if want("chancy") {
        results.push(("chancy", chancy(&dsn, &format!("{tag}chancy_"), n, runs)));
    }
    for name in ["floor", "ringmetrics", "ringmetrics_held", "chancy"] {
        drop_prefix(&mut admin, &format!("{tag}{name}_"));
    }
    let floor_median = results
        .iter()
        .find(|(n, _)| *n == "floor")
        .map(|(_, r)| median(&mut r.iter().map(|x| x.0).collect::<Vec<_>>()));
    println!("flush of {n} changed series ({} chunk rows), {runs} runs each", 4 * n);
    println!("| | median | min | max | vs floor | WAL bytes per flush (median) |");
    println!("|---|---|---|---|---|---|");
    for (name, r) in &results {
        let mut secs: Vec<f64> = r.iter().map(|x| x.0).collect();
        let mut wal: Vec<f64> = r.iter().map(|x| x.1 as f64).collect();
        let m = median(&mut secs);
        let ratio = floor_median.map_or("-".into(), |f| format!("{:.2}x", m / f));
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {ratio} | {:.1} MB |",
            m * 1e3,
            secs[0] * 1e3,
            secs[secs.len() - 1] * 1e3,
            median(&mut wal) / 1e6
        );
    }
}
