//! The server-side merge, shape by shape, against real PostgreSQL: records
//! at explicit times (late ones into earlier buckets of a stored chunk
//! included) through shallow and deep rings, flushes at random points,
//! syncers restarted to another DSN spelling (so they have no memory and
//! resend), and after every flush every stored bucket equals a plain model.
//! The shapes: a new row; new buckets after the stored ones; the stored
//! last bucket changed; a resend that covers the row; and the general merge
//! (a late bucket between stored ones). The bulk cases add enough other
//! series to every flush (more than 5,000 rows) that it goes through the
//! staging table instead of array parameters.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{client, dsn, prefix};
use ringmetrics::{Aggregator, Config, Kind, ManualClock, Resolution};
use ringmetrics_postgres::{ReadQuery, Syncer, SyncerConfig, read_metrics};

const WAIT: Duration = Duration::from_secs(30);
/// 2026-01-01 00:00:00 UTC.
const T0: i64 = 1_767_225_600;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Per (key, bucket start) at 1min: (count, sum, min, max).
type Model = BTreeMap<(String, i64), (u64, f64, f64, f64)>;

fn stored(p: &str, key: &str, kind: Kind) -> BTreeMap<i64, (u64, f64, f64, f64)> {
    let q = ReadQuery {
        prefix: Some(key.into()),
        worker_id: None,
        resolution: Resolution::Min1,
        start_secs: T0 - 86400,
        end_secs: T0 + 86400,
    };
    let mut out = BTreeMap::new();
    let series = match read_metrics(&dsn(), p, &q) {
        Ok(series) => series,
        // Nothing written yet: no tables.
        Err(e) if e.to_string().contains("42P01") => return out,
        Err(e) => panic!("{e}"),
    };
    for s in series {
        if s.key != key {
            continue;
        }
        for pt in s.points {
            let v = match kind {
                Kind::Histogram => (pt.count, pt.sum, pt.min, pt.max),
                _ => (0, pt.sum, 0.0, 0.0),
            };
            out.insert(pt.start, v);
        }
    }
    out
}

fn syncer(agg: &Arc<Aggregator>, p: &str, spelling: u64) -> Syncer {
    // Another spelling of the same DSN is another target: the new syncer
    // has no memory of what was saved and sends everything again.
    let dsn = format!("{} application_name=merge-{spelling}", dsn());
    Syncer::start(
        agg.clone(),
        SyncerConfig {
            prefix: p.into(),
            worker_id: "m".into(),
            periodic: false,
            ..SyncerConfig::new(dsn)
        },
    )
    .unwrap()
}

/// Series added to every flush of a bulk case: 4 rows each.
const PADDING: usize = 1300;

fn run(seed: u64, depth: usize, bulk: bool) {
    let p = prefix(&format!("merge{seed}"));
    let clock = ManualClock::from_secs(T0);
    let config = Config::with_capacity(if bulk { PADDING + 8 } else { 8 }).buckets_for(Resolution::Min1, depth);
    let agg = Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap());
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let keys = [("c", Kind::Counter), ("h", Kind::Histogram)];
    let mut model: Model = BTreeMap::new();
    // Before a flush, one more observation in every padding series (pad0
    // is checked like the others).
    let pad = |model: &mut Model, now: i64| {
        if !bulk {
            return;
        }
        for i in 0..PADDING {
            agg.record_key_at(Kind::Counter, &format!("pad{i}"), "count", 1.0, now * 1_000_000_000)
                .unwrap();
        }
        let e = model
            .entry(("pad0".into(), now - now.rem_euclid(60)))
            .or_insert((0, 0.0, 1.0, 1.0));
        e.0 += 1;
        e.1 += 1.0;
    };
    let mut spelling = 0;
    let mut s = Some(syncer(&agg, &p, spelling));
    let mut now = T0;
    // The oldest minute recorded since the last save: the program saves
    // before the ring could overwrite it (the documented outage bound; the
    // model keeps everything).
    let mut unsaved: Option<i64> = None;
    for step in 0..120 {
        match rng.below(10) {
            0..=5 => {
                // A record now or up to (depth - 2) minutes late, so it
                // stays within the ring.
                let late = rng.below(depth as u64 - 1) as i64 * 60;
                let at = (now - late).max(T0);
                let (key, kind) = keys[rng.below(2) as usize];
                let value = (rng.below(20) + 1) as f64;
                agg.record_key_at(kind, key, kind.default_unit(), value, at * 1_000_000_000)
                    .unwrap();
                unsaved = Some(unsaved.map_or(at.div_euclid(60), |u| u.min(at.div_euclid(60))));
                let e = model
                    .entry((key.into(), at - at.rem_euclid(60)))
                    .or_insert((0, 0.0, value, value));
                e.0 += 1;
                e.1 += value;
                e.2 = e.2.min(value);
                e.3 = e.3.max(value);
            }
            6 | 7 => {
                let next = now + rng.below(4) as i64 * 60 + rng.below(60) as i64;
                if unsaved.is_some_and(|u| next.div_euclid(60) - u >= depth as i64 - 1) {
                    pad(&mut model, now);
                    s.as_ref().unwrap().flush(WAIT).unwrap();
                    unsaved = None;
                    check(&p, &model, seed, step, &agg);
                }
                now = next;
                clock.set(now * 1_000_000_000);
            }
            8 => {
                pad(&mut model, now);
                s.as_ref().unwrap().flush(WAIT).unwrap();
                unsaved = None;
                check(&p, &model, seed, step, &agg);
            }
            _ => {
                pad(&mut model, now);
                s.take().unwrap().stop(WAIT).unwrap();
                unsaved = None;
                check(&p, &model, seed, step, &agg);
                spelling += 1;
                s = Some(syncer(&agg, &p, spelling));
            }
        }
    }
    pad(&mut model, now);
    s.unwrap().stop(WAIT).unwrap();
    check(&p, &model, seed, 120, &agg);
}

