"""``ringmetrics.chancy.Metrics``: the drop-in for the installed Chancy's
metrics plugin, chosen at import.

- Chancy 0.26.x (schema version 2): :mod:`ringmetrics._chancy026`, a
  subclass of 0.26's plugin recording into the Rust core.
- Chancy 0.25.x (schema version 1): :mod:`ringmetrics._chancy025`, the 0.25
  plugin's contract (``run``/``on_job_updated`` hooks, one row per key,
  resolution and worker id) on the Rust core and its schema-1 writer.

Detection: the installed distribution's version
(``importlib.metadata.version("chancy")``); when that is unavailable (a
vendored Chancy), 0.26's ``utcnow`` hook in ``chancy.plugins.metrics.metrics``
tells 0.26 from 0.25. Other Chancy versions are refused at import. Every
other name of the chosen module is available here too (``CHANCY_SERIES``
says which was chosen: ``"0.25"`` or ``"0.26"``).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

__all__ = ["CHANCY_SERIES", "Metrics"]


def _series() -> str:
    try:
        version = importlib.metadata.version("chancy")
    except importlib.metadata.PackageNotFoundError:
        from chancy.plugins.metrics import metrics as _m

        return "0.26" if hasattr(_m, "utcnow") else "0.25"
    series = ".".join(version.split(".")[:2])
    if series not in ("0.25", "0.26"):
        raise ImportError(
            f"ringmetrics.chancy supports Chancy 0.25.x and 0.26.x; Chancy {version} is installed"
        )
    return series


CHANCY_SERIES = _series()

if CHANCY_SERIES == "0.25":
    from ringmetrics import _chancy025 as _impl
else:
    from ringmetrics import _chancy026 as _impl  # type: ignore[no-redef]

Metrics = _impl.Metrics


def __getattr__(name: str) -> Any:
    return getattr(_impl, name)
