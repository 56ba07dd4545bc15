//! Key and unit lengths through the C ABI, up to `SIZE_MAX`: a length over
//! the limit (1024 bytes for a key, 256 for a unit) must be refused with
//! `RM_INVALID_KEY` / `RM_INVALID_UNIT` and counted as a drop, and the
//! pointer must not be read. The bytes behind each pointer are exactly the
//! fuzzer's (their own heap allocation), so any read past them, or any
//! slice longer than `isize::MAX`, is caught by the sanitizer. Lengths
//! within the limits point at that many real bytes.
#![no_main]

use std::ffi::c_char;

use libfuzzer_sys::fuzz_target;
use rm_ffi::*;

const MAX_KEY: usize = 1024;
const MAX_UNIT: usize = 256;
const T0_NANOS: i64 = 1_767_225_600_000_000_000;

/// A claimed length from a selector and 4 fuzzed bytes: the real length,
/// or one over `max`, anywhere up to `usize::MAX`.
fn claimed(sel: u8, v: u32, real: usize, max: usize) -> usize {
    let v = v as usize;
    match sel % 4 {
        0 => real,
        1 => usize::MAX - v % 4,
        2 => max + 1 + v % 4096,
        _ => ((v << 32) | v).max(max + 1),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut agg: *mut rm_aggregator = std::ptr::null_mut();
    let mut config = rm_config { capacity: 0, key_bytes: 0, buckets: [0; 4], max_future_secs: 0, writers: 0, spill: 0 };
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(rm_config_default(&mut config), rm_result::RM_OK);
        config.capacity = 8;
        config.buckets = [2; 4];
        assert_eq!(rm_aggregator_new_manual_clock(&config, T0_NANOS, &mut agg), rm_result::RM_OK);
    }
    let mut series = rm_series { id: 0, kind: 0, owner: 0 };
    // A known key, so the record-by-key fast path is taken too.
    // SAFETY: a live aggregator, a 1-byte key, a valid out-pointer.
    assert_eq!(unsafe { rm_register(agg, 0, c"k".as_ptr(), 1, std::ptr::null(), 0, &mut series) }, rm_result::RM_OK);
    let mut refused_keys = 0u64;
    let mut refused_units = 0u64;
    // 12 bytes an operation; a short last one is padded with zeros.
    for chunk in data.chunks(12).take(64) {
        let mut head = [0u8; 12];
        head[..chunk.len()].copy_from_slice(chunk);
        let (op, kind, real_key, real_unit) = (head[0], head[1] as u32 % 3, head[1] as usize / 3 % 8, head[2] as usize % 8);
        let key_len = claimed(head[3], u32::from_le_bytes(head[4..8].try_into().unwrap()), real_key, MAX_KEY);
        let unit_len = claimed(head[3] >> 2, u32::from_le_bytes(head[8..12].try_into().unwrap()), real_unit, MAX_UNIT);
        // Each pointer owns exactly its real bytes ("k" and "count"-like
        // text, so a length within the limits is usually valid).
        let key: Vec<u8> = b"kkkkkkkk"[..real_key].to_vec();
        let unit: Vec<u8> = b"uuuuuuuu"[..real_unit].to_vec();
        let null_key = op & 0x10 != 0;
        let kp = if null_key { std::ptr::null() } else { key.as_ptr() as *const c_char };
        let up = unit.as_ptr() as *const c_char;
        let key_long = key_len > MAX_KEY;
        let unit_long = unit_len > MAX_UNIT;
        // SAFETY: lengths within the limits are the real lengths of live
        // allocations; longer ones must not be read (what is tested).
        let r = unsafe {
            match op % 3 {
                0 => rm_record_key(agg, kind, kp, key_len, up, unit_len, 1.0),
                1 => rm_record_key_at(agg, kind, kp, key_len, up, unit_len, 1.0, T0_NANOS),
                _ => {
                    let mut s = rm_series { id: u32::MAX, kind: 0, owner: 0 };
                    let r = rm_register(agg, kind, kp, key_len, up, unit_len, &mut s);
                    if r != rm_result::RM_OK {
                        assert_eq!(s.id, u32::MAX, "wrote an output on failure");
                    }
                    r
                }
            }
        };
        assert_ne!(r, rm_result::RM_PANIC);
        if key_long {
            assert_eq!(r, rm_result::RM_INVALID_KEY, "key length {key_len}");
            refused_keys += 1;
        } else if unit_long && !(null_key && key_len > 0) {
            assert_eq!(r, rm_result::RM_INVALID_UNIT, "unit length {unit_len}");
            refused_units += 1;
        }
    }
    let mut drops = rm_drops { records: [0; 8], expired: [0; 4], stale: [0; 4], overflow: [0; 4], unsaved: [0; 4] };
    // SAFETY: a live aggregator and valid out-pointers; freed once.
    unsafe {
        assert_eq!(rm_drops_read(agg, &mut drops, std::ptr::null_mut()), rm_result::RM_OK);
        assert!(drops.records[0] >= refused_keys, "every refused key length is counted");
        assert!(drops.records[1] >= refused_units, "every refused unit length is counted");
        rm_aggregator_free(agg);
    }
});
