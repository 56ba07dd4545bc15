//! A plain reference model of the aggregator, and a driver that runs the
//! same random operations against both and compares every bucket. Used by
//! the property tests (`tests/model_props.rs`) and the fuzz targets.
//!
//! The model is the documented semantics written the obvious way, single
//! threaded, with maps: the current minute is held apart and merged into
//! the rings when a newer minute arrives; a late or future record goes
//! straight into each ring, refused there if older than the ring's retention
//! or if its slot holds a newer bucket.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use ringmetrics::*;

const NS: i64 = 1_000_000_000;
const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z, a day boundary

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct B {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    at: i64,
}

impl B {
    /// An empty bucket: the identity of every merge.
    const EMPTY: B = B {
        count: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        last: 0.0,
        at: i64::MIN,
    };
}

#[derive(Debug, Default)]
pub struct ModelSeries {
    /// (minute, bucket) of the accumulator.
    acc: Option<(i64, B)>,
    /// Per resolution: slot index -> (bucket number, values).
    rings: [BTreeMap<i64, (i64, B)>; 4],
}

pub struct Model {
    kind: Vec<Kind>,
    series: Vec<ModelSeries>,
    depth: [i64; 4],
    max_future: i64,
    expired: [u64; 4],
    stale: [u64; 4],
    overflow: [u64; 4],
    rejected: u64,
    /// Records refused for a NaN or infinite value.
    non_finite: u64,
}

#[derive(Debug, PartialEq)]
pub enum Res {
    Ok,
    Overflow,
    NotStored,
    BadTime,
}

impl Model {
    fn apply_rings(&mut self, s: usize, d: B, at: i64, now: Option<i64>) -> (bool, bool) {
        let kind = self.kind[s];
        let mut stored = false;
        let mut overflowed = false;
        for r in Resolution::ALL {
            let depth = self.depth[r.index()];
            let bucket = r.bucket_of(at.div_euclid(NS));
            if let Some(now) = now
                && bucket <= r.bucket_of(now.div_euclid(NS)) - depth
            {
                self.expired[r.index()] += d.count;
                continue;
            }
            let ring = &mut self.series[s].rings[r.index()];
            let idx = bucket.rem_euclid(depth);
            let cur = ring.get(&idx).copied();
            let base = match cur {
                Some((b, _)) if b > bucket => {
                    self.stale[r.index()] += d.count;
                    continue;
                }
                Some((b, v)) if b == bucket => v,
                _ => B::EMPTY,
            };
            let mut sum = base.sum + d.sum;
            if !sum.is_finite() {
                if kind != Kind::Gauge {
                    self.overflow[r.index()] += d.count;
                    overflowed = true;
                    continue;
                }
                sum = sum.clamp(f64::MIN, f64::MAX);
            }
            let mut n = B {
                count: base.count + d.count,
                sum,
                min: base.min.min(d.min),
                max: base.max.max(d.max),
                last: base.last,
                at: base.at,
            };
            if d.at >= base.at {
                n.last = d.last;
                n.at = d.at;
            }
            ring.insert(idx, (bucket, n));
            stored = true;
        }
        (stored, overflowed)
    }

    fn update_acc(kind: Kind, b: &mut B, v: f64, at: i64) -> bool {
        let mut sum = b.sum + v;
        if !sum.is_finite() {
            if kind != Kind::Gauge {
                return false;
            }
            sum = sum.clamp(f64::MIN, f64::MAX);
        }
        b.sum = sum;
        b.count += 1;
        b.min = b.min.min(v);
        b.max = b.max.max(v);
        if kind == Kind::Gauge {
            if at >= b.at {
                b.at = at;
                b.last = v;
            }
        } else {
            b.at = b.at.max(at);
            b.last = v;
        }
        true
    }

