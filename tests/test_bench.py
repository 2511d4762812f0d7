"""The benchmarks run as their users will run them, at tiny sizes: the GPU mode of
``attack_speed.py`` takes the same code path on the CPU (bf16, a ``pythia-*`` shape, the
long prompt), and ``finetune_speed.py``, ``filter_speed.py`` and ``scoring_speed.py``
print their ratios. Speeds are not asserted here (that is what the scripts are for)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(*argv, timeout=300) -> str:
    proc = subprocess.run([sys.executable, *argv], cwd=BENCH, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture()
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_attack_speed_gpu_path_runs_on_the_cpu_in_bf16():
    out = _run("attack_speed.py", "--model", "pythia-14m", "--device", "cpu", "--dtype", "bfloat16", "--no-peer",
               "--steps", "1", "--batch", "2", "--runs", "1", "--candidates", "8", "--topk", "16", "--suffix-len", "4",
               "--prompt", "long", "--threads", "1")
    assert "pythia-14m: a random-init model of its shape" in out
    assert "bfloat16" in out and "prompt of" in out and "(long)" in out
    for label in ("ours, 2 examples: s per example-step", "ours, candidate scoring: real GFLOP/s",
                  "ours, batch: share of the limit"):
        assert label in out, out


def test_the_long_prompt_is_about_300_tokens(bench_path):
    import attack_speed

    from robustlib import models

    tok = models.load_tokenizer("zoo-1m")
    lengths = [len(tok(t)["input_ids"]) for t in attack_speed.prompts(3, "long")]
    assert all(300 <= n <= 330 for n in lengths), lengths
    assert len(set(attack_speed.prompts(3, "long"))) == 3


def test_the_gpu_report_judges_its_targets(bench_path, monkeypatch, capsys):
    """The GPU table: seconds per example-step against 0.05, the scoring share against
    30% of the GPU's known bf16 peak, peak memory, and nanoGCG's ratio against 3x."""
    import argparse

    import attack_speed
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    args = argparse.Namespace(device="cuda", dtype="bfloat16", steps=2, batch=32, peak_tflops=0.0, model="pythia-1.4b",
                              suffix_len=10, topk=256, candidates=128, runs=1, prompt="password", peer_examples=4)
    batch = {"seconds": 2.0, "flops": 4e14, "scoring_seconds": 1.0, "scoring_flops": 3.5e14, "memory_gib": 40.0}
    single = dict(batch, seconds=0.5)
    runs = [{"single": single, "batch": batch,
             "peer": (1.0, 1.0, {"nanogcg": "0.3.0", "transformers": "4.47.1"})}]
    attack_speed.report(args, runs, [780e3], 300)
    out = capsys.readouterr().out
    assert "NVIDIA H200, bfloat16, peak 989 TFLOP/s" in out
    assert "4.00x  >= 3x PASS" in out  # nanoGCG 1 s/step over ours' 0.25
    assert "0.03  <= 0.05 PASS" in out  # 2 s / 2 steps / 32 examples
    line = next(x for x in out.splitlines() if x.startswith("ours, scoring: share of peak"))
    assert "0.35" in line and "PASS" in line  # 350 TFLOP/s of 989
    assert "peak memory GiB" in out and "40.00" in out


def test_finetune_speed_compares_with_the_trainer():
    out = _run("finetune_speed.py", "--model", "zoo-0.3m", "--examples", "64", "--runs", "1", "--threads", "1")
    assert "ratio ours / Trainer" in out and "tokens/s  ours" in out


def test_filter_speed_checks_both_filters_agree():
    out = _run("filter_speed.py", "--examples", "2", "--candidates", "16", "--runs", "1")
    assert "in the window" in out and "ratio:" in out


@pytest.mark.parametrize("compare", ["shared-prefix", "tiers"])
def test_scoring_speed_compares_both_sides(compare):
    out = _run("scoring_speed.py", "--compare", compare, "--model", "zoo-0.3m", "--examples", "2", "--steps", "1",
               "--runs", "2", "--threads", "1")
    assert "speed-up at the median" in out and "(same ASR: True)" in out
    for name in {"shared-prefix": ("shared-prefix attention", "expanded KV cache"),
                 "tiers": ("3 prefix tiers", "whole rows")}[compare]:
        assert name in out, out
