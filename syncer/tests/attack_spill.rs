//! Adversarial tests of the unsaved-bucket buffer (commit 07db832): buckets
//! that leave a ring before a syncer saved them must be saved later, exactly
//! once, whatever else the aggregator holds; saved buckets must never take
//! the buffer's room.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::small::{T0, WAIT, config, setup, start};
use common::{Outage, client, commit_cutter, dsn, prefix};
use ringmetrics::{Aggregator, Config, Kind, MAX_SPILL, ManualClock, Resolution};
use ringmetrics_postgres::{DEFAULT_RETENTION_SECS, Syncer, first_kept_chunk};

const NS: i64 = 1_000_000_000;

/// Per stored bucket of `key` at `resolution`: (start, count, total, min,
/// max, gauge), oldest first, over every row (NULL as 0).
type Stored = (i64, i64, f64, f64, f64, f64);

fn stored(prefix: &str, key: &str, resolution: i32) -> Vec<Stored> {
    client()
        .query(
            &format!(
                "SELECT extract(epoch FROM u.b)::int8, coalesce(u.n, 0), coalesce(u.t, 0), coalesce(u.lo, 0),
                        coalesce(u.hi, 0), coalesce(u.g, 0)
                 FROM \"{prefix}metrics\" m JOIN \"{prefix}metric_definitions\" d ON d.id = m.metric_id
                 CROSS JOIN LATERAL unnest(m.buckets, m.counts, m.totals, m.minimums, m.maximums, m.gauges)
                     AS u(b, n, t, lo, hi, g)
                 WHERE d.key = $1 AND m.resolution = $2 ORDER BY 1"
            ),
            &[&key, &resolution],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

/// (start, total) of a counter's stored buckets.
fn totals(prefix: &str, key: &str, resolution: i32) -> Vec<(i64, f64)> {
    stored(prefix, key, resolution).iter().map(|b| (b.0, b.2)).collect()
}

fn small() -> Config {
    Config {
        buckets: [6, 6, 6, 6],
        ..Config::with_capacity(8)
    }
}

fn rename(prefix: &str, away: bool) {
    let (a, b) = (format!("{prefix}metrics"), format!("{prefix}metrics_away"));
    let (from, to) = if away { (a, b) } else { (b, a) };
    client()
        .batch_execute(&format!("ALTER TABLE \"{from}\" RENAME TO \"{to}\""))
        .unwrap();
}

fn minutes(from: i64, to: i64, total: f64) -> Vec<(i64, f64)> {
    (from..to).map(|m| (T0 + 60 * m, total)).collect()
}

/// A series whose stored definition conflicts (its data is dropped with a
/// warning) is never saved: its buckets that leave the rings must not hold
/// the unsaved-bucket buffer forever, or every other series starts losing
/// buckets that leave its ring between two successful flushes. (They wait
/// until the next flush finds the conflict again, in case it ended: room
/// for both series between two flushes, 20, not for 120 minutes of "bad".)
#[test]
fn a_conflicting_series_does_not_starve_the_unsaved_buffer() {
    let p = prefix("spconf");
    let (agg, clock) = setup(Config { spill: 20, ..small() });
    let s = start(&agg, &p, &dsn());
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap(); // the schema exists from here
    client()
        .execute(
            &format!(
                "INSERT INTO \"{p}metric_definitions\" (key, metric_type, unit) VALUES ('bad', 'gauge', 'number')"
            ),
            &[],
        )
        .unwrap();
    // Every flush succeeds; "good" alone needs at most 4 buffered buckets
    // between two flushes (10 minutes apart, a 6-minute ring).
    for m in 0..120 {
        agg.increment_counter("bad", 1.0).unwrap();
        agg.increment_counter("good", 1.0).unwrap();
        if m % 10 == 9 {
            s.flush(WAIT).unwrap();
        }
        clock.advance_secs(60);
    }
    s.flush(WAIT).unwrap();
    assert!(stored(&p, "bad", 60).is_empty());
    let good = totals(&p, "good", 60);
    assert_eq!(good, minutes(0, 120, 1.0), "{} of 120 minutes saved", good.len());
    s.stop(WAIT).unwrap();
}

/// A bucket read and committed while it was a pending minute is saved: once
/// it leaves its ring it must not take one of the buffer's places from a
/// bucket that really is unsaved.
#[test]
fn a_saved_pending_minute_does_not_take_an_unsaved_place() {
    let p = prefix("spfalse");
    let proxy = Outage::start();
    let (agg, clock) = setup(Config { spill: 5, ..small() });
    let s = start(&agg, &p, &proxy.dsn);
    for _ in 0..12 {
        agg.increment_counter("c", 1.0).unwrap();
        s.flush(WAIT).unwrap();
        clock.advance_secs(60);
    }
    // Down, and no flush attempt (a syncer backing off, or none running):
    // minutes 12..=16 leave the 1min ring unsaved, 5 buckets for 5 places.
    proxy.set_down(true);
    for _ in 12..24 {
        agg.increment_counter("c", 1.0).unwrap();
        clock.advance_secs(60);
    }
    proxy.set_down(false);
    clock.advance_secs(-60);
    s.flush(WAIT).unwrap();
    assert_eq!(agg.drops().unsaved, [0, 0, 0, 0], "{:?}", agg.drops());
    assert_eq!(totals(&p, "c", 60), minutes(0, 24, 1.0));
    s.stop(WAIT).unwrap();
}

/// A flush that commits but never hears so, right after an outage: the next
/// one writes the same absolute values again, nothing doubles.
#[test]
fn an_unclear_commit_right_after_an_outage_does_not_double() {
    let p = prefix("spcut");
    let cutter = commit_cutter();
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &cutter.dsn);
    let record = |m: i64| {
        agg.increment_counter("c", 1.0).unwrap();
        agg.record_gauge("g", m as f64).unwrap();
        agg.record_key(Kind::Histogram, "h", "seconds", m as f64).unwrap();
    };
    record(0);
    s.flush(WAIT).unwrap();
    rename(&p, true);
    for m in 1..=40 {
        clock.advance_secs(60);
        record(m);
        assert!(s.flush(WAIT).is_err(), "minute {m}: the table is away");
    }
    rename(&p, false);
    cutter.arm(1);
    assert!(s.flush(WAIT).is_err(), "the commit's answer never arrives");
    assert_eq!(cutter.fired(), 1);
    s.flush(WAIT).unwrap();
    assert_eq!(totals(&p, "c", 60), minutes(0, 41, 1.0));
    for r in [300, 3600, 86400] {
        assert_eq!(totals(&p, "c", r).iter().map(|b| b.1).sum::<f64>(), 41.0, "{r}");
        let h = stored(&p, "h", r);
        assert_eq!(h.iter().map(|b| b.1).sum::<i64>(), 41, "{r}: {h:?}");
        assert_eq!(h.iter().map(|b| b.2).sum::<f64>(), 820.0, "{r}: {h:?}");
    }
    let g: Vec<(i64, f64)> = stored(&p, "g", 60).iter().map(|b| (b.0, b.5)).collect();
    assert_eq!(g, (0..41).map(|m| (T0 + 60 * m, m as f64)).collect::<Vec<_>>());
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
    assert_eq!(agg.unsaved_len(), 0);
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 0);
    s.stop(WAIT).unwrap();
}

