"""Our GCG against nanoGCG, same model, prompt, target and settings, in one run.

    .venv/bin/python bench/attack_speed.py                 # zoo-1m, 5 steps, all cores
    .venv/bin/python bench/attack_speed.py --model zoo-3m --threads 1
    python bench/attack_speed.py --model pythia-1.4b --device cuda --prompt long   # a GPU, bf16

GPU mode (``--device cuda``): the model runs in ``--dtype`` (bf16 by default there;
losses and softmaxes stay fp32), a ``pythia-*`` preset is its architecture randomly
initialised (timing needs only the shape) with the zoo tokenizer, and the script also
prints seconds per example-step, achieved TFLOP/s of real FLOPs against the dtype's
peak (``--peak-tflops``, else a known figure for the GPU, else the matmul limit it
measures), the same during candidate scoring alone, and peak GPU memory. ``--prompt
long`` is a ~300-token Spam/IMDB-like prompt instead of PasswordMatch's ~110. A GPU
machine without internet builds the nanoGCG side from wheels carried in
``bench/.wheels`` (``make bench-wheels`` downloads them; its own torch is reused).

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
same run, and the targets (CPU: >= 1.5x single, >= 5x batch, >= 60% of the limit; GPU:
<= 0.05 s per example-step on the batch, >= 3x single, >= 30% of peak while scoring
candidates). zoo-8m's
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

from timing import spread, sync, timed

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
model = AutoModelForCausalLM.from_pretrained(args["model"], torch_dtype=getattr(torch, args["dtype"]))
model = model.to(args["device"]).eval()
out = []
for prompt in args["prompts"]:
    cfg = nanogcg.GCGConfig(num_steps=args["steps"], search_width=args["candidates"], topk=args["topk"],
                            optim_str_init=args["init"], seed=0, verbosity="WARNING", use_prefix_cache=True,
                            allow_non_ascii=False, filter_ids=True, n_replace=1, buffer_size=0,
                            early_stop=False, add_space_before_target=False)
    if args["device"] == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = nanogcg.run(model, tok, prompt, args["target"], cfg)
    if args["device"] == "cuda":
        torch.cuda.synchronize()
    out.append({"seconds": time.perf_counter() - t0, "best_loss": float(res.best_loss)})
print("RESULT" + json.dumps({"runs": out, "transformers": transformers.__version__,
                            "nanogcg": getattr(nanogcg, "__version__", "0.3.0")}))
"""


WHEELS = HERE / ".wheels"
#: What the nanoGCG side installs on a machine without internet (``make bench-wheels``
#: downloads these into ``bench/.wheels``); everything else it needs is already there.
OFFLINE_PINS = ("transformers==4.47.1", "tokenizers>=0.21,<0.22", "huggingface-hub>=0.24,<1.0", "nanogcg==0.3.0")


