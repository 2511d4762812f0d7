"""Direct computations on the paper's released CSVs, written from the paper's stated rules
without robustlib, for the tests to hold the lab's analysis against. The tables are
read from beside the checkout (never copied into it); tests using them skip without."""

import numpy as np
import pandas as pd
import pytest

from robustlib import paths

RESULTS = paths.paper_results_dir()
needs_results = pytest.mark.skipif(RESULTS is None or not RESULTS.is_dir(),
                                   reason="the paper's released results are not here: set ROBUSTLIB_PAPER_RESULTS "
                                          "to a copy of its cache_csvs tables (tests also look beside the checkout)")


def csv(name: str) -> pd.DataFrame:
    """One released table, '/' in column names read as '_'."""
    raw = pd.read_csv(next(RESULTS.rglob(name)))
    raw.columns = [c.replace("/", "_") for c in raw.columns]
    return raw


def latest(raw: pd.DataFrame, keys) -> pd.DataFrame:
    """Restarted runs appear more than once: the latest run_created_at wins."""
    return raw.sort_values("run_created_at", kind="stable").drop_duplicates(keys, keep="last")


def hand_crossing(its, asr, threshold: float) -> float:
    """ASR@0 = 0, the first recorded point at or above the threshold, linear between it
    and the point before."""
    its, asr = np.r_[0, its], np.r_[0.0, asr]
    j = int(np.flatnonzero(asr >= threshold)[0])
    if asr[j] == threshold:
        return float(its[j])
    return its[j - 1] + (threshold - asr[j - 1]) / (asr[j] - asr[j - 1]) * (its[j] - its[j - 1])


def pythia_pm_training() -> pd.DataFrame:
    """The Pythia PasswordMatch adversarial-training rows, restarted runs left out:
    cumulative FLOPs below an earlier round's of the same run, or under a tenth of the
    other seeds' median at that round (a restarted counter, not compute)."""
    tr = latest(csv("niki_171_adv_tr_gcg_pm_small.csv"), ["num_params", "seed_idx", "adv_training_round"])
    tr = tr.sort_values(["num_params", "seed_idx", "adv_training_round"])
    earlier = tr.groupby(["num_params", "seed_idx"])["train_total_flops"].transform(lambda s: s.cummax().shift())
    peers = tr.groupby(["num_params", "adv_training_round"])["train_total_flops"].transform("median")
    return tr[~((tr["train_total_flops"] < earlier) | (tr["train_total_flops"] < 0.1 * peers))]


def pythia_pm_offense_defense(threshold: float) -> pd.DataFrame:
    """Pythia PasswordMatch offense/defense points: per (size n, seed, round > 0) that
    reaches ``threshold``, y = log10(attack FLOPs per example to reach it: interpolated
    iterations x the run's FLOPs per iteration / examples) and x = log10(train_total_flops
    of the same size, seed and round in :func:`pythia_pm_training`)."""
    ev = latest(csv("tom_013_eval_niki_171_gcg.csv"), ["num_params", "seed_idx", "adv_training_round", "iteration"])
    defense = pythia_pm_training().set_index(["num_params", "seed_idx", "adv_training_round"])["train_total_flops"]
    rows = []
    for (n, s, r), g in ev.groupby(["num_params", "seed_idx", "adv_training_round"]):
        g = g.sort_values("iteration")
        if r == 0 or (n, s, r) not in defense.index or g["asr"].max() < threshold:
            continue
        it = hand_crossing(g["iteration"].to_numpy(), g["asr"].to_numpy(), threshold)
        cost = g["flops_per_iteration"].iloc[0] / g["dataset_n_val"].iloc[0]
        rows.append((n, s, r, np.log10(it * cost), np.log10(defense[(n, s, r)])))
    return pd.DataFrame(rows, columns=["n", "seed", "round", "y", "x"])
