//! Adversarial tests of 5027cf5 / b5dfc67 through the syncer and Postgres:
//! what `evict` keeps of other threads' pending minutes must reach the
//! database exactly, or be counted once in `drops()`, never both.

mod common;

use std::sync::Arc;

use common::small::{T0, WAIT, setup, small, start, totals};
use common::{Outage, dsn, prefix};
use ringmetrics::{Aggregator, Config, Kind, Series};

const NS: i64 = 1_000_000_000;

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
