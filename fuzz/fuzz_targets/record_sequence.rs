//! Ring depths (1..=6 per resolution) and a sequence of clock moves
//! (small, large, backwards, to the ends of `i64`) and records (at the
//! clock, late, far in the past, slightly and far in the future; NaN,
//! infinite and huge values) through the aggregator and the reference
//! model (`model::run_ops`); any difference panics.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ringmetrics_tests::model::{Op, run_ops};

const VALUES: [f64; 15] = [
    -3.5,
    -1.0,
    0.0,
    -0.0,
    0.5,
    1.0,
    2.0,
    7.25,
    1e6,
    1e308,
    -1e308,
    f64::MAX,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];

/// The clock stays within this many seconds of the epoch, so that it never
/// wraps around `i64` nanoseconds (9.22e9 s).
const CLOCK_LIMIT: i64 = 9_000_000_000;
const T0: i64 = 1_767_225_607; // the driver's start time, seconds

fn value(u: &mut Unstructured) -> Result<f64> {
    Ok(if u.ratio(1, 8)? {
        f64::from_bits(u.arbitrary()?)
    } else {
        *u.choose(&VALUES)?
    })
}

fn advance(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=3 => u.int_in_range(0..=90)?,
        4 | 5 => u.int_in_range(60..=1200)?,
        6 => u.int_in_range(3000..=200_000)?,
        7 => u.int_in_range(-400..=0)?,
        8 => u.int_in_range(-10_000_000..=10_000_000)?,
        _ => u.int_in_range(-CLOCK_LIMIT..=CLOCK_LIMIT)?,
    })
}

fn offset(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=3 => u.int_in_range(-900..=90)?,              // slightly late / ahead
        4 => u.int_in_range(55..=65)?,                    // at the future limit
        5 => u.int_in_range(-400_000..=-900)?,            // far in the past
        6 => u.int_in_range(-20_000_000_000..=-400_000)?, // before 1970
        7 => u.int_in_range(60..=200_000)?,               // far in the future
        8 => u.int_in_range(-10_000_000..=0)?,            // past every ring
        _ => u.arbitrary()?,                              // anything
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(depth) = (0..4).map(|_| u.int_in_range(1..=6usize)).collect::<Result<Vec<_>>>() else {
        return;
    };
    let depth = [depth[0], depth[1], depth[2], depth[3]];
    let mut clock = T0;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 200 {
        let op = (|| -> Result<Op> {
            Ok(match u.int_in_range(0..=15u8)? {
                0..=3 => {
                    let to = clock.saturating_add(advance(&mut u)?).clamp(-CLOCK_LIMIT, CLOCK_LIMIT);
                    let secs = to - clock;
                    clock = to;
                    Op::Advance(secs)
                }
                4..=9 => Op::Now {
                    s: u.int_in_range(0..=2)?,
                    v: value(&mut u)?,
                },
                10..=14 => Op::At {
                    s: u.int_in_range(0..=2)?,
                    v: value(&mut u)?,
                    offset: offset(&mut u)?,
                    nanos: if u.ratio(1, 16)? {
                        u.arbitrary()?
                    } else {
                        u.int_in_range(0..=999_999_999)?
                    },
                },
                _ => Op::Check,
            })
        })();
        match op {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    if let Err(e) = run_ops(depth, ops) {
        panic!("{e}");
    }
});
