//! Adversarial tests of commit f29ac62 (fixes to the unsaved-bucket
//! buffer) through the syncer: a bucket must be saved exactly once, whatever
//! the threads, the saved marks and the conflicts do.

mod common;

use std::sync::Arc;

use common::small::{T0, WAIT, setup, small, start, totals};
use common::{Outage, client, dsn, prefix};
use ringmetrics::Aggregator;

#[path = "../../core/tests/support/held_thread.rs"]
mod held_thread;
use held_thread::Helper;

/// `helper` increments counter `key` once (in its own stripe).
fn count(helper: &Helper, agg: &Arc<Aggregator>, key: &'static str) {
    let agg = agg.clone();
    helper.run(move || agg.increment_counter(key, 1.0).unwrap());
}

/// A key stored with another type is dropped while the conflict lasts. Once
/// the conflicting definition is gone (Chancy's cleanup deletes orphan
/// definitions; or an operator), what is recorded afterwards must be saved:
/// minutes 1..=10 are recorded after the conflict ended, and minutes 1..=4
/// leave the 6-minute ring before the next flush.
#[test]
fn a_conflict_that_ends_loses_nothing_recorded_after_it() {
    let p = prefix("afconf");
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &dsn());
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    let defs = format!("\"{p}metric_definitions\"");
    client()
        .execute(
            &format!("INSERT INTO {defs} (key, metric_type, unit) VALUES ('k', 'gauge', 'number')"),
            &[],
        )
        .unwrap();
    agg.increment_counter("k", 1.0).unwrap();
    s.flush(WAIT).unwrap(); // conflict: dropped with a warning
    assert!(totals(&p, "k", 60).is_empty());
    client()
        .execute(&format!("DELETE FROM {defs} WHERE key = 'k'"), &[])
        .unwrap();
    for _ in 1..=10 {
        clock.advance_secs(60);
        agg.increment_counter("k", 1.0).unwrap();
    }
    s.flush(WAIT).unwrap();
    let after: Vec<(i64, f64)> = totals(&p, "k", 60).into_iter().filter(|b| b.0 >= T0 + 60).collect();
    assert_eq!(
        after,
        (1..=10).map(|m| (T0 + 60 * m, 1.0)).collect::<Vec<_>>(),
        "drops {:?}",
        agg.drops()
    );
    s.stop(WAIT).unwrap();
}

/// Flushes every 10 minutes; the conflict meets the flush at minute 9 and
/// ends (the definition is deleted) at minute 10: minutes 10..=13 leave
/// the ring before the flush at minute 19, which commits "k" at last.
#[test]
fn a_conflict_that_ends_between_flushes_keeps_every_later_minute() {
    let p = prefix("afconf2");
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &dsn());
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    let defs = format!("\"{p}metric_definitions\"");
    client()
        .execute(
            &format!("INSERT INTO {defs} (key, metric_type, unit) VALUES ('k', 'histogram', 'x')"),
            &[],
        )
        .unwrap();
    for m in 0..40 {
        if m == 10 {
            client()
                .execute(&format!("DELETE FROM {defs} WHERE key = 'k'"), &[])
                .unwrap();
        }
        agg.increment_counter("k", 1.0).unwrap();
        if m % 10 == 9 {
            s.flush(WAIT).unwrap();
        }
        clock.advance_secs(60);
    }
    clock.advance_secs(-60);
    s.flush(WAIT).unwrap();
    let after: Vec<(i64, f64)> = totals(&p, "k", 60)
        .into_iter()
        .filter(|b| b.0 >= T0 + 60 * 10)
        .collect();
    assert_eq!(
        after,
        (10..40).map(|m| (T0 + 60 * m, 1.0)).collect::<Vec<_>>(),
        "drops {:?}",
        agg.drops()
    );
    s.stop(WAIT).unwrap();
}