/// Two aggregators on one syncer; one is detached during the outage (refused:
/// its data is unsaved), then after it.
#[test]
fn two_aggregators_on_one_syncer_through_an_outage_and_a_detach() {
    let p = prefix("sptwo");
    let proxy = Outage::start();
    let clock = ManualClock::from_secs(T0);
    let a1 = Arc::new(Aggregator::with_clock(small(), Arc::new(clock.clone())).unwrap());
    let a2 = Arc::new(Aggregator::with_clock(small(), Arc::new(clock.clone())).unwrap());
    let s = Syncer::spawn(config(&p, &proxy.dsn, "unused")).unwrap();
    s.attach(a1.clone(), "w1", None).unwrap();
    s.attach(a2.clone(), "w2", None).unwrap();
    a1.increment_counter("c1", 1.0).unwrap();
    a2.record_gauge("g2", 0.0).unwrap();
    s.flush(WAIT).unwrap();
    proxy.set_down(true);
    for m in 1..=30 {
        clock.advance_secs(60);
        a1.increment_counter("c1", 1.0).unwrap();
        a2.record_gauge("g2", m as f64).unwrap();
        assert!(s.flush(WAIT).is_err());
    }
    assert!(s.detach(&a1, Duration::from_secs(10)).is_err(), "a detach saves first");
    proxy.set_down(false);
    s.detach(&a1, WAIT).unwrap();
    for m in 31..=40 {
        clock.advance_secs(60);
        a2.record_gauge("g2", m as f64).unwrap();
        s.flush(WAIT).unwrap();
    }
    s.stop(WAIT).unwrap();
    assert_eq!(totals(&p, "c1", 60), minutes(0, 31, 1.0));
    let g: Vec<(i64, f64)> = stored(&p, "g2", 60).iter().map(|b| (b.0, b.5)).collect();
    assert_eq!(g, (0..41).map(|m| (T0 + 60 * m, m as f64)).collect::<Vec<_>>());
    assert_eq!(a1.drops().total() + a2.drops().total(), 0);
    assert_eq!(a1.unsaved_len() + a2.unsaved_len(), 0);
}