fn check(p: &str, model: &Model, seed: u64, step: usize, agg: &Aggregator) {
    assert_eq!(
        agg.drops().total(),
        0,
        "seed {seed}, step {step}: the aggregator dropped records: {:?}",
        agg.drops()
    );
    for (key, kind) in [("c", Kind::Counter), ("h", Kind::Histogram), ("pad0", Kind::Counter)] {
        let want: BTreeMap<i64, (u64, f64, f64, f64)> = model
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, start), &(n, sum, lo, hi))| {
                (
                    *start,
                    if kind == Kind::Histogram {
                        (n, sum, lo, hi)
                    } else {
                        (0, sum, 0.0, 0.0)
                    },
                )
            })
            .collect();
        let got = stored(p, key, kind);
        if got != want {
            let series = agg.register(kind, key, kind.default_unit()).unwrap();
            let ring: Vec<(i64, u64, f64)> = agg
                .snapshot(series, Resolution::Min1, 0, i64::MAX)
                .unwrap()
                .iter()
                .map(|b| (b.start, b.count, b.sum))
                .collect();
            let rows: Vec<String> = client()
                .query(
                    &format!("SELECT session_id::text, chunk::text, buckets::text, totals::text FROM \"{p}metrics\" m JOIN \"{p}metric_definitions\" d ON d.id = m.metric_id WHERE d.key = $1 AND resolution = 60 ORDER BY 1, 2"),
                    &[&key],
                )
                .unwrap()
                .iter()
                .map(|r| format!("{} {} {} {}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2), r.get::<_, String>(3)))
                .collect();
            panic!(
                "seed {seed}, step {step}, key {key}:\n got  {got:?}\n want {want:?}\n ring {ring:?}\n rows {rows:#?}"
            );
        }
    }
    // Bucket arrays stay sorted and unique in every stored row.
    let bad: i64 = client()
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{p}metrics\" m
                 WHERE (SELECT array_agg(b ORDER BY b) FROM (SELECT DISTINCT unnest(m.buckets) b) x) <> m.buckets"
            ),
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(
        bad, 0,
        "seed {seed}, step {step}: a row's buckets are not sorted and unique"
    );
}

#[test]
fn random_late_records_flushes_and_restarts_merge_like_the_model() {
    let cases: u64 = std::env::var("RINGMETRICS_MERGE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for seed in 1..=cases {
        // A shallow ring (shallower than a chunk) and a deep one.
        run(seed, if seed % 2 == 0 { 6 } else { 30 }, false);
    }
}

#[test]
fn the_same_through_the_staging_table_of_large_flushes() {
    let cases: u64 = std::env::var("RINGMETRICS_MERGE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(2, |n: u64| n.div_ceil(3));
    for seed in 1..=cases {
        run(1000 + seed, if seed % 2 == 0 { 6 } else { 30 }, true);
    }
}
