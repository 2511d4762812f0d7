"""Our GCG against nanoGCG, same model, prompt, target and settings, in one run.

    .venv/bin/python bench/attack_speed.py                 # zoo-1m, 5 steps, all cores
    .venv/bin/python bench/attack_speed.py --model zoo-3m --threads 1

nanoGCG 0.3.0 needs transformers<=4.47.1, so it runs in its own virtual environment,
which this script builds once under ``~/.cache/robustlib/bench-nanogcg`` (pins in
``bench/requirements-nanogcg.txt``). Both sides load the same causal LM from one folder
(the lab's offline model, saved with a config both transformers versions read), see
the same token sequence (prompt, then a 10-token suffix, then the target string),
and use the same top-k, candidates per step, steps and torch thread count.

Printed, as min / median / max over ``--runs`` runs in which the side that goes first
alternates: the ratio for one example (nanoGCG s/step / ours) and for a batch (ours
attacks the batch at once; nanoGCG has no batching, so its per-example cost is measured
on ``--peer-examples`` prompts run one after another and is the same for any batch
size), ours' real GFLOP/s on the batch against the fp32 matmul limit measured in the
same run, and the targets (>= 1.5x single, >= 5x batch, >= 60% of the limit). zoo-8m's
odd rotary width cannot be loaded alike by both transformers versions; it is timed on a
random-init model of its shape with an even rotary width.
Times are whole runs divided by steps, set-up included on both sides (model loading
excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import spread

HERE = Path(__file__).resolve().parent
PEER_ENV = Path.home() / ".cache" / "robustlib" / "bench-nanogcg"
TARGET = " Sure, here is"

PEER_DRIVER = r"""
import json, sys, time, torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
import nanogcg, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(args["model"])
model = AutoModelForCausalLM.from_pretrained(args["model"], torch_dtype=torch.float32).eval()
out = []
for prompt in args["prompts"]:
    cfg = nanogcg.GCGConfig(num_steps=args["steps"], search_width=args["candidates"], topk=args["topk"],
                            optim_str_init=args["init"], seed=0, verbosity="WARNING", use_prefix_cache=True,
                            allow_non_ascii=False, filter_ids=True, n_replace=1, buffer_size=0,
                            early_stop=False, add_space_before_target=False)
    t0 = time.perf_counter()
    res = nanogcg.run(model, tok, prompt, args["target"], cfg)
    out.append({"seconds": time.perf_counter() - t0, "best_loss": float(res.best_loss)})
print("RESULT" + json.dumps({"runs": out, "transformers": transformers.__version__,
                            "nanogcg": getattr(nanogcg, "__version__", "0.3.0")}))
"""


def ensure_peer_env() -> Path:
    """The nanoGCG environment (built on first use); returns its python."""
    python = PEER_ENV / "bin" / "python"
    probe = [str(python), "-c", "import nanogcg, transformers; assert transformers.__version__ == '4.47.1'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"building the nanoGCG environment in {PEER_ENV} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements-nanogcg.txt")],
                   check=True)
    return python


def shared_model_folder(name: str) -> Path:
    """One folder both transformers 4.47 and 5.x load: the zoo causal LM, its
    tokenizer, config keys of both versions and a chat template that renders the
    user message verbatim (nanoGCG formats prompts through the chat template)."""
    from robustlib import paths

    src = paths.zoo_dir() / name
    if not (src / "model.safetensors").exists():
        raise SystemExit(f"unknown offline model {name!r}; built: "
                         f"{sorted(p.name for p in paths.zoo_dir().glob('zoo-*'))}")
    config = json.loads((src / "config.json").read_text())
    head = config["hidden_size"] // config["num_attention_heads"]
    rot = head * config.get("rope_parameters", {}).get("partial_rotary_factor", 0.25)
    out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    if rot != int(rot) or int(rot) % 2:
        # transformers 4.47 rotates int(rot) dims, 5.x rounds an odd count up: not the same
        # model. Timing does not depend on the weights, so both sides get a random-init
        # model of the same shape with the nearest even number of rotary dims below.
        even = 2 * int(rot // 2)
        config.setdefault("rope_parameters", {})["partial_rotary_factor"] = even / head
        print(f"{name}: {rot:g} rotary dims per head is odd; timing a random-init model of its shape with "
              f"{even} ({even / head:.4f} of {head})", flush=True)
        _random_weights(config, out)
    else:
        shutil.copy(src / "model.safetensors", out)
    rope = config.get("rope_parameters", {})
    config.update(rotary_pct=rope.get("partial_rotary_factor", 0.25), rotary_emb_base=rope.get("rope_theta", 10000),
                  torch_dtype="float32")
    (out / "config.json").write_text(json.dumps(config, indent=1))
    shutil.copy(paths.zoo_dir() / "tokenizer" / "tokenizer.json", out)
    tok_cfg = json.loads((paths.zoo_dir() / "tokenizer" / "tokenizer_config.json").read_text())
    tok_cfg.update(tokenizer_class="PreTrainedTokenizerFast",
                   chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))
    return out


def _random_weights(config: dict, out: Path) -> None:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    keys = {k: v for k, v in config.items() if k not in ("architectures", "transformers_version", "dtype")}
    GPTNeoXForCausalLM(GPTNeoXConfig(**keys)).save_pretrained(out, safe_serialization=True)
    (out / "config.json").unlink()  # written below, with the keys both versions read


def matmul_limit(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an n x n x n matrix product on ``threads`` threads: the best of
    ``repeats`` (what the hardware and BLAS give, the ceiling for an attack's real FLOPs)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def prompts(n: int) -> list[str]:
    from robustlib import tasks

    return [ex.instructions + ex.content for ex in tasks.load_examples("password_match", "validation", n=n, seed=3)]


def ours(folder: Path, texts: list[str], args) -> tuple[float, float]:
    """Seconds for ``args.steps`` GCG steps on all ``texts`` at once, and the real FLOPs
    they executed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robustlib import attacks, tasks

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    task = tasks.Task(name="bench_prompt", version="1", instructions="", content_template="{text}",
                      class_strings=(" no", " yes"), attack_kind="slot", source="generated", answer_prompt="")
    examples = [task.make_example(0, text=t) for t in texts]
    cfg = attacks.GCGConfig(iterations=args.steps, n_attack_tokens=args.suffix_len, top_k=args.topk,
                            n_candidates=args.candidates, target="string", target_string=TARGET,
                            batch_examples=len(examples), progress=False, skip_incorrect=False)
    t0 = time.perf_counter()
    result = attacks.run_attack("gcg", model, tok, examples, cfg)
    return time.perf_counter() - t0, float(sum(result.flops_per_iteration_real) + result.clean_flops_real)


