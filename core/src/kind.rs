//! The three kinds of series, with Chancy's aggregation rules.

use std::fmt;

/// What a series aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Sums values within a bucket (Chancy stores `totals`).
    Counter = 0,
    /// Keeps the latest value and its time (Chancy stores `gauges`).
    Gauge = 1,
    /// Keeps count, sum, min and max (Chancy stores all four).
    Histogram = 2,
}

impl Kind {
    /// Chancy's `metric_type`: `"counter"`, `"gauge"` or `"histogram"`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    /// Parse Chancy's `metric_type`.
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            _ => None,
        }
    }

    /// Chancy's default unit for the kind: `"count"` for counters,
    /// `"number"` otherwise.
    pub const fn default_unit(self) -> &'static str {
        match self {
            Kind::Counter => "count",
            _ => "number",
        }
    }

    pub(crate) const fn from_bits(bits: u64) -> Kind {
        match bits & 3 {
            0 => Kind::Counter,
            1 => Kind::Gauge,
            _ => Kind::Histogram,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
