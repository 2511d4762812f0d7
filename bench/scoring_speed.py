"""Two ways of scoring GCG's candidates against each other, in one run.

    .venv/bin/python bench/scoring_speed.py                          # shared-prefix attention, zoo-3m
    .venv/bin/python bench/scoring_speed.py --compare tiers --model zoo-8m --runs 5

``--compare shared-prefix``: shared-prefix attention (every candidate of an example
attends to one copy of its prefix's keys and values) against the expanded KV cache it
replaced. ``--compare tiers``: candidates re-cut on the attack prefix they share with
the current attack (``prefix_tiers=3``, the default) against whole rows
(``prefix_tiers=0``). GCG on PasswordMatch validation examples at the paper's settings
(10 tokens, top-k 256, 128 candidates), once per side per run, the side that goes
first alternating; prints each side's seconds (min / median / max), the real GFLOP/s
it reached and the real FLOPs it executed, the final ASR of both (they must agree)
and the speed-up at the median.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

from timing import spread

#: side names and what each side of a comparison changes, new first
COMPARISONS = {
    "shared-prefix": ("shared-prefix attention", "expanded KV cache"),
    "tiers": ("3 prefix tiers", "whole rows"),
}


@contextlib.contextmanager
def _side(compare: str, new: bool, cfg: dict):
    """Within the block, GCG with ``cfg`` scores the ``new`` way or the old one."""
    from robustlib.attacks import scorer

    supports = scorer.supports
    if compare == "tiers":
        cfg["prefix_tiers"] = 3 if new else 0
    elif not new:
        scorer.supports = lambda model: False
    try:
        yield
    finally:
        scorer.supports = supports


def main(argv=None) -> int:
    import torch

    from robustlib import attacks, models, tasks

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", choices=sorted(COMPARISONS), default="shared-prefix")
    p.add_argument("--model", default="zoo-3m")
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = models.load_classifier(args.model)
    examples = tasks.load_examples("password_match", "validation", n=args.examples, seed=1)
    seconds, gflops, real = ({True: [], False: []} for _ in range(3))
    asr = {}
    for run in range(args.runs):
        for new in (True, False) if run % 2 == 0 else (False, True):
            cfg = dict(iterations=args.steps, n_attack_tokens=10, top_k=256, n_candidates=128, skip_incorrect=False,
                       progress=False)
            with _side(args.compare, new, cfg):
                t0 = time.perf_counter()
                result = attacks.run_attack("gcg", model, tok, examples, cfg)
                spent = time.perf_counter() - t0
            seconds[new].append(spent)
            real[new].append(sum(result.flops_per_iteration_real))
            gflops[new].append(real[new][-1] / spent / 1e9)
            asr[new] = result.asr[-1]

    print(f"GCG on {args.model}, {args.examples} examples, {args.steps} steps, {args.threads} threads, "
          f"{args.runs} runs alternated (min / median / max)")
    for new, name in zip((True, False), COMPARISONS[args.compare]):
        print(f"{name:26} seconds {spread(seconds[new]):>20}   real GFLOP/s {spread(gflops[new]):>20}   "
              f"real TFLOPs {statistics.median(real[new]) / 1e12:.3f}   ASR {asr[new]:.3f}")
    print(f"speed-up at the median: {statistics.median(seconds[False]) / statistics.median(seconds[True]):.2f}x, "
          f"real FLOPs {statistics.median(real[True]) / statistics.median(real[False]):.2f}x"
          f" (same ASR: {asr[True] == asr[False]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
