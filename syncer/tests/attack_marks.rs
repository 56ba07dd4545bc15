//! Adversarial tests of 5027cf5 / b5dfc67 through the syncer and Postgres:
//! what `evict` keeps of other threads' pending minutes must reach the
//! database exactly, or be counted once in `drops()`, never both.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Outage, client, dsn, prefix};
use ringmetrics::{Aggregator, Config, Kind, ManualClock, Series};
use ringmetrics_postgres::{Syncer, SyncerConfig};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const NS: i64 = 1_000_000_000;
const WAIT: Duration = Duration::from_secs(30);

fn setup(config: Config) -> (Arc<Aggregator>, ManualClock) {
    let clock = ManualClock::from_secs(T0);
    (
        Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap()),
        clock,
    )
}

fn start(agg: &Arc<Aggregator>, prefix: &str, dsn: &str) -> Syncer {
    Syncer::start(
        agg.clone(),
        SyncerConfig {
            prefix: prefix.into(),
            worker_id: "w".into(),
            interval: Duration::from_secs(3600),
            ..SyncerConfig::new(dsn.to_owned())
        },
    )
    .unwrap()
}

fn small() -> Config {
    Config {
        buckets: [6, 6, 6, 6],
        writers: 64,
        ..Config::with_capacity(8)
    }
}

/// (start, total) of a key's stored buckets at `resolution`.
fn totals(prefix: &str, key: &str, resolution: i32) -> Vec<(i64, f64)> {
    client()
        .query(
            &format!(
                "SELECT extract(epoch FROM u.b)::int8, coalesce(u.t, 0)
                 FROM \"{prefix}metrics\" m JOIN \"{prefix}metric_definitions\" d ON d.id = m.metric_id
                 CROSS JOIN LATERAL unnest(m.buckets, m.totals) AS u(b, t)
                 WHERE d.key = $1 AND m.resolution = $2 ORDER BY 1"
            ),
            &[&key, &resolution],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[path = "../../core/tests/support/held_thread.rs"]
mod held_thread;
use held_thread::Helper;

/// `helper` records `v` into `s` at `secs` (in its own stripe).
fn record_at(helper: &Helper, agg: &Arc<Aggregator>, s: Series, v: f64, secs: i64) {
    let agg = agg.clone();
    helper.run(move || agg.record_at(s, v, secs * NS).unwrap());
}

/// A counter's minute 0 holds 1e308 in the ring and another 1e308 in a
/// helper's pending minute. When minute 6 takes the slot, the eviction
/// merges the two with a clamp: the database stores f64::MAX for minute 0
/// (a value nobody recorded) and no overflow is counted at 1min. Folded
/// normally, the helper's minute is refused as an overflow and minute 0
/// stays 1e308.
#[test]
fn an_evicted_bucket_with_an_overflowing_pending_minute_is_not_stored_clamped() {
    let p = prefix("amovf");
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &dsn());
    let c = agg.register(Kind::Counter, "c", "number").unwrap();
    let helper = Helper::new();
    agg.record_at(c, 1e308, T0 * NS).unwrap();
    record_at(&helper, &agg, c, 1e308, T0);
    for m in [1, 6, 7] {
        clock.set((T0 + 60 * m) * NS);
        agg.record(c, 0.0).unwrap();
    }
    record_at(&helper, &agg, c, 0.0, T0 + 420); // folds its minute 0
    s.flush(WAIT).unwrap();
    let ones = totals(&p, "c", 60);
    let d = agg.drops();
    assert_eq!(ones.first().copied(), Some((T0, 1e308)), "1min {ones:?}; drops {d:?}");
    assert_eq!(d.overflow[0], 1, "{d:?}");
    s.stop(WAIT).unwrap();
}

/// spill = 1. A flush saves "c"'s minute 0 exactly (2: the ring's 1 and a
/// helper's pending 1). The database goes down; "d" fills the one-entry
/// buffer (the syncer holds it). Minute 0 of "c" then leaves its ring with
/// nothing of it changed: the database already has it, yet the eviction
/// tries to buffer it (a pending minute adds to it), fails, and counts 2
/// observations `unsaved`. After the database is back, everything is in
/// it exactly, and drops() still says 2 were lost (the Python plugin warns
/// about them).
#[test]
fn a_saved_bucket_is_not_reported_lost_when_the_buffer_is_full() {
    let p = prefix("amfull");
    let proxy = Outage::start();
    let (agg, clock) = setup(Config { spill: 1, ..small() });
    let s = start(&agg, &p, &proxy.dsn);
    let c = agg.register(Kind::Counter, "c", "number").unwrap();
    let d = agg.register(Kind::Counter, "d", "number").unwrap();
    let helper = Helper::new();
    agg.record(c, 1.0).unwrap();
    record_at(&helper, &agg, c, 1.0, T0);
    clock.set((T0 + 60) * NS);
    agg.record(c, 1.0).unwrap();
    s.flush(WAIT).unwrap();
    assert_eq!(totals(&p, "c", 60), vec![(T0, 2.0), (T0 + 60, 1.0)]);
    proxy.set_down(true);
    for m in 2..=9 {
        clock.set((T0 + 60 * m) * NS);
        agg.record(d, 1.0).unwrap();
    }
    assert!(s.flush(WAIT).is_err());
    for m in [12, 13] {
        clock.set((T0 + 60 * m) * NS);
        agg.record(c, 1.0).unwrap();
    }
    proxy.set_down(false);
    s.flush(WAIT).unwrap();
    assert_eq!(
        totals(&p, "c", 60),
        vec![(T0, 2.0), (T0 + 60, 1.0), (T0 + 720, 1.0), (T0 + 780, 1.0)]
    );
    assert_eq!(
        totals(&p, "d", 60),
        (2..=9).map(|m| (T0 + 60 * m, 1.0)).collect::<Vec<_>>()
    );
    assert_eq!(agg.drops().total(), 0, "nothing was lost: {:?}", agg.drops());
    s.stop(WAIT).unwrap();
}
