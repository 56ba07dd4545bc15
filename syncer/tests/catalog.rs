//! Metric catalogs not made by Chancy's migrations. One whose `key` column
//! matches keys that differ (a nondeterministic collation, not Chancy's
//! "C"), or a NULL where Chancy's schema says NOT NULL: the flush fails
//! with a clear error and keeps the data, the syncer thread survives, and
//! once the catalog is put right everything is saved under the recorded key.

mod common;

use common::small::{WAIT, setup, small, start, totals};
use common::{client, dsn, prefix};

#[test]
fn a_catalog_matching_other_keys_is_a_clear_error_never_a_panic() {
    let p = prefix("catci");
    let (agg, _clock) = setup(small());
    let s = start(&agg, &p, &dsn());
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap(); // creates the tables
    let defs = format!("\"{p}metric_definitions\"");
    let collation = format!("\"{p}ci\"");
    let mut c = client();
    c.batch_execute(&format!(
        "CREATE COLLATION {collation} (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         ALTER TABLE {defs} ALTER COLUMN key TYPE text COLLATE {collation};
         INSERT INTO {defs} (key, metric_type, unit) VALUES ('ABC', 'counter', 'count')"
    ))
    .unwrap();
    agg.increment_counter("abc", 2.0).unwrap();
    for _ in 0..2 {
        let e = s.flush(WAIT).expect_err("'ABC' is not 'abc'");
        assert!(e.to_string().contains("byte for byte"), "{e}");
    }
    assert!(s.status().last_error.is_some());
    c.batch_execute(&format!(
        "ALTER TABLE {defs} ALTER COLUMN key TYPE text COLLATE \"C\";
         DROP COLLATION {collation}"
    ))
    .unwrap();
    s.flush(WAIT).unwrap();
    assert_eq!(totals(&p, "abc", 60).iter().map(|t| t.1).sum::<f64>(), 2.0);
    assert!(totals(&p, "ABC", 60).is_empty());
    s.stop(WAIT).unwrap();
}

/// A catalog whose `unit` takes NULL (not Chancy's schema: NOT NULL) and
/// holds a NULL for a recorded key: a clear error, the data kept.
#[test]
fn a_null_in_the_catalog_is_a_clear_error_never_a_panic() {
    let p = prefix("catnull");
    let (agg, _clock) = setup(small());
    let s = start(&agg, &p, &dsn());
    agg.increment_counter("warm", 1.0).unwrap();
    s.flush(WAIT).unwrap();
    let defs = format!("\"{p}metric_definitions\"");
    let mut c = client();
    c.batch_execute(&format!(
        "ALTER TABLE {defs} ALTER COLUMN unit DROP NOT NULL;
         INSERT INTO {defs} (key, metric_type, unit) VALUES ('n', 'counter', NULL)"
    ))
    .unwrap();
    agg.increment_counter("n", 3.0).unwrap();
    let e = s.flush(WAIT).expect_err("a NULL unit");
    assert!(e.to_string().contains("metric catalog"), "{e}");
    c.batch_execute(&format!("UPDATE {defs} SET unit = 'count' WHERE key = 'n'"))
        .unwrap();
    s.flush(WAIT).unwrap();
    assert_eq!(totals(&p, "n", 60).iter().map(|t| t.1).sum::<f64>(), 3.0);
    s.stop(WAIT).unwrap();
}
