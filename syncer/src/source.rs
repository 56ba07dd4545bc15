//! One aggregator attached to a syncer: which of its buckets are saved, and
//! which changed since.
//!
//! The writer sends only changed buckets and the database merges them into
//! the stored row bucket by bucket (see `writer.rs`), so what this module
//! remembers decides how much is sent, never what is kept: forgetting a
//! bucket only sends it again (idempotent, values are absolute), and a
//! bucket the ring no longer holds stays saved in its row.
//!
//! A bucket that leaves its ring before it was saved (an outage longer
//! than the ring) comes back through the aggregator's unsaved-bucket
//! buffer ([`Aggregator::drain_unsaved`]): the source keeps it until a
//! commit saves it. After each commit it tells the aggregator which read
//! was saved ([`Aggregator::mark_saved`]), so buckets saved since leave
//! their rings without going through the buffer.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ringmetrics::{Aggregator, Bucket, CHUNK_BUCKETS, Resolution, SeriesData, SeriesVersion};

use crate::error::SyncError;
use crate::retention::first_kept_chunk;

/// What the syncer remembers of one series.
#[derive(Default)]
struct SeriesState {
    /// The version whose data is saved.
    version: Option<SeriesVersion>,
    /// What the rings held at the last save.
    saved: Saved,
    /// The key was in the catalog at the last commit.
    known: bool,
}

/// Per resolution, `(bucket start, observation count)` of the buckets the
/// ring held at a save, oldest first, in one allocation. A bucket's count
/// grows with every observation merged into it, so an equal pair is an
/// unchanged bucket.
#[derive(Default)]
struct Saved {
    pairs: Vec<(i64, u64)>,
    /// End of each resolution's pairs in `pairs`.
    ends: [u32; 4],
}

impl Saved {
    /// The pairs of resolution index `i`.
    fn at(&self, i: usize) -> &[(i64, u64)] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.pairs[start..self.ends[i] as usize]
    }
}

/// One chunk row to write: the buckets of the chunk that changed, absolute
/// (in its [`Change`]'s buckets: see [`Change::buckets`]).
pub(crate) struct Row {
    pub(crate) resolution: Resolution,
    pub(crate) chunk: i64,
    first: u32,
    len: u32,
}

/// A series with something new: its changed chunks and what will count as
/// saved once they commit.
pub(crate) struct Change {
    pub(crate) id: u32,
    version: SeriesVersion,
    /// `version` is a new read (not the one saved before).
    read: bool,
    pub(crate) rows: Vec<Row>,
    /// The rows' buckets, row after row (a flush of 10,000 series allocates
    /// three vectors per series, not one per row and resolution).
    buckets: Vec<Bucket>,
    /// What the rings held at this read; `None`: as at the last save.
    saved: Option<Saved>,
    /// Buckets from the unsaved buffer in `rows`: (resolution index,
    /// start, count), released once saved.
    unsaved: Vec<(u8, i64, u64)>,
}

impl Change {
    /// The buckets of `row` (one of `self.rows`), oldest first.
    pub(crate) fn buckets(&self, row: &Row) -> &[Bucket] {
        &self.buckets[row.first as usize..(row.first + row.len) as usize]
    }
}

/// A bucket that left its ring unsaved: (series id, resolution index,
/// start).
type UnsavedKey = (u32, u8, i64);

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
    /// Buckets drained from the aggregator's unsaved buffer, kept until
    /// a commit saves them (they count against `Config::spill`).
    unsaved: BTreeMap<UnsavedKey, Bucket>,
    scratch: SeriesData,
}

