"""pytest settings for executing the notebooks with nbval (``make test``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import labenv  # noqa: E402
import pytest  # noqa: E402

labenv.configure()  # before any kernel starts: kernels inherit the environment


# Both conftests: `pytest notebooks` alone loads only the notebooks' one.
def pytest_collection_modifyitems(items):
    labenv.order_for_workers(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return labenv.make_scheduler(config, log)


def pytest_ignore_collect(collection_path, config):
    """The paper-reproduction notebook needs the paper's released tables, which are not
    part of the repository: without them (``ROBUSTLIB_PAPER_RESULTS`` unset, and no
    copy beside the checkout) it is not collected; its tests skip with the reason."""
    if collection_path.name == "05_paper_results.ipynb":
        from robustlib import paths

        return paths.paper_results_dir() is None
    return None
