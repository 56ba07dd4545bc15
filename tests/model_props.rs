//! Property tests: random record sequences (across bucket boundaries, ring
//! wrap-around, late, future and backwards-clock records, at every
//! resolution) give exactly the buckets of the reference model.

use proptest::prelude::*;
use ringmetrics::DEFAULT_BUCKETS;
use ringmetrics_tests::model::{Op, op, run};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_model_small_rings(
        depth in prop::array::uniform4(1usize..6),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run(depth, ops)?;
    }

    #[test]
    fn matches_reference_model_default_rings(ops in prop::collection::vec(op(), 1..200)) {
        run(DEFAULT_BUCKETS, ops)?;
    }
}

#[test]
fn wraps_around_every_ring() {
    // Deterministic: a record every 7 minutes for 10 days wraps all rings.
    let ops = (0..2100)
        .flat_map(|i| [Op::Now { s: i % 3, v: 1.0 }, Op::Advance(420)])
        .chain([Op::Check])
        .collect();
    run([5, 7, 3, 2], ops).unwrap();
}
