"""Shared-prefix attention against the expanded KV cache it replaced, in one run.

    .venv/bin/python bench/shared_prefix_speed.py                 # zoo-3m, 32 examples
    .venv/bin/python bench/shared_prefix_speed.py --model zoo-8m --runs 5

GCG on PasswordMatch validation examples, the paper's settings (10 tokens, top-k 256,
128 candidates), once with each scoring path per run, the path that goes first
alternating; prints each path's seconds (min / median / max), the real GFLOP/s it
reached, the final ASR of both (they must agree) and the speed-up at the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from timing import spread


def main(argv=None) -> int:
    import torch

    from robustlib import attacks, models, tasks
    from robustlib.attacks import scorer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="zoo-3m")
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = models.load_classifier(args.model)
    examples = tasks.load_examples("password_match", "validation", n=args.examples, seed=1)
    cfg = dict(iterations=args.steps, n_attack_tokens=10, top_k=256, n_candidates=128, skip_incorrect=False,
               progress=False)
    supports = scorer.supports
    seconds, gflops, asr = {True: [], False: []}, {True: [], False: []}, {}
    try:
        for run in range(args.runs):
            for shared in (True, False) if run % 2 == 0 else (False, True):
                scorer.supports = supports if shared else (lambda model: False)
                t0 = time.perf_counter()
                result = attacks.run_attack("gcg", model, tok, examples, cfg)
                spent = time.perf_counter() - t0
                seconds[shared].append(spent)
                gflops[shared].append(sum(result.flops_per_iteration_real) / spent / 1e9)
                asr[shared] = result.asr[-1]
    finally:
        scorer.supports = supports

    print(f"GCG on {args.model}, {args.examples} examples, {args.steps} steps, {args.threads} threads, "
          f"{args.runs} runs alternated (min / median / max)")
    for shared, name in ((True, "shared-prefix attention"), (False, "expanded KV cache")):
        print(f"{name:26} seconds {spread(seconds[shared]):>20}   real GFLOP/s {spread(gflops[shared]):>20}   "
              f"ASR {asr[shared]:.3f}")
    print(f"speed-up at the median: {statistics.median(seconds[False]) / statistics.median(seconds[True]):.2f}x"
          f" (same ASR: {asr[True] == asr[False]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
