//! Arbitrary keys, units (raw bytes, often not UTF-8, often right at the
//! length limits) and values (any bit pattern) through `validate` and
//! `Aggregator::record_key` / `register`: the validators agree with
//! Chancy's rules, recording never panics, refuses exactly the invalid
//! calls and counts each refusal once (`rules::run_key_calls`).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ringmetrics::Kind;
use ringmetrics_tests::model::rules::{KeyCall, run_key_calls};

/// Characters of 1 to 4 UTF-8 bytes, and NUL.
const CHARS: [char; 6] = ['a', 'é', '€', '𝄞', '\0', '.'];

const VALUES: [f64; 12] = [
    0.0,
    -0.0,
    1.0,
    -2.5,
    1e6,
    1e308,
    -1e308,
    f64::MAX,
    f64::MIN_POSITIVE,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];

/// `n` bytes (at most) of `pad` characters, then `tail`.
fn padded(u: &mut Unstructured, lo: usize, hi: usize, chars: bool) -> Result<Vec<u8>> {
    let pad = *u.choose(&CHARS)?;
    let tail = *u.choose(&CHARS)?;
    let total = u.int_in_range(lo..=hi)?;
    let n = if chars {
        total.saturating_sub(1)
    } else {
        total.saturating_sub(tail.len_utf8()) / pad.len_utf8()
    };
    let mut s: String = std::iter::repeat_n(pad, n).collect();
    s.push(tail);
    Ok(s.into_bytes())
}

fn bytes(u: &mut Unstructured, names: &[&str], lo: usize, hi: usize, chars: bool) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u.arbitrary::<&[u8]>()?.to_vec(),
        1 => padded(u, lo, hi, chars)?,
        _ => u.choose(names)?.as_bytes().to_vec(),
    })
}

fn call(u: &mut Unstructured) -> Result<KeyCall> {
    let kind = *u.choose(&[Kind::Counter, Kind::Gauge, Kind::Histogram])?;
    let key = bytes(u, &["a", "b", "jobs.done", "ключ", "k\0", ""], 1020, 1028, false)?;
    let unit = bytes(u, &["count", "number", "ms", "", "\0"], 62, 66, true)?;
    let value = match u.int_in_range(0..=7u8)? {
        0 => None,
        1 | 2 => Some(f64::from_bits(u.arbitrary()?)),
        _ => Some(*u.choose(&VALUES)?),
    };
    Ok(KeyCall { kind, key, unit, value })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut calls = Vec::new();
    while !u.is_empty() && calls.len() < 32 {
        match call(&mut u) {
            Ok(c) => calls.push(c),
            Err(_) => break,
        }
    }
    if let Err(e) = run_key_calls(&calls) {
        panic!("{e}");
    }
});
