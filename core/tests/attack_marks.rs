//! Adversarial tests of 5027cf5 (pending-minute marks, `evict` keeping
//! other threads' pending minutes, `settle`), core only. A model saver does
//! what the syncer does (read to save, drain the unsaved buffer, mark the
//! read saved; a failed flush reads and drains but writes nothing) and keeps
//! the newest absolute value of every bucket it was handed. Every
//! observation must be saved exactly at every resolution, or counted once
//! in `drops()`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;

use ringmetrics::{Aggregator, Bucket, Config, Kind, ManualClock, Resolution, Series, SeriesData};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z, a day boundary
const NS: i64 = 1_000_000_000;

/// (key, resolution index, bucket start) -> bucket, as saved.
type Db = BTreeMap<(String, usize, i64), Bucket>;

fn setup(config: Config) -> (Arc<Aggregator>, ManualClock) {
    let clock = ManualClock::from_secs(T0);
    let agg = Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap());
    agg.start_saving();
    (agg, clock)
}

fn small() -> Config {
    Config {
        buckets: [6, 6, 6, 6],
        writers: 64,
        ..Config::with_capacity(4)
    }
}

fn key_of(agg: &Aggregator, id: u32) -> String {
    agg.info(id).unwrap().key.to_owned()
}

/// A syncer-style flush of every series: read to save, drain the unsaved
/// buffer, write both, and (`mark`) report the reads committed.
fn flush(agg: &Aggregator, db: &mut Db, mark: bool) {
    let mut reads = Vec::new();
    for id in 0..agg.len() as u32 {
        let series = agg.series(id).unwrap();
        let mut data = SeriesData::default();
        agg.read_series_to_save(series, &mut data).unwrap();
        let key = key_of(agg, id);
        for r in Resolution::ALL {
            for b in data.at(r) {
                db.insert((key.clone(), r.index(), b.start), *b);
            }
        }
        reads.push((series, data.version));
    }
    agg.drain_unsaved(|sid, r, b| {
        db.insert((key_of(agg, sid), r.index(), b.start), b);
    });
    agg.hold_unsaved(0);
    if mark {
        for (series, version) in reads {
            agg.mark_saved(series, version).unwrap();
        }
    }
}

/// A flush whose write fails: the reads (and their settles) happen, the
/// drained buckets are held for the next flush, nothing is marked.
fn failed_flush(agg: &Aggregator, held: &mut Vec<(String, usize, Bucket)>) {
    for id in 0..agg.len() as u32 {
        let series = agg.series(id).unwrap();
        let mut data = SeriesData::default();
        agg.read_series_to_save(series, &mut data).unwrap();
    }
    agg.drain_unsaved(|sid, r, b| held.push((key_of(agg, sid), r.index(), b)));
    agg.hold_unsaved(held.len());
}

/// Recorded (count, sum) per (key, resolution, bucket start).
type Want = BTreeMap<(String, usize, i64), (u64, f64)>;

fn want_add(want: &mut Want, key: &str, t: i64, v: f64) {
    for r in Resolution::ALL {
        let e = want
            .entry((key.to_owned(), r.index(), r.bucket_start(r.bucket_of(t))))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += v;
    }
}

#[path = "support/held_thread.rs"]
mod held_thread;
use held_thread::Helper;

fn at_minute(clock: &ManualClock, m: i64) -> i64 {
    clock.set((T0 + 60 * m) * NS);
    T0 + 60 * m
}

fn rec(h: &Helper, agg: &Arc<Aggregator>, s: Series, v: f64, at: i64) {
    let agg = agg.clone();
    h.run(move || agg.record_at(s, v, at * NS).unwrap());
}

// ---------------------------------------------------------------------------
// Sum overflow in a bucket the eviction keeps.
// ---------------------------------------------------------------------------

