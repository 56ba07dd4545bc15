//! The aggregator: the public face of the core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32 as StdAtomicU32, Ordering as StdOrdering};

use crate::bucket::{Bucket, SeriesData, SeriesVersion};
use crate::clock::{Builtin, Clock, Nanos, SystemClock};
use crate::config::Config;
use crate::drops::{DropCounters, DropReason, Drops};
use crate::error::Error;
use crate::mark::Mark;
use crate::mem::Zeroed;
use crate::registry::{Registry, SeriesInfo};
use crate::series::{Outcome, PaddedAccumulator, SeriesRef, Slot};
use crate::session::Session;
use crate::spill::Spill;
use crate::stripe::Stripe;
use crate::{Kind, Resolution, thread_slot, validate};

const NANOS: i64 = 1_000_000_000;

/// A cheap, copyable handle to a registered series, for repeated recording
/// without a key lookup. Only valid with the aggregator that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Series {
    id: u32,
    kind: Kind,
    owner: u32,
}

impl Series {
    /// The dense series id (0, 1, 2, ... in registration order).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The series' kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The handle's parts, for bindings that pass it by value across an
    /// ABI. Rebuild it with [`Series::from_raw`].
    #[doc(hidden)]
    pub fn to_raw(self) -> (u32, Kind, u32) {
        (self.id, self.kind, self.owner)
    }

    /// A handle from [`Series::to_raw`]'s parts. The aggregator still
    /// checks the owner and id of every handle it is given.
    #[doc(hidden)]
    pub fn from_raw(id: u32, kind: Kind, owner: u32) -> Series {
        Series { id, kind, owner }
    }
}

/// A fixed-capacity, multi-resolution aggregator with Chancy's semantics.
///
/// # Reads under load
/// A read ([`Aggregator::snapshot`], [`Aggregator::read_series`],
/// [`Aggregator::version`]) retries at most [`crate::OPTIMISTIC_READS`]
/// times while writers change the series, then holds that series' writers
/// off for the one read that follows, so it always completes.
///
/// # fork()
/// After `fork()` the child records and reads at once; nothing it inherited
/// mid-write makes it wait. Handlers installed by the first
/// `Aggregator::new` (`pthread_atfork`) wait before the fork, at most
/// [`crate::FORK_QUIESCE_LIMIT`], for folds, locked reads and registrations
/// to end and hold new ones off; in the child, the writer stripes of the
/// threads that did not survive are retired, and each series' first user
/// repairs what those threads left in flight by discarding it (at most the
/// pending minute of the threads the child does not have: the parent still
/// holds it). The child's data is a copy of the parent's: a syncer in the
/// child must not write it again as its own.
///
/// All memory is reserved in [`Aggregator::new`], fallibly and as lazily
/// zeroed pages (a series' pages become resident once it is used); recording
/// never allocates and never takes a lock except to register a new key. Share it
/// between threads with an `Arc`.
pub struct Aggregator {
    config: Config,
    clock: Arc<dyn Clock>,
    /// `clock`, when built in, without the dynamic call.
    builtin: Option<Builtin>,
    registry: Registry,
    /// Per series: the current minute's accumulator.
    accs: Zeroed<PaddedAccumulator>,
    /// Per resolution: `capacity * depth` slots; series `i` owns
    /// `[i * depth, (i + 1) * depth)`.
    rings: [Zeroed<Slot>; 4],
    /// `writers * capacity` stripes: stripe `w` of series `i` is at
    /// `w * capacity + i`, so one thread's stripes are contiguous and two
    /// threads never write the same cache line.
    stripes: Zeroed<Stripe>,
    /// `(writers + 1) * capacity` pending-minute marks (`mark.rs`): stripe
    /// `w` of series `i`'s at `w * capacity + i`, its shared accumulator's
    /// at `writers * capacity + i`.
    marks: Zeroed<Mark>,
    drops: DropCounters,
    /// Distinguishes this aggregator's handles from another's.
    owner: u32,
    /// The storage session the data belongs to (see [`Session`]).
    session: Session,
    /// Unsaved buckets pushed out of their rings (`spill.rs`).
    spill: Spill,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("config", &self.config)
            .field("series", &self.registry.len())
            .finish_non_exhaustive()
    }
}

static NEXT_OWNER: StdAtomicU32 = StdAtomicU32::new(1);

