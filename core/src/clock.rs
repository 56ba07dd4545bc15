//! Where "now" comes from.
//!
//! Recording reads the clock once per call. Which clock depends on what the
//! time decides:
//! - A gauge keeps its latest sample, and across workers the sample with
//!   the latest `sampled_at` wins (Chancy stamps microseconds), so a gauge
//!   record reads the precise realtime clock ([`SystemClock::now_precise`],
//!   `CLOCK_REALTIME`: nanosecond resolution, about 20 ns through the vDSO).
//! - A counter or histogram record only needs its minute (its `sampled_at`
//!   is informational), so it reads the kernel's coarse realtime clock
//!   ([`SystemClock::now`], `CLOCK_REALTIME_COARSE`: about 3 ns, with the
//!   kernel tick's resolution, 4 ms here).
//!
//! [`ManualClock`] is for tests and demos: time stands still until moved.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, UTC.
pub type Nanos = i64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since the Unix epoch (UTC). Must not allocate or block.
    fn now(&self) -> Nanos;

    /// The time at the precision a gauge's `sampled_at` needs (at least
    /// microseconds). The default is [`Clock::now`].
    fn now_precise(&self) -> Nanos {
        self.now()
    }

    /// Lets the aggregator read the built-in clocks without a dynamic call
    /// on every record. Other clocks keep the default.
    #[doc(hidden)]
    fn builtin(&self) -> Option<Builtin> {
        None
    }
}

/// The built-in clocks, read by the aggregator without dynamic dispatch.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub enum Builtin {
    /// [`SystemClock`].
    System,
    /// A [`ManualClock`]'s shared time.
    Manual(Arc<AtomicI64>),
    /// An [`OverridableClock`]'s override.
    Overridable(Arc<AtomicI64>),
}

impl Builtin {
    /// The time, as the clock it stands for would tell it.
    #[inline]
    pub fn now(&self) -> Nanos {
        match self {
            Builtin::System => SystemClock.now(),
            Builtin::Manual(t) => t.load(Ordering::Acquire),
            Builtin::Overridable(t) => match t.load(Ordering::Acquire) {
                NO_OVERRIDE => SystemClock.now(),
                t => t,
            },
        }
    }

    /// As [`Clock::now_precise`] of the clock it stands for.
    #[inline]
    pub fn now_precise(&self) -> Nanos {
        match self {
            Builtin::System => SystemClock.now_precise(),
            Builtin::Manual(t) => t.load(Ordering::Acquire),
            Builtin::Overridable(t) => match t.load(Ordering::Acquire) {
                NO_OVERRIDE => SystemClock.now_precise(),
                t => t,
            },
        }
    }
}

/// The machine's realtime clock: coarse for [`Clock::now`], precise for
/// [`Clock::now_precise`] (see the module's documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::System)
    }

    #[inline]
    fn now(&self) -> Nanos {
        #[cfg(all(target_os = "linux", not(miri)))]
        if let Some(t) = realtime(libc::CLOCK_REALTIME_COARSE) {
            return t;
        }
        system_now()
    }

    #[inline]
    fn now_precise(&self) -> Nanos {
        #[cfg(all(target_os = "linux", not(miri)))]
        if let Some(t) = realtime(libc::CLOCK_REALTIME) {
            return t;
        }
        system_now()
    }
}

/// `clock_gettime(id)` in nanoseconds since the epoch. Miri cannot call
/// into the vDSO; it takes the portable path.
#[cfg(all(target_os = "linux", not(miri)))]
#[inline]
fn realtime(id: libc::clockid_t) -> Option<Nanos> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME and
    // CLOCK_REALTIME_COARSE exist on every Linux since 2.6.32 and the call
    // cannot fail with a valid pointer.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    #[allow(clippy::unnecessary_cast)] // time_t and c_long are not i64 everywhere
    (rc == 0).then(|| (ts.tv_sec as i64).saturating_mul(1_000_000_000) + ts.tv_nsec as i64)
}

fn system_now() -> Nanos {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The system clock, unless an override time is set: lets a host (the
/// Python plugin) freeze time for tests without rebuilding the aggregator.
#[derive(Debug, Clone, Default)]
pub struct OverridableClock(Arc<AtomicI64>);

/// `OverridableClock` value meaning "no override".
const NO_OVERRIDE: i64 = i64::MIN;

impl OverridableClock {
    /// The system clock, not overridden.
    pub fn new() -> Self {
        OverridableClock(Arc::new(AtomicI64::new(NO_OVERRIDE)))
    }

    /// Freeze time at `now` nanoseconds; `None` returns to the system clock.
    pub fn set(&self, now: Option<Nanos>) {
        self.0
            .store(now.map_or(NO_OVERRIDE, |t| t.max(NO_OVERRIDE + 1)), Ordering::Release);
    }
}

impl Clock for OverridableClock {
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::Overridable(self.0.clone()))
    }

    #[inline]
    fn now(&self) -> Nanos {
        match self.0.load(Ordering::Acquire) {
            NO_OVERRIDE => SystemClock.now(),
            t => t,
        }
    }

    #[inline]
    fn now_precise(&self) -> Nanos {
        match self.0.load(Ordering::Acquire) {
            NO_OVERRIDE => SystemClock.now_precise(),
            t => t,
        }
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A manual clock set to `now` nanoseconds since the epoch.
    pub fn new(now: Nanos) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now)))
    }

    /// A manual clock set to whole seconds since the epoch.
    pub fn from_secs(secs: i64) -> Self {
        Self::new(secs.saturating_mul(1_000_000_000))
    }

    /// Set the time (it may go backwards, to test that path).
    pub fn set(&self, now: Nanos) {
        self.0.store(now, Ordering::Release);
    }

    /// Move the time by `delta` nanoseconds (negative goes back).
    pub fn advance(&self, delta: Nanos) {
        self.0.fetch_add(delta, Ordering::AcqRel);
    }

    /// Move the time forward by whole seconds.
    pub fn advance_secs(&self, secs: i64) {
        self.advance(secs.saturating_mul(1_000_000_000));
    }
}

impl Clock for ManualClock {
    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::Manual(self.0.clone()))
    }

    #[inline]
    fn now(&self) -> Nanos {
        self.0.load(Ordering::Acquire)
    }
}
