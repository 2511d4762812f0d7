"""One model on several processes: fine-tuning with two CPU processes (gloo, launched by
torchrun, which accelerate's state picks up as it does ``accelerate launch``'s) gives the
single process's weights, and the study launch path records one run. ``accelerate
launch`` itself starts several CPU processes only through MPI, absent here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robustlib import record

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_two_processes_train_the_single_process_model(tmp_path):
    alone, pair = tmp_path / "alone", tmp_path / "pair"
    alone.mkdir(), pair.mkdir()
    run([sys.executable, str(HERE / "ddp_finetune.py"), str(alone)])
    run([*LAUNCH, str(HERE / "ddp_finetune.py"), str(pair)])
    one, two = (json.loads((d / "result.json").read_text()) for d in (alone, pair))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["examples_seen"] == one["examples_seen"]
    w1, w2 = load_file(alone / "weights.safetensors"), load_file(pair / "weights.safetensors")
    # The key part of query_key_value.bias has a gradient that is zero in exact arithmetic
    # (softmax ignores a shift shared by all keys): AdamW normalises its rounding noise to
    # steps of lr, whatever the process count, so those weights are compared by the losses.
    moved = max((w1[k] - w2[k]).abs().max().item() for k in w1 if not k.endswith("query_key_value.bias"))
    assert moved < 5e-5, f"weights differ by {moved}"
    assert torch.allclose(torch.tensor(one["example_losses"]), torch.tensor(two["example_losses"]), atol=1e-4)
    assert torch.allclose(torch.tensor(one["losses"]), torch.tensor(two["losses"]), atol=1e-3)


def test_the_study_launch_path_records_one_run(tmp_path):
    import os

    env = {**os.environ, "ROBUSTLIB_RUNS": str(tmp_path / "runs")}
    out = run([*LAUNCH, "-m", "robustlib.distributed", "01_finetune", "--study", "dist", "-p", "sizes",
               '["zoo-0.3m"]', "-p", "n_train", "32", "-p", "n_val", "8", "-p", "device", "cpu"], env=env)
    path = Path(out.stdout.strip().splitlines()[-1])
    run_ = record.Run(path)
    assert run_.completed and run_.study == "dist"
    assert [r["model_key"] for r in run_.load_rows("finetune")] == ["zoo-0.3m__seed0"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["dist"]  # the other rank's scratch is gone
