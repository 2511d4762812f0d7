"""robustlib.analysis.restarts: which training rows of restarted runs are glitches, on
synthetic tables built for each case and on the release (read from beside the
repository; skipped when absent)."""

import pandas as pd
import pytest
from paper_direct import RESULTS, needs_results, pythia_pm_training

from robustlib import analysis
from robustlib.analysis.restarts import restart_glitches


def table(runs: dict) -> pd.DataFrame:
    """{seed: [cumulative FLOPs by round]} of one size as a training frame."""
    return pd.DataFrame([{"num_params": 10, "seed": s, "round": r, "defense_flops": float(v)}
                         for s, values in runs.items() for r, v in enumerate(values) if v is not None])


def flagged(frame: pd.DataFrame) -> set:
    g = restart_glitches(frame)
    return {(int(s), int(r)) for s, r in frame.loc[g, ["seed", "round"]].itertuples(index=False)}


GOOD = [0, 100, 200, 300, 400, 500]


def test_a_restarted_counter_is_dropped_and_what_follows_it_kept():
    runs = {0: GOOD, 1: [0, 101, 199, 0.02, 4, 502], 2: [0, 99, 201, 301, 399, 498]}
    # seed 1 restarted after round 2: rounds 3 and 4 count from zero; round 5 is a later, resumed figure
    assert flagged(table(runs)) == {(1, 3), (1, 4)}


def test_a_tiny_decrease_is_a_wobble_not_a_glitch():
    # the Qwen2.5-3B case: round 2 sits 0.6% below round 1; the old rule dropped round 2
    runs = {0: [391, 393.4, 391.0, 2073, 3330], 1: [380, 382.7, 1076, 2046, None]}
    assert flagged(table(runs)) == set()


def test_a_lone_spike_is_the_glitch_not_the_rows_after_it():
    # seed 0's round 2 came from a separate short run that logged 20x too much; the rows
    # after it are consistent with the other seeds and are kept
    runs = {0: [0, 100, 4000, 300, 400, 500], 1: [0, 98, 202, 303, 398, 505], 2: GOOD}
    assert flagged(table(runs)) == {(0, 2)}


def test_without_other_seeds_a_large_fall_marks_the_later_row():
    assert flagged(table({0: [0, 100, 5, 300]})) == {(0, 2)}


def test_most_seeds_restarting_at_one_round_does_not_condemn_the_others():
    # Pythia-2.8b round 3 in the PasswordMatch table: three of five seeds restarted there,
    # so the median of that round is a restart's figure; the two good rows stay
    runs = {0: [0, 96, 360, 787, 1376], 1: [0, 96, 355, 1.4, None], 2: [0, 96, 358, 1.4, None],
            3: [0, 96, 357, 1.4, None], 4: [0, 96, 359, 786, 1379]}
    assert flagged(table(runs)) == {(1, 3), (2, 3), (3, 3)}


def test_a_round_one_restart_is_far_off_the_other_seeds():
    # round 1 cannot fall below round 0's zero, but sits orders of magnitude below its peers
    runs = {0: [0, 0.001, 200], 1: [0, 100, 201], 2: [0, 101, 199]}
    assert flagged(table(runs)) == {(0, 1)}


def test_bad_settings_are_refused():
    frame = table({0: GOOD})
    with pytest.raises(ValueError, match="fall=1.5"):
        restart_glitches(frame, fall=1.5)
    with pytest.raises(ValueError, match="far=0.5"):
        restart_glitches(frame, far=0.5)
    with pytest.raises(ValueError, match="seed='idx'"):
        restart_glitches(frame, seed="idx")


@needs_results
def test_on_the_release():
    train = analysis.load_paper_training(RESULTS, drop_restart_glitches=False)
    pm = train[train["source"] == "niki_171_adv_tr_gcg_pm_small.csv"]
    glitch = restart_glitches(pm.sort_values(["num_params", "seed", "round"]))
    kept = pm[~glitch.reindex(pm.index)]
    direct = pythia_pm_training()  # the rule written from scratch: falls below any earlier round, or 10x below peers
    assert set(zip(kept["num_params"], kept["seed"], kept["round"])) == set(
        zip(direct["num_params"], direct["seed_idx"], direct["adv_training_round"]))
    qwen = train[train["source"] == "oskar_024b_adv_tr_qwen25_gcg_spam.csv"]
    assert not restart_glitches(qwen).any()
    row = qwen[(qwen["model"] == "Qwen2.5-3B") & (qwen["seed"] == 0) & (qwen["round"] == 2)]
    assert row["defense_flops"].item() == pytest.approx(3.910433e17, rel=1e-6)