/// Gauges and histograms, with late records (earlier in the minute, and into
/// the previous minute), through an outage longer than every fine ring:
/// exact counts, sums, minimums, maximums and last values.
#[test]
fn gauges_and_histograms_with_late_records_through_an_outage_are_exact() {
    let p = prefix("spexact");
    let proxy = Outage::start();
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &proxy.dsn);
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    proxy.set_down(true);
    // Model per minute: histogram (count, sum, min, max), gauge last.
    let mut hist: Vec<(i64, f64, f64, f64)> = vec![(0, 0.0, f64::INFINITY, f64::NEG_INFINITY); 60];
    fn add(hist: &mut [(i64, f64, f64, f64)], m: usize, v: f64) {
        let e = &mut hist[m];
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.min(v);
        e.3 = e.3.max(v);
    }
    for m in 0..60i64 {
        clock.set(T0 * NS + (60 * m + 40) * NS);
        agg.record_gauge("g", m as f64).unwrap();
        agg.record_key_at(Kind::Gauge, "g", "number", 1000.0 + m as f64, (T0 + 60 * m + 5) * NS)
            .unwrap();
        for v in [m as f64, -(m as f64)] {
            agg.record_key(Kind::Histogram, "h", "s", v).unwrap();
            add(&mut hist, m as usize, v);
        }
        if m >= 1 {
            let v = 500.0 + m as f64;
            agg.record_key_at(Kind::Histogram, "h", "s", v, (T0 + 60 * (m - 1) + 30) * NS)
                .unwrap();
            add(&mut hist, m as usize - 1, v);
        }
        assert!(s.flush(WAIT).is_err());
    }
    proxy.set_down(false);
    s.flush(WAIT).unwrap();
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
    for (r, width) in [(60i32, 1usize), (300, 5), (3600, 60)] {
        let want: Vec<Stored> = hist
            .chunks(width)
            .enumerate()
            .map(|(i, c)| {
                let fold = c.iter().fold((0i64, 0.0, f64::INFINITY, f64::NEG_INFINITY), |a, b| {
                    (a.0 + b.0, a.1 + b.1, a.2.min(b.2), a.3.max(b.3))
                });
                (T0 + 60 * (i * width) as i64, fold.0, fold.1, fold.2, fold.3, 0.0)
            })
            .collect();
        assert_eq!(stored(&p, "h", r), want, "histogram at {r}");
        let gauges: Vec<(i64, f64)> = stored(&p, "g", r).iter().map(|b| (b.0, b.5)).collect();
        let want: Vec<(i64, f64)> = (0..60 / width)
            .map(|i| (T0 + 60 * (i * width) as i64, ((i + 1) * width - 1) as f64))
            .collect();
        assert_eq!(gauges, want, "gauge at {r}");
    }
    s.stop(WAIT).unwrap();
}

