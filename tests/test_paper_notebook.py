"""The paper-reproduction notebook, executed, records the numbers a direct computation
on the released CSVs gives (skipped where the released tables are absent)."""

import numpy as np
import pytest
from paper_direct import RESULTS, csv, latest, needs_results, pythia_pm_offense_defense

from robustlib import runner

pytestmark = needs_results


@pytest.fixture(scope="module")
def executed():
    return runner.run_notebook("05_paper_results", {"results_dir": str(RESULTS)}, study="paper-test",
                               progress=False)


def test_recorded_asr_medians_equal_the_csv(executed):
    raw = latest(csv("ian_107_gcg_pythia_pm.csv"), ["num_params", "seed_idx", "iteration"])
    at10 = raw[raw["iteration"] == 10]
    direct = at10.groupby(at10["model_name_or_path"].str.extract(r"(pythia-[0-9.]+[mb])")[0])["asr"].median()
    recorded = executed.metrics["pm_asr_at_budget_median"]
    assert set(recorded) == set(direct.index)
    for model, value in recorded.items():
        assert value == pytest.approx(direct[model], abs=1e-6)


def test_recorded_attack_scaling_slope_equals_a_direct_fit(executed):
    """Pythia-14m on PasswordMatch: logit10 of the Laplace-smoothed ASR (n = examples
    correct before the attack) on log10 of cumulative attack FLOPs per example, points
    with ASR in [0.01, 0.99] (the notebook's default range)."""
    raw = latest(csv("ian_107_gcg_pythia_pm.csv"), ["num_params", "seed_idx", "iteration"])
    g = raw[(raw["num_params"] == 7629056) & (raw["iteration"] > 0) & raw["asr"].between(0.01, 0.99)]
    n = g["adversarial_eval_n_correct_pre_attack"]
    smoothed = (g["asr"] * n + 1) / (n + 2)
    y = np.log10(smoothed / (1 - smoothed))
    x = np.log10(g["iteration"] * g["flops_per_iteration"] / g["dataset_n_val"])
    slope = np.polyfit(x, y, 1)[0]
    assert executed.metrics["pm_attack_scaling_slopes"]["pythia-14m"] == pytest.approx(slope, abs=1e-5)


def test_recorded_offense_defense_slope_equals_a_direct_fit(executed):
    """Pooled offense/defense fit at 5% ASR for Pythia PasswordMatch, straight from the
    CSVs: crossing interpolated from ASR@0 = 0, cost per example from the run's own
    FLOPs per iteration, defense compute from the training table of the same size, seed
    and round, with the restart glitches left out (cumulative FLOPs below an earlier
    round's, or under a tenth of the other seeds' median at that round)."""
    direct = pythia_pm_offense_defense(0.05)
    y, x, size = direct["y"].to_numpy(), direct["x"].to_numpy(), np.log10(direct["n"].to_numpy(dtype=float))
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(x), x, size]), y, rcond=None)
    recorded = executed.metrics["offense_defense_pooled_slopes"]["Pythia, PasswordMatch @ 0.05"]
    assert recorded == pytest.approx(coef[1], abs=1e-5)
    fits = executed.load_table("offense_defense_fits")
    pooled = fits[(fits["model"] == "pooled") & (fits["pair"] == "Pythia, PasswordMatch") & (fits["threshold"] == 0.05)]
    assert pooled["n"].item() == len(direct)
    assert pooled["slope_low"].item() < coef[1] < pooled["slope_high"].item()
    # the paper's finding, from its own numbers: doubling both favours the attacker
    assert pooled["slope_high"].item() < 1