    fn record(&mut self, s: usize, v: f64, at: i64, now: i64) -> Res {
        if at < 0 || at > now.saturating_add(self.max_future * NS) {
            self.rejected += 1;
            return Res::BadTime;
        }
        let kind = self.kind[s];
        let minute = at.div_euclid(60 * NS);
        let now_minute = now.div_euclid(60 * NS);
        match self.series[s].acc {
            Some((m, mut b)) if m == minute => {
                if Self::update_acc(kind, &mut b, v, at) {
                    self.series[s].acc = Some((m, b));
                    Res::Ok
                } else {
                    Res::Overflow
                }
            }
            acc if acc.is_none_or(|(m, _)| minute > m) && minute <= now_minute => {
                if let Some((m, b)) = acc {
                    self.apply_rings(s, b, m * 60 * NS, None);
                }
                let mut b = B::EMPTY;
                let ok = Self::update_acc(kind, &mut b, v, at);
                self.series[s].acc = Some((minute, if ok { b } else { B { count: 0, ..b } }));
                if ok { Res::Ok } else { Res::Overflow }
            }
            _ => {
                let d = B {
                    count: 1,
                    sum: v,
                    min: v,
                    max: v,
                    last: v,
                    at,
                };
                match self.apply_rings(s, d, at, Some(now)) {
                    (true, _) => Res::Ok,
                    (false, true) => Res::Overflow,
                    (false, false) => Res::NotStored,
                }
            }
        }
    }

    /// All buckets of a series at a resolution, as the aggregator reports:
    /// the ring as it will be once the pending minute is folded in (the
    /// fold's drops are not counted: it has not happened yet).
    fn buckets(&self, s: usize, r: Resolution) -> Vec<Bucket> {
        let mut ring = self.series[s].rings[r.index()].clone();
        if let Some((m, a)) = self.series[s].acc
            && a.count > 0
        {
            let depth = self.depth[r.index()];
            let bucket = r.bucket_of(m * 60);
            let idx = bucket.rem_euclid(depth);
            let base = match ring.get(&idx) {
                Some((b, v)) if *b == bucket => Some(*v),
                Some((b, _)) if *b > bucket => None, // newer: the fold drops it
                _ => Some(B::EMPTY),
            };
            if let Some(base) = base {
                let mut sum = base.sum + a.sum;
                let fits = sum.is_finite() || self.kind[s] == Kind::Gauge;
                if fits {
                    sum = sum.clamp(f64::MIN, f64::MAX);
                    let later = a.at >= base.at;
                    let n = B {
                        count: base.count + a.count,
                        sum,
                        min: base.min.min(a.min),
                        max: base.max.max(a.max),
                        last: if later { a.last } else { base.last },
                        at: if later { a.at } else { base.at },
                    };
                    ring.insert(idx, (bucket, n));
                }
            }
        }
        let mut out: Vec<Bucket> = ring
            .values()
            .filter(|(_, b)| b.count > 0)
            .map(|(bucket, b)| to_bucket(r.bucket_start(*bucket), b))
            .collect();
        out.sort_by_key(|x| x.start);
        out
    }
}

fn to_bucket(start: i64, b: &B) -> Bucket {
    Bucket {
        start,
        count: b.count,
        sum: b.sum,
        min: b.min,
        max: b.max,
        last: b.last,
        sampled_at: b.at,
    }
}

/// One step of a random scenario.
#[derive(Debug, Clone)]
pub enum Op {
    /// Move the clock by this many seconds (may be negative).
    Advance(i64),
    /// Record into series `s` at the clock's time.
    Now { s: usize, v: f64 },
    /// Record into series `s` at `now + offset` seconds (+ sub-second nanos).
    At { s: usize, v: f64, offset: i64, nanos: i64 },
    /// Compare every series at every resolution.
    Check,
}

/// Values, including ones that overflow a sum.
pub fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => prop::sample::select(vec![-3.5, -1.0, 0.0, 0.5, 1.0, 2.0, 7.25, 1e6]),
        1 => Just(1e308),
        1 => Just(-1e308),
    ]
}