/// No outage, a flush every minute, three long-lived writer threads and the
/// main thread: nothing saved ever goes through the buffer, and every
/// flush writes just the four open chunks of each series.
#[test]
fn the_steady_state_never_spills_and_writes_no_extra_rows() {
    let p = prefix("spsteady");
    let (agg, clock) = setup(Config { writers: 64, ..small() });
    let s = start(&agg, &p, &dsn());
    let (go, done) = (std::sync::Barrier::new(4), std::sync::Barrier::new(4));
    let stop = AtomicBool::new(false);
    let mut failures: Vec<String> = Vec::new();
    std::thread::scope(|scope| {
        for t in 0..3 {
            let (agg, go, done, stop) = (&agg, &go, &done, &stop);
            scope.spawn(move || {
                loop {
                    go.wait();
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    agg.increment_counter("c", 1.0).unwrap();
                    agg.record_gauge("g", t as f64).unwrap();
                    agg.record_key(Kind::Histogram, "h", "s", t as f64).unwrap();
                    done.wait();
                }
            });
        }
        // (No assertion in here: a panic would leave the threads waiting.)
        for m in 0..100 {
            go.wait();
            done.wait();
            agg.increment_counter("c", 1.0).unwrap();
            if agg.unsaved_len() != 0 {
                failures.push(format!(
                    "minute {m}: {} saved buckets went to the buffer",
                    agg.unsaved_len()
                ));
            }
            match s.flush(WAIT) {
                Ok(r) if r.rows_written == 12 => {}
                other => failures.push(format!("minute {m}: {other:?}, not 3 series x 4 open chunks")),
            }
            clock.advance_secs(60);
        }
        stop.store(true, Ordering::SeqCst);
        go.wait();
    });
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
    assert_eq!(totals(&p, "c", 60), minutes(0, 100, 4.0));
    assert_eq!(totals(&p, "c", 86400), vec![(T0, 400.0)]);
    s.stop(WAIT).unwrap();
}

/// Days of outage, the clock jumping an hour, then a day, at a time: every
/// day bucket saved, and every finer bucket within Chancy's retention.
#[test]
fn days_of_outage_with_clock_jumps_keep_every_bucket_within_retention() {
    let p = prefix("spdays");
    let proxy = Outage::start();
    let (agg, clock) = setup(small());
    let s = start(&agg, &p, &proxy.dsn);
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    proxy.set_down(true);
    let mut at = Vec::new();
    for d in 0..20i64 {
        for h in 0..4i64 {
            let t = T0 + d * 86400 + h * 3600 + 30;
            clock.set(t * NS);
            agg.increment_counter("c", (d + 1) as f64).unwrap();
            at.push((t, (d + 1) as f64));
        }
        assert!(s.flush(WAIT).is_err());
    }
    proxy.set_down(false);
    s.flush(WAIT).unwrap();
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
    let now = at.last().unwrap().0;
    for r in Resolution::ALL {
        let kept = first_kept_chunk(r, now, DEFAULT_RETENTION_SECS[r.index()]);
        let mut want: Vec<(i64, f64)> = Vec::new();
        for &(t, v) in &at {
            let start = r.bucket_start(r.bucket_of(t));
            if r.chunk_start(r.bucket_of(t)) < kept {
                continue;
            }
            match want.last_mut() {
                Some(last) if last.0 == start => last.1 += v,
                _ => want.push((start, v)),
            }
        }
        assert_eq!(totals(&p, "c", r.seconds() as i32), want, "{r}");
    }
    s.stop(WAIT).unwrap();
}

