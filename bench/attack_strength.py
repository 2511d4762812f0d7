"""GCG vs RandomToken at equal attack compute, on fine-tuned PasswordMatch classifiers.

    python bench/attack_strength.py --checkpoints runs/demo/01_finetune-*/artifacts/models/zoo-8m__seed0

For each checkpoint: GCG with the paper's settings (10 attack tokens, top-k 256, 128
candidates, 10 iterations) on N validation examples, then RandomToken (10 random
tokens per iteration, first success kept) given the same paper-convention FLOPs per
example, and prints ASR for both, the ratio, and the 90% target of issue 3.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv=None) -> int:
    from robustlib import attacks, models, tasks

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True, help="fine-tuned classifier folders")
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--candidates", type=int, default=128)
    p.add_argument("--topk", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    examples = tasks.load_examples("password_match", "validation", n=args.examples, seed=1)

    print(f"{'checkpoint':44} {'correct':>7} {'GCG ASR':>8} {'RT ASR':>7} {'RT iters':>8} "
          f"{'GCG s':>6} {'RT s':>6}")
    ok = True
    for ckpt in args.checkpoints:
        model, tok = models.load_classifier(ckpt)
        t0 = time.time()
        gcg = attacks.run_attack("gcg", model, tok, examples, attacks.GCGConfig(
            iterations=args.iterations, top_k=args.topk, n_candidates=args.candidates, seed=args.seed,
            progress=False))
        t_gcg = time.time() - t0
        # Equal compute: RandomToken iterations whose paper-convention FLOPs per attacked
        # example match GCG's (one forward of one candidate per iteration).
        per_example = gcg.cumulative_flops_paper[-1] / max(1, gcg.n_correct_before)
        probe = attacks.run_attack("random_token", model, tok, examples[:1], attacks.RandomTokenConfig(
            iterations=1, seed=args.seed, progress=False))
        rt_iters = max(1, round(per_example / max(1, probe.cumulative_flops_paper[-1])))
        t0 = time.time()
        rt = attacks.run_attack("random_token", model, tok, examples, attacks.RandomTokenConfig(
            iterations=rt_iters, seed=args.seed, stop_on_success=True, progress=False))
        t_rt = time.time() - t0
        ok &= gcg.final_asr >= 0.9 and gcg.final_asr > rt.final_asr
        print(f"{ckpt[-44:]:44} {gcg.n_correct_before:>7} {gcg.final_asr:>8.3f} {rt.final_asr:>7.3f} "
              f"{rt_iters:>8} {t_gcg:>6.0f} {t_rt:>6.0f}")
    print("target (GCG >= 0.90 and beats RandomToken at equal FLOPs):", "PASS" if ok else "FAIL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
