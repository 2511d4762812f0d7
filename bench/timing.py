"""What the benchmarks share: timing that waits for the GPU, and a spread of repeated
measurements, as they print it."""

from __future__ import annotations

import statistics
import time


def spread(values) -> str:
    """``min / median / max`` of ``values``, two decimals."""
    v = sorted(values)
    return f"{v[0]:.2f} / {statistics.median(v):.2f} / {v[-1]:.2f}"


def sync(device: str) -> None:
    """Wait for the GPU's queued work when ``device`` may be one (``cuda`` or ``auto``)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    """Seconds ``fn()`` takes, the GPU's queued work included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0
