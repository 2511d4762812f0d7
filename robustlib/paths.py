"""Where the lab keeps things.

Every path comes from here, never from the working directory: Papermill and nbval
start kernels in different directories, so ``Path("runs")`` would point somewhere
different depending on who started the kernel. Paths come from the package itself
or from explicit environment variables, nothing else:

* the **checkout** is the folder holding ``pyproject.toml`` next to this package (an
  editable install or a clone); notebooks and parameter files live there;
* the **run store** is ``$ROBUSTLIB_RUNS``, else ``<checkout>/runs``;
* **reports** go to ``$ROBUSTLIB_REPORTS``, else ``<checkout>/reports``;
* the **cache** for regenerable things is ``$ROBUSTLIB_CACHE``, else ``~/.cache/robustlib``;
* the paper's **released results** are wherever ``$ROBUSTLIB_PAPER_RESULTS`` says.

An installed copy without a checkout has no default run store or report folder:
those functions then ask for the environment variable by name.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path | None:
    """The checkout that holds this package, or None for an installed copy."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() else None


def _in_checkout(name: str, env: str | None = None) -> Path:
    root = project_root()
    if root is None:
        hint = f"set {env} or " if env else ""
        raise FileNotFoundError(f"robustlib is installed without its checkout, so it has no {name}/ folder; "
                                f"{hint}work from a clone of the lab")
    return root / name


def _from_env(env: str) -> Path | None:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else None


def notebooks_dir() -> Path:
    return _in_checkout("notebooks")


def params_dir() -> Path:
    return _in_checkout("params")


def runs_dir() -> Path:
    """Root of the run store: ``$ROBUSTLIB_RUNS`` or ``<checkout>/runs``."""
    return _from_env("ROBUSTLIB_RUNS") or _in_checkout("runs", "ROBUSTLIB_RUNS")


def reports_dir() -> Path:
    """Where HTML reports are written: ``$ROBUSTLIB_REPORTS`` or ``<checkout>/reports``."""
    return _from_env("ROBUSTLIB_REPORTS") or _in_checkout("reports", "ROBUSTLIB_REPORTS")


def zoo_dir() -> Path:
    """The offline model family shipped with the package (tokenizer + safetensors)."""
    return PACKAGE_DIR / "zoo"


def cache_dir() -> Path:
    """Scratch space for regenerable things (word lists, corpora): ``$ROBUSTLIB_CACHE``
    or ``~/.cache/robustlib``."""
    return _from_env("ROBUSTLIB_CACHE") or Path.home() / ".cache" / "robustlib"


def paper_results_dir() -> Path | None:
    """The paper's released result tables: ``$ROBUSTLIB_PAPER_RESULTS`` (returned as
    given, so a wrong path fails loudly where it is read), or None when it is unset.
    The lab never needs them to run and never copies them: only the paper-reproduction
    notebook and its tests read them."""
    return _from_env("ROBUSTLIB_PAPER_RESULTS")
