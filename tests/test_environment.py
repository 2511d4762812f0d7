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
