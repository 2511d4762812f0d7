"""The paper-reproduction notebook, executed, records the numbers a direct computation
on the released CSVs gives (skipped where the released tables are absent)."""

import numpy as np
import pandas as pd
import pytest

from robustlib import paths, runner

RESULTS = paths.paper_results_dir()
pytestmark = pytest.mark.skipif(RESULTS is None or not RESULTS.is_dir(),
                                reason="the paper's released results are not beside this checkout "
                                       "(set ROBUSTLIB_PAPER_RESULTS)")


def _latest(raw, keys):
    return raw.sort_values("run_created_at", kind="stable").drop_duplicates(keys, keep="last")


@pytest.fixture(scope="module")
def executed():
    return runner.run_notebook("05_paper_results", {"results_dir": str(RESULTS)}, study="paper-test",
                               progress=False)


def test_recorded_asr_medians_equal_the_csv(executed):
    raw = _latest(pd.read_csv(next(RESULTS.rglob("ian_107_gcg_pythia_pm.csv"))),
                  ["num_params", "seed_idx", "iteration"])
    at10 = raw[raw["iteration"] == 10]
    direct = at10.groupby(at10["model_name_or_path"].str.extract(r"(pythia-[0-9.]+[mb])")[0])["asr"].median()
    recorded = executed.metrics["pm_asr_at_budget_median"]
    assert set(recorded) == set(direct.index)
    for model, value in recorded.items():
        assert value == pytest.approx(direct[model], abs=1e-6)


def test_recorded_offense_defense_slope_equals_a_direct_fit(executed):
    ev = _latest(pd.read_csv(next(RESULTS.rglob("tom_013_eval_niki_171_gcg.csv"))),
                 ["num_params", "seed_idx", "adv_training_round", "iteration"])
    tr = pd.read_csv(next(RESULTS.rglob("niki_171_adv_tr_gcg_pm_small.csv")))
    tr = _latest(tr, ["num_params", "seed_idx", "adv_training_round"])
    defense = tr.set_index(["num_params", "seed_idx", "adv_training_round"])["train_total_flops"]
    rows = []
    for (n, s, r), g in ev.groupby(["num_params", "seed_idx", "adv_training_round"]):
        g = g.sort_values("iteration")
        asr, its = g["asr"].to_numpy(), g["iteration"].to_numpy()
        hit = np.flatnonzero(asr >= 0.05)
        if r == 0 or not len(hit) or (n, s, r) not in defense.index:
            continue
        j = hit[0]
        if asr[j] == 0.05 or j == 0:
            it = its[j]
        else:  # iterations are recorded at intervals: interpolate between the two that straddle 5%
            it = its[j - 1] + (0.05 - asr[j - 1]) / (asr[j] - asr[j - 1]) * (its[j] - its[j - 1])
        per_example = g["flops_per_iteration"].iloc[0] / g["dataset_n_val"].iloc[0]
        rows.append((np.log10(it * per_example), np.log10(defense[(n, s, r)]), np.log10(n)))
    y, x, size = map(np.array, zip(*rows))
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(x), x, size]), y, rcond=None)
    recorded = executed.metrics["offense_defense_pooled_slopes"]["Pythia, PasswordMatch @ 0.05"]
    assert recorded == pytest.approx(coef[1], abs=1e-5)
    fits = executed.load_table("offense_defense_fits")
    pooled = fits[(fits["model"] == "pooled") & (fits["pair"] == "Pythia, PasswordMatch") & (fits["threshold"] == 0.05)]
    assert pooled["n"].item() == len(rows)
    assert pooled["slope_low"].item() < coef[1] < pooled["slope_high"].item()