/// Main folds minute 0 (1e308) into the ring; a helper's pending minute 0
/// also holds 1e308. Folded normally, the helper's minute would be refused
/// as an overflow (counted once) and minute 0 saved as (1, 1e308). When
/// minute 6 takes minute 0's 1min slot instead, `evict` merges the helper's
/// pending minute into the kept bucket with `Bucket::merge`, which clamps
/// the sum at f64::MAX rather than refusing it, and marks it kept: the
/// saver gets (2, f64::MAX), a sum nobody recorded, and no overflow is
/// counted. (The save read, `collect_ring` via `fold`, showed it without
/// the helper's minute: the two disagree.)
#[test]
fn a_kept_pending_minute_whose_merge_overflows_is_refused_not_clamped() {
    let (agg, clock) = setup(small());
    let s = agg.register(Kind::Counter, "c", "number").unwrap();
    let helper = Helper::new();
    let mut db = Db::new();
    agg.record_at(s, 1e308, T0 * NS).unwrap(); // main stripe, minute 0
    rec(&helper, &agg, s, 1e308, T0); // helper stripe, minute 0 (pending)
    at_minute(&clock, 1);
    agg.record(s, 0.0).unwrap(); // folds main's minute 0: slot 0 = 1e308
    flush(&agg, &mut db, true);
    at_minute(&clock, 6);
    agg.record(s, 0.0).unwrap();
    at_minute(&clock, 7);
    agg.record(s, 0.0).unwrap(); // folds minute 6: minute 0 leaves the 1min ring
    rec(&helper, &agg, s, 0.0, T0 + 420); // helper folds its minute 0
    flush(&agg, &mut db, false);
    let d = agg.drops();
    let b = db[&("c".to_owned(), 0, T0)];
    assert!(
        b.sum.is_finite() && b.sum != f64::MAX && b.count == 1 && d.overflow[0] == 1,
        "1min minute 0 saved as count {} sum {:e}; drops {d:?} (want count 1, sum 1e308, overflow[0] = 1)",
        b.count,
        b.sum
    );
}

/// Two idle helpers each hold 1e308 in pending minute 0; the ring never
/// held minute 0. Minute 6 takes the (empty) slot: both are kept as one
/// "between" bucket merged with a clamp: (2, f64::MAX), nothing counted.
/// Folded one after the other, the second would be refused as overflow.
#[test]
fn two_pending_minutes_kept_as_one_between_bucket_do_not_overflow_silently() {
    let (agg, clock) = setup(small());
    let s = agg.register(Kind::Counter, "c", "number").unwrap();
    let (h1, h2) = (Helper::new(), Helper::new());
    let mut db = Db::new();
    rec(&h1, &agg, s, 1e308, T0);
    rec(&h2, &agg, s, 1e308, T0);
    for m in 1..=7 {
        at_minute(&clock, m);
        agg.record(s, 0.0).unwrap();
    }
    flush(&agg, &mut db, false);
    let d = agg.drops();
    let b = db[&("c".to_owned(), 0, T0)];
    assert!(
        b.count == 1 && b.sum == 1e308 && d.overflow[0] == 1,
        "1min minute 0 saved as count {} sum {:e}; drops {d:?} (want count 1, sum 1e308, overflow[0] = 1)",
        b.count,
        b.sum
    );
}

// ---------------------------------------------------------------------------
// A full unsaved buffer.
// ---------------------------------------------------------------------------

/// The flush saved 1min minute 0 exactly (the slot's 1 plus a helper's
/// pending 1) and was marked. Nothing of minute 0 changes after. When
/// minute 12 takes its slot and the buffer is full (another series' unsaved
/// bucket), `evict` pushes minute 0 anyway (a pending minute adds to it:
/// `pending_old`), the push fails, and its 2 observations are counted
/// `unsaved` although the database holds them exactly: saved *and* counted.
#[test]
fn a_saved_bucket_with_an_unchanged_pending_minute_is_not_counted_unsaved_when_the_buffer_is_full() {
    let (agg, clock) = setup(Config { spill: 1, ..small() });
    let c = agg.register(Kind::Counter, "c", "number").unwrap();
    let dd = agg.register(Kind::Counter, "d", "number").unwrap();
    let helper = Helper::new();
    let mut db = Db::new();
    let mut want = Want::new();
    agg.record(c, 1.0).unwrap();
    want_add(&mut want, "c", T0, 1.0);
    rec(&helper, &agg, c, 1.0, T0);
    want_add(&mut want, "c", T0, 1.0);
    let t = at_minute(&clock, 1);
    agg.record(c, 1.0).unwrap(); // folds main's minute 0
    want_add(&mut want, "c", t, 1.0);
    flush(&agg, &mut db, true); // saves minute 0 = 2 exactly
    // Fill the one-entry buffer: d's minute 2 leaves its ring unsaved.
    for m in 2..=9 {
        let t = at_minute(&clock, m);
        agg.record(dd, 1.0).unwrap();
        want_add(&mut want, "d", t, 1.0);
    }
    assert_eq!(agg.unsaved_len(), 1);
    let t = at_minute(&clock, 12);
    agg.record(c, 1.0).unwrap(); // folds c's minute 1 (saved as it is)
    want_add(&mut want, "c", t, 1.0);
    let t = at_minute(&clock, 13);
    agg.record(c, 1.0).unwrap(); // folds minute 12: c's minute 0 leaves the 1min ring
    want_add(&mut want, "c", t, 1.0);
    flush(&agg, &mut db, false);
    let d = agg.drops();
    let got = db[&("c".to_owned(), 0, T0)];
    assert_eq!((got.count, got.sum), (2, 2.0), "minute 0 in the database");
    assert_eq!(
        d.unsaved[0], 0,
        "minute 0 is in the database exactly, yet counted unsaved: {d:?}"
    );
}

