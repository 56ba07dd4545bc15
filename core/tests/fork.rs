//! fork() while other threads record, fold, read and register: every child
//! records, reads and registers at once and exits within a second (see
//! `core/src/fork.rs` for the story). Unix only.
#![cfg(unix)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringmetrics::*;

const FORKS: usize = 300;
const CHILD_LIMIT: Duration = Duration::from_secs(1);

/// What a child does; its exit code says what went wrong (0: all well).
fn child(agg: &Aggregator, series: &[Series], clock: &ManualClock) -> i32 {
    for (i, &s) in series.iter().enumerate() {
        // Record at the clock's time (the stripe or shared path, maybe a
        // rollover fold), then late (the rings under EXCLUSIVE), then read.
        if agg.record(s, 1.0).is_err() {
            return 10 + i as i32;
        }
        let _ = agg.record_at(s, 1.0, agg.now() - 120 * 1_000_000_000);
        let Ok(buckets) = agg.snapshot(s, Resolution::Min1, 0, i64::MAX / 2) else {
            return 20 + i as i32;
        };
        if buckets.iter().any(|b| b.count == 0 || b.sum < 0.0 || b.min > b.max) {
            return 30 + i as i32;
        }
        let mut data = SeriesData::default();
        if agg.read_series(s, &mut data).is_err() || agg.version(s).is_err() {
            return 40 + i as i32;
        }
    }
    // A fold in the child, and a new key (the registry's lock).
    clock.advance_secs(60);
    if agg.record(series[0], 2.0).is_err() {
        return 50;
    }
    if agg.record_key(Kind::Counter, "child:new", "count", 1.0).is_err() {
        return 51;
    }
    // A thread of the child records too.
    let ok = std::thread::scope(|t| t.spawn(|| agg.record(series[1], 1.0).is_ok()).join().unwrap());
    if !ok {
        return 52;
    }
    0
}

#[test]
fn children_forked_while_threads_record_never_hang() {
    let clock = ManualClock::from_secs(1_767_225_600);
    // Two writer stripes and five recording threads: stripes and the shared
    // path both in flight at every fork.
    let mut config = Config::with_capacity(4096);
    config.writers = 2;
    let agg = Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap());
    let series = vec![
        agg.register(Kind::Counter, "jobs:done", "count").unwrap(),
        agg.register(Kind::Gauge, "queue:depth", "number").unwrap(),
        agg.register(Kind::Histogram, "jobs:time", "seconds").unwrap(),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..5 {
        let (agg, stop, series) = (agg.clone(), stop.clone(), series.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = series[(i % 3) as usize];
                agg.record(s, 1.0).unwrap();
                if i % 64 == t {
                    let _ = agg.record_at(s, 1.0, agg.now() - 300 * 1_000_000_000);
                }
                i += 1;
            }
        }));
    }
    // The clock moves a minute at a time: folds all the time.
    {
        let (clock, stop) = (clock.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                clock.advance_secs(60);
                std::thread::sleep(Duration::from_micros(200));
            }
        }));
    }
    // A reader (its locked reads freeze stripes) and a registering thread.
    {
        let (agg, stop, series) = (agg.clone(), stop.clone(), series.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                for &s in &series {
                    agg.snapshot(s, Resolution::Min5, 0, i64::MAX / 2).unwrap();
                }
                if n < 3000 {
                    let _ = agg.register(Kind::Counter, &format!("parent:{n}"), "count");
                    n += 1;
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(20));

    let mut failures = Vec::new();
    for round in 0..FORKS {
        // SAFETY: the child runs only our code (which is fork-safe by
        // design, the point of this test) and glibc's fork-safe malloc,
        // then `_exit`s without running the parent's destructors.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child(&agg, &series, &clock);
            // SAFETY: see above.
            unsafe { libc::_exit(code) };
        }
        let start = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: `pid` is our child; `status` is a valid out pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if start.elapsed() > CHILD_LIMIT {
                // SAFETY: our child, still running.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                failures.push(format!("fork {round}: child still running after {CHILD_LIMIT:?}"));
                status = 0;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if status != 0
            && failures
                .last()
                .is_none_or(|f| !f.starts_with(&format!("fork {round}:")))
        {
            failures.push(format!("fork {round}: child exited with status {status:#x}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {FORKS} children failed: {failures:#?}",
        failures.len()
    );
}
