"""Adversarial training rounds: where the time goes, how close to the hardware, and what
``stop_on_success`` saves.

    .venv/bin/python bench/advtrain_speed.py                          # zoo-1m on the CPU, smoke-sized
    python bench/advtrain_speed.py --model zoo-8m pythia-70m pythia-160m \
        --finetune-examples 4000 --attack-examples 256 --candidates 128 --rounds 3   # on a GPU

For each model:
1. fine-tune it on PasswordMatch (zoo presets start from their pretrained bases; a
   Pythia preset is its architecture, randomly initialised, with the zoo tokenizer:
   its hub weights cannot be fetched offline, and timing needs only the shape);
2. run the round-1 training attack (GCG) twice on the same fresh examples, with and
   without ``stop_on_success``, and print the FLOP and time ratios (the pool must be
   the same: the script checks it);
3. run a few adversarial-training rounds and print, per round, the attack's share of
   the wall time, the defense FLOPs, and the achieved FLOP/s as a fraction of
   ``--peak-tflops`` (real-convention FLOPs, padding included).

Ratios, not absolute times, are what carry from one machine to another.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def build(name: str, seed: int):
    from transformers import AutoModelForSequenceClassification

    from robustlib import models

    preset = models.get_preset(name)
    if preset.family == "zoo":
        return models.load_classifier(name, seed=seed)
    tok = models.load_tokenizer("zoo-1m")
    cfg = models._config(preset)
    cfg.vocab_size = len(tok)
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg).eval(), tok


def main(argv=None) -> int:
    from robustlib import advtrain, attacks, finetune, flops, tasks

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["zoo-1m"], help="presets: zoo-*, pythia-* (random init)")
    p.add_argument("--finetune-examples", type=int, default=512)
    p.add_argument("--finetune-epochs", type=float, default=2.0)
    p.add_argument("--attack-examples", type=int, default=32, help="fresh examples attacked per round")
    p.add_argument("--iterations", type=int, default=8, help="training-attack iterations per round")
    p.add_argument("--candidates", type=int, default=32)
    p.add_argument("--train-examples", type=int, default=128, help="training examples per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-examples", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="the device's peak for the dtype in use (0: guess: 67 fp32 on an H100, else skip)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else f"CPU x{torch.get_num_threads()}"
    peak = args.peak_tflops or (67.0 if cuda and "H100" in device else 0.0)
    print(f"device: {device}; torch {torch.__version__}; peak used: {peak or 'none'} TFLOP/s")

    n_fresh = args.attack_examples * (args.rounds + 1)
    clean = tasks.load_examples("password_match", "train", n=args.finetune_examples, seed=args.seed)
    fresh = tasks.load_examples("password_match", "train", n=n_fresh, seed=args.seed + 1000)
    val = tasks.load_examples("password_match", "validation", n=256, seed=args.seed)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    ok = True
    for name in args.model:
        model, tok = build(name, args.seed)
        n_params = flops.count_params(model)
        t0 = time.time()
        fit = finetune.finetune(model, tok, clean, val, finetune.FinetuneConfig(
            epochs=args.finetune_epochs, lr=5e-4 if n_params < 5e7 else 1e-4, warmup_ratio=0.1, batch_size=32,
            seed=args.seed, progress=False))
        sync()
        print(f"\n{name}: {n_params / 1e6:.1f}M parameters; fine-tuned on {len(clean)} examples in "
              f"{time.time() - t0:.0f}s; clean validation accuracy {fit.val_accuracy:.3f}")

        # 2. stop_on_success: same pool, less compute
        base = advtrain.AdvTrainConfig(
            rounds=args.rounds, n_attack_examples=args.attack_examples, attack_iterations_start=args.iterations,
            attack_iterations_end=args.iterations,
            attack={"name": "gcg", "n_candidates": args.candidates, "batch_examples": args.batch_examples},
            train_examples_per_round=args.train_examples, seed=args.seed)
        out = {}
        for stop in (True, False):
            cfg = advtrain.AdvTrainConfig.from_dict({**base.to_dict(), "stop_on_success": stop})
            sync()
            t0 = time.time()
            r = attacks.run_attack("gcg", model, tok, fresh[: args.attack_examples], cfg.attack_config(1))
            sync()
            out[stop] = (r.clean_flops_real + sum(r.flops_per_iteration_real), time.time() - t0, r)
        same = [x.attacked_text for x in out[True][2].records] == \
               [x.attacked_text for x in out[False][2].records]
        ok &= same
        print(f"  round-1 attack ({args.attack_examples} examples, {args.iterations} iterations x "
              f"{args.candidates} candidates): ASR {out[True][2].asr[-1]:.2f}; stop_on_success / full: "
              f"FLOPs {out[True][0] / out[False][0]:.2f}, time {out[True][1] / out[False][1]:.2f}; "
              f"same pool: {same}")

        # 3. rounds
        res = advtrain.adversarial_training(model, tok, clean, fresh[args.attack_examples:], base,
                                            progress=False)
        print(f"  {'round':>5} {'ASR':>5} {'wall s':>7} {'attack %':>8} {'defense PFLOP':>13} {'TFLOP/s':>8}"
              + (f" {'of peak':>7}" if peak else ""))
        for rec in res.rounds:
            tflops = rec["round_flops_real"] / rec["wall_seconds"] / 1e12
            print(f"  {rec['round']:>5} {rec['train_attack_asr']:>5.2f} {rec['wall_seconds']:>7.1f} "
                  f"{100 * rec['attack_seconds'] / rec['wall_seconds']:>8.0f} "
                  f"{rec['defense_flops_real'] / 1e15:>13.3f} {tflops:>8.2f}"
                  + (f" {tflops / peak:>7.1%}" if peak else ""))
        del model
        if cuda:
            torch.cuda.empty_cache()
    print("\ncheck (stop_on_success pools exactly what the full attack pools):", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
