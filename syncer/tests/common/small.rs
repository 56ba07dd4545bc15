//! A small aggregator on a manual clock and its syncer, for the adversarial
//! tests: 8 series, rings of 6 buckets, 64 writer stripes, flushed only when
//! asked; and what the database holds of a key.

use std::sync::Arc;
use std::time::Duration;

use ringmetrics::{Aggregator, Config, ManualClock};
use ringmetrics_postgres::{Syncer, SyncerConfig};

use super::client;

/// 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600;
pub const WAIT: Duration = Duration::from_secs(30);

/// An aggregator of `config` on a manual clock at [`T0`].
pub fn setup(config: Config) -> (Arc<Aggregator>, ManualClock) {
    let clock = ManualClock::from_secs(T0);
    (
        Arc::new(Aggregator::with_clock(config, Arc::new(clock.clone())).unwrap()),
        clock,
    )
}

/// A syncer's configuration: `worker`, flushing only when asked.
pub fn config(prefix: &str, dsn: &str, worker: &str) -> SyncerConfig {
    SyncerConfig {
        prefix: prefix.into(),
        worker_id: worker.into(),
        interval: Duration::from_secs(3600),
        ..SyncerConfig::new(dsn.to_owned())
    }
}

/// A syncer of `agg` under worker id "w", flushing only when asked.
pub fn start(agg: &Arc<Aggregator>, prefix: &str, dsn: &str) -> Syncer {
    Syncer::start(agg.clone(), config(prefix, dsn, "w")).unwrap()
}

pub fn small() -> Config {
    Config {
        buckets: [6, 6, 6, 6],
        writers: 64,
        ..Config::with_capacity(8)
    }
}

/// (start, total) of a key's stored buckets at `resolution`, over every row.
pub fn totals(prefix: &str, key: &str, resolution: i32) -> Vec<(i64, f64)> {
    client()
        .query(
            &format!(
                "SELECT extract(epoch FROM u.b)::int8, coalesce(u.t, 0)
                 FROM \"{prefix}metrics\" m JOIN \"{prefix}metric_definitions\" d ON d.id = m.metric_id
                 CROSS JOIN LATERAL unnest(m.buckets, m.totals) AS u(b, t)
                 WHERE d.key = $1 AND m.resolution = $2 ORDER BY 1"
            ),
            &[&key, &resolution],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}
