//! Interop with the real Chancy 0.26 (Python): Chancy reads what ringmetrics
//! writes, ringmetrics reads what Chancy writes, and both writing the same
//! keys merge exactly as Chancy merges its own workers. Chancy's schema and
//! ours are the same, column by column and constraint by constraint.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{client, dsn, prefix, run_python_env, syncer};
use ringmetrics::{Aggregator, Config, Kind, Resolution};
use ringmetrics_postgres::{ReadQuery, read_metrics};

const WAIT: Duration = Duration::from_secs(30);

/// Runs the commands in `$ACTIONS`, one a line, against Chancy's own
/// Metrics plugin; prints one `P` line per point that `get` returns.
const DRIVER: &str = r#"
import asyncio, datetime, os
from chancy import Chancy
from chancy.plugins.metrics import Metrics

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
US = datetime.timedelta(microseconds=1)

def at(secs):
    return datetime.datetime.fromtimestamp(int(secs), datetime.UTC)

async def main():
    plugin = Metrics()
    async with Chancy(os.environ["DSN"], prefix=os.environ["PREFIX"],
                      no_default_plugins=True, plugins=[plugin]) as chancy:
        for line in os.environ["ACTIONS"].splitlines():
            op, *args = line.split()
            if op == "migrate":
                await chancy.migrate()
            elif op == "counter":
                await plugin.increment_counter(args[0], float(args[1]), unit=args[2])
            elif op == "gauge":
                await plugin.record_gauge(args[0], float(args[1]), unit=args[2])
            elif op == "histogram":
                await plugin.record_histogram_value(args[0], float(args[1]), unit=args[2])
            elif op == "flush":
                await plugin.flush(chancy)
            elif op == "get":
                resolution, start, end, worker = args
                result = await plugin.get_metrics(
                    chancy, None, None if worker == "-" else worker,
                    resolution=resolution, start=at(start), end=at(end))
                for key, metric in result["series"].items():
                    for p in metric.data:
                        v = p.value
                        if metric.type == "histogram":
                            nums = [v["count"], v["sum"], v["min"], v["max"], v["avg"]]
                        else:
                            nums = [0, v, 0, 0, v]
                        print("P", resolution, worker, key, metric.type, metric.unit,
                              int(p.timestamp.timestamp()), *[repr(float(x)) for x in nums],
                              (p.sampled_at - EPOCH) // US)
            else:
                raise SystemExit(f"unknown op {op}")

asyncio.run(main())
"#;

/// One merged point as either reader sees it.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    kind: String,
    unit: String,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    value: f64,
    sampled_at_us: i64,
}

/// (resolution, worker filter, key, bucket start) -> point.
type Points = BTreeMap<(String, String, String, i64), Point>;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A window per resolution around now: from two buckets back to two ahead
/// (aligned, within retention, so Chancy accepts it).
fn windows() -> Vec<(Resolution, i64, i64)> {
    let t = now();
    Resolution::ALL
        .iter()
        .map(|&r| {
            let w = r.seconds();
            let b = t.div_euclid(w) * w;
            (r, b - 2 * w, b + 2 * w)
        })
        .collect()
}

/// `get` commands for every window, with and without a worker filter.
fn gets(workers: &[&str]) -> String {
    let mut s = String::new();
    for (r, start, end) in windows() {
        for w in workers {
            s.push_str(&format!("get {} {start} {end} {w}\n", r.name()));
        }
    }
    s
}

fn chancy(prefix: &str, actions: &str) -> Points {
    let out = run_python_env(DRIVER, prefix, &[("ACTIONS", actions)]);
    let mut points = Points::new();
    for line in out.lines().filter(|l| l.starts_with("P ")) {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        points.insert(
            (f[1].into(), f[2].into(), f[3].into(), f[6].parse().unwrap()),
            Point {
                kind: f[4].into(),
                unit: f[5].into(),
                count: num(7) as u64,
                sum: num(8),
                min: num(9),
                max: num(10),
                value: num(11),
                sampled_at_us: f[12].parse().unwrap(),
            },
        );
    }
    points
}

fn ours(prefix: &str, workers: &[&str]) -> Points {
    let mut points = Points::new();
    for (r, start, end) in windows() {
        for w in workers {
            let q = ReadQuery {
                prefix: None,
                worker_id: (*w != "-").then(|| w.to_string()),
                resolution: r,
                start_secs: start,
                end_secs: end,
            };
            for s in read_metrics(&dsn(), prefix, &q).unwrap() {
                for p in s.points {
                    let hist = s.kind == Kind::Histogram;
                    points.insert(
                        (r.name().into(), w.to_string(), s.key.clone(), p.start),
                        Point {
                            kind: s.kind.name().into(),
                            unit: s.unit.clone(),
                            count: if hist { p.count } else { 0 },
                            sum: if hist { p.sum } else { p.value },
                            min: if hist { p.min } else { 0.0 },
                            max: if hist { p.max } else { 0.0 },
                            value: p.value,
                            sampled_at_us: p.sampled_at_nanos / 1000,
                        },
                    );
                }
            }
        }
    }
    points
}