/// A thread that recorded once holds its minute in its own writer stripe
/// until it records again. An outage longer than the rings must not lose
/// that observation at any resolution while other threads' buckets of the
/// same period leave the rings.
#[test]
fn a_lagging_writer_thread_loses_nothing_in_an_outage() {
    let p = prefix("splag");
    let proxy = Outage::start();
    let (agg, clock) = setup(Config { writers: 64, ..small() });
    let s = start(&agg, &p, &proxy.dsn);
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    proxy.set_down(true);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ack, acked) = std::sync::mpsc::channel::<()>();
    let other = {
        let agg = agg.clone();
        std::thread::spawn(move || {
            while rx.recv().is_ok() {
                agg.increment_counter("c", 1.0).unwrap();
                ack.send(()).unwrap();
            }
        })
    };
    tx.send(()).unwrap();
    acked.recv().unwrap();
    for m in 0..40 {
        if m > 0 {
            clock.advance_secs(60);
        }
        agg.increment_counter("c", 1.0).unwrap();
        assert!(s.flush(WAIT).is_err());
    }
    proxy.set_down(false);
    s.flush(WAIT).unwrap();
    let result = (
        totals(&p, "c", 60).first().copied(),
        totals(&p, "c", 300).iter().map(|b| b.1).sum::<f64>(),
        totals(&p, "c", 3600).iter().map(|b| b.1).sum::<f64>(),
    );
    drop(tx);
    other.join().unwrap();
    assert_eq!(
        result,
        (Some((T0, 2.0)), 41.0, 41.0),
        "(minute 0, 5min total, 1hour total); drops {:?}",
        agg.drops()
    );
    s.stop(WAIT).unwrap();
}

/// Rings of a single bucket: the steady state spills nothing, and an outage
/// loses nothing.
#[test]
fn rings_of_one_bucket() {
    let p = prefix("spone");
    let proxy = Outage::start();
    let (agg, clock) = setup(Config {
        buckets: [1, 1, 1, 1],
        ..Config::with_capacity(4)
    });
    let s = start(&agg, &p, &proxy.dsn);
    for m in 0..20 {
        agg.increment_counter("c", 1.0).unwrap();
        assert_eq!(agg.unsaved_len(), 0, "minute {m}");
        assert_eq!(s.flush(WAIT).unwrap().rows_written, 4, "minute {m}");
        clock.advance_secs(60);
    }
    proxy.set_down(true);
    for _ in 20..50 {
        agg.increment_counter("c", 1.0).unwrap();
        agg.record_gauge("g", 7.0).unwrap();
        assert!(s.flush(WAIT).is_err());
        clock.advance_secs(60);
    }
    proxy.set_down(false);
    clock.advance_secs(-60);
    s.flush(WAIT).unwrap();
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
    assert_eq!(totals(&p, "c", 60), minutes(0, 50, 1.0));
    assert_eq!(
        totals(&p, "c", 300),
        (0..10).map(|i| (T0 + 300 * i, 5.0)).collect::<Vec<_>>()
    );
    assert_eq!(totals(&p, "c", 3600), vec![(T0, 50.0)]);
    assert_eq!(stored(&p, "g", 60).len(), 30);
    s.stop(WAIT).unwrap();
}

/// The largest buffer is only reserved: creating it makes nothing resident.
#[test]
fn the_largest_buffer_is_reserved_not_resident() {
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    }
    assert!(
        Aggregator::new(Config {
            spill: MAX_SPILL + 1,
            ..Config::with_capacity(4)
        })
        .is_err()
    );
    let before = rss();
    let agg = Aggregator::new(Config {
        spill: MAX_SPILL,
        ..small()
    })
    .unwrap();
    agg.start_saving();
    for _ in 0..100 {
        agg.increment_counter("c", 1.0).unwrap();
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 256 << 20, "{grown} bytes resident for an empty buffer");
    assert_eq!(agg.unsaved_len(), 0);
}