// ---------------------------------------------------------------------------
// Gauges and histograms kept by an eviction.
// ---------------------------------------------------------------------------

/// A gauge's minute 0: main records 5 at :10 and folds it, a helper keeps 9
/// at :20 and 1 at :05 pending. Kept by the eviction, minute 0 must read
/// min 1, max 9, last 9 (the latest sample), count 3, sum 15.
#[test]
fn a_kept_gauge_bucket_has_the_right_min_max_last() {
    let (agg, clock) = setup(small());
    let g = agg.register(Kind::Gauge, "g", "number").unwrap();
    let helper = Helper::new();
    let mut db = Db::new();
    agg.record_at(g, 5.0, (T0 + 10) * NS).unwrap();
    rec(&helper, &agg, g, 9.0, T0 + 20);
    rec(&helper, &agg, g, 1.0, T0 + 5);
    at_minute(&clock, 1);
    agg.record_at(g, 2.0, (T0 + 61) * NS).unwrap();
    for m in 6..=7 {
        at_minute(&clock, m);
        agg.record_at(g, 3.0, (T0 + 60 * m + 1) * NS).unwrap();
    }
    rec(&helper, &agg, g, 4.0, T0 + 421); // helper folds its minute 0
    flush(&agg, &mut db, false);
    let b = db[&("g".to_owned(), 0, T0)];
    assert_eq!(
        (b.count, b.sum, b.min, b.max, b.last, b.sampled_at),
        (3, 15.0, 1.0, 9.0, 9.0, (T0 + 20) * NS),
        "drops {:?}",
        agg.drops()
    );
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
}

/// The same with a histogram whose helper minute is "between" (the slot
/// never held minute 0) and the shared accumulator (writers 0) in the mix.
#[test]
fn a_kept_histogram_between_bucket_has_the_right_min_max() {
    let (agg, clock) = setup(small());
    let h = agg.register(Kind::Histogram, "h", "number").unwrap();
    let (h1, h2) = (Helper::new(), Helper::new());
    let mut db = Db::new();
    rec(&h1, &agg, h, 7.0, T0 + 1);
    rec(&h2, &agg, h, -3.0, T0 + 2);
    rec(&h1, &agg, h, 11.0, T0 + 3);
    for m in 1..=7 {
        at_minute(&clock, m);
        agg.record(h, 1.0).unwrap();
    }
    flush(&agg, &mut db, false);
    let b = db[&("h".to_owned(), 0, T0)];
    assert_eq!(
        (b.count, b.sum, b.min, b.max),
        (3, 15.0, -3.0, 11.0),
        "drops {:?}",
        agg.drops()
    );
    assert_eq!(agg.drops().total(), 0, "{:?}", agg.drops());
}

// ---------------------------------------------------------------------------
// A model: helpers (writer stripes or the shared accumulator), late and
// future records, clock steps and jumps, flushes marked, unmarked, failed;
// helper threads exiting (their stripes taken over by new threads).
// ---------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy)]
struct Model {
    seed: u64,
    writers: usize,
    buckets: [usize; 4],
    helpers: usize,
    steps: usize,
    kind: Kind,
}

