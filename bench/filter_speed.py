"""The re-encoding filter: windowed and batched over examples, against the full check
one example at a time (what every GCG step ran before), in one run.

    .venv/bin/python bench/filter_speed.py                        # zoo tokenizer, PasswordMatch
    .venv/bin/python bench/filter_speed.py --tokenizer ~/.cache/robustlib/models/smollm2

One GCG step's worth of candidates (``--examples`` x ``--candidates`` single-token swaps
of each example's initial attack, drawn with a fixed seed) is filtered both ways
``--runs`` times, the side that goes first alternating; both must give the same
answers (checked). Printed: milliseconds per candidate on each side as min / median /
max, and the ratio old / new (above 1: the new filter is faster).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from timing import spread


def main(argv=None) -> int:
    from robustlib import models, tasks
    from robustlib.attacks import tokens as tk

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", default="zoo-3m", help="a preset or a model folder")
    p.add_argument("--task", default="password_match")
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--candidates", type=int, default=128)
    p.add_argument("--tokens", type=int, default=10, help="attack tokens")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)

    tok = models.load_tokenizer(args.tokenizer)
    allowed = tk.allowed_token_ids(tok)
    pool = allowed.tolist()
    rng = random.Random(0)
    contexts, rows, owners = [], [], []
    for i, ex in enumerate(tasks.load_examples(args.task, "validation", n=args.examples, seed=0)):
        before, after = ex.attack_split(1.0)
        start = tk.initial_attack_ids(tok, before, after, args.tokens, allowed)
        contexts.append((before, after, tk._encode(tok, before), tk._encode(tok, after)))
        for _ in range(args.candidates):
            row = list(start)
            row[rng.randrange(args.tokens)] = rng.choice(pool)
            rows.append(row)
            owners.append(i)

    def old():
        out = []
        for i, (before, after, bi, ai) in enumerate(contexts):
            mine = rows[i * args.candidates:(i + 1) * args.candidates]
            out += tk.reencoding_filter(tok, before, after, mine, bi, ai, window=False)
        return out

    def new():
        windows = [tk.filter_context(tok, *c) for c in contexts]  # once per attack, counted here every time
        return tk.filter_many(tok, [windows[i] for i in owners], rows)

    seconds = {"old": [], "new": []}
    answers = {}
    for run in range(args.runs):
        for side in (("old", "new") if run % 2 == 0 else ("new", "old")):
            t0 = time.perf_counter()
            answers[side] = (old if side == "old" else new)()
            seconds[side].append(time.perf_counter() - t0)
    if answers["old"] != answers["new"]:
        print("the two filters disagree")
        return 1
    per = {k: [1000 * s / len(rows) for s in v] for k, v in seconds.items()}
    ratios = [o / n for o, n in zip(seconds["old"], seconds["new"])]
    kept = sum(answers["new"]) / len(rows)
    window = statistics.mean(len(tk._encode(tok, w.left + w.right)) for w in
                             (tk.filter_context(tok, *c) for c in contexts))
    full = statistics.mean(len(c[2]) + len(c[3]) for c in contexts)
    print(f"{args.tokenizer} on {args.task}: {len(rows)} candidates ({args.examples} examples x {args.candidates}), "
          f"{kept:.0%} kept; context tokens around the attack: {full:.0f} full, {window:.0f} in the window")
    print(f"  ms per candidate: full, per example {spread(per['old'])}; windowed, batched {spread(per['new'])}")
    print(f"  ratio: {spread(ratios)}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
