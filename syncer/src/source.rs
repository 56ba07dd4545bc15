//! One aggregator attached to a syncer: which of its buckets are saved, and
//! which changed since.
//!
//! The writer sends only changed buckets and the database merges them into
//! the stored row bucket by bucket (see `writer.rs`), so what this module
//! remembers decides how much is sent, never what is kept: forgetting a
//! bucket only sends it again (idempotent, values are absolute), and a
//! bucket the ring no longer holds stays saved in its row.

use std::collections::HashSet;
use std::sync::Arc;

use ringmetrics::{Aggregator, Bucket, CHUNK_BUCKETS, Resolution, SeriesData, SeriesVersion};

use crate::error::SyncError;
use crate::retention::first_kept_chunk;

/// What the syncer remembers of one series.
#[derive(Default)]
struct SeriesState {
    /// The version whose data is saved.
    version: Option<SeriesVersion>,
    /// Per resolution, `(bucket start, observation count)` of the buckets
    /// the ring held at the last save, oldest first. A bucket's count grows
    /// with every observation merged into it, so an equal pair is an
    /// unchanged bucket.
    saved: [Vec<(i64, u64)>; 4],
    /// The key was in the catalog at the last commit.
    known: bool,
}

/// One chunk row to write: the buckets of the chunk that changed, absolute.
pub(crate) struct Row {
    pub(crate) resolution: Resolution,
    pub(crate) chunk: i64,
    pub(crate) buckets: Vec<Bucket>,
}

/// A series with something new: its changed chunks and what will count as
/// saved once they commit.
pub(crate) struct Change {
    pub(crate) id: u32,
    version: SeriesVersion,
    pub(crate) rows: Vec<Row>,
    saved: [Vec<(i64, u64)>; 4],
}

/// An attached aggregator. Holds the aggregator's session claim until
/// dropped, so no second writer can write the same session meanwhile.
pub(crate) struct Source {
    pub(crate) agg: Arc<Aggregator>,
    /// Where this writer saves (DSN and prefix): its memory of what it
    /// saved is only good there.
    target: String,
    pub(crate) worker_id: String,
    pub(crate) session_id: uuid::Uuid,
    series: Vec<SeriesState>,
    /// Series whose stored definition has another type or unit; re-checked
    /// on every flush that has changes for them.
    pub(crate) conflicting: HashSet<u32>,
    scratch: SeriesData,
}

/// What a detached source leaves in its aggregator's session for the next
/// writer to the same target.
struct Memory {
    series: Vec<SeriesState>,
}

impl Source {
    /// Take `agg`'s session (fixing its id to `session_id`, or to a fresh
    /// uuid4, if it has none) for this writer.
    /// It continues where the last writer to `target` stopped.
    pub(crate) fn attach(
        agg: Arc<Aggregator>,
        target: String,
        worker_id: String,
        session_id: Option<uuid::Uuid>,
    ) -> Result<Source, SyncError> {
        let session = agg.session();
        let id = session
            .adopt(session_id.map(|u| u.as_u128()), || uuid::Uuid::new_v4().as_u128())
            .map_err(|e| SyncError::InvalidConfig(e.to_string()))?;
        session.claim().map_err(|e| SyncError::InvalidConfig(e.to_string()))?;
        let series = session
            .unstash(&target)
            .and_then(|m| m.downcast::<Memory>().ok())
            .map(|m| m.series)
            .unwrap_or_default();
        Ok(Source {
            agg,
            target,
            worker_id,
            session_id: uuid::Uuid::from_u128(id),
            series,
            conflicting: HashSet::new(),
            scratch: SeriesData::default(),
        })
    }

    /// Whether `id`'s key was in the catalog at the last commit.
    pub(crate) fn known(&self, id: u32) -> bool {
        self.series.get(id as usize).is_some_and(|s| s.known)
    }

    /// Push a [`Change`] for every series with buckets not yet saved.
    /// Chunks that `cleanup` deletes at `now_secs` (under `retention_secs`)
    /// are never sent.
    pub(crate) fn collect(&mut self, now_secs: i64, retention_secs: &[i64; 4], out: &mut Vec<Change>) {
        let n = self.agg.len();
        if self.series.len() < n {
            self.series.resize_with(n, SeriesState::default);
        }
        let kept: [i64; 4] = std::array::from_fn(|i| first_kept_chunk(Resolution::ALL[i], now_secs, retention_secs[i]));
        for id in 0..n as u32 {
            let Some(series) = self.agg.series(id) else { continue };
            let state = &self.series[id as usize];
            match self.agg.version(series) {
                Ok(v) if state.version == Some(v) => continue,
                Ok(_) => {}
                Err(_) => continue,
            }
            if self.agg.read_series(series, &mut self.scratch).is_err() {
                continue;
            }
            let mut rows: Vec<Row> = Vec::new();
            let saved = std::array::from_fn(|i| {
                let r = Resolution::ALL[i];
                let buckets = self.scratch.at(r);
                let old = &state.saved[i];
                let mut j = 0;
                for b in buckets {
                    while j < old.len() && old[j].0 < b.start {
                        j += 1;
                    }
                    if old.get(j) == Some(&(b.start, b.count)) {
                        continue;
                    }
                    let chunk = r.chunk_start(r.bucket_of(b.start));
                    if chunk < kept[i] {
                        continue;
                    }
                    match rows.last_mut() {
                        Some(row) if row.resolution == r && row.chunk == chunk => row.buckets.push(*b),
                        _ => rows.push(Row {
                            resolution: r,
                            chunk,
                            buckets: vec![*b],
                        }),
                    }
                }
                buckets.iter().map(|b| (b.start, b.count)).collect()
            });
            debug_assert!(rows.iter().all(|row| {
                let end = row.chunk + CHUNK_BUCKETS * row.resolution.seconds();
                row.buckets.iter().all(|b| b.start >= row.chunk && b.start < end)
            }));
            out.push(Change {
                id,
                version: self.scratch.version,
                rows,
                saved,
            });
        }
    }

    /// `change` committed (or had nothing to write).
    pub(crate) fn saved(&mut self, change: Change) {
        let state = &mut self.series[change.id as usize];
        if !change.rows.is_empty() {
            state.known = true;
        }
        state.version = Some(change.version);
        state.saved = change.saved;
        self.conflicting.remove(&change.id);
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let session = self.agg.session();
        session.stash(
            std::mem::take(&mut self.target),
            Box::new(Memory {
                series: std::mem::take(&mut self.series),
            }),
        );
        session.release();
    }
}