/// Per (resolution, worker filter, key): the points summed like Chancy's
/// `Metric.summary` (counters and histogram counts/sums add, min/max
/// combine, gauges take the latest sample).
fn summary(points: &Points, resolution: &str, worker: &str, key: &str) -> Point {
    let mut it = points
        .iter()
        .filter(|((r, w, k, _), _)| r == resolution && w == worker && k == key)
        .map(|(_, p)| p.clone());
    let mut acc = it
        .next()
        .unwrap_or_else(|| panic!("no points for {key} at {resolution}"));
    for p in it {
        acc.count += p.count;
        acc.sum += p.sum;
        acc.min = acc.min.min(p.min);
        acc.max = acc.max.max(p.max);
        if p.sampled_at_us >= acc.sampled_at_us {
            acc.sampled_at_us = p.sampled_at_us;
            if acc.kind == "gauge" {
                acc.value = p.value;
            }
        }
    }
    acc
}

fn agg() -> Arc<Aggregator> {
    Arc::new(Aggregator::new(Config::default().persisted()).unwrap())
}

#[test]
fn chancy_reads_what_ringmetrics_writes() {
    let p = prefix("interop_rm");
    let agg = agg();
    for v in [1.0, 1.0, 1.0, 2.5] {
        agg.increment_counter("job:a:succeeded", v).unwrap();
    }
    agg.record_key(Kind::Counter, "net:in", "bytes", 1024.0).unwrap();
    agg.record_gauge("queue:q:depth", 5.0).unwrap();
    agg.record_gauge("queue:q:depth", 7.0).unwrap();
    for v in [0.5, 1.5, 4.0] {
        agg.record_key(Kind::Histogram, "job:a:execution_time", "seconds", v)
            .unwrap();
    }
    let s = syncer(&agg, &p, "w-rust");
    s.flush(WAIT).unwrap();
    // Chancy's own migrations accept the schema ringmetrics created.
    let theirs = chancy(&p, &format!("migrate\n{}", gets(&["-", "w-rust", "other"])));
    let mine = ours(&p, &["-", "w-rust", "other"]);
    assert!(!theirs.is_empty());
    assert_eq!(theirs, mine, "Chancy's get_metrics and read_metrics disagree");
    assert!(!theirs.keys().any(|(_, w, _, _)| w == "other"));
    for r in ["1min", "5min", "1hour", "1day"] {
        let c = summary(&theirs, r, "-", "job:a:succeeded");
        assert_eq!((c.kind.as_str(), c.unit.as_str(), c.value), ("counter", "count", 5.5));
        let b = summary(&theirs, r, "-", "net:in");
        assert_eq!((b.unit.as_str(), b.sum), ("bytes", 1024.0));
        let g = summary(&theirs, r, "-", "queue:q:depth");
        assert_eq!((g.kind.as_str(), g.value), ("gauge", 7.0));
        let h = summary(&theirs, r, "w-rust", "job:a:execution_time");
        assert_eq!(
            (h.kind.as_str(), h.unit.as_str(), h.count, h.sum, h.min, h.max),
            ("histogram", "seconds", 3, 6.0, 0.5, 4.0)
        );
    }
    s.stop(WAIT).unwrap();
}

#[test]
fn ringmetrics_reads_what_chancy_writes() {
    let p = prefix("interop_chancy");
    let actions = "migrate
counter job:b:succeeded 1 count
counter job:b:succeeded 2 count
counter net:out 4096 bytes
gauge queue:r:depth 3 number
gauge queue:r:depth 9 number
histogram job:b:execution_time 0.25 seconds
histogram job:b:execution_time 2 seconds
flush
";
    let theirs = chancy(&p, &format!("{actions}{}", gets(&["-"])));
    let mine = ours(&p, &["-"]);
    assert!(!mine.is_empty());
    assert_eq!(theirs, mine, "Chancy's get_metrics and read_metrics disagree");
    for r in ["1min", "5min", "1hour", "1day"] {
        assert_eq!(summary(&mine, r, "-", "job:b:succeeded").value, 3.0);
        assert_eq!(summary(&mine, r, "-", "net:out").unit, "bytes");
        assert_eq!(summary(&mine, r, "-", "queue:r:depth").value, 9.0);
        let h = summary(&mine, r, "-", "job:b:execution_time");
        assert_eq!((h.count, h.sum, h.min, h.max), (2, 2.25, 0.25, 2.0));
    }
}

