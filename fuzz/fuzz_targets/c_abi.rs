//! The C ABI with arbitrary bytes and lengths: keys and units as raw
//! pointer + length (invalid UTF-8, NUL bytes, any length), arbitrary kinds
//! and resolutions, snapshot buffers of any capacity, every result code's
//! message. Every call must return a defined result code (never RM_PANIC),
//! agree with Chancy's rules, and write outputs only on success.
#![no_main]

use std::ffi::c_char;

use libfuzzer_sys::fuzz_target;
use rm_ffi::*;
use ringmetrics_tests::model::rules;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let mut agg: *mut rm_aggregator = std::ptr::null_mut();
    let mut config = rm_config { capacity: 0, key_bytes: 0, buckets: [0; 4], max_future_secs: 0, writers: 0, spill: 0 };
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(rm_config_default(&mut config), rm_result::RM_OK);
        config.capacity = 1 + (data[0] as usize % 8);
        config.writers = data[0] as usize % 3; // shared, mixed or striped
        assert_eq!(rm_aggregator_new_manual_clock(&config, 1_767_225_600_000_000_000, &mut agg), rm_result::RM_OK);
    }
    let mut rest = &data[1..];
    while rest.len() >= 4 {
        let (op, kind, klen, ulen) = (rest[0], rest[1] as u32 % 4, rest[2] as usize, rest[3] as usize % 80);
        rest = &rest[4..];
        let klen = klen.min(rest.len());
        let (key, tail) = rest.split_at(klen);
        let ulen = ulen.min(tail.len());
        let (unit, tail) = tail.split_at(ulen);
        rest = tail;
        let value = f64::from_bits(u64::from_le_bytes(
            key.iter().chain(unit).copied().chain(std::iter::repeat(0)).take(8).collect::<Vec<_>>().try_into().unwrap(),
        ));
        // SAFETY: pointers and lengths describe live slices; out-pointers valid.
        unsafe {
            let k = key.as_ptr() as *const c_char;
            let u = unit.as_ptr() as *const c_char;
            match op % 4 {
                0 => {
                    let r = rm_record_key(agg, kind, k, key.len(), u, unit.len(), value);
                    assert_ne!(r, rm_result::RM_PANIC);
                    let key_ok = rules::key_ok(key);
                    if r == rm_result::RM_OK {
                        assert!(key_ok && kind < 3 && value.is_finite(), "accepted an invalid record");
                    }
                    if kind < 3 && !key_ok && std::str::from_utf8(key).is_err() {
                        assert_eq!(r, rm_result::RM_INVALID_UTF8);
                    }
                }
                1 => {
                    let mut s = rm_series { id: u32::MAX, kind: 0, owner: 0 };
                    let r = rm_register(agg, kind, k, key.len(), u, unit.len(), &mut s);
                    assert_ne!(r, rm_result::RM_PANIC);
                    if r != rm_result::RM_OK {
                        assert_eq!(s.id, u32::MAX, "wrote an output on failure");
                    } else {
                        let cap = (op as usize / 4) % 4;
                        let mut buf = vec![rm_bucket::default(); cap];
                        let mut n = usize::MAX;
                        let r = rm_snapshot(agg, s, kind, 0, i64::MAX / 2, buf.as_mut_ptr(), cap, &mut n);
                        assert!(matches!(
                            r,
                            rm_result::RM_OK | rm_result::RM_BUFFER_TOO_SMALL | rm_result::RM_INVALID_ARGUMENT
                        ));
                        if r == rm_result::RM_OK {
                            assert!(n <= cap);
                        }
                    }
                }
                2 => {
                    let r = rm_aggregator_advance_time(agg, (value.to_bits() as i64) >> 20);
                    assert_eq!(r, rm_result::RM_OK);
                }
                _ => {
                    let msg = std::ffi::CStr::from_ptr(rm_result_message(std::mem::transmute::<i32, rm_result>(
                        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 100][op as usize % 21],
                    )));
                    assert!(!msg.to_bytes().is_empty());
                }
            }
        }
    }
    // SAFETY: from rm_aggregator_new_manual_clock, freed once.
    unsafe { rm_aggregator_free(agg) };
});