/// One random step.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![
            4 => 0i64..90,
            2 => 60i64..1200,
            1 => 3000i64..200_000,
            1 => -400i64..0,
        ].prop_map(Op::Advance),
        8 => (0usize..3, value()).prop_map(|(s, v)| Op::Now { s, v }),
        4 => (0usize..3, value(), prop_oneof![
            4 => -900i64..90,
            1 => -400_000i64..-900,
            1 => -20_000_000_000i64..-400_000,
            1 => 60i64..200_000,
        ], 0i64..NS).prop_map(|(s, v, offset, nanos)| Op::At { s, v, offset, nanos }),
        1 => Just(Op::Check),
    ]
}

/// Run `ops` against an aggregator with ring depths `depth` and the model;
/// fail on the first difference. Series indices must be below 3; values may
/// be NaN or infinite (refused and counted); times saturate at the ends of
/// `i64`.
pub fn run(depth: [usize; 4], ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::from_secs(T0 + 7);
    let config = Config {
        buckets: depth,
        ..Config::with_capacity(4)
    };
    let agg = Aggregator::with_clock(config.clone(), Arc::new(clock.clone())).unwrap();
    let kinds = [Kind::Counter, Kind::Gauge, Kind::Histogram];
    let handles: Vec<Series> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| agg.register(*k, &format!("s{i}"), k.default_unit()).unwrap())
        .collect();
    let mut model = Model {
        kind: kinds.to_vec(),
        series: (0..3).map(|_| ModelSeries::default()).collect(),
        depth: depth.map(|d| d as i64),
        max_future: config.max_future_secs,
        expired: [0; 4],
        stale: [0; 4],
        overflow: [0; 4],
        rejected: 0,
        non_finite: 0,
    };
    let check = |model: &Model| -> Result<(), TestCaseError> {
        for (s, h) in handles.iter().enumerate() {
            let mut data = SeriesData::default();
            agg.read_series(*h, &mut data).unwrap();
            for r in Resolution::ALL {
                let want = model.buckets(s, r);
                prop_assert_eq!(data.at(r), &want[..], "series {} at {}", s, r);
                let snap = agg.snapshot(*h, r, i64::MIN / 2, i64::MAX / 2).unwrap();
                prop_assert_eq!(&snap[..], &want[..], "snapshot of series {} at {}", s, r);
            }
        }
        let d = agg.drops();
        prop_assert_eq!(d.expired, model.expired);
        prop_assert_eq!(d.stale, model.stale);
        prop_assert_eq!(d.overflow, model.overflow);
        prop_assert_eq!(d.get(DropReason::InvalidTimestamp), model.rejected);
        prop_assert_eq!(d.get(DropReason::NonFiniteValue), model.non_finite);
        Ok(())
    };
    for op in ops {
        let now = clock.now();
        match op {
            Op::Advance(secs) => clock.advance_secs(secs),
            Op::Check => check(&model)?,
            Op::Now { s, v } if !v.is_finite() => {
                model.non_finite += 1;
                let got = agg.record(handles[s], v);
                prop_assert!(matches!(got, Err(Error::NonFiniteValue(_))), "{:?}", got);
            }
            Op::Now { s, v } => {
                let want = model.record(s, v, now, now);
                let got = agg.record(handles[s], v);
                prop_assert_eq!(classify(got), want);
            }
            Op::At { s, v, offset, nanos } => {
                // Saturating: a time beyond i64 is before 1970 or too far
                // ahead either way, and the harness must not overflow.
                let at = now.saturating_add(offset.saturating_mul(NS)).saturating_add(nanos);
                let got = agg.record_at(handles[s], v, at);
                if v.is_finite() {
                    let want = model.record(s, v, at, now);
                    prop_assert_eq!(classify(got), want);
                } else {
                    model.non_finite += 1;
                    prop_assert!(matches!(got, Err(Error::NonFiniteValue(_))), "{:?}", got);
                }
            }
        }
    }
    check(&model)
}

/// [`run`] for callers outside proptest (the fuzz targets): the first
/// difference as a message.
pub fn run_ops(depth: [usize; 4], ops: Vec<Op>) -> Result<(), String> {
    run(depth, ops).map_err(|e| e.to_string())
}