/// What a detached source leaves in its aggregator's session for the next
/// writer.
struct Memory {
    /// What was saved (only good for the same target).
    series: Vec<SeriesState>,
    /// What is saved nowhere yet.
    unsaved: BTreeMap<UnsavedKey, Bucket>,
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
        let (same, memory) = match session.unstash(&target) {
            Some((same, m)) => (same, m.downcast::<Memory>().ok().map(|m| *m)),
            None => (true, None),
        };
        let (series, unsaved) = match memory {
            Some(m) if same => (m.series, m.unsaved),
            Some(m) => (Vec::new(), m.unsaved),
            None => (Vec::new(), BTreeMap::new()),
        };
        if !same {
            // Saved elsewhere is not saved here.
            agg.forget_saved();
        }
        agg.start_saving();
        Ok(Source {
            agg,
            target,
            worker_id,
            session_id: uuid::Uuid::from_u128(id),
            series,
            conflicting: HashSet::new(),
            unsaved,
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
        self.take_unsaved(&kept);
        let mut sent: Vec<Bucket> = Vec::new();
        for id in 0..n as u32 {
            let Some(series) = self.agg.series(id) else { continue };
            let state = &self.series[id as usize];
            let unsaved = self.unsaved.range((id, 0, i64::MIN)..(id + 1, 0, i64::MIN));
            let has_unsaved = unsaved.clone().next().is_some();
            let read = match self.agg.version(series) {
                Ok(v) if state.version == Some(v) => false,
                Ok(_) => true,
                Err(_) => continue,
            };
            if !read && !has_unsaved {
                continue;
            }
            if read && self.agg.read_series_to_save(series, &mut self.scratch).is_err() {
                continue;
            }
            let mut rows: Vec<Row> = Vec::new();
            let mut buckets: Vec<Bucket> = Vec::new();
            let mut from_buffer = Vec::new();
            let mut saved = read.then(Saved::default);
            for (i, r) in Resolution::ALL.into_iter().enumerate() {
                let old = state.saved.at(i);
                sent.clear();
                if read {
                    let mut j = 0;
                    for b in self.scratch.at(r) {
                        while j < old.len() && old[j].0 < b.start {
                            j += 1;
                        }
                        if old.get(j) != Some(&(b.start, b.count)) {
                            sent.push(*b);
                        }
                    }
                }
                let ring = sent.len();
                for (&(_, _, start), b) in unsaved.clone().filter(|((_, ri, _), _)| *ri as usize == i) {
                    if !sent[..ring].iter().any(|s| s.start == start) {
                        from_buffer.push((i as u8, start, b.count));
                        sent.push(*b);
                    }
                }
                if sent.len() > ring {
                    sent.sort_unstable_by_key(|b| b.start);
                }
                for b in &sent {
                    let chunk = r.chunk_start(r.bucket_of(b.start));
                    if chunk < kept[i] {
                        continue;
                    }
                    match rows.last_mut() {
                        Some(row) if row.resolution == r && row.chunk == chunk => row.len += 1,
                        _ => rows.push(Row {
                            resolution: r,
                            chunk,
                            first: buckets.len() as u32,
                            len: 1,
                        }),
                    }
                    buckets.push(*b);
                }
                if let Some(saved) = &mut saved {
                    saved
                        .pairs
                        .extend(self.scratch.at(r).iter().map(|b| (b.start, b.count)));
                    saved.ends[i] = saved.pairs.len() as u32;
                }
            }
            debug_assert!(rows.iter().all(|row| {
                let end = row.chunk + CHUNK_BUCKETS * row.resolution.seconds();
                let b = &buckets[row.first as usize..(row.first + row.len) as usize];
                b.iter().all(|b| b.start >= row.chunk && b.start < end) && b.windows(2).all(|w| w[0].start < w[1].start)
            }));
            out.push(Change {
                id,
                version: if read {
                    self.scratch.version
                } else {
                    state.version.expect("an unchanged version was saved")
                },
                read,
                rows,
                buckets,
                saved,
                unsaved: from_buffer,
            });
        }
    }

    /// Move what the aggregator's unsaved buffer holds into `unsaved`,
    /// dropping buckets saved as they are or past Chancy's retention
    /// (`kept`, per resolution), and tell the aggregator how many are held.
    fn take_unsaved(&mut self, kept: &[i64; 4]) {
        let (unsaved, series) = (&mut self.unsaved, &self.series);
        self.agg.drain_unsaved(|id, r, b| {
            let i = r.index();
            // (A series conflicting at the last flush keeps its buckets
            // here until this flush finds the conflict again: it may have
            // ended, and then they are saved.)
            let saved = series
                .get(id as usize)
                .is_some_and(|s| s.saved.at(i).binary_search(&(b.start, b.count)).is_ok());
            if !saved && r.chunk_start(r.bucket_of(b.start)) >= kept[i] {
                unsaved.insert((id, i as u8, b.start), b);
            }
        });
        unsaved.retain(|&(_, i, start), _| {
            let r = Resolution::ALL[i as usize];
            r.chunk_start(r.bucket_of(start)) >= kept[i as usize]
        });
        self.agg.hold_unsaved(self.unsaved.len());
    }

    /// `change` was held back: its key is stored with another type or unit.
    /// The series is dropped, as Chancy drops it, and checked again on
    /// every flush: what the rings hold is sent again, but what waited in
    /// the unsaved buffer is let go and counted (`Drops::unsaved`: a
    /// series that cannot be saved must not take the places of those that
    /// can). What leaves its rings until the next flush waits in the
    /// buffer, saved if that flush finds the conflict over.
    pub(crate) fn conflicted(&mut self, change: Change) {
        self.conflicting.insert(change.id);
        let before = self.unsaved.len();
        let agg = &self.agg;
        self.unsaved.retain(|&(id, r, _), b| {
            if id == change.id {
                agg.let_go_unsaved(Resolution::ALL[r as usize], b.count);
            }
            id != change.id
        });
        if self.unsaved.len() != before {
            self.agg.hold_unsaved(self.unsaved.len());
        }
        // Not marked saved: what leaves the rings meanwhile waits in the
        // buffer, saved if the conflict ends by the next flush.
    }

    /// `change` committed (or had nothing to write).
    pub(crate) fn saved(&mut self, change: Change) {
        let state = &mut self.series[change.id as usize];
        if !change.rows.is_empty() {
            state.known = true;
        }
        state.version = Some(change.version);
        if let Some(saved) = change.saved {
            state.saved = saved;
        }
        self.conflicting.remove(&change.id);
        if !change.unsaved.is_empty() {
            for (i, start, count) in change.unsaved {
                let key = (change.id, i, start);
                if self.unsaved.get(&key).is_some_and(|b| b.count == count) {
                    self.unsaved.remove(&key);
                }
            }
            self.agg.hold_unsaved(self.unsaved.len());
        }
        if change.read
            && let Some(series) = self.agg.series(change.id)
        {
            let _ = self.agg.mark_saved(series, change.version);
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let session = self.agg.session();
        session.stash(
            std::mem::take(&mut self.target),
            Box::new(Memory {
                series: std::mem::take(&mut self.series),
                unsaved: std::mem::take(&mut self.unsaved),
            }),
        );
        session.release();
    }
}
