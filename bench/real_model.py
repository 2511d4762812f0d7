"""A real pretrained model at the paper's attack settings: fine-tune it on
PasswordMatch, then attack the fine-tuned classifier with GCG, RandomToken and BEAST.

    .venv/bin/python bench/real_model.py                      # SmolLM2-135M (make real-models)
    .venv/bin/python bench/real_model.py --model zoo-3m --examples 8

Prints, for fine-tuning: clean accuracy before and after, wall time, steps per second;
for each attack at the paper's settings (GCG: 10 tokens, top-k 256, 128 candidates, 10
iterations, init "@&"; RandomToken: 10 tokens, 1280 iterations; BEAST: 25 tokens, beam
7, 25 iterations, the model's own language model as sampler): the ASR at the budget, the
seconds per iteration (median and min-max over the iterations, every iteration timed on
its own), and two ratios: real FLOPs over paper-convention FLOPs (what the prefix cache
and batching save) and the achieved rate (real FLOPs per second) over --peak-gflops,
the machine's measured matmul rate, so a slow attack shows as a low ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from robustlib import attacks, fetch, finetune, models, tasks  # noqa: E402
from robustlib.runtime import flush_denormals  # noqa: E402

PAPER = {
    "gcg": {"iterations": 10, "n_attack_tokens": 10, "top_k": 256, "n_candidates": 128, "init": "paper"},
    "random_token": {"iterations": 1280, "n_attack_tokens": 10},
    "beast": {"iterations": 25, "n_attack_tokens": 25, "beam_size": 7, "samples_per_beam": 7},
}


def peak_gflops(seconds: float = 2.0) -> float:
    """The float32 matmul rate these threads sustain (1024 x 1024 products)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return n * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


def timed_attack(name: str, model, tokenizer, examples, options: dict) -> dict:
    """Run one attack step by step, timing each iteration."""
    cls = attacks.get_attack(name)
    cfg = cls.config_class.coerce({**options, "progress": False, "skip_incorrect": True})
    attack = cls(model, tokenizer, examples, cfg)
    times = []
    while not attack.done:
        t0 = time.perf_counter()
        attack.step()
        times.append(time.perf_counter() - t0)
    result = attack.result()
    paper = sum(result.flops_per_iteration_paper)
    real = sum(result.flops_per_iteration_real)
    return {"asr": result.final_asr, "n_attacked": result.n_correct_before, "iterations": len(times),
            "s_median": statistics.median(times), "s_min": min(times), "s_max": max(times),
            "seconds": sum(times), "real_over_paper": real / paper if paper else float("nan"),
            "real_gflops_per_s": real / sum(times) / 1e9}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="model name or folder (default: the fetched SmolLM2-135M)")
    ap.add_argument("--train", type=int, default=256, help="PasswordMatch training examples")
    ap.add_argument("--val", type=int, default=64, help="validation examples for accuracy")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--examples", type=int, default=4, help="validation examples attacked")
    ap.add_argument("--attacks", default="gcg,random_token,beast")
    ap.add_argument("--rt-iterations", type=int, default=PAPER["random_token"]["iterations"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--peak-gflops", type=float, default=0.0, help="0: measure it here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    flush_denormals()
    name = args.model or fetch.available("smollm2")
    if name is None:
        sys.exit("SmolLM2-135M is not fetched: run `make real-models`, or pass --model")
    name = str(name)
    peak = args.peak_gflops or peak_gflops()
    print(f"model {name}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"matmul peak {peak:.0f} GFLOP/s")

    model, tok = models.load_classifier(name, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    train = tasks.load_examples("password_match", "train", n=args.train, seed=0)
    val = tasks.load_examples("password_match", "validation", n=args.val, seed=1)
    before = finetune.classify(model, tok, val, batch_size=16)[0]
    t0 = time.perf_counter()
    res = finetune.finetune(model, tok, train, val, finetune.FinetuneConfig(
        epochs=args.epochs, batch_size=8, lr=args.lr, optimizer="adamw", warmup_ratio=0.1, progress=False))
    ft_seconds = time.perf_counter() - t0
    print(f"\nfine-tuning {n_params / 1e6:.1f}M parameters on {args.train} examples, {args.epochs:g} epoch(s): "
          f"accuracy {before:.3f} -> {res.val_accuracy:.3f} on {args.val}; {ft_seconds:.0f} s, "
          f"{res.steps / ft_seconds:.2f} steps/s; train FLOPs {res.flops['train_flops_paper']:.3g} paper "
          f"= {res.flops['train_flops_paper'] / ft_seconds / 1e9 / peak:.2f}x peak")

    examples = tasks.load_examples("password_match", "validation", n=args.examples, seed=2)
    print(f"\n{'attack':14s} {'iter':>5s} {'ASR':>6s} {'n':>3s} {'s/iter median [min-max]':>26s} "
          f"{'total s':>8s} {'real/paper FLOPs':>17s} {'rate/peak':>10s}")
    for attack in args.attacks.split(","):
        options = dict(PAPER[attack])
        if attack == "random_token":
            options["iterations"] = args.rt_iterations
        r = timed_attack(attack, model, tok, examples, options)
        spread = f"{r['s_median']:.3f} [{r['s_min']:.3f}-{r['s_max']:.3f}]"
        print(f"{attack:14s} {r['iterations']:5d} {r['asr']:6.2f} {r['n_attacked']:3d} {spread:>26s} "
              f"{r['seconds']:8.1f} {r['real_over_paper']:17.3f} {r['real_gflops_per_s'] / peak:10.2f}")


if __name__ == "__main__":
    main()