fn classify(r: Result<(), Error>) -> Res {
    match r {
        Ok(()) => Res::Ok,
        Err(Error::Overflow { .. }) => Res::Overflow,
        Err(Error::NotStored { .. }) => Res::NotStored,
        Err(Error::InvalidTimestamp { .. }) => Res::BadTime,
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Chancy's input rules and the refusals of `record_key` / `register`,
/// written from the rules and independently of `ringmetrics::validate`.
/// Used by `tests/fuzz_props.rs` and the `validation` fuzz target.
pub mod rules {
    use std::collections::HashMap;
    use std::sync::Arc;

    use ringmetrics::*;

    /// A key: 1..=1024 bytes of UTF-8, no NUL byte.
    pub fn key_ok(key: &[u8]) -> bool {
        std::str::from_utf8(key).is_ok() && !key.is_empty() && key.len() <= 1024 && !key.contains(&0)
    }

    /// A unit: 1..=64 characters (not bytes) of UTF-8, no NUL.
    pub fn unit_ok(unit: &[u8]) -> bool {
        match std::str::from_utf8(unit) {
            Ok(s) => (1..=64).contains(&s.chars().count()) && !s.contains('\0'),
            Err(_) => false,
        }
    }

    /// A value: neither NaN nor infinite.
    pub fn value_ok(v: f64) -> bool {
        !v.is_nan() && v != f64::INFINITY && v != f64::NEG_INFINITY
    }

    /// One call into the aggregator by key.
    #[derive(Debug, Clone)]
    pub struct KeyCall {
        pub kind: Kind,
        pub key: Vec<u8>,
        pub unit: Vec<u8>,
        /// `None`: `register` (no value); `Some`: `record_key`.
        pub value: Option<f64>,
    }

    /// Series capacity of the aggregator [`run_key_calls`] builds (key space
    /// is large enough for that many longest keys and units).
    pub const CAPACITY: usize = 6;

    /// The refusal the rules call for, or `None` when the call succeeds.
    /// `registered` maps key -> (kind, unit, this minute's sum).
    fn expected(call: &KeyCall, registered: &HashMap<Vec<u8>, (Kind, Vec<u8>, f64)>) -> Option<DropReason> {
        // A bad value is refused before the key is even looked at.
        if let Some(v) = call.value
            && !value_ok(v)
        {
            return Some(DropReason::NonFiniteValue);
        }
        match registered.get(&call.key) {
            Some((kind, unit, sum)) if *kind == call.kind && *unit == call.unit => {
                let v = call.value.unwrap_or(0.0);
                (call.kind != Kind::Gauge && !value_ok(sum + v)).then_some(DropReason::Overflow)
            }
            _ if !key_ok(&call.key) => Some(DropReason::InvalidKey),
            _ if !unit_ok(&call.unit) => Some(DropReason::InvalidUnit),
            Some(_) => Some(DropReason::Conflict),
            None if registered.len() >= CAPACITY => Some(DropReason::CapacityExhausted),
            None => None,
        }
    }

    /// Run `calls` (non-UTF-8 keys and units are checked against the rules
    /// only: the Rust API cannot take them) against a fresh aggregator on a
    /// stopped clock; fail on the first call whose outcome or drop counters
    /// differ from the rules, or on a `validate` function that disagrees.
    pub fn run_key_calls(calls: &[KeyCall]) -> Result<(), String> {
        let clock = ManualClock::from_secs(1_767_225_600);
        let config = Config {
            buckets: [2, 2, 2, 2],
            key_bytes: CAPACITY * (1024 + 64 * 4),
            ..Config::with_capacity(CAPACITY)
        };
        let agg = Aggregator::with_clock(config, Arc::new(clock)).map_err(|e| e.to_string())?;
        let mut registered: HashMap<Vec<u8>, (Kind, Vec<u8>, f64)> = HashMap::new();
        let mut want = [0u64; 8];
        for (i, call) in calls.iter().enumerate() {
            let fail = |what: String| Err(format!("call {i} {call:?}: {what}"));
            if let Some(v) = call.value
                && validate::value(v).is_ok() != value_ok(v)
            {
                return fail(format!("validate::value({v:?}) disagrees with the rules"));
            }
            let (Ok(key), Ok(unit)) = (std::str::from_utf8(&call.key), std::str::from_utf8(&call.unit)) else {
                if key_ok(&call.key) && unit_ok(&call.unit) {
                    return fail("the rules accept a non-UTF-8 key or unit".into());
                }
                continue;
            };
            if validate::key(key).is_ok() != key_ok(&call.key) {
                return fail(format!("validate::key disagrees with the rules ({} bytes)", key.len()));
            }
            if validate::unit(unit).is_ok() != unit_ok(&call.unit) {
                return fail(format!(
                    "validate::unit disagrees with the rules ({} chars)",
                    unit.chars().count()
                ));
            }
            let expect = expected(call, &registered);
            let got = match call.value {
                Some(v) => agg.record_key(call.kind, key, unit, v),
                None => agg.register(call.kind, key, unit).map(|_| ()),
            };
            let reason = match &got {
                Ok(()) => None,
                Err(Error::NonFiniteValue(_)) => Some(DropReason::NonFiniteValue),
                Err(Error::InvalidKey { .. }) => Some(DropReason::InvalidKey),
                Err(Error::InvalidUnit { .. }) => Some(DropReason::InvalidUnit),
                Err(Error::Conflict { .. }) => Some(DropReason::Conflict),
                Err(Error::Overflow { .. }) => Some(DropReason::Overflow),
                Err(Error::CapacityExhausted { .. }) => Some(DropReason::CapacityExhausted),
                Err(e) => return fail(format!("unexpected error {e}")),
            };
            if reason != expect {
                return fail(format!("got {got:?}, the rules say {expect:?}"));
            }
            match reason {
                Some(r) => want[r as usize] += 1,
                None => {
                    let entry = registered
                        .entry(call.key.clone())
                        .or_insert((call.kind, call.unit.clone(), 0.0));
                    entry.2 += call.value.unwrap_or(0.0);
                    match agg.lookup(key) {
                        Some(info) if info.key == key && info.unit == unit && info.kind == call.kind => {}
                        other => return fail(format!("lookup after success gave {other:?}")),
                    }
                }
            }
            let drops = agg.drops();
            if drops.records != want || drops.total() != want.iter().sum::<u64>() {
                return fail(format!("drops {drops:?}, want records {want:?}"));
            }
        }
        if agg.len() != registered.len() {
            return Err(format!(
                "{} series registered, the rules say {}",
                agg.len(),
                registered.len()
            ));
        }
        Ok(())
    }
}

/// Configurations: an independent statement of the caps
/// (`ringmetrics::config`), and what building an aggregator from any
/// configuration may do: succeed exactly when every rule holds (or fail
/// with `AllocationFailed` when the system refuses the memory), refuse with
/// `InvalidConfig` naming the first bad field, never panic or abort.
pub mod configs {
    use std::sync::Arc;

    use ringmetrics::{
        Aggregator, Config, Error, Kind, MAX_BUCKETS, MAX_KEY_BYTES, MAX_RESERVED_BYTES, MAX_SERIES, MAX_SPILL,
        MAX_WRITERS, ManualClock, Resolution,
    };

    /// Bytes of one series' share of each array at these sizes, as the
    /// layout documents them: accumulator (128), slots (64 per bucket),
    /// stripes (64 per writer), pending-minute marks (40 per writer and one
    /// more), registry (16 table + 8 metadata); and the unsaved-bucket
    /// buffer (72 per entry).
    fn reserved(c: &Config) -> Option<u128> {
        // Fields of any size: u128 holds every sum of the caps, not of
        // arbitrary `usize`s, so still checked.
        let n = c.capacity as u128;
        let slots: u128 = c.buckets.iter().map(|&b| b as u128).sum();
        let table = n.checked_mul(2)?.checked_next_power_of_two()?.max(2);
        let per_series = slots
            .checked_mul(64)?
            .checked_add(128 + 8 + c.writers as u128 * 64 + (c.writers as u128 + 1) * 40)?;
        n.checked_mul(per_series)?
            .checked_add(table.checked_mul(8)?)?
            .checked_add(c.key_bytes as u128)?
            .checked_add((c.spill as u128).checked_mul(72)?)
    }

    /// The first field that breaks a rule, by the documented caps.
    pub fn first_bad_field(c: &Config) -> Option<&'static str> {
        if c.capacity == 0 || c.capacity > MAX_SERIES {
            return Some("capacity");
        }
        if c.key_bytes == 0 || c.key_bytes > MAX_KEY_BYTES {
            return Some("key_bytes");
        }
        if c.buckets.iter().any(|&b| b == 0 || b > MAX_BUCKETS) {
            return Some("buckets");
        }
        if c.writers > MAX_WRITERS {
            return Some("writers");
        }
        if c.spill > MAX_SPILL {
            return Some("spill");
        }
        if !(0..=86_400).contains(&c.max_future_secs) {
            return Some("max_future_secs");
        }
        if reserved(c).is_none_or(|b| b > MAX_RESERVED_BYTES as u128) {
            return Some("capacity");
        }
        None
    }

    /// Build an aggregator from `c` and check the outcome against the rules;
    /// when it is built and small enough to use quickly (`use_below`
    /// reserved bytes), record into it and read back.
    pub fn check(c: Config, use_below: usize) -> Result<(), String> {
        let expected = first_bad_field(&c);
        if c.reserved_bytes().map(|b| b as u128) != reserved(&c).filter(|&b| b <= usize::MAX as u128) {
            return Err(format!(
                "{c:?}: reserved_bytes {:?} vs {:?}",
                c.reserved_bytes(),
                reserved(&c)
            ));
        }
        let clock = ManualClock::from_secs(1_767_225_600);
        match (Aggregator::with_clock(c.clone(), Arc::new(clock.clone())), expected) {
            (Err(Error::InvalidConfig { field, reason }), Some(bad)) => {
                if field != bad || reason.is_empty() {
                    return Err(format!("{c:?}: refused `{field}` ({reason}), expected `{bad}`"));
                }
                Ok(())
            }
            (Err(Error::AllocationFailed { bytes, .. }), None) if bytes > 0 => Ok(()),
            (Ok(agg), None) => {
                if Some(agg.allocated_bytes()) != c.reserved_bytes() {
                    return Err(format!("{c:?}: allocated {} bytes", agg.allocated_bytes()));
                }
                if agg.allocated_bytes() > use_below {
                    return Ok(());
                }
                let mut series = Vec::new();
                for i in 0..c.capacity.min(3) {
                    match agg.register(Kind::Histogram, &format!("k{i}"), "ms") {
                        Ok(s) => series.push(s),
                        // Key space is a cap of its own: "k0" and "ms" take 4 bytes.
                        Err(Error::CapacityExhausted { what: "key_bytes", .. }) if c.key_bytes < 4 * (i + 1) => {}
                        Err(e) => return Err(format!("{c:?}: register {i}: {e}")),
                    }
                }
                for _ in 0..3 {
                    for &s in &series {
                        agg.record(s, 1.0).map_err(|e| format!("{c:?}: record: {e}"))?;
                    }
                    clock.advance_secs(60);
                }
                for &s in &series {
                    let b = agg
                        .snapshot(s, Resolution::Min1, 0, i64::MAX / 2)
                        .map_err(|e| format!("{c:?}: snapshot: {e}"))?;
                    let count: u64 = b.iter().map(|b| b.count).sum();
                    let want = 3.min(c.buckets[0] as u64);
                    if count != want {
                        return Err(format!("{c:?}: {count} records read back, expected {want}"));
                    }
                }
                Ok(())
            }
            (got, expected) => Err(format!(
                "{c:?}: got {:?}, expected failure of {expected:?}",
                got.map(|_| ())
            )),
        }
    }
}