/// A flush after an outage large enough to go through the staging table
/// (more than 5,000 rows), merging buckets from the unsaved buffer into rows
/// that already hold saved buckets of the same chunks.
#[test]
fn a_large_staged_flush_after_an_outage_merges_every_bucket() {
    let p = prefix("spstaged");
    let proxy = Outage::start();
    let n = 1000;
    let (agg, clock) = setup(Config {
        buckets: [6, 6, 6, 6],
        spill: 50_000,
        ..Config::with_capacity(n)
    });
    let s = start(&agg, &p, &proxy.dsn);
    let keys: Vec<String> = (0..n).map(|i| format!("st:{i}")).collect();
    for m in 0..30 {
        if m == 5 {
            proxy.set_down(true);
        }
        for k in &keys {
            agg.increment_counter(k, 1.0).unwrap();
        }
        if m < 5 {
            s.flush(WAIT).unwrap();
        } else if m % 10 == 0 {
            assert!(s.flush(WAIT).is_err());
        }
        clock.advance_secs(60);
    }
    clock.advance_secs(-60);
    proxy.set_down(false);
    let report = s.flush(WAIT).unwrap();
    assert!(report.rows_written > 5000, "{report:?}");
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
    let per_key = |resolution: i32| -> Vec<(String, i64, f64)> {
        client()
            .query(
                &format!(
                    "SELECT d.key, count(*), sum(u.t)
                     FROM \"{p}metrics\" m JOIN \"{p}metric_definitions\" d ON d.id = m.metric_id
                     CROSS JOIN LATERAL unnest(m.buckets, m.totals) AS u(b, t)
                     WHERE m.resolution = $1 AND d.key LIKE 'st:%' GROUP BY d.key ORDER BY d.key"
                ),
                &[&resolution],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let mut sorted = keys.clone();
    sorted.sort();
    for (r, buckets) in [(60, 30), (300, 6), (3600, 1), (86400, 1)] {
        let want: Vec<(String, i64, f64)> = sorted.iter().map(|k| (k.clone(), buckets, 30.0)).collect();
        assert_eq!(per_key(r), want, "at {r}");
    }
    s.stop(WAIT).unwrap();
}

/// The same lagging writer thread without any outage: only flushes further
/// apart than the rings are deep (the second case the buffer is for).
#[test]
fn a_lagging_writer_thread_loses_nothing_between_distant_flushes() {
    let p = prefix("splag2");
    let (agg, clock) = setup(Config { writers: 64, ..small() });
    let s = start(&agg, &p, &dsn());
    agg.increment_counter("c", 1.0).unwrap(); // this thread's writer slot
    let other = {
        let agg = agg.clone();
        // Records once and exits (a short-lived thread): its minute stays
        // in its writer stripe, never folded.
        std::thread::spawn(move || agg.increment_counter("c", 1.0).unwrap())
    };
    other.join().unwrap();
    for m in 1..40 {
        clock.advance_secs(60);
        agg.increment_counter("c", 1.0).unwrap();
        if m % 20 == 19 {
            s.flush(WAIT).unwrap();
        }
    }
    s.flush(WAIT).unwrap();
    let result = (
        totals(&p, "c", 60).first().copied(),
        totals(&p, "c", 300).iter().map(|b| b.1).sum::<f64>(),
        totals(&p, "c", 3600).iter().map(|b| b.1).sum::<f64>(),
    );
    assert_eq!(
        result,
        (Some((T0, 2.0)), 41.0, 41.0),
        "(minute 0, 5min total, 1hour total); drops {:?}",
        agg.drops()
    );
    s.stop(WAIT).unwrap();
}
