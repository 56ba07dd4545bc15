//! The fuzz targets' properties as property tests, so the regular test
//! command checks them too: key, unit and value validation against an
//! independent statement of Chancy's rules (NUL bytes, 1,024 / 1,025-byte
//! keys, multi-byte UTF-8 at the boundary, 64 / 65-character units), and
//! recording by key never panics, refuses exactly the invalid calls and
//! counts each refusal once.

use proptest::prelude::*;
use ringmetrics::{Kind, validate};
use ringmetrics_tests::model::rules::{KeyCall, key_ok, run_key_calls, unit_ok, value_ok};

/// Characters of 1 to 4 UTF-8 bytes, and NUL.
const CHARS: [char; 6] = ['a', 'é', '€', '𝄞', '\0', '/'];

/// `n` copies of `c` (as a string) followed by `tail`.
fn fill(c: char, n: usize, tail: &str) -> Vec<u8> {
    let mut s: String = std::iter::repeat_n(c, n).collect();
    s.push_str(tail);
    s.into_bytes()
}

/// Keys: raw bytes (often not UTF-8), short strings, and strings built to
/// land on either side of the 1,024-byte limit with a multi-byte tail.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..8),
        4 => prop::sample::select(vec!["a", "jobs.done", "s0", "s1", "ключ", "x\0y", ""])
            .prop_map(|s| s.as_bytes().to_vec()),
        3 => (prop::sample::select(CHARS.to_vec()), 1020usize..1026, prop::sample::select(CHARS.to_vec()))
            .prop_map(|(tail, total, pad)| {
                let tail = tail.to_string();
                let n = total.saturating_sub(tail.len()) / pad.len_utf8();
                fill(pad, n, &tail)
            }),
    ]
}

/// Units: raw bytes, Chancy's defaults, and 62..=66 characters of 1 to 4
/// bytes each (so a 64-character unit can be 256 bytes).
fn unit() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..6),
        4 => prop::sample::select(vec!["count", "number", "ms", "", "a\0"]).prop_map(|s| s.as_bytes().to_vec()),
        3 => (prop::sample::select(CHARS.to_vec()), 62usize..67).prop_map(|(c, n)| fill(c, n, "")),
    ]
}

/// Values: ordinary, huge (sums overflow), non-finite, and any bit pattern.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => prop::sample::select(vec![0.0, -0.0, 1.0, -2.5, 1e6, 1e308, -1e308, f64::MAX, f64::MIN_POSITIVE]),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -f64::NAN]),
        1 => any::<u64>().prop_map(f64::from_bits),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(vec![Kind::Counter, Kind::Gauge, Kind::Histogram])
}

fn call() -> impl Strategy<Value = KeyCall> {
    (kind(), key(), unit(), prop::option::weighted(0.85, value())).prop_map(|(kind, key, unit, value)| KeyCall {
        kind,
        key,
        unit,
        value,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn validate_key_follows_the_rules(bytes in key()) {
        if let Ok(s) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(validate::key(s).is_ok(), key_ok(&bytes), "{} bytes", s.len());
        } else {
            prop_assert!(!key_ok(&bytes));
        }
    }

    #[test]
    fn validate_unit_follows_the_rules(bytes in unit()) {
        if let Ok(s) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(validate::unit(s).is_ok(), unit_ok(&bytes), "{} chars", s.chars().count());
        } else {
            prop_assert!(!unit_ok(&bytes));
        }
    }

    #[test]
    fn validate_value_follows_the_rules(v in value()) {
        prop_assert_eq!(validate::value(v).is_ok(), value_ok(v));
    }

    #[test]
    fn record_key_refuses_exactly_the_invalid_and_counts_them(
        calls in prop::collection::vec(call(), 1..40),
    ) {
        run_key_calls(&calls).map_err(TestCaseError::fail)?;
    }
}

