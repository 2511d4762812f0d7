"""Our GCG against nanoGCG, same model, prompt, target and settings, in one run.

    .venv/bin/python bench/attack_speed.py                 # zoo-1m, 5 steps, all cores
    .venv/bin/python bench/attack_speed.py --model zoo-3m --threads 1

nanoGCG 0.3.0 needs transformers<=4.47.1, so it runs in its own virtual environment,
which this script builds once under ``~/.cache/robustlib/bench-nanogcg`` (pins in
``bench/requirements-nanogcg.txt``). Both sides load the same causal LM from one folder
(the lab's offline model, saved with a config both transformers versions read), see
the same token sequence (prompt, then a 10-token suffix, then the target string),
and use the same top-k, candidates per step, steps and torch thread count.

Printed: seconds per step for one example, and for a batch (ours attacks the batch at
once; nanoGCG has no batching, so its per-example cost is measured on
``--peer-examples`` prompts run one after another and is the same for any batch
size), throughput in example-steps per second, the ratios (nanoGCG time / ours: >1
means we are faster) and the issue's CPU targets (>= 1.0x single, >= 5x batch).
Times are whole runs divided by steps, set-up included on both sides (model loading
excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    if rot != int(rot) or int(rot) % 2:
        # transformers 4.47 rotates int(rot) dims, 5.x rounds an odd count up: not the same model.
        raise SystemExit(f"{name} has {rot:g} rotary dims per head (odd), which transformers 4.47 cannot "
                         "load as the same model; use zoo-0.3m, zoo-1m or zoo-3m")
    out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
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


def prompts(n: int) -> list[str]:
    from robustlib import tasks

    return [ex.instructions + ex.content for ex in tasks.load_examples("password_match", "validation", n=n, seed=3)]


def ours(folder: Path, texts: list[str], args) -> tuple[float, list[float]]:
    """Seconds for ``args.steps`` GCG steps on all ``texts`` at once, and final losses."""
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
    return time.perf_counter() - t0, [r.best_loss for r in result.records]


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
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    python = ensure_peer_env()
    folder = shared_model_folder(args.model)
    texts = prompts(args.batch)
    try:
        peer_res = peer(python, folder, texts[: args.peer_examples], args)
        peer_steps = [r["seconds"] / args.steps for r in peer_res["runs"]]
        peer_single = peer_steps[0]
        peer_per_example_step = sum(peer_steps) / len(peer_steps)
        ours_single, _ = ours(folder, texts[:1], args)
        ours_single /= args.steps
        ours_batch, losses = ours(folder, texts, args)
        ours_batch_step = ours_batch / args.steps
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    ours_tput = args.batch / ours_batch_step
    peer_tput = 1 / peer_per_example_step
    single_ratio = peer_single / ours_single
    batch_ratio = ours_tput / peer_tput
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    print(f"\nGCG speed: {args.model}, {args.suffix_len} attack tokens, top-k {args.topk}, {args.candidates} "
          f"candidates/step, {args.steps} steps, {args.threads} thread(s); {os.cpu_count()} CPUs ({cpu})")
    print(f"nanoGCG {peer_res['nanogcg']} on transformers {peer_res['transformers']}; "
          f"prompt of {len(texts[0])} chars, target {TARGET!r}")
    print(f"{'':28}{'nanoGCG':>12}{'robustlib':>12}{'ratio':>9}  target")
    print(f"{'1 example: s/step':28}{peer_single:>12.3f}{ours_single:>12.3f}{single_ratio:>8.2f}x  >= 1.0x "
          f"{'PASS' if single_ratio >= 1.0 else 'FAIL'}")
    print(f"{f'{args.batch} examples: example-steps/s':28}{peer_tput:>12.2f}{ours_tput:>12.2f}{batch_ratio:>8.2f}x  "
          f">= 5x {'PASS' if batch_ratio >= 5 else 'FAIL'}")
    print(f"(nanoGCG per-example cost from {len(peer_steps)} prompts run one after another; "
          f"ours: {args.batch} prompts attacked at once, {ours_batch_step:.3f} s/step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