impl Aggregator {
    /// An aggregator on the system clock.
    pub fn new(config: Config) -> Result<Aggregator, Error> {
        Aggregator::with_clock(config, Arc::new(SystemClock))
    }

    /// An aggregator on the given clock (a [`crate::ManualClock`] in tests).
    ///
    /// Fails with [`Error::InvalidConfig`] when a field or the total is above
    /// its cap ([`Config::validate`]), and with [`Error::AllocationFailed`]
    /// when the system refuses the memory; it never aborts.
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Aggregator, Error> {
        config.validate()?;
        crate::fork::install();
        let sizes = config.sizes().ok_or(Error::AllocationFailed {
            what: "aggregator",
            bytes: usize::MAX,
        })?;
        let owner = NEXT_OWNER.fetch_add(1, StdOrdering::Relaxed);
        let seed = (owner as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (clock.now() as u64);
        let [r0, r1, r2, r3] = sizes.rings;
        let spill = config.spill;
        Ok(Aggregator {
            registry: Registry::new(config.capacity, sizes.table, config.key_bytes, seed)?,
            accs: Zeroed::new(config.capacity, "accumulators")?,
            rings: [
                Zeroed::new(r0, "1min ring slots")?,
                Zeroed::new(r1, "5min ring slots")?,
                Zeroed::new(r2, "1hour ring slots")?,
                Zeroed::new(r3, "1day ring slots")?,
            ],
            stripes: Zeroed::new(sizes.stripes, "writer stripes")?,
            marks: Zeroed::new(sizes.marks, "pending-minute marks")?,
            drops: DropCounters::new(),
            builtin: clock.builtin(),
            clock,
            config,
            owner,
            session: Session::new(),
            spill: Spill::new(spill)?,
        })
    }

    /// The storage session this aggregator's data belongs to: one id for
    /// its whole life, one writer at a time.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The clock's time, nanoseconds since the epoch.
    #[inline]
    pub fn now(&self) -> Nanos {
        match &self.builtin {
            Some(b) => b.now(),
            None => self.clock.now(),
        }
    }

    /// Find or register a series. Registering a new key takes a lock; an
    /// existing key is found lock-free. Fails (and counts the drop) on an
    /// invalid key or unit, a kind or unit conflict, or full capacity.
    pub fn register(&self, kind: Kind, key: &str, unit: &str) -> Result<Series, Error> {
        self.register_inner(kind, key, unit).map_err(|e| self.count(e))
    }

    fn register_inner(&self, kind: Kind, key: &str, unit: &str) -> Result<Series, Error> {
        if let Some(info) = self.registry.lookup(key)
            && info.kind == kind
            && info.unit == unit
        {
            return Ok(self.handle(info.id, kind));
        }
        validate::key(key)?;
        validate::unit(unit)?;
        let info = self.registry.get_or_register(key, kind, unit)?;
        Ok(self.handle(info.id, info.kind))
    }

    #[inline]
    fn handle(&self, id: u32, kind: Kind) -> Series {
        Series {
            id,
            kind,
            owner: self.owner,
        }
    }

    /// The series registered under `key`, if any.
    pub fn lookup(&self, key: &str) -> Option<SeriesInfo<'_>> {
        self.registry.lookup(key)
    }

