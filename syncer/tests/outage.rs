//! Outages longer than the rings: a bucket pushed out of its ring before it
//! was saved waits in the aggregator's unsaved-bucket buffer and is saved
//! once the database is back, exactly, as Chancy's plugin keeps unsaved
//! points while `max_buffered_points` allow; past the buffer, drops are
//! counted. Also a `sync_interval` longer than the ring, and a syncer
//! restarted during an outage.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Outage, client, dsn, prefix};
use ringmetrics::{Aggregator, Config, Kind, ManualClock};
use ringmetrics_postgres::{Syncer, SyncerConfig};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const WAIT: Duration = Duration::from_secs(30);

fn setup(config: Config) -> (Arc<Aggregator>, ManualClock) {
    let clock = ManualClock::from_secs(T0);
    (
        Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap()),
        clock,
    )
}

fn syncer(agg: &Arc<Aggregator>, prefix: &str, dsn: &str) -> Syncer {
    let config = SyncerConfig {
        prefix: prefix.into(),
        worker_id: "w".into(),
        interval: Duration::from_secs(3600),
        ..SyncerConfig::new(dsn.to_owned())
    };
    Syncer::start(agg.clone(), config).unwrap()
}

/// Per stored bucket of `key` at `resolution`: (bucket start, count, total,
/// gauge), oldest first, over every row.
fn stored(prefix: &str, key: &str, resolution: i32) -> Vec<(i64, i64, f64, f64)> {
    client()
        .query(
            &format!(
                "SELECT extract(epoch FROM u.b)::int8, coalesce(u.n, 0), coalesce(u.t, 0), coalesce(u.g, 0)
                 FROM \"{prefix}metrics\" m JOIN \"{prefix}metric_definitions\" d ON d.id = m.metric_id
                 CROSS JOIN LATERAL unnest(m.buckets, m.counts, m.totals, m.gauges) AS u(b, n, t, g)
                 WHERE d.key = $1 AND m.resolution = $2 ORDER BY 1"
            ),
            &[&key, &resolution],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Small rings (6 buckets) so an outage of minutes outlasts them.
fn small() -> Config {
    Config {
        buckets: [6, 6, 6, 6],
        ..Config::with_capacity(8)
    }
}

#[test]
fn an_outage_longer_than_every_ring_loses_nothing() {
    let p = prefix("outage");
    let proxy = Outage::start();
    let (agg, clock) = setup(small());
    let s = syncer(&agg, &p, &proxy.dsn);
    agg.increment_counter("c", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    proxy.set_down(true);
    // Three hours down, a flush failing every minute: the 1min ring (6
    // minutes) wraps 30 times, the 5min ring (30 minutes) 6 times.
    for m in 1..=180 {
        clock.advance_secs(60);
        agg.increment_counter("c", 1.0).unwrap();
        agg.record_gauge("g", m as f64).unwrap();
        agg.record_key(Kind::Histogram, "h", "seconds", m as f64).unwrap();
        assert!(s.flush(WAIT).is_err(), "minute {m}: the database is down");
    }
    proxy.set_down(false);
    clock.advance_secs(60);
    s.flush(WAIT).unwrap();
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
    // At 1min, Chancy keeps an hour (`max_points` 60, whole chunks): every
    // minute of the last hour and more, none missing, none doubled.
    // (Minute 0's row, saved before the outage, stays: cleanup's to delete.)
    let mut c = stored(&p, "c", 60);
    assert_eq!(c.remove(0), (T0, 0, 1.0, 0.0));
    let first = 181 - c.len() as i64;
    assert!(c.len() >= 60, "{} minutes", c.len());
    for (i, b) in c.iter().enumerate() {
        assert_eq!(*b, (T0 + 60 * (first + i as i64), 0, 1.0, 0.0), "{c:?}");
    }
    let g = stored(&p, "g", 60);
    assert_eq!(g.len(), c.len());
    for (i, b) in g.iter().enumerate() {
        let m = first + i as i64;
        assert_eq!((b.0, b.3), (T0 + 60 * m, m as f64), "{g:?}");
    }
    // At 5min and coarser, all of it.
    let c5 = stored(&p, "c", 300);
    assert_eq!(c5.len(), 37);
    assert_eq!(c5.iter().map(|b| b.2).sum::<f64>(), 181.0);
    let h = stored(&p, "h", 300);
    assert_eq!(h.iter().map(|b| b.1).sum::<i64>(), 180);
    assert_eq!(h.iter().map(|b| b.2).sum::<f64>(), (1..=180).sum::<i64>() as f64);
    assert_eq!(stored(&p, "c", 3600).iter().map(|b| b.2).sum::<f64>(), 181.0);
    // Saved: nothing waits any more, and the next flush writes nothing.
    assert_eq!(agg.unsaved_len(), 0);
    assert_eq!(s.flush(WAIT).unwrap().rows_written, 0);
    // Minute 174 was read as the bucket pending minute 180 pushes out of
    // its slot: saved then, so nothing is missing once it leaves.
    for _ in 0..10 {
        agg.increment_counter("c", 1.0).unwrap();
        s.flush(WAIT).unwrap();
        clock.advance_secs(60);
    }
    let after = stored(&p, "c", 60);
    assert_eq!(after.len(), 1 + c.len() + 10);
    assert!(after.windows(2).skip(1).all(|w| w[1].0 == w[0].0 + 60), "{after:?}");
    assert_eq!(agg.drops().total(), 0);
    s.stop(WAIT).unwrap();
}

#[test]
fn a_sync_interval_longer_than_the_ring_loses_nothing() {
    let p = prefix("longint");
    let (agg, clock) = setup(small());
    let s = syncer(&agg, &p, &dsn());
    for m in 0..120 {
        agg.increment_counter("c", 1.0).unwrap();
        if m % 25 == 24 {
            s.flush(WAIT).unwrap();
        }
        clock.advance_secs(60);
    }
    s.flush(WAIT).unwrap();
    assert_eq!(stored(&p, "c", 60).len(), 120);
    assert_eq!(agg.drops().total(), 0);
    // Once saved, buckets leave the rings without passing the buffer.
    for _ in 0..20 {
        agg.increment_counter("c", 1.0).unwrap();
        s.flush(WAIT).unwrap();
        clock.advance_secs(60);
        assert_eq!(agg.unsaved_len(), 0);
    }
    assert_eq!(stored(&p, "c", 60).len(), 140);
    s.stop(WAIT).unwrap();
}

#[test]
fn a_full_unsaved_buffer_drops_and_counts() {
    let p = prefix("fullbuf");
    let proxy = Outage::start();
    let (agg, clock) = setup(Config { spill: 5, ..small() });
    let s = syncer(&agg, &p, &proxy.dsn);
    proxy.set_down(true);
    // 20 minutes: 13 leave the 1min ring (minute 19 is still pending), 5
    // fit the buffer (queued or held by the syncer), 8 are lost.
    for _ in 0..20 {
        agg.increment_counter("c", 2.0).unwrap();
        let _ = s.flush(WAIT);
        clock.advance_secs(60);
    }
    proxy.set_down(false);
    s.flush(WAIT).unwrap();
    let d = agg.drops();
    assert_eq!(d.unsaved, [8, 0, 0, 0], "one observation in each of 8 buckets: {d:?}");
    // 5 from the buffer, the 6 the ring holds and the pending minute.
    assert_eq!(stored(&p, "c", 60).len(), 12);
    assert_eq!(stored(&p, "c", 300).iter().map(|b| b.2).sum::<f64>(), 40.0);
    s.stop(WAIT).unwrap();
}

#[test]
fn a_syncer_restarted_during_an_outage_saves_what_waited() {
    let p = prefix("outrestart");
    let proxy = Outage::start();
    let (agg, clock) = setup(small());
    let s = syncer(&agg, &p, &proxy.dsn);
    proxy.set_down(true);
    for _ in 0..30 {
        agg.increment_counter("c", 1.0).unwrap();
        let _ = s.flush(WAIT);
        clock.advance_secs(60);
    }
    let _ = s.stop(Duration::from_secs(5));
    proxy.set_down(false);
    let s = syncer(&agg, &p, &proxy.dsn);
    s.flush(WAIT).unwrap();
    assert_eq!(stored(&p, "c", 60).len(), 30);
    assert_eq!(stored(&p, "c", 86400).iter().map(|b| b.2).sum::<f64>(), 30.0);
    assert_eq!(agg.drops().total(), 0);
    s.stop(WAIT).unwrap();
    // And a syncer to another database keeps nothing saved to the first.
    let other = prefix("outrestart2");
    let s = syncer(&agg, &other, &dsn());
    s.flush(WAIT).unwrap();
    assert_eq!(stored(&other, "c", 60).len(), 7, "the ring's 6 and the pending minute");
    s.stop(WAIT).unwrap();
}