/// A flush reads 1min minute 0 as the bucket the main thread's pending
/// minute 6 displaces (the slot's own count, 1) while a second thread's
/// pending minute 0 adds to it. The second thread then folds minute 0 with
/// nothing else changed: judged covered by the saved read, its slot stays
/// "saved", and when minute 6 takes the slot minute 0 (2 observations)
/// leaves the ring unbuffered: the database keeps 1.
#[test]
fn a_fold_judged_saved_does_not_lose_what_the_read_showed_displaced() {
    let p = prefix("afdisp");
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &dsn());
    let helper = Helper::new();
    agg.increment_counter("c", 1.0).unwrap(); // main: minute 0
    count(&helper, &agg, "c"); // helper: minute 0
    clock.set((T0 + 60) * 1_000_000_000);
    agg.increment_counter("c", 1.0).unwrap(); // folds main's minute 0
    clock.set((T0 + 360) * 1_000_000_000);
    agg.increment_counter("c", 1.0).unwrap(); // main pending: minute 6
    s.flush(WAIT).unwrap();
    count(&helper, &agg, "c"); // folds helper's minute 0
    clock.set((T0 + 420) * 1_000_000_000);
    agg.increment_counter("c", 1.0).unwrap(); // minute 0 leaves the 1min ring
    s.flush(WAIT).unwrap();
    assert_eq!(
        totals(&p, "c", 60),
        vec![(T0, 2.0), (T0 + 60, 1.0), (T0 + 360, 2.0), (T0 + 420, 1.0)],
        "drops {:?}",
        agg.drops()
    );
    assert_eq!(totals(&p, "c", 300), vec![(T0, 3.0), (T0 + 300, 3.0)]);
    s.stop(WAIT).unwrap();
}

/// An idle thread recorded once into minute 0, the only record of minute 0;
/// the database is down for 40 minutes while the main thread records every
/// minute from minute 1. Minute 0 must be saved (at 1min: its slot was
/// empty when minute 6 took it).
#[test]
fn an_idle_threads_lone_minute_survives_an_outage() {
    let p = prefix("aflone");
    let proxy = Outage::start();
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &proxy.dsn);
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    proxy.set_down(true);
    let helper = Helper::new();
    count(&helper, &agg, "c");
    for m in 1..40 {
        clock.advance_secs(60);
        agg.increment_counter("c", 1.0).unwrap();
        if m % 10 == 0 {
            assert!(s.flush(WAIT).is_err());
        }
    }
    proxy.set_down(false);
    s.flush(WAIT).unwrap();
    let ones = totals(&p, "c", 60);
    assert_eq!(ones.first().copied(), Some((T0, 1.0)), "drops {:?}", agg.drops());
    assert_eq!(ones, (0..40).map(|m| (T0 + 60 * m, 1.0)).collect::<Vec<_>>());
    let fives: f64 = totals(&p, "c", 300).iter().map(|b| b.1).sum();
    assert_eq!(fives, 40.0, "drops {:?}", agg.drops());
    s.stop(WAIT).unwrap();
}

/// An idle thread's minute merged into an evicted bucket is saved through
/// the buffer; when that thread records again its fold finds a newer bucket
/// in the slot. Nothing was lost, so nothing may be counted as dropped (a
/// Python user is warned about drops).
#[test]
fn a_pending_minute_saved_through_the_buffer_is_not_reported_dropped() {
    let p = prefix("afstale");
    let proxy = Outage::start();
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &proxy.dsn);
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    proxy.set_down(true);
    let helper = Helper::new();
    agg.increment_counter("c", 1.0).unwrap();
    count(&helper, &agg, "c");
    for _ in 1..20 {
        clock.advance_secs(60);
        agg.increment_counter("c", 1.0).unwrap();
    }
    count(&helper, &agg, "c"); // minute 19; folds the helper's minute 0
    proxy.set_down(false);
    s.flush(WAIT).unwrap();
    let mut want: Vec<(i64, f64)> = (0..20).map(|m| (T0 + 60 * m, 1.0)).collect();
    want[0].1 = 2.0;
    want[19].1 = 2.0;
    assert_eq!(totals(&p, "c", 60), want);
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
    s.stop(WAIT).unwrap();
}
