"""Where the lab keeps things.

Every path comes from here, never from the working directory: Papermill and nbval
start kernels in different directories, so ``Path("runs")`` would point somewhere
different depending on who started the kernel.

The project root is the folder holding ``pyproject.toml`` next to this package (an
editable install or a checkout). The run store defaults to ``<root>/runs`` and can be
moved with the ``ROBUSTLIB_RUNS`` environment variable (tests point it at a temporary
folder); reports go to ``<root>/reports`` unless ``ROBUSTLIB_REPORTS`` says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The checkout that holds this package (falls back to the current directory)."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").exists():
        return root
    return Path.cwd()


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def params_dir() -> Path:
    return project_root() / "params"


def runs_dir() -> Path:
    """Root of the run store: ``$ROBUSTLIB_RUNS`` or ``<root>/runs``."""
    env = os.environ.get("ROBUSTLIB_RUNS")
    return Path(env).expanduser().resolve() if env else project_root() / "runs"


def reports_dir() -> Path:
    """Where HTML reports are written: ``$ROBUSTLIB_REPORTS`` or ``<root>/reports``."""
    env = os.environ.get("ROBUSTLIB_REPORTS")
    return Path(env).expanduser().resolve() if env else project_root() / "reports"


def zoo_dir() -> Path:
    """The offline model family shipped with the package (tokenizer + safetensors)."""
    return PACKAGE_DIR / "zoo"


def cache_dir() -> Path:
    """Scratch space for regenerable things (word lists, corpora): ``$ROBUSTLIB_CACHE``
    or ``~/.cache/robustlib``."""
    env = os.environ.get("ROBUSTLIB_CACHE")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "robustlib"


def paper_results_dir() -> Path | None:
    """The paper's released result tables, if present: ``$ROBUSTLIB_PAPER_RESULTS`` when
    set (returned as given, so a wrong path fails loudly where it is read), else
    ``<repo root>/../shared/reference/paper-results`` (repo root: the folder holding
    this package) when it exists; None otherwise. The lab never needs them to run and
    never copies them: only the paper-reproduction notebook and its tests read them."""
    env = os.environ.get("ROBUSTLIB_PAPER_RESULTS")
    if env:
        return Path(env).expanduser().resolve()
    beside = PACKAGE_DIR.parent.parent / "shared" / "reference" / "paper-results"
    return beside if beside.is_dir() else None