fn run_model(m: Model) {
    let config = Config {
        buckets: m.buckets,
        writers: m.writers,
        spill: 1 << 20,
        max_future_secs: 300,
        ..Config::with_capacity(4)
    };
    let (agg, clock) = setup(config);
    let keys = ["a", "b"];
    let series: Vec<Series> = keys
        .iter()
        .map(|k| agg.register(m.kind, k, "number").unwrap())
        .collect();
    let mut rng = Rng(m.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut helpers: Vec<Helper> = (0..m.helpers).map(|_| Helper::new()).collect();
    let mut db = Db::new();
    let mut held: Vec<(String, usize, Bucket)> = Vec::new();
    let mut want = Want::new();
    let mut accepted = 0u64; // per resolution: every record not refused whole
    let mut trace = Vec::new();
    let mut now = T0;
    for _ in 0..m.steps {
        let op = rng.below(100);
        if op < 55 {
            let h = rng.below(m.helpers as u64 + 1) as usize;
            let k = rng.below(keys.len() as u64) as usize;
            let when = match rng.below(10) {
                0..=5 => now,
                6..=8 => now - 60 * rng.below(40) as i64 - rng.below(60) as i64,
                _ => now + rng.below(300) as i64,
            };
            let when = when.max(0);
            let v = 1.0;
            let s = series[k];
            let res = if h == m.helpers {
                agg.record_at(s, v, when * NS).map_err(|e| e.to_string())
            } else {
                let agg2 = agg.clone();
                let (tx, rx) = mpsc::channel();
                helpers[h].run(move || {
                    tx.send(agg2.record_at(s, v, when * NS).map_err(|e| e.to_string()))
                        .unwrap()
                });
                rx.recv().unwrap()
            };
            trace.push(format!(
                "rec h{h} {} @{} -> {res:?}",
                keys[k],
                (when - T0) as f64 / 60.0
            ));
            match res {
                Ok(()) => {}
                Err(e) if e.contains("not stored") || e.contains("NotStored") || e.contains("stored in no") => {}
                Err(e) => panic!("unexpected refusal {e}"),
            }
            accepted += 1;
            want_add(&mut want, keys[k], when, v);
        } else if op < 75 {
            let step = match rng.below(6) {
                0 => rng.below(30) as i64,
                1..=3 => 60 * rng.below(3) as i64,
                4 => 60 * (1 + rng.below(12)) as i64,
                _ => 300 * (1 + rng.below(40)) as i64,
            };
            now += step;
            clock.set(now * NS);
            trace.push(format!("clock +{step}s = {}", (now - T0) as f64 / 60.0));
        } else if op < 87 {
            let mark = rng.below(3) != 0;
            for (k, r, b) in held.drain(..) {
                db.insert((k, r, b.start), b);
            }
            flush(&agg, &mut db, mark);
            trace.push(format!("flush mark={mark}"));
        } else if op < 95 {
            failed_flush(&agg, &mut held);
            trace.push("failed flush".into());
        } else {
            // A helper exits; a new thread (taking the lowest free slot:
            // likely its stripe) replaces it.
            let h = rng.below(m.helpers as u64) as usize;
            helpers[h] = Helper::new();
            trace.push(format!("helper {h} replaced"));
        }
    }
    for (k, r, b) in held.drain(..) {
        db.insert((k, r, b.start), b);
    }
    flush(&agg, &mut db, true);
    let drops = agg.drops();
    let mut problems = Vec::new();
    for (key, (c, s)) in &want {
        let got = db.get(key).map(|b| (b.count, b.sum)).unwrap_or((0, 0.0));
        if got.0 > *c || got.1 > *s || got.0 as f64 != got.1 {
            problems.push(format!("{key:?}: saved {got:?} of recorded {:?}", (c, s)));
        }
    }
    for key in db.keys() {
        if !want.contains_key(key) {
            problems.push(format!("{key:?} saved, never recorded"));
        }
    }
    for r in Resolution::ALL {
        let i = r.index();
        let saved: u64 = db.iter().filter(|(k, _)| k.1 == i).map(|(_, b)| b.count).sum();
        let dropped = drops.stale[i] + drops.unsaved[i] + drops.expired[i] + drops.overflow[i];
        if saved + dropped != accepted {
            problems.push(format!(
                "{r}: {accepted} recorded, {saved} saved + {dropped} counted dropped = {}",
                saved + dropped
            ));
        }
    }
    if !problems.is_empty() {
        let tail: Vec<_> = trace.iter().rev().take(40).rev().collect();
        panic!(
            "seed {} writers {} buckets {:?}: {problems:#?}\ndrops {drops:?}\nlast ops {tail:#?}",
            m.seed, m.writers, m.buckets
        );
    }
}

fn models(writers: usize, buckets: [usize; 4], kind: Kind, seeds: std::ops::Range<u64>) {
    let scale: u64 = std::env::var("ATTACK_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let seeds = seeds.start * scale..seeds.end * scale;
    for seed in seeds {
        run_model(Model {
            seed,
            writers,
            buckets,
            helpers: 3,
            steps: 300,
            kind,
        });
    }
}

#[test]
fn model_stripes_small_rings() {
    models(64, [6, 6, 6, 6], Kind::Counter, 0..40);
}

#[test]
fn model_stripes_tiny_rings() {
    models(64, [1, 2, 3, 1], Kind::Counter, 100..140);
}

#[test]
fn model_shared_accumulator_tiny_rings() {
    models(0, [1, 2, 3, 1], Kind::Counter, 200..240);
}

#[test]
fn model_shared_accumulator_small_rings() {
    models(0, [6, 6, 6, 6], Kind::Histogram, 300..340);
}

/// One stripe (which thread takes it depends on the other tests running:
/// the mix of stripe and shared-path helpers is not fixed).
#[test]
fn model_mixed_writers() {
    models(1, [2, 3, 2, 2], Kind::Counter, 400..440);
}

// ---------------------------------------------------------------------------
// Concurrent: more threads than stripes, waves of threads that exit (their
// slots reused), a saver moving the clock in small steps and big jumps with
// marked, unmarked and failed flushes. Each thread tallies what it recorded
// per (resolution, bucket).
// ---------------------------------------------------------------------------

fn concurrent(writers: usize, buckets: [usize; 4], threads: usize, waves: usize, seed: u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let config = Config {
        buckets,
        writers,
        spill: 1 << 20,
        max_future_secs: 120,
        ..Config::with_capacity(4)
    };
    let (agg, clock) = setup(config);
    let s = agg.register(Kind::Counter, "c", "number").unwrap();
    let mut db = Db::new();
    let mut held: Vec<(String, usize, Bucket)> = Vec::new();
    let mut want = Want::new();
    let mut accepted = 0u64;
    let mut rng = Rng(seed | 1);
    let mut now = T0;
    for wave in 0..waves {
        let stop = Arc::new(AtomicBool::new(false));
        let mut hs = Vec::new();
        for t in 0..threads {
            let (agg, stop) = (agg.clone(), stop.clone());
            hs.push(std::thread::spawn(move || {
                let mut rng = Rng((seed ^ ((wave * 977 + t) as u64) * 0x1234_5678_9abc) | 1);
                let mut mine = Want::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = agg.now();
                    let at = match rng.below(8) {
                        0 => now - 60 * NS * rng.below(5) as i64,
                        1 => now + NS * rng.below(100) as i64,
                        _ => now,
                    };
                    match agg.record_at(s, 1.0, at) {
                        Ok(()) => {}
                        Err(ringmetrics::Error::NotStored { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    n += 1;
                    want_add(&mut mine, "c", at.div_euclid(NS), 1.0);
                    if rng.below(64) == 0 {
                        std::thread::yield_now();
                    }
                }
                (mine, n)
            }));
        }
        for _ in 0..60 {
            let step = match rng.below(5) {
                0 => 0,
                1 | 2 => 60,
                3 => 60 * (1 + rng.below(5)) as i64,
                _ => 300 * (1 + rng.below(20)) as i64,
            };
            now += step;
            clock.set(now * NS);
            match rng.below(4) {
                0 => failed_flush(&agg, &mut held),
                1 => {}
                k => {
                    for (k, r, b) in held.drain(..) {
                        db.insert((k, r, b.start), b);
                    }
                    flush(&agg, &mut db, k == 2);
                }
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            let (mine, n) = h.join().unwrap();
            accepted += n;
            for (k, (c, v)) in mine {
                let e = want.entry(k).or_insert((0, 0.0));
                e.0 += c;
                e.1 += v;
            }
        }
    }
    for (k, r, b) in held.drain(..) {
        db.insert((k, r, b.start), b);
    }
    flush(&agg, &mut db, true);
    let drops = agg.drops();
    let mut problems = Vec::new();
    for (key, b) in &db {
        let w = want.get(key).copied().unwrap_or((0, 0.0));
        if b.count > w.0 {
            problems.push(format!("{key:?}: saved {} of {} recorded", b.count, w.0));
        }
    }
    for r in Resolution::ALL {
        let i = r.index();
        let saved: u64 = db.iter().filter(|(k, _)| k.1 == i).map(|(_, b)| b.count).sum();
        let dropped = drops.stale[i] + drops.unsaved[i] + drops.expired[i] + drops.overflow[i];
        if saved + dropped != accepted {
            problems.push(format!(
                "{r}: {accepted} recorded, {saved} saved + {dropped} dropped = {} ({})",
                saved + dropped,
                (saved + dropped) as i64 - accepted as i64
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "writers {writers} buckets {buckets:?} seed {seed}: {problems:#?}\n{drops:?}"
    );
}

#[test]
fn concurrent_more_threads_than_stripes_tiny_rings() {
    for seed in 1..4 {
        concurrent(2, [2, 2, 2, 2], 5, 4, seed);
    }
}

#[test]
fn concurrent_stripes_only_one_bucket_rings() {
    for seed in 10..13 {
        concurrent(64, [1, 1, 1, 1], 4, 4, seed);
    }
}

#[test]
fn concurrent_shared_only_small_rings() {
    for seed in 20..23 {
        concurrent(0, [3, 2, 2, 1], 4, 4, seed);
    }
}