def peer(python: Path, folder: Path, texts: list[str], args) -> dict:
    payload = {"model": str(folder), "prompts": texts, "target": TARGET, "steps": args.steps,
               "candidates": args.candidates, "topk": args.topk, "threads": args.threads,
               "init": " ".join(["x"] * args.suffix_len)}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(python), "-c", PEER_DRIVER, json.dumps(payload)], capture_output=True, text=True,
                          env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"nanoGCG run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT"):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="zoo-1m", help="offline model (zoo-0.3m, zoo-1m, zoo-3m, zoo-8m)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--peer-examples", type=int, default=4, help="prompts nanoGCG runs (sequentially)")
    p.add_argument("--candidates", type=int, default=128)
    p.add_argument("--topk", type=int, default=256)
    p.add_argument("--suffix-len", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides")
    p.add_argument("--runs", type=int, default=3, help="runs of both sides, alternating which goes first")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    python = ensure_peer_env()
    folder = shared_model_folder(args.model)
    texts = prompts(args.batch)
    runs = []
    limit = []
    try:
        for r in range(args.runs):
            # alternate which side goes first, so drift in the machine's speed is shared out
            order = ("peer", "ours") if r % 2 == 0 else ("ours", "peer")
            got = {}
            for side in order:
                if side == "peer":
                    res = peer(python, folder, texts[: args.peer_examples], args)
                    steps = [x["seconds"] / args.steps for x in res["runs"]]
                    got["peer"] = (steps[0], sum(steps) / len(steps), res)
                else:
                    single, _ = ours(folder, texts[:1], args)
                    batch, flops = ours(folder, texts, args)
                    got["ours"] = (single / args.steps, batch / args.steps, flops / batch)
            limit.append(matmul_limit(args.threads))
            runs.append(got)
            print(f"run {r + 1}/{args.runs} ({' then '.join(order)}): single {got['peer'][0] / got['ours'][0]:.2f}x, "
                  f"batch {got['peer'][1] / (got['ours'][1] / args.batch):.2f}x", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    single_ratio = [g["peer"][0] / g["ours"][0] for g in runs]
    batch_ratio = [g["peer"][1] / (g["ours"][1] / args.batch) for g in runs]
    achieved = [g["ours"][2] / 1e9 for g in runs]
    share = [a / lim for a, lim in zip(achieved, limit)]
    peer_res = runs[0]["peer"][2]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    print(f"\nGCG speed: {args.model}, {args.suffix_len} attack tokens, top-k {args.topk}, {args.candidates} "
          f"candidates/step, {args.steps} steps, {args.threads} thread(s); {os.cpu_count()} CPUs ({cpu}); "
          f"{args.runs} runs, sides alternated")
    print(f"nanoGCG {peer_res['nanogcg']} on transformers {peer_res['transformers']}; "
          f"prompt of {len(texts[0])} chars, target {TARGET!r}")
    print(f"{'min / median / max':>58}  target")
    med = statistics.median
    print(f"{'1 example: nanoGCG s/step / ours':40}{spread(single_ratio):>18}x  >= 1.5x "
          f"{'PASS' if med(single_ratio) >= 1.5 else 'FAIL'}")
    print(f"{f'{args.batch} examples: throughput ratio':40}{spread(batch_ratio):>18}x  >= 5x "
          f"{'PASS' if med(batch_ratio) >= 5 else 'FAIL'}")
    print(f"{'ours, batch: real GFLOP/s':40}{spread(achieved):>18}")
    print(f"{'matmul limit GFLOP/s (same run)':40}{spread(limit):>18}")
    print(f"{'ours, batch: share of the limit':40}{spread(share):>18}   >= 0.60 "
          f"{'PASS' if med(share) >= 0.6 else 'FAIL'}")
    print(f"(nanoGCG per-example cost from {args.peer_examples} prompts run one after another; ours: {args.batch} "
          f"prompts attacked at once, {med([g['ours'][1] for g in runs]):.3f} s/step at the median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
