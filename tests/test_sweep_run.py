"""Sweeps that really run: a two-stage grid (fine-tuning, then GCG) of tiny models on the
local process pool and on a local Ray instance, each killed mid-run and run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robustlib import record, sweep

pytestmark = pytest.mark.slow

GRID = {"study": "two", "grid": {"family": "zoo", "sizes": ["zoo-0.3m"], "seeds": [0, 1]},
        "notebooks": {"01_finetune": {"n_train": 32, "n_val": 8, "epochs": 1.0},
                      "02_attack": {"n_examples": 2, "attack": {"name": "gcg", "iterations": 1, "n_attack_tokens": 4,
                                                               "top_k": 8, "n_candidates": 4}}}}


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUSTLIB_REPORTS", str(tmp_path / "reports"))
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(GRID))
    return path


def kill_after_first_model(path: Path, *args: str) -> None:
    """Start ``sweep`` in its own process group and kill the group (workers and kernels
    too) with SIGKILL as soon as one per-model run has completed."""
    proc = subprocess.Popen([sys.executable, "-m", "robustlib", "sweep", str(path), "--no-report", *args],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models = Path(os.environ["ROBUSTLIB_RUNS"]) / "two.models"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(record.Run(p).completed for p in models.glob("*") if p.is_dir()):
                break
            time.sleep(0.2)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def check_complete_once(planned) -> None:
    states = planned.states()
    assert set(states.values()) == {"done"}, states
    merged_ft = planned.run_of("01_finetune:password_match/zoo/all")
    rows = merged_ft.load_rows("finetune")
    assert sorted(r["model_key"] for r in rows) == ["zoo-0.3m__seed0", "zoo-0.3m__seed1"]  # each once
    for job in planned.jobs:
        if job.kind == "model" and job.notebook == "01_finetune":
            assert len(planned.run_of(job.key).load_rows("finetune")) == 1
    attack = planned.run_of("02_attack:password_match/zoo/gcg@1/all").load_rows("attack")
    cells = [(r["model_key"], r["iteration"]) for r in attack]
    assert len(cells) == len(set(cells)) == 2 * 2  # two models x iterations 0 and 1, none twice
    # the merged notebook rendered every model (its charts read the gathered tables)
    assert (merged_ft.path / "notebook.ipynb").exists()
    assert merged_ft.metrics["models"] == 2


def test_local_sweep_killed_mid_run_completes_only_what_is_missing(store):
    kill_after_first_model(store, "--workers", "1")
    planned = sweep.plan(store)
    before = planned.states()
    finished_first = {k for k, s in before.items() if s == "done"}
    assert finished_first and set(before.values()) != {"done"}
    stamps = {k: planned.run_of(k).status["completed"] for k in finished_first}
    outcome = sweep.run_sweep(store, workers=1, progress=False)
    assert outcome.ok and set(outcome.skipped) == finished_first
    assert set(outcome.done) == set(planned.by_key) - finished_first
    check_complete_once(sweep.plan(store))
    assert {k: planned.run_of(k).status["completed"] for k in finished_first} == stamps  # not redone
    assert outcome.report is not None and Path(outcome.report).exists()


def test_ray_sweep_on_a_local_instance_killed_and_resumed(store):
    pytest.importorskip("ray")
    kill_after_first_model(store, "--backend", "ray", "--workers", "2")
    planned = sweep.plan(store)
    finished_first = {k for k, s in planned.states().items() if s == "done"}
    assert finished_first
    outcome = sweep.run_sweep(store, backend="ray", workers=2, progress=False, report=False)
    # Ray's workers are not in the killed process group: a job they were running may
    # complete after the kill, and the second sweep then finds it done (not run twice).
    assert outcome.ok and not set(outcome.done) & finished_first
    assert set(outcome.done) | set(outcome.skipped) == set(planned.by_key) and outcome.done
    check_complete_once(sweep.plan(store))