    /// The series registered under `key` given as bytes (for bindings that
    /// receive unvalidated bytes: a match needs no UTF-8 check).
    #[inline]
    pub fn lookup_bytes(&self, key: &[u8]) -> Option<SeriesInfo<'_>> {
        self.registry.lookup_bytes(key)
    }

    /// Key, unit and kind of a series id.
    pub fn info(&self, id: u32) -> Option<SeriesInfo<'_>> {
        self.registry.info(id)
    }

    /// A handle for a series id.
    pub fn series(&self, id: u32) -> Option<Series> {
        self.registry.info(id).map(|i| self.handle(i.id, i.kind))
    }

    /// Number of registered series.
    pub fn len(&self) -> usize {
        self.registry.len() as usize
    }

    /// True when no series is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The clock's time at the precision a gauge's `sampled_at` needs
    /// ([`Clock::now_precise`]): the latest gauge sample wins by it.
    #[inline]
    pub fn now_precise(&self) -> Nanos {
        match &self.builtin {
            Some(b) => b.now_precise(),
            None => self.clock.now_precise(),
        }
    }

    /// The time a record of `kind` at the clock's time is stamped with:
    /// precise for a gauge, coarse otherwise (see `clock.rs`).
    #[inline(always)]
    fn now_for(&self, kind: Kind) -> Nanos {
        if kind == Kind::Gauge {
            self.now_precise()
        } else {
            self.now()
        }
    }

    /// Record `value` into a series at the clock's time (for a gauge, the
    /// precise time: see [`Aggregator::now_precise`]).
    #[inline]
    pub fn record(&self, series: Series, value: f64) -> Result<(), Error> {
        let now = self.now_for(series.kind);
        if self.record_in_stripe(series, value, now) {
            return Ok(());
        }
        self.record_slow(series, value, now, now)
    }

    /// Record `value` observed at `at` (nanoseconds since the epoch).
    /// Refused when `at` is negative or more than `max_future_secs` ahead
    /// of the clock; per resolution, dropped and counted when older than
    /// the ring's retention or when its slot already holds a newer bucket.
    #[inline]
    pub fn record_at(&self, series: Series, value: f64, at: Nanos) -> Result<(), Error> {
        let now = self.now();
        if at <= now.saturating_add(self.config.max_future_secs * NANOS) && self.record_in_stripe(series, value, at) {
            return Ok(());
        }
        self.record_slow(series, value, at, now)
    }

    /// The fast path: a valid record by the owner of a writer stripe, into
    /// the stripe's minute. True when stored; false leaves everything to
    /// [`Aggregator::record_slow`] (nothing was changed or counted). The
    /// caller has checked `at` against the clock.
    #[inline(always)]
    fn record_in_stripe(&self, series: Series, value: f64, at: Nanos) -> bool {
        if !(value.is_finite() && at >= 0 && series.owner == self.owner && series.id < self.registry.len()) {
            return false;
        }
        let slot = thread_slot::current() as usize;
        if slot >= self.config.writers {
            return false;
        }
        match self.stripes.get(slot * self.config.capacity + series.id as usize) {
            Some(stripe) if stripe.minute() == at / (60 * NANOS) + 1 => {
                stripe.record(series.kind, value, at) == Outcome::Stored
            }
            _ => false,
        }
    }

    /// Every other record: checks, the shared accumulator, rollovers, late
    /// records, refusals (counted).
    #[cold]
    #[inline(never)]
    fn record_slow(&self, series: Series, value: f64, at: Nanos, now: Nanos) -> Result<(), Error> {
        self.record_inner(series, value, at, now).map_err(|e| self.count(e))
    }

    /// Record into the series `key` (registering it with `kind` and `unit`
    /// if new) at the clock's time.
    #[inline]
    pub fn record_key(&self, kind: Kind, key: &str, unit: &str, value: f64) -> Result<(), Error> {
        let now = self.now_for(kind);
        self.record_key_inner(kind, key, unit, value, now, now)
            .map_err(|e| self.count(e))
    }

    /// [`Aggregator::record_key`] at an explicit time.
    #[inline]
    pub fn record_key_at(&self, kind: Kind, key: &str, unit: &str, value: f64, at: Nanos) -> Result<(), Error> {
        let now = self.now();
        self.record_key_inner(kind, key, unit, value, at, now)
            .map_err(|e| self.count(e))
    }

    /// Add `value` to the counter `key` (unit `"count"`).
    #[inline]
    pub fn increment_counter(&self, key: &str, value: f64) -> Result<(), Error> {
        self.record_key(Kind::Counter, key, "count", value)
    }

    /// Set the gauge `key` (unit `"number"`).
    #[inline]
    pub fn record_gauge(&self, key: &str, value: f64) -> Result<(), Error> {
        self.record_key(Kind::Gauge, key, "number", value)
    }

    /// Add an observation to the histogram `key` (unit `"number"`).
    #[inline]
    pub fn record_histogram(&self, key: &str, value: f64) -> Result<(), Error> {
        self.record_key(Kind::Histogram, key, "number", value)
    }

    #[inline]
    fn record_key_inner(
        &self,
        kind: Kind,
        key: &str,
        unit: &str,
        value: f64,
        at: Nanos,
        now: Nanos,
    ) -> Result<(), Error> {
        let series = match self.registry.lookup(key) {
            Some(info) if info.kind == kind && info.unit == unit => {
                let series = self.handle(info.id, kind);
                if at <= now.saturating_add(self.config.max_future_secs * NANOS)
                    && self.record_in_stripe(series, value, at)
                {
                    return Ok(());
                }
                series
            }
            _ => {
                // Validate the value before registering, so a bad value never
                // creates a series.
                validate::value(value)?;
                self.register_inner(kind, key, unit)?
            }
        };
        self.record_inner(series, value, at, now)
    }

    #[inline(never)]
    fn record_inner(&self, series: Series, value: f64, at: Nanos, now: Nanos) -> Result<(), Error> {
        validate::value(value)?;
        if series.owner != self.owner || series.id >= self.registry.len() {
            return Err(Error::UnknownSeries(series.id));
        }
        if at < 0 {
            return Err(Error::InvalidTimestamp {
                nanos: at,
                reason: "before 1970",
            });
        }
        if at > now.saturating_add(self.config.max_future_secs * NANOS) {
            return Err(Error::InvalidTimestamp {
                nanos: at,
                reason: "further ahead of the clock than max_future_secs",
            });
        }
        match self
            .series_ref(series.id, series.kind)
            .record(value, at, now, &self.drops)
        {
            Outcome::Stored => Ok(()),
            Outcome::NotStored => Err(Error::NotStored { nanos: at }),
            Outcome::Overflow => {
                let key = self
                    .registry
                    .info(series.id)
                    .map(|i| i.key.to_owned())
                    .unwrap_or_default();
                Err(Error::Overflow { key })
            }
        }
    }

    #[inline]
    fn series_ref(&self, id: u32, kind: Kind) -> SeriesRef<'_> {
        SeriesRef {
            acc: &self.accs[id as usize],
            all_rings: &self.rings,
            depths: &self.config.buckets,
            all_stripes: &self.stripes,
            all_marks: &self.marks,
            capacity: self.config.capacity,
            id: id as usize,
            kind,
            spill: &self.spill,
        }
    }

    #[cold]
    fn count(&self, e: Error) -> Error {
        self.drops.record(match &e {
            Error::InvalidKey { .. } => DropReason::InvalidKey,
            Error::InvalidUnit { .. } => DropReason::InvalidUnit,
            Error::NonFiniteValue(_) => DropReason::NonFiniteValue,
            Error::InvalidTimestamp { .. } => DropReason::InvalidTimestamp,
            Error::Conflict { .. } => DropReason::Conflict,
            Error::Overflow { .. } => DropReason::Overflow,
            Error::CapacityExhausted { .. } => DropReason::CapacityExhausted,
            Error::UnknownSeries(_) | Error::InvalidConfig { .. } | Error::AllocationFailed { .. } => {
                DropReason::UnknownSeries
            }
            // Already counted per resolution (expired / stale).
            Error::NotStored { .. } => return e,
        });
        e
    }

    /// Buckets of a series at `resolution` whose start lies in
    /// `[from_secs, to_secs)`, oldest first. Buckets with no data are absent.
    pub fn snapshot(
        &self,
        series: Series,
        resolution: Resolution,
        from_secs: i64,
        to_secs: i64,
    ) -> Result<Vec<Bucket>, Error> {
        let mut out = Vec::new();
        self.snapshot_into(series, resolution, from_secs, to_secs, &mut out)?;
        Ok(out)
    }

    /// [`Aggregator::snapshot`] into a caller's vector (cleared first).
    pub fn snapshot_into(
        &self,
        series: Series,
        resolution: Resolution,
        from_secs: i64,
        to_secs: i64,
        out: &mut Vec<Bucket>,
    ) -> Result<SeriesVersion, Error> {
        self.check(series)?;
        out.clear();
        Ok(self
            .series_ref(series.id, series.kind)
            .snapshot(resolution, from_secs, to_secs, out))
    }

    /// Everything a series holds at every resolution, read consistently,
    /// with the version it was read at.
    pub fn read_series(&self, series: Series, out: &mut SeriesData) -> Result<(), Error> {
        self.check(series)?;
        self.series_ref(series.id, series.kind)
            .read_all(out, false, &self.drops);
        Ok(())
    }

    /// [`Aggregator::read_series`] as a syncer needs it: also each bucket a
    /// pending minute is about to push out of its ring slot, so nothing
    /// read as "saved" can leave the ring unseen.
    pub fn read_series_to_save(&self, series: Series, out: &mut SeriesData) -> Result<(), Error> {
        self.check(series)?;
        self.series_ref(series.id, series.kind).read_all(out, true, &self.drops);
        Ok(())
    }

    /// A syncer committed what [`Aggregator::read_series_to_save`] returned
    /// at `version`: from now on, a bucket the read covered leaves its ring
    /// freely; one changed since is kept in the unsaved-bucket buffer when
    /// it leaves (see [`Config::spill`]). Marks nothing for a version of
    /// another series or aggregator beyond making its buckets count as
    /// saved: pass only versions read from `series`.
    pub fn mark_saved(&self, series: Series, version: SeriesVersion) -> Result<(), Error> {
        self.check(series)?;
        self.series_ref(series.id, series.kind).mark_saved(version);
        Ok(())
    }

    /// Forget every save (a syncer to another database begins): every
    /// bucket that leaves a ring from now on is kept until saved again.
    pub fn forget_saved(&self) {
        for id in 0..self.registry.len() as u32 {
            if let Some(info) = self.registry.info(id) {
                self.series_ref(id, info.kind).forget_saved();
            }
        }
    }

    /// Start keeping unsaved buckets that leave their rings (a syncer
    /// attached). Before, the rings are the only retention.
    pub fn start_saving(&self) {
        self.spill.activate();
    }

    /// Hand every unsaved bucket that left its ring to `take` (series id,
    /// resolution, bucket), oldest first, removing them from the buffer:
    /// the caller keeps them until saved, and they count against
    /// [`Config::spill`] until it reports with
    /// [`Aggregator::hold_unsaved`] how many it still holds. One caller at
    /// a time (the session's writer). Returns how many.
    pub fn drain_unsaved(&self, take: impl FnMut(u32, Resolution, Bucket)) -> usize {
        self.spill.drain(take)
    }

    /// The session's writer holds `n` drained buckets unsaved (see
    /// [`Aggregator::drain_unsaved`]).
    pub fn hold_unsaved(&self, n: usize) {
        self.spill.set_held(n);
    }

    /// Unsaved buckets waiting in the buffer ([`Aggregator::drain_unsaved`]).
    pub fn unsaved_len(&self) -> usize {
        self.spill.len()
    }

    /// A value that changes whenever the series' data changes. A syncer
    /// saves the version returned with the data it wrote
    /// ([`SeriesData::version`]); if `version` differs later, there is more
    /// to save. A failed write leaves the difference in place.
    pub fn version(&self, series: Series) -> Result<SeriesVersion, Error> {
        self.check(series)?;
        Ok(self.series_ref(series.id, series.kind).version())
    }

    /// How many tries a consistent read of `series` takes now (at most
    /// [`crate::OPTIMISTIC_READS`] + 1). For tests of that bound.
    #[doc(hidden)]
    pub fn read_tries(&self, series: Series) -> Result<u32, Error> {
        self.check(series)?;
        Ok(self.series_ref(series.id, series.kind).read_tries())
    }

    fn check(&self, series: Series) -> Result<(), Error> {
        if series.owner != self.owner || series.id >= self.registry.len() {
            return Err(Error::UnknownSeries(series.id));
        }
        Ok(())
    }

    /// Count a record a binding refused before it reached the aggregator
    /// (a value that is not a number, a key that is not a string, ...).
    pub fn count_refused(&self, reason: DropReason) {
        self.drops.record(reason);
    }

    /// The session's writer lets go of `observations` of drained unsaved
    /// buckets at `r` it cannot save (a series whose stored definition
    /// conflicts): counted in [`Drops::unsaved`].
    pub fn let_go_unsaved(&self, r: Resolution, observations: u64) {
        self.drops.unsaved(r, observations);
    }

    /// A copy of the drop counters.
    pub fn drops(&self) -> Drops {
        self.drops.read()
    }

    /// Bytes this aggregator reserved at construction (address space; pages
    /// of unused series are never touched, so resident memory is lower).
    pub fn allocated_bytes(&self) -> usize {
        self.registry.allocated_bytes()
            + self.accs.bytes()
            + self.rings.iter().map(Zeroed::bytes).sum::<usize>()
            + self.stripes.bytes()
            + self.marks.bytes()
            + self.spill.bytes()
    }

    /// Bytes of storage per series at this configuration: accumulator,
    /// writer stripes, ring slots, registry entries and reserved key bytes.
    pub fn bytes_per_series(&self) -> usize {
        self.allocated_bytes() / self.config.capacity
    }
}