#[test]
fn both_writing_the_same_keys_merge_like_chancy() {
    let p = prefix("interop_mixed");
    // Chancy creates the schema; ringmetrics uses it as is.
    chancy(&p, "migrate\n");
    let agg = agg();
    agg.increment_counter("mixed:c", 10.0).unwrap();
    agg.record_key(Kind::Histogram, "mixed:h", "seconds", 1.0).unwrap();
    agg.record_key(Kind::Histogram, "mixed:h", "seconds", 2.0).unwrap();
    agg.record_gauge("mixed:g", 1.0).unwrap();
    let s = syncer(&agg, &p, "w-rust");
    s.flush(WAIT).unwrap();
    // Chancy's worker records later, so its gauge sample is the latest.
    let actions = "counter mixed:c 5 count
histogram mixed:h 10 seconds
gauge mixed:g 2 number
flush
";
    let theirs = chancy(&p, &format!("{actions}{}", gets(&["-", "w-rust"])));
    let mine = ours(&p, &["-", "w-rust"]);
    assert_eq!(theirs, mine, "Chancy's get_metrics and read_metrics disagree");
    for r in ["1min", "5min", "1hour", "1day"] {
        assert_eq!(summary(&mine, r, "-", "mixed:c").value, 15.0);
        assert_eq!(summary(&mine, r, "w-rust", "mixed:c").value, 10.0);
        let h = summary(&mine, r, "-", "mixed:h");
        assert_eq!((h.count, h.sum, h.min, h.max), (3, 13.0, 1.0, 10.0));
        assert_eq!(summary(&mine, r, "-", "mixed:g").value, 2.0);
        assert_eq!(summary(&mine, r, "w-rust", "mixed:g").value, 1.0);
    }
    // Both sessions' rows exist side by side: one per session and chunk.
    let sessions: i64 = client()
        .query_one(&format!("SELECT count(DISTINCT session_id) FROM \"{p}metrics\""), &[])
        .unwrap()
        .get(0);
    assert_eq!(sessions, 2);
    s.stop(WAIT).unwrap();
}

/// Columns, constraints and indexes of a prefix's metrics tables, with the
/// prefix replaced by `P_`.
fn shape(prefix: &str) -> Vec<String> {
    let mut c = client();
    let tables = [
        format!("{prefix}metrics"),
        format!("{prefix}metric_definitions"),
        format!("{prefix}schema_version"),
    ];
    let mut out = Vec::new();
    let norm = |s: String| s.replace(prefix, "P_");
    for r in c
        .query(
            "SELECT table_name::text, ordinal_position::int4, column_name::text, data_type::text, udt_name::text,
                    is_nullable::text, coalesce(collation_name::text, ''),
                    coalesce(column_default::text, ''), coalesce(character_maximum_length, 0)::int4
             FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = ANY($1)
             ORDER BY 1, 2",
            &[&tables.to_vec()],
        )
        .unwrap()
    {
        out.push(norm(format!(
            "column {} {} {} {} {} {} {} {} {}",
            r.get::<_, String>(0),
            r.get::<_, i32>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4),
            r.get::<_, String>(5),
            r.get::<_, String>(6),
            r.get::<_, String>(7),
            r.get::<_, i32>(8)
        )));
    }
    for r in c
        .query(
            "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
             FROM pg_constraint WHERE conrelid = ANY(SELECT to_regclass(quote_ident(t)) FROM unnest($1::text[]) t)
             ORDER BY 1, 2",
            &[&tables.to_vec()],
        )
        .unwrap()
    {
        out.push(norm(format!(
            "constraint {} {} {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        )));
    }
    for r in c
        .query(
            "SELECT tablename::text, indexname::text, indexdef FROM pg_indexes
             WHERE schemaname = 'public' AND tablename = ANY($1) ORDER BY 1, 2",
            &[&tables.to_vec()],
        )
        .unwrap()
    {
        out.push(norm(format!(
            "index {} {} {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        )));
    }
    let versions: Vec<String> = c
        .query(
            &format!("SELECT version_of || '=' || coalesce(version::text, 'NULL') FROM \"{prefix}schema_version\" WHERE version_of = 'metrics'"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    out.push(format!("versions {versions:?}"));
    out
}

#[test]
fn schema_is_exactly_chancys_migration() {
    let chancys = prefix("schema_chancy");
    let ours_p = prefix("schema_ours");
    chancy(&chancys, "migrate\n");
    let agg = agg();
    // A flush with nothing to write does not connect: record one value.
    agg.increment_counter("schema:probe", 1.0).unwrap();
    let s = syncer(&agg, &ours_p, "w");
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
    let (a, b) = (shape(&chancys), shape(&ours_p));
    assert!(a.len() > 20, "{a:#?}");
    assert_eq!(a, b);
}
