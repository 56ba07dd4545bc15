"""ringmetrics: a Rust metrics core with Chancy's semantics.

- :class:`Aggregator`: record counters, gauges and histograms (lock-free,
  no allocation), snapshot them, and start a :class:`Syncer` that writes them
  into Chancy's tables.
- :class:`ManualClock`: time that stands still until moved, for tests.
- :mod:`ringmetrics.chancy`: ``Metrics``, the drop-in for Chancy's plugin.
"""

from ringmetrics._native import (
    Aggregator,
    Handle,
    ManualClock,
    StorageError,
    Syncer,
    __version__,
    cleanup,
    read_metrics,
)

__all__ = [
    "Aggregator",
    "Handle",
    "ManualClock",
    "StorageError",
    "Syncer",
    "__version__",
    "cleanup",
    "read_metrics",
]
