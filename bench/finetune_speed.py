"""Our fine-tuning loop against a plain ``transformers.Trainer``, same model, data,
batch, optimizer and schedule, in one run.

    .venv/bin/python bench/finetune_speed.py                              # zoo-1m and zoo-3m, CPU
    python bench/finetune_speed.py --model pythia-410m --examples 4096 --dtype bf16   # a GPU

Both sides start from the same weights (the classifier is loaded afresh for every run;
a ``pythia-*`` preset is its architecture, randomly initialised, with the zoo tokenizer,
since its hub weights cannot be fetched offline and timing needs only the shape), see
the same PasswordMatch training examples, batch size, epochs, learning rate, linear
schedule with warmup, gradient clipping at 1.0 and AdamW (the Trainer's default,
``adamw_torch_fused``; ours takes the fused kernel wherever torch has one). The Trainer
pads each batch to its longest example with ``DataCollatorWithPadding``, as ours does;
it saves, logs and evaluates nothing during the run. Denormal flushing is switched on
for the whole process first, so both sides get it.

Printed, as min / median / max over ``--runs`` runs in which the side that goes first
alternates: tokens per second on each side (the examples' real tokens, padding
excluded: the same count on both sides) and the ratio ours / Trainer. Target: >= 1.0x.
Our time includes the FLOP counting the lab records with every run; the real-FLOP
cache is cleared before each of our runs, so every run pays for its measurements as a
study's first model of a size does.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from timing import spread, timed


def ours(build, examples, args) -> float:
    """Seconds for our fine-tuning loop on a fresh model."""
    from robustlib import finetune, flops

    model, tok = build()
    flops._MEASURED.clear()  # pay for the FLOP measurements, as the first run of a size does
    cfg = finetune.FinetuneConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, optimizer="adamw",
                                  schedule="linear", warmup_ratio=0.1, max_grad_norm=1.0, seed=0,
                                  device=args.device, dtype=args.dtype, progress=False)
    # Validation on one small batch: the run is timed for its training.
    return timed(lambda: finetune.finetune(model, tok, examples, examples[:8], cfg), args.device)


def trainer(build, examples, args, workdir: str) -> float:
    """Seconds from raw examples to a model trained by ``Trainer.train()`` with the same
    settings: tokenizing and building the Trainer are timed, as our side's are."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model, tok = build()
    cpu = args.device == "cpu" or not torch.cuda.is_available()
    bf16 = args.dtype in ("bf16", "bfloat16") or (args.dtype == "auto" and not cpu)
    targs = TrainingArguments(
        output_dir=workdir, per_device_train_batch_size=args.batch, num_train_epochs=args.epochs,
        learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0.1, max_grad_norm=1.0,
        weight_decay=0.0, seed=0, save_strategy="no", eval_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=cpu, bf16=bf16, dataloader_num_workers=0,
    )

    def run():
        rows = [{"input_ids": tok(e.text, add_special_tokens=False)["input_ids"], "labels": int(e.label)}
                for e in examples]
        Trainer(model=model, args=targs, train_dataset=rows, data_collator=DataCollatorWithPadding(tok)).train()

    return timed(run, args.device)


def main(argv=None) -> int:
    import tempfile

    from advtrain_speed import build

    from robustlib import runtime, tasks

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["zoo-1m", "zoo-3m"], help="presets: zoo-*, pythia-* (random init)")
    p.add_argument("--examples", type=int, default=1024, help="PasswordMatch training examples")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on the CPU, bf16 on a GPU), float32 or bf16")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runtime.flush_denormals()
    where = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else \
        f"CPU x{torch.get_num_threads()}"
    print(f"device: {where}; torch {torch.__version__}; {args.examples} examples x {args.epochs} epochs, "
          f"batch {args.batch}, {args.runs} runs")
    examples = tasks.load_examples("password_match", "train", n=args.examples, seed=0)
    for name in args.model:
        tok = build(name, 0)[1]
        tokens = args.epochs * sum(len(tok(e.text, add_special_tokens=False)["input_ids"]) for e in examples)
        times: dict[str, list[float]] = {"ours": [], "trainer": []}
        with tempfile.TemporaryDirectory() as workdir:
            for run in range(args.runs):
                order = ("ours", "trainer") if run % 2 == 0 else ("trainer", "ours")
                for side in order:
                    seconds = (ours(lambda: build(name, 0), examples, args) if side == "ours"
                               else trainer(lambda: build(name, 0), examples, args, workdir))
                    times[side].append(seconds)
        ratios = [t / o for o, t in zip(times["ours"], times["trainer"])]
        rate = {side: [tokens / s for s in v] for side, v in times.items()}
        print(f"\n{name}: {tokens:,.0f} tokens per run")
        print(f"  tokens/s  ours {spread(rate['ours'])}   Trainer {spread(rate['trainer'])}")
        verdict = "PASS" if statistics.median(ratios) >= 1.0 else "FAIL"
        print(f"  ratio ours / Trainer: {spread(ratios)}x (target >= 1.0 at the median: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