def download_wheels(folder: Path = WHEELS) -> None:
    """Fetch :data:`OFFLINE_PINS` as wheels for a GPU machine's Python 3.12 on x86_64."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--python-version", "3.12",
                    "--platform", "manylinux2014_x86_64", "--only-binary=:all:", "-d", str(folder), *OFFLINE_PINS],
                   check=True)
    print(f"wheels in {folder}: {sorted(p.name for p in folder.glob('*.whl'))}")


def ensure_peer_env(wheels: Path | None = None) -> Path:
    """The nanoGCG environment (built on first use); returns its python. With
    ``wheels`` (a folder of wheels), it is built offline on top of this python's own
    packages (its torch: a GPU machine's CUDA build), from those wheels only."""
    python = PEER_ENV / "bin" / "python"
    probe = [str(python), "-c", "import nanogcg, transformers; assert transformers.__version__ == '4.47.1'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"building the nanoGCG environment in {PEER_ENV} (once) ...", flush=True)
    if wheels:
        subprocess.run([sys.executable, "-m", "venv", "--clear", "--system-site-packages", str(PEER_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
                        "--no-deps", *OFFLINE_PINS], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements-nanogcg.txt")],
                       check=True)
    subprocess.run(probe, check=True)
    return python


def shared_model_folder(name: str) -> Path:
    """One folder both transformers 4.47 and 5.x load: the zoo causal LM, its
    tokenizer, config keys of both versions and a chat template that renders the
    user message verbatim (nanoGCG formats prompts through the chat template)."""
    from robustlib import models, paths

    src = paths.zoo_dir() / name
    out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    if name.startswith("pythia-"):  # the preset's shape, random weights (no hub here)
        config = models._config(models.get_preset(name)).to_dict()
        config.pop("id2label", None), config.pop("label2id", None)
        config["architectures"] = ["GPTNeoXForCausalLM"]
        print(f"{name}: a random-init model of its shape", flush=True)
        _random_weights(config, out)
    elif (src / "model.safetensors").exists():
        config = json.loads((src / "config.json").read_text())
        head = config["hidden_size"] // config["num_attention_heads"]
        rot = head * config.get("rope_parameters", {}).get("partial_rotary_factor", 0.25)
        if rot != int(rot) or int(rot) % 2:
            # transformers 4.47 rotates int(rot) dims, 5.x rounds an odd count up: not the
            # same model. Timing does not depend on the weights, so both sides get a
            # random-init model of the same shape with the nearest even number of rotary
            # dims below.
            even = 2 * int(rot // 2)
            config.setdefault("rope_parameters", {})["partial_rotary_factor"] = even / head
            print(f"{name}: {rot:g} rotary dims per head is odd; timing a random-init model of its shape with "
                  f"{even} ({even / head:.4f} of {head})", flush=True)
            _random_weights(config, out)
        else:
            shutil.copy(src / "model.safetensors", out)
    else:
        raise SystemExit(f"unknown model {name!r}; accepted: pythia-* presets and the offline models "
                         f"{sorted(p.name for p in paths.zoo_dir().glob('zoo-*'))}")
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
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**keys))
    if sum(p.numel() for p in model.parameters()) > 5e8:
        model = model.to(torch.bfloat16)  # half the bytes written and read; both sides cast on loading
    model.save_pretrained(out, safe_serialization=True)
    (out / "config.json").unlink()  # written below, with the keys both versions read


def matmul_limit(threads: int, n: int = 1024, repeats: int = 5, device: str = "cpu", dtype: str = "float32") -> float:
    """GFLOP/s of an n x n x n matrix product on ``device`` in ``dtype`` (``threads``
    threads on the CPU): the best of ``repeats``, what the hardware and its BLAS give,
    the ceiling for an attack's real FLOPs."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def prompts(n: int, kind: str = "password") -> list[str]:
    """``n`` prompts: PasswordMatch's (about 110 zoo tokens) or, for ``long``, e-mails of
    about 300 tokens made of the task's word pool (a Spam/IMDB-like length)."""
    import random

    from robustlib import models, tasks

    if kind == "password":
        return [ex.instructions + ex.content
                for ex in tasks.load_examples("password_match", "validation", n=n, seed=3)]
    tok = models.load_tokenizer("zoo-1m")
    words = list(tasks.word_pool("validation"))
    out = []
    for i in range(n):
        rng = random.Random(i)
        text, question = f"Subject: offer {i}\n\nDear customer,", "\n\nIs this e-mail spam?"
        while len(tok(text + question)["input_ids"]) < 300:
            text += " " + " ".join(rng.choice(words) for _ in range(4)) + "."
        out.append(text + question)
    return out


def ours(folder: Path, texts: list[str], args) -> dict:
    """``args.steps`` GCG steps on all ``texts`` at once: seconds, the real FLOPs they
    executed, the seconds and real FLOPs of candidate scoring alone, peak GPU memory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robustlib import attacks, tasks
    from robustlib.attacks import scorer as scoring

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    task = tasks.Task(name="bench_prompt", version="1", instructions="", content_template="{text}",
                      class_strings=(" no", " yes"), attack_kind="slot", source="generated", answer_prompt="")
    examples = [task.make_example(0, text=t) for t in texts]
    cfg = attacks.GCGConfig(iterations=args.steps, n_attack_tokens=args.suffix_len, top_k=args.topk,
                            n_candidates=args.candidates, target="string", target_string=TARGET,
                            batch_examples=len(examples), progress=False, skip_incorrect=False)
    scoring_time = [0.0, 0]  # seconds, real FLOPs of Scorer.evaluate
    plain = scoring.Scorer.evaluate

    def evaluate(self, sites, ids, *a, **k):
        if not sites or sites[0].key < 0:  # the clean texts, scored once before the attack
            return plain(self, sites, ids, *a, **k)
        # Scoring ends by reading its losses on the host, so timing it costs one wait
        # for the work queued before it, not a sync inside the loop.
        sync(args.device)
        t = time.perf_counter()
        out = plain(self, sites, ids, *a, **k)
        scoring_time[0] += time.perf_counter() - t
        scoring_time[1] += sum(r.flops_real for r in out)
        return out

    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    scoring.Scorer.evaluate = evaluate
    try:
        sync(args.device)
        t0 = time.perf_counter()
        result = attacks.run_attack("gcg", model, tok, examples, cfg)
        sync(args.device)
        seconds = time.perf_counter() - t0
    finally:
        scoring.Scorer.evaluate = plain
    memory = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0.0
    return {"seconds": seconds, "flops": float(sum(result.flops_per_iteration_real) + result.clean_flops_real),
            "scoring_seconds": scoring_time[0], "scoring_flops": float(scoring_time[1]), "memory_gib": memory}


def peer(python: Path, folder: Path, texts: list[str], args) -> dict:
    payload = {"model": str(folder), "prompts": texts, "target": TARGET, "steps": args.steps,
               "candidates": args.candidates, "topk": args.topk, "threads": args.threads,
               "device": args.device, "dtype": args.dtype,
               "init": " ".join(["x"] * args.suffix_len)}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(python), "-c", PEER_DRIVER, json.dumps(payload)], capture_output=True, text=True,
                          env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"nanoGCG run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT"):])


#: Dense bf16 / fp32 peaks (TFLOP/s) of the GPUs the lab meets, by a part of their name.
PEAKS = {"H100": {"bfloat16": 989.0, "float32": 67.0}, "H200": {"bfloat16": 989.0, "float32": 67.0},
         "A100": {"bfloat16": 312.0, "float32": 19.5}}


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="zoo-1m", help="offline model (zoo-0.3m ... zoo-8m) or a pythia-* preset "
                                                     "(random init)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--peer-examples", type=int, default=4, help="prompts nanoGCG runs (sequentially)")
    p.add_argument("--candidates", type=int, default=128)
    p.add_argument("--topk", type=int, default=256)
    p.add_argument("--suffix-len", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides")
    p.add_argument("--runs", type=int, default=3, help="runs of both sides, alternating which goes first")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="auto: float32 on the CPU, bfloat16 on a GPU")
    p.add_argument("--prompt", default="password", choices=("password", "long"))
    p.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak in --dtype (0: known or measured)")
    p.add_argument("--no-peer", action="store_true", help="time ours only (no nanoGCG side)")
    p.add_argument("--wheels", type=Path, default=WHEELS if WHEELS.is_dir() else None,
                   help="build the nanoGCG side offline from these wheels (default: bench/.wheels if present)")
    p.add_argument("--download-wheels", action="store_true", help=f"fetch the wheels for --wheels into {WHEELS}, exit")
    args = p.parse_args(argv)
    if args.download_wheels:
        download_wheels()
        return 0
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device == "cuda" else "float32"
    gpu = args.device == "cuda"
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    python = None if args.no_peer else ensure_peer_env(args.wheels)
    folder = shared_model_folder(args.model)
    texts = prompts(args.batch, args.prompt)
    runs, limit = [], []
    try:
        for r in range(args.runs):
            # alternate which side goes first, so drift in the machine's speed is shared out
            order = ("peer", "ours") if r % 2 == 0 else ("ours", "peer")
            got = {}
            for side in order:
                if side == "peer" and python is not None:
                    res = peer(python, folder, texts[: args.peer_examples], args)
                    steps = [x["seconds"] / args.steps for x in res["runs"]]
                    got["peer"] = (steps[0], sum(steps) / len(steps), res)
                elif side == "ours":
                    got["single"] = ours(folder, texts[:1], args)
                    got["batch"] = ours(folder, texts, args)
            limit.append(matmul_limit(args.threads, 8192 if gpu else 1024, device=args.device, dtype=args.dtype))
            runs.append(got)
            line = f"run {r + 1}/{args.runs}: ours {got['batch']['seconds'] / args.steps:.3f} s/step on {args.batch}"
            if "peer" in got:
                line += (f"; single {got['peer'][0] / (got['single']['seconds'] / args.steps):.2f}x, "
                         f"batch {got['peer'][1] / (got['batch']['seconds'] / args.steps / args.batch):.2f}x")
            print(line, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(args, runs, limit, len(texts[0]))
    return 0


def report(args, runs: list[dict], limit: list[float], prompt_chars: int) -> None:
    """Print the table of ratios and rates (min / median / max over the runs) with the targets."""
    import torch

    gpu = args.device == "cuda"
    med = statistics.median
    step = lambda g, k: g[k]["seconds"] / args.steps  # noqa: E731
    achieved = [g["batch"]["flops"] / g["batch"]["seconds"] / 1e9 for g in runs]
    scoring = [g["batch"]["scoring_flops"] / max(g["batch"]["scoring_seconds"], 1e-9) / 1e9 for g in runs]
    if gpu:
        name = torch.cuda.get_device_name()
        known = next((v[args.dtype] for k, v in PEAKS.items() if k in name), None)
        peak = [1e3 * (args.peak_tflops or known or lim / 1e3) for lim in limit]
        where = f"{name}, {args.dtype}, peak {peak[0] / 1e3:.0f} TFLOP/s" + (
            "" if args.peak_tflops or known else " (the measured matmul limit)")
    else:
        peak = limit
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
        where = f"{os.cpu_count()} CPUs ({cpu}), {args.threads} thread(s), {args.dtype}"
    print(f"\nGCG speed: {args.model}, {args.suffix_len} attack tokens, top-k {args.topk}, {args.candidates} "
          f"candidates/step, {args.steps} steps; {where}; {args.runs} runs, sides alternated; "
          f"prompt of {prompt_chars} chars ({args.prompt}), target {TARGET!r}")
    if "peer" in runs[0]:
        res = runs[0]["peer"][2]
        print(f"nanoGCG {res['nanogcg']} on transformers {res['transformers']}")
    print(f"{'min / median / max':>60}  target")

    def row(label, values, unit="", target=None):
        verdict = ""
        if target is not None:
            sign, bound = target
            ok = med(values) >= bound if sign == ">=" else med(values) <= bound
            verdict = f"{sign} {bound:g}{unit} {'PASS' if ok else 'FAIL'}"
        print(f"{label:42}{spread(values):>18}{unit}  {verdict}")

    if "peer" in runs[0]:
        single = [g["peer"][0] / step(g, "single") for g in runs]
        batch = [g["peer"][1] / (step(g, "batch") / args.batch) for g in runs]
        row("1 example: nanoGCG s/step / ours", single, "x", (">=", 3 if gpu else 1.5))
        row(f"{args.batch} examples: throughput ratio", batch, "x", None if gpu else (">=", 5))
    row("ours, 1 example: s per step", [step(g, "single") for g in runs])
    row(f"ours, {args.batch} examples: s per example-step", [step(g, "batch") / args.batch for g in runs], "",
        ("<=", 0.05) if gpu else None)
    unit = 1e3 if gpu else 1.0
    label = "TFLOP/s" if gpu else "GFLOP/s"
    row(f"ours, batch: real {label}", [a / unit for a in achieved])
    row(f"ours, candidate scoring: real {label}", [a / unit for a in scoring])
    if gpu:
        row("peak used, TFLOP/s", [x / 1e3 for x in peak])
        row("matmul limit, TFLOP/s (same run)", [x / 1e3 for x in limit])
        row("ours, scoring: share of peak", [a / pk for a, pk in zip(scoring, peak)], "", (">=", 0.3))
        row("ours, batch: peak memory GiB", [g["batch"]["memory_gib"] for g in runs])
    else:
        row("matmul limit GFLOP/s (same run)", limit)
        row("ours, batch: share of the limit", [a / lim for a, lim in zip(achieved, limit)], "", (">=", 0.6))
        row("ours, scoring: share of the limit", [a / lim for a, lim in zip(scoring, limit)])
    if "peer" in runs[0]:
        print(f"(nanoGCG per-example cost from {args.peer_examples} prompts run one after another; ours: "
              f"{args.batch} prompts attacked at once)")


if __name__ == "__main__":
    sys.exit(main())
