//! Hostile configurations: every size is checked against a documented cap
//! before anything is allocated, and memory the system refuses is an error,
//! never an abort.

use ringmetrics::*;

#[test]
fn a_petabyte_configuration_is_refused_naming_capacity_and_the_cap() {
    // The validator's per-field caps all pass; the total (~985 TB) does not.
    let mut config = Config::with_capacity(1 << 24);
    config.key_bytes = 2048;
    config.buckets[0] = 1 << 20;
    assert!(config.reserved_bytes().unwrap() > MAX_RESERVED_BYTES);
    match Aggregator::new(config.clone()).unwrap_err() {
        Error::InvalidConfig { field, reason } => {
            assert_eq!(field, "capacity");
            assert!(reason.contains(&MAX_RESERVED_BYTES.to_string()), "{reason}");
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(config.validate().is_err());
}

#[test]
fn every_field_cap_is_checked() {
    let ok = Config::with_capacity(16);
    assert!(ok.validate().is_ok());
    type Breaks = fn(&mut Config);
    let cases: [(&str, Breaks); 6] = [
        ("capacity", |c| c.capacity = MAX_SERIES + 1),
        ("capacity", |c| c.capacity = 0),
        ("key_bytes", |c| c.key_bytes = MAX_KEY_BYTES + 1),
        ("buckets", |c| c.buckets[3] = MAX_BUCKETS + 1),
        ("writers", |c| c.writers = MAX_WRITERS + 1),
        ("max_future_secs", |c| c.max_future_secs = -1),
    ];
    for (field, bad) in cases {
        let mut c = ok.clone();
        bad(&mut c);
        match Aggregator::new(c) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn every_cap_at_once_is_refused_not_overflowed() {
    let c = Config {
        capacity: MAX_SERIES,
        key_bytes: MAX_KEY_BYTES,
        buckets: [MAX_BUCKETS; 4],
        max_future_secs: 60,
        writers: MAX_WRITERS,
        spill: 0,
    };
    assert!(matches!(
        Aggregator::new(c),
        Err(Error::InvalidConfig { field: "capacity", .. })
    ));
}

/// Memory the system refuses (here: an address-space limit far below what a
/// valid configuration reserves) is `AllocationFailed`, and the process
/// lives on. Run in a forked child so the limit does not affect other tests.
#[test]
#[cfg(target_os = "linux")]
fn refused_memory_is_an_error_not_an_abort() {
    // SAFETY: the child only calls async-signal-safe functions and our code
    // (no locks held by other threads are needed: no registration below
    // takes a lock before the check fails), then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let limit = libc::rlimit {
            rlim_cur: 2 << 30,
            rlim_max: 2 << 30,
        };
        // SAFETY: a valid rlimit pointer.
        let code = if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
            3
        } else {
            // About 34 GB of address space: within every cap, beyond the limit.
            match Aggregator::new(Config::with_capacity(1_000_000)) {
                Err(Error::AllocationFailed { bytes, .. }) if bytes > 0 => 0,
                Err(_) => 1,
                Ok(_) => 2,
            }
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child exit code (1: other error, 2: no error)"
    );
}
