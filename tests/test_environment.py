"""The project's set-up promises: environment.yml and pyproject.toml agree, CI runs
the README's test command, and notebooks honour the contract."""

import json
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pip = [p for p in pip if not p.startswith("-e")]
    assert sorted(map(_norm, pip)) == sorted(map(_norm, deps))


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^(make \w+)$", readme, flags=re.M)
    assert commands[:2] == ["make demo", "make test"]
    assert re.search(r"^make test$", ci, flags=re.M)


def test_notebooks_follow_the_contract():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: want exactly one parameters cell"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code[1] is tagged[0], f"{path.name}: parameters must be the cell right after the imports"
        assert not any(c.get("outputs") for c in code), f"{path.name}: commit notebooks without outputs"
        src = "".join(tagged[0]["source"])
        for line in src.splitlines():
            assert re.match(r"^[a-z][a-z0-9_]*: \w+ = .+  # .+", line), f"{path.name}: untyped/uncommented: {line}"


def test_importing_the_package_has_no_side_effects():
    """``import robustlib`` (and the run store, tasks and configs) neither imports torch
    nor sets process state; paths come from the package and ROBUSTLIB_* variables."""
    import subprocess
    import sys

    code = (
        "import os, sys; before = os.umask(0o027); os.umask(before);"
        "import robustlib, robustlib.config, robustlib.paths, robustlib.record, robustlib.tasks;"
        "after = os.umask(0o022); os.umask(after);"
        "print('torch' in sys.modules, before == after, robustlib.paths.paper_results_dir())"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "ROBUSTLIB_PAPER_RESULTS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/",
                         timeout=120, check=True)
    assert out.stdout.split() == ["False", "True", "None"]



def test_test_workers_keep_the_chain_and_each_notebook_together(monkeypatch):
    """Under pytest-xdist (`make test`): a notebook's cells are one unit (one kernel),
    the chain test runs before the notebooks that open its runs, in the same unit, a
    module's tests are one unit, and the heavy units are handed out first."""
    import labenv
    import pytest

    class Item:
        def __init__(self, nodeid, *marks):
            self.nodeid, self.marks = nodeid, marks

        def get_closest_marker(self, name):
            return getattr(pytest.mark, name) if name in self.marks else None

    items = [Item("tests/test_a.py::test_one"), Item("tests/test_b.py::test_big", "slow"),
             Item("tests/test_a.py::test_two"), Item(labenv.CHAIN_TEST, "slow"),
             Item("tests/test_studies.py::test_other"),
             Item("notebooks/02_attack.ipynb::Cell 0"), Item("notebooks/02_attack.ipynb::Cell 1"),
             Item("notebooks/05_paper_results.ipynb::Cell 0"), Item("notebooks/05_paper_results.ipynb::Cell 1")]
    ids = [i.nodeid for i in items]
    assert [labenv.group_of(i) for i in ids] == [
        "tests/test_a.py", "tests/test_b.py", "tests/test_a.py", "smoke-chain", "tests/test_studies.py",
        "smoke-chain", "smoke-chain", "notebooks/05_paper_results.ipynb", "notebooks/05_paper_results.ipynb"]
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    labenv.order_for_workers(items)
    assert [i.nodeid for i in items] == ids  # one process: as collected
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    labenv.order_for_workers(items)
    want = [ids[k] for k in (3, 5, 6, 1, 7, 8, 0, 2, 4)]  # chain (weight 2), then weight 1, then the rest
    assert [i.nodeid for i in items] == want
    labenv.order_for_workers(items)  # both conftests call it: nothing changes the second time
    assert [i.nodeid for i in items] == want
