//! Every duration the C ABI takes, as arbitrary doubles (NaN payloads,
//! infinities, negatives, subnormals, huge values): a timeout outside
//! `0..=RM_MAX_DURATION_SECS` is `RM_INVALID_ARGUMENT` and does nothing
//! (the syncer keeps running); an interval that is NaN or under a
//! nanosecond is `RM_INVALID_CONFIG`, any other starts a syncer (clamped
//! to `RM_MAX_DURATION_SECS`). Never
//! `RM_PANIC`. The syncer points at a port nobody listens on, so an
//! accepted flush fails at once (`RM_DATABASE`) or times out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rm_ffi::*;

const NOWHERE: &std::ffi::CStr = c"host=127.0.0.1 port=1 connect_timeout=1";

fn timeout_ok(t: f64) -> bool {
    (0.0..=RM_MAX_DURATION_SECS).contains(&t)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let interval = f64::from_le_bytes(data[..8].try_into().unwrap());
    let mut agg: *mut rm_aggregator = std::ptr::null_mut();
    let mut syncer: *mut rm_syncer = std::ptr::null_mut();
    // SAFETY: valid out-pointers, a NUL-terminated DSN, a live aggregator.
    unsafe {
        assert_eq!(rm_aggregator_new(std::ptr::null(), &mut agg), rm_result::RM_OK);
        let r = rm_syncer_start(agg, NOWHERE.as_ptr(), std::ptr::null(), std::ptr::null(), interval, &mut syncer);
        if interval >= 1e-9 {
            assert_eq!(r, rm_result::RM_OK, "interval {interval}");
        } else {
            assert_eq!(r, rm_result::RM_INVALID_CONFIG, "interval {interval}");
            assert!(syncer.is_null(), "wrote an output on failure");
            rm_aggregator_free(agg);
            return;
        }
    }
    // Whether the syncer thread runs: known, except after a stop that timed
    // out (the thread then finishes its final flush on its own time).
    let mut running = Some(true);
    // At most a few flushes per input: each accepted one is a connection attempt.
    for chunk in data[8..].chunks_exact(9).take(4) {
        let t = f64::from_le_bytes(chunk[1..9].try_into().unwrap());
        // Accepted timeouts are kept short so an input runs in milliseconds:
        // the range check is what is fuzzed, not the wait.
        let t = if timeout_ok(t) { t.min(2.0) } else { t };
        let mut report = rm_flush_report { rows_written: 7, series_written: 7, definitions_created: 7 };
        let mut status = rm_sync_status::default();
        // SAFETY: a live syncer and valid out-pointers.
        unsafe {
            let r = if chunk[0] % 2 == 0 {
                rm_syncer_flush(syncer, t, &mut report)
            } else {
                rm_syncer_stop(syncer, t, &mut report)
            };
            assert_ne!(r, rm_result::RM_PANIC);
            if !timeout_ok(t) {
                assert_eq!(r, rm_result::RM_INVALID_ARGUMENT, "timeout {t}");
                assert_eq!(report.rows_written, 7, "wrote an output on failure");
                assert_eq!(rm_syncer_status(syncer, &mut status), rm_result::RM_OK);
                if let Some(running) = running {
                    assert_eq!(status.running, u32::from(running), "a refused timeout changes nothing");
                }
            } else {
                assert!(
                    matches!(
                        r,
                        rm_result::RM_OK | rm_result::RM_DATABASE | rm_result::RM_TIMEOUT | rm_result::RM_STOPPED
                    ),
                    "timeout {t}: {r:?}"
                );
                if chunk[0] % 2 == 1 && running.is_some() {
                    running = if r == rm_result::RM_TIMEOUT { None } else { Some(false) };
                }
            }
        }
    }
    // SAFETY: from rm_syncer_start / rm_aggregator_new, freed once.
    unsafe {
        rm_syncer_free(syncer);
        rm_aggregator_free(agg);
    }
});
