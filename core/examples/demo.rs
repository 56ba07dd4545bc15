//! A simulated job-queue worker recording Chancy-style metrics through the
//! core on a manual clock; prints what each resolution holds.
//!
//! `cargo run --release -p ringmetrics --example demo`

use std::sync::Arc;

use ringmetrics::{Aggregator, Config, Kind, ManualClock, Resolution};

fn main() -> Result<(), ringmetrics::Error> {
    let start = 1_767_225_600; // 2026-01-01T00:00:00Z
    let clock = ManualClock::from_secs(start);
    let agg = Aggregator::with_clock(Config::default(), Arc::new(clock.clone()))?;

    // Handles for the hot keys, exactly as Chancy names them.
    let funcs = ["send_email", "resize_image", "charge_card"];
    let done: Vec<_> = funcs
        .iter()
        .map(|f| agg.register(Kind::Counter, &format!("job:{f}:succeeded"), "count"))
        .collect::<Result<_, _>>()?;
    let time: Vec<_> = funcs
        .iter()
        .map(|f| agg.register(Kind::Histogram, &format!("job:{f}:execution_time"), "seconds"))
        .collect::<Result<_, _>>()?;
    let depth = agg.register(Kind::Gauge, "queue:default:depth", "number")?;

    // Three simulated hours: a job every 2 seconds, a failure now and then.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut jobs = 0u64;
    for tick in 0..(3 * 3600 / 2) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let f = (rng % 3) as usize;
        let secs = 0.05 + (rng >> 40) as f64 / (1u64 << 24) as f64 * (f + 1) as f64;
        if rng.is_multiple_of(50) {
            agg.record_key(Kind::Counter, &format!("job:{}:failed", funcs[f]), "count", 1.0)?;
            agg.increment_counter("global:status:failed", 1.0)?;
        } else {
            agg.record(done[f], 1.0)?;
            agg.increment_counter("global:status:succeeded", 1.0)?;
        }
        agg.record(time[f], secs)?;
        agg.increment_counter("queue:default:throughput", 1.0)?;
        if tick % 15 == 0 {
            agg.record(depth, (tick % 97) as f64)?;
        }
        jobs += 1;
        clock.advance_secs(2);
    }

    println!(
        "ringmetrics demo: {jobs} simulated jobs over 3 hours, {} series\n",
        agg.len()
    );
    let throughput = agg
        .series(agg.lookup("queue:default:throughput").map(|i| i.id).unwrap_or(0))
        .expect("registered");
    for r in Resolution::ALL {
        let b = agg.snapshot(throughput, r, 0, i64::MAX / 2)?;
        let total: f64 = b.iter().map(|x| x.sum).sum();
        println!(
            "queue:default:throughput @ {r:>5}: {:>3} buckets held, total {total}",
            b.len()
        );
    }
    println!();
    for (f, h) in funcs.iter().zip(&time) {
        let b = agg.snapshot(*h, Resolution::Hour1, 0, i64::MAX / 2)?;
        for x in b {
            println!(
                "job:{f}:execution_time @ 1hour {}: count {:>4} avg {:.3}s min {:.3}s max {:.3}s",
                x.start - start,
                x.count,
                x.sum / x.count as f64,
                x.min,
                x.max
            );
        }
    }
    let g = agg.snapshot(depth, Resolution::Min5, 0, i64::MAX / 2)?;
    if let Some(last) = g.last() {
        println!(
            "\nqueue:default:depth @ 5min: latest bucket +{}s value {}",
            last.start - start,
            last.last
        );
    }
    println!(
        "\nmemory: {} bytes per series reserved at default rings ({} series capacity)",
        agg.bytes_per_series(),
        agg.config().capacity
    );
    println!("drops: {:?}", agg.drops());
    Ok(())
}
