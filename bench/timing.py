"""What the benchmarks share: a spread of repeated measurements, as they print it."""

from __future__ import annotations

import statistics


def spread(values) -> str:
    """``min / median / max`` of ``values``, two decimals."""
    v = sorted(values)
    return f"{v[0]:.2f} / {statistics.median(v):.2f} / {v[-1]:.2f}"
