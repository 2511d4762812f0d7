"""The test session's environment, set before any notebook kernel starts (kernels
inherit it): the run store and reports in a temporary folder, no progress bars, and
the paper's released tables where a development checkout keeps them beside the
repository (``../shared/reference/paper-results``; never copied into it). Used by
``tests/conftest.py`` and ``notebooks/conftest.py``.

Under pytest-xdist (``make test`` runs ``-n auto``) each worker gets its own run store
and a share of the cores, and :func:`make_scheduler` keeps together what must run in
one process, in the order :func:`order_for_workers` gives."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BESIDE = ROOT.parent / "shared" / "reference" / "paper-results"


#: Set to the session's temporary folder when this module chose the run store (the
#: workers, which inherit the variables, then take a store of their own below it).
OWNED = "ROBUSTLIB_TEST_TMP"


def configure() -> None:
    """Set the variables not already set (a user's own ``ROBUSTLIB_*`` win). Idempotent:
    both conftests call it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if "ROBUSTLIB_RUNS" not in os.environ or OWNED in os.environ:
        tmp = os.environ.get(OWNED) or tempfile.mkdtemp(prefix="robustlib-test-")
        os.environ[OWNED] = tmp
        # Per worker: studies of the same name (the chain's "smoke", 07's) in two
        # processes would otherwise show up in each other's reports.
        base = os.path.join(tmp, worker)
        os.environ["ROBUSTLIB_RUNS"] = os.path.join(base, "runs")
        os.environ["ROBUSTLIB_REPORTS"] = os.path.join(base, "reports")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if BESIDE.is_dir():
        os.environ.setdefault("ROBUSTLIB_PAPER_RESULTS", str(BESIDE))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers > 1:
        # Workers that each start one OpenMP thread per core (and kernels and sweeps that
        # inherit it) oversubscribe the machine: give each its share of the cores.
        from robustlib.sweep.backends import THREAD_ENV  # the variables a sweep's jobs get

        share = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for var in THREAD_ENV:
            os.environ.setdefault(var, share)


#: Notebooks that open the runs of the chain test on the notebooks' defaults (study
#: "smoke"): they run after it, in its process, so that they find them.
CHAIN = ("01_finetune", "02_attack", "03_adversarial_training", "04_offense_defense", "06_explore")
CHAIN_TEST = "tests/test_studies.py::test_the_chain_on_every_notebooks_own_defaults"
HEAVY = ("slow", "real", "browser")


def group_of(nodeid: str) -> str:
    """The unit of work a test belongs to under pytest-xdist, from its id alone (the
    controller, which sends the units, sees only ids): its module or notebook (module
    fixtures are built once; a notebook's cells share one kernel), except the chain test
    and the notebooks that open its runs, which are one unit."""
    path = nodeid.split("::", 1)[0]
    if nodeid == CHAIN_TEST or (path.endswith(".ipynb") and Path(path).stem in CHAIN):
        return "smoke-chain"
    return path


def order_for_workers(items: list) -> None:
    """Under pytest-xdist, put the heaviest units first (most tests marked slow, real or
    browser, a notebook counting as one), so that the workers finish together; the
    order within a unit, and among units of the same weight, is kept. One process:
    nothing changes."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    groups = [group_of(item.nodeid) for item in items]
    weight: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, (item, group) in enumerate(zip(items, groups)):
        first.setdefault(group, i)
        heavy = any(item.get_closest_marker(m) for m in HEAVY)
        notebook_start = item.nodeid.endswith(".ipynb::Cell 0")
        weight[group] = weight.get(group, 0) + heavy + notebook_start
    ranked = sorted(zip(items, groups), key=lambda pair: (-weight[pair[1]], first[pair[1]]))  # stable
    items[:] = [item for item, _ in ranked]


def make_scheduler(config, log):
    """xdist's scheduler for ``--dist load``/``loadscope``/``loadfile``/``loadgroup``:
    whole units (:func:`group_of`) in collection order (:func:`order_for_workers`).
    (xdist's own ``loadgroup`` marks do not reach the controller under pytest 9.2.)"""
    if config.getvalue("dist") not in ("load", "loadscope", "loadfile", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False  # keep the order the workers collected
    return Units(config, log)