/// The boundaries, spelled out.
#[test]
fn boundaries() {
    let k = |b: &[u8]| validate::key(std::str::from_utf8(b).unwrap()).is_ok();
    let u = |b: &[u8]| validate::unit(std::str::from_utf8(b).unwrap()).is_ok();
    for (bytes, ok) in [
        (fill('a', 1024, ""), true),
        (fill('a', 1025, ""), false),
        (fill('a', 1022, "é"), true),  // 1,024 bytes
        (fill('a', 1023, "é"), false), // 1,025 bytes
        (fill('a', 1020, "𝄞"), true),
        (fill('a', 1021, "𝄞"), false),
        (fill('€', 341, "a"), true), // 1,024 bytes, 342 chars
        (b"".to_vec(), false),
        (b"a\0b".to_vec(), false),
        (b"\0".to_vec(), false),
    ] {
        assert_eq!(k(&bytes), ok, "key of {} bytes", bytes.len());
        assert_eq!(key_ok(&bytes), ok, "rules, key of {} bytes", bytes.len());
    }
    for (bytes, ok) in [
        (fill('a', 64, ""), true),
        (fill('a', 65, ""), false),
        (fill('𝄞', 64, ""), true), // 256 bytes
        (fill('𝄞', 65, ""), false),
        (fill('é', 63, "\0"), false),
        (fill('é', 64, "\0"), false),
        (b"".to_vec(), false),
    ] {
        assert_eq!(u(&bytes), ok, "unit of {} bytes", bytes.len());
        assert_eq!(unit_ok(&bytes), ok, "rules, unit of {} bytes", bytes.len());
    }
    // The longest key with the longest unit still registers and records.
    let calls = [KeyCall {
        kind: Kind::Histogram,
        key: fill('a', 1020, "𝄞"),
        unit: fill('𝄞', 64, ""),
        value: Some(1.5),
    }];
    run_key_calls(&calls).unwrap();
}

/// Recording by key from several threads, on the system clock, racing to
/// register the same keys: nothing panics, valid calls succeed, every
/// refusal is counted once. Small enough for Miri (`scripts/miri.sh`), which
/// checks the registry's arena and the accumulator protocol for data races.
#[test]
fn concurrent_record_key_counts_every_refusal() {
    use std::sync::Arc;

    use ringmetrics::{Aggregator, Config, DropReason};

    const THREADS: usize = 3;
    const KEYS: usize = 6;
    let config = Config {
        buckets: [2, 2, 2, 2],
        ..Config::with_capacity(KEYS)
    };
    let agg = Arc::new(Aggregator::new(config).unwrap());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let agg = agg.clone();
            std::thread::spawn(move || {
                for i in 0..KEYS {
                    let key = format!("k{i}");
                    agg.increment_counter(&key, 1.0).unwrap();
                    assert!(agg.increment_counter(&key, f64::NAN).is_err());
                    assert!(agg.increment_counter("bad\0key", 1.0).is_err());
                    assert!(agg.record_gauge(&key, 1.0).is_err()); // a counter already
                    assert_eq!(agg.lookup(&key).map(|s| (s.key, s.unit)), Some((&key[..], "count")));
                }
                t
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(agg.len(), KEYS);
    let drops = agg.drops();
    let n = (THREADS * KEYS) as u64;
    assert_eq!(drops.get(DropReason::NonFiniteValue), n);
    assert_eq!(drops.get(DropReason::InvalidKey), n);
    assert_eq!(drops.get(DropReason::Conflict), n);
    assert_eq!(drops.total(), 3 * n, "{drops:?}");
    assert!(agg.increment_counter("one.too.many", 1.0).is_err());
    assert_eq!(agg.drops().get(DropReason::CapacityExhausted), 1);
}

/// Configurations around every cap and the total: built exactly when the
/// rules allow, refused naming the first bad field, never an abort.
fn config() -> impl Strategy<Value = ringmetrics::Config> {
    use ringmetrics::{MAX_BUCKETS, MAX_KEY_BYTES, MAX_SERIES, MAX_SPILL, MAX_WRITERS};
    let size = |cap: usize| {
        prop_oneof![
            12 => 1usize..64,
            1 => Just(0usize),
            1 => Just(cap),
            1 => Just(cap + 1),
            1 => 0usize..=cap,
            1 => Just(usize::MAX),
        ]
    };
    (
        size(MAX_SERIES),
        size(MAX_KEY_BYTES),
        prop::array::uniform4(size(MAX_BUCKETS)),
        size(MAX_WRITERS),
        prop_oneof![Just(60i64), Just(-1), Just(86_400), Just(86_401), any::<i64>()],
        size(MAX_SPILL),
    )
        .prop_map(
            |(capacity, key_bytes, buckets, writers, max_future_secs, spill)| ringmetrics::Config {
                capacity,
                key_bytes,
                buckets,
                max_future_secs,
                writers,
                spill,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn configurations_build_or_refuse_by_the_rules(c in config()) {
        ringmetrics_tests::model::configs::check(c, 64 << 20).map_err(TestCaseError::fail)?;
    }
}
