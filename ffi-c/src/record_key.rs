//! Recording by key at the clock's time ([`rm_record_key`]), in a module
//! (so a codegen unit) of its own: its copies of the core's registry lookup
//! and record path have one call site each and are inlined (see
//! [`crate::record`]).

use std::ffi::c_char;

use ringmetrics::{Kind, Series};

use crate::aggregator::{agg_ref, rm_aggregator, rm_series};
use crate::record::{done, matching, record_key_slow};
use crate::result::boundary;
use crate::rm_result::{self, *};
use crate::strings::bytes;

/// The handle of a registered `key` whose kind and unit match, with no
/// UTF-8 check (only valid keys are ever registered, so a match is valid).
/// `None` for anything else.
#[inline(always)]
fn known_series(
    a: &rm_aggregator,
    kind: Kind,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
) -> Option<rm_series> {
    let (k, u) = (bytes(key, key_len)?, bytes(unit, unit_len)?);
    let owner = a.owner()?;
    matching(a.agg.lookup_bytes(k)?, kind, u, owner)
}

/// Record `value` into `key` (registering it with `kind` and `unit` if new)
/// at the aggregator's time. Lock-free for a known key.
///
/// Thread safety: any number of threads at once.
///
/// # Safety
/// `agg` NULL or live; `key`/`unit` readable for their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rm_record_key(
    agg: *const rm_aggregator,
    kind: u32,
    key: *const c_char,
    key_len: usize,
    unit: *const c_char,
    unit_len: usize,
    value: f64,
) -> rm_result {
    boundary(|| {
        let Some(a) = agg_ref(agg) else { return RM_NULL_POINTER };
        let Some(kind) = crate::aggregator::kind(kind) else {
            return RM_INVALID_ARGUMENT;
        };
        match known_series(a, kind, key, key_len, unit, unit_len) {
            Some(s) => done(a.agg.record(Series::from_raw(s.id, kind, s.owner), value)),
            // SAFETY: the caller's promises are `record_key_slow`'s.
            None => unsafe { record_key_slow(agg, a, kind, key, key_len, unit, unit_len, value, None) },
        }
    })
}
