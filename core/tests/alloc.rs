//! Recording performs zero heap allocations: a counting global allocator
//! watches record by handle, by existing key, at explicit times and across
//! minute rollovers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use ringmetrics::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts calls per thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(|c| c.get());
    f();
    ALLOCS.with(|c| c.get()) - before
}

#[test]
fn recording_never_allocates() {
    let clock = ManualClock::from_secs(1_767_225_600);
    let agg = Aggregator::with_clock(Config::default(), Arc::new(clock.clone())).unwrap();
    let c = agg.register(Kind::Counter, "jobs:done", "count").unwrap();
    let g = agg.register(Kind::Gauge, "queue:depth", "number").unwrap();
    let h = agg
        .register(Kind::Histogram, "job:run:execution_time", "seconds")
        .unwrap();
    let n = allocations(|| {
        for i in 0..10_000 {
            agg.record(c, 1.0).unwrap();
            agg.record(g, i as f64).unwrap();
            agg.record(h, 0.25).unwrap();
            agg.increment_counter("jobs:done", 1.0).unwrap();
            agg.record_key(Kind::Histogram, "job:run:execution_time", "seconds", 2.0)
                .unwrap();
            agg.record_at(c, 1.0, clock.now() - 3_600_000_000_000).unwrap(); // late: rings directly
            if i % 1000 == 0 {
                clock.advance_secs(60); // rollovers fold into every ring
            }
        }
    });
    assert_eq!(n, 0, "recording allocated {n} times");
    // Refusals don't allocate either, except the key lookup miss path's error
    // value for conflicts (it names the key); NaN and bad times don't.
    let n = allocations(|| {
        for _ in 0..1000 {
            assert!(agg.record(c, f64::NAN).is_err());
            assert!(agg.record_at(c, 1.0, -5).is_err());
        }
    });
    assert_eq!(n, 0, "refusing allocated {n} times");
    // A fresh thread's first records (claiming its writer slot, starting its
    // stripe) allocate nothing either.
    let agg = Arc::new(agg);
    let n = std::thread::spawn({
        let agg = agg.clone();
        move || {
            allocations(|| {
                agg.record(c, 1.0).unwrap();
                agg.increment_counter("jobs:done", 1.0).unwrap();
                assert!(current_writer_slot().is_some());
            })
        }
    })
    .join()
    .unwrap();
    assert_eq!(n, 0, "a new thread's first record allocated {n} times");
    // The allocator does count (the test can fail).
    assert!(allocations(|| drop(vec![1u8; 16])) > 0);
}
