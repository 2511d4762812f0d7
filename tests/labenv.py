"""The test session's environment, set before any notebook kernel starts (kernels
inherit it): the run store and reports in a temporary folder, no progress bars, and
the paper's released tables where a development checkout keeps them beside the
repository (``../shared/reference/paper-results``; never copied into it). Used by
``tests/conftest.py`` and ``notebooks/conftest.py``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BESIDE = ROOT.parent / "shared" / "reference" / "paper-results"


def configure() -> None:
    """Set the variables not already set (a user's own ``ROBUSTLIB_*`` win)."""
    if "ROBUSTLIB_RUNS" not in os.environ:
        tmp = tempfile.mkdtemp(prefix="robustlib-test-")
        os.environ["ROBUSTLIB_RUNS"] = os.path.join(tmp, "runs")
        os.environ.setdefault("ROBUSTLIB_REPORTS", os.path.join(tmp, "reports"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    if BESIDE.is_dir():
        os.environ.setdefault("ROBUSTLIB_PAPER_RESULTS", str(BESIDE))
