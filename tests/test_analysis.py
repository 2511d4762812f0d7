"""robustlib.analysis: checked against direct computations on the paper's released CSVs
(read at test time from beside the repository; skipped when absent) and on tiny frames."""

import math

import numpy as np
import pandas as pd
import pytest

from robustlib import analysis, paths, plots

RESULTS = paths.paper_results_dir()
needs_results = pytest.mark.skipif(RESULTS is None or not RESULTS.is_dir(),
                                   reason="the paper's released results are not beside this checkout "
                                          "(set ROBUSTLIB_PAPER_RESULTS)")


@pytest.fixture(scope="module")
def tidy():
    return analysis.load_paper_results(RESULTS)


def _raw(name):
    return pd.read_csv(next(RESULTS.rglob(name)))


@needs_results
def test_asr_at_10_medians_equal_the_csv(tidy):
    raw = _raw("ian_107_gcg_pythia_pm.csv")
    raw = raw.sort_values("run_created_at").drop_duplicates(["num_params", "seed_idx", "iteration"], keep="last")
    direct = raw[raw["iteration"] == 10].groupby("num_params")["asr"].median()
    ours = analysis.asr_at_budget(tidy[tidy["source"] == "ian_107_gcg_pythia_pm.csv"], 10)
    assert len(ours) == 10 and list(ours["seeds"]) == [5] * 10
    for n, med in zip(ours["num_params"], ours["median"]):
        assert med == pytest.approx(direct[n])
    assert ours.iloc[0]["model"] == "pythia-14m" and ours.iloc[-1]["model"] == "pythia-12b"


@needs_results
@pytest.mark.parametrize("threshold", [0.02, 0.05])
def test_interpolated_compute_to_reach_equals_a_hand_computation(tidy, threshold):
    raw = _raw("tom_013_eval_niki_171_gcg.csv")
    curve = raw[(raw["num_params"] == 7629056) & (raw["seed_idx"] == 0) & (raw["adv_training_round"] == 10)]
    curve = curve.sort_values("run_created_at").drop_duplicates("iteration", keep="last").sort_values("iteration")
    asr, its = curve["asr"].to_numpy(), curve["iteration"].to_numpy()
    j = int(np.flatnonzero(asr >= threshold)[0])
    expect_it = its[j - 1] + (threshold - asr[j - 1]) / (asr[j] - asr[j - 1]) * (its[j] - its[j - 1])
    per_example = curve["flops_per_iteration"].iloc[0] / curve["dataset_n_val"].iloc[0]
    got = analysis.compute_to_reach(tidy[tidy["source"].str.startswith("tom_013")], threshold)
    row = got[(got["model"] == "pythia-14m") & (got["seed"] == 0) & (got["round"] == 10)].iloc[0]
    assert row["iterations_to_reach"] == pytest.approx(expect_it)
    assert row["attack_flops_to_reach"] == pytest.approx(expect_it * per_example)
    # defense compute joined from the training table of the same model, seed and round
    train = _raw("niki_171_adv_tr_gcg_pm_small.csv")
    t = train[(train["num_params"] == 7629056) & (train["seed_idx"] == 0) & (train["adv_training_round"] == 10)]
    assert row["defense_flops"] == pytest.approx(t["train_total_flops"].iloc[-1])


@needs_results
def test_offense_defense_slope_equals_a_direct_fit(tidy):
    import statsmodels.api as sm

    sub = tidy[tidy["source"].str.startswith("tom_013")]
    points, per_size, pooled_row, pooled = analysis.offense_defense(sub, 0.05)
    one = points[points["model"] == "pythia-14m"]
    X = sm.add_constant(np.log10(one["defense_flops"].to_numpy()))
    direct = sm.OLS(np.log10(one["attack_flops_to_reach"].to_numpy()), X).fit()
    row = per_size[per_size["model"] == "pythia-14m"].iloc[0]
    assert row["slope"] == pytest.approx(direct.params[1])
    assert (row["slope_low"], row["slope_high"]) == pytest.approx(tuple(direct.conf_int()[1]))
    assert row["r2"] == pytest.approx(direct.rsquared)
    # pooled with a size term, by numpy least squares
    A = np.column_stack([np.ones(len(points)), points["log_defense"], points["log_params"]])
    coef, *_ = np.linalg.lstsq(A, points["log_attack"], rcond=None)
    assert pooled_row["slope"] == pytest.approx(coef[1])
    # the Qwen Spam pair imports and fits too
    q = tidy[tidy["source"].str.startswith("oskar_026a")]
    assert q["defense_flops"].notna().all() and q["pretrain_compute"].notna().all()
    analysis.offense_defense(q, 0.05, normalise="pretrain")


def test_dedup_keeps_the_latest_run(tmp_path):
    """A restarted run: the same (model, seed, round, iteration) twice; the later wins."""
    rows = []
    for created, asr in (("2024-09-02T00:00:00Z", 0.9), ("2024-09-01T00:00:00Z", 0.1)):
        for it in (0, 1):
            rows.append({"asr": asr * it, "iteration": it, "model_size": 7629056, "seed_idx": 0,
                         "adv_training_round": 0, "flops_per_iteration": 200.0, "dataset_n_val": 2,
                         "adversarial_eval/n_correct_pre_attack": 2.0, "model_family": "pythia",
                         "model_name_or_path": "AlignmentResearch/robust_llm_pythia-14m_clf_pm_v-x_s-0",
                         "run_created_at": created, "num_params": 7629056})
    pd.DataFrame(rows).to_csv(tmp_path / "x_gcg_pythia_pm.csv", index=False)
    t = analysis.load_paper_results(tmp_path / "x_gcg_pythia_pm.csv")
    assert len(t) == 2 and t["asr"].tolist() == [0.0, 0.9]
    assert t["task"].iloc[0] == "password_match" and t["model"].iloc[0] == "pythia-14m"
    assert t["flops_per_iteration"].iloc[0] == 100.0 and t["attack_flops"].tolist() == [0.0, 100.0]


def test_interpolation_edge_cases():
    f = analysis.interpolate_crossing
    assert f([0, 1, 2], [0.0, 0.1, 0.3], 0.1) == (1.0, 1.0)  # exact hit
    assert math.isnan(f([0, 1, 2], [0.0, 0.1, 0.3], 0.5)[0])  # never reached
    assert f([0, 1, 2], [0.0, 0.5, 0.6], 0.25) == (0.5, 0.5)  # reached at the first iteration
    # non-monotone: the first crossing counts
    assert f([0, 1, 2, 3], [0.0, 0.4, 0.1, 0.8], 0.2) == (0.5, 0.5)
    its, flops = f([0, 1, 2], [0.0, 0.2, 0.6], 0.4, cumulative=[0, 10, 30])
    assert (its, flops) == (pytest.approx(1.5), pytest.approx(20.0))


def _lab_table():
    rows = []
    for model, n in (("zoo-a", 100), ("zoo-b", 1000)):
        for seed in (0, 1):
            for it in range(4):
                rows.append({"model": model, "num_params": n, "seed": seed, "attack": "gcg", "position": 1.0,
                             "task": "password_match", "iteration": it, "asr": min(1.0, it * 0.3 / (1 + seed)),
                             "n_correct_before": 10, "n_examples": 12, "flops_paper": it * n * 20,
                             "flops_real": it * n * 15, "flops_per_iteration_paper": n * 20 if it else 0,
                             "flops_per_iteration_real": n * 15 if it else 0})
    return pd.DataFrame(rows)


def test_from_lab_is_per_example_and_tidy():
    t = analysis.from_lab(_lab_table())
    assert list(t.columns[: len(analysis.COLUMNS)]) == analysis.COLUMNS
    assert t["attack_flops"].iloc[3] == pytest.approx(3 * 100 * 20 / 10)  # summed over 10 attacked examples
    assert (t["round"] == 0).all() and (t["defense_flops"] == 0).all()
    real = analysis.from_lab(_lab_table(), convention="real")
    assert real["attack_flops"].iloc[3] == pytest.approx(3 * 100 * 15 / 10)
    with pytest.raises(ValueError, match="convention='fast'.*accepted"):
        analysis.from_lab(_lab_table(), convention="fast")
    with pytest.raises(ValueError, match="lacks column.*asr"):
        analysis.from_lab(_lab_table().drop(columns="asr"))


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        analysis.load_paper_results(tmp_path / "nope")
    with pytest.raises(ValueError, match="holds no .csv"):
        analysis.load_paper_results(tmp_path)
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(ValueError, match="not a .csv"):
        analysis.load_paper_results(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="threshold"):
        analysis.compute_to_reach(analysis.from_lab(_lab_table()), 0.0)


def test_attack_scaling_and_size_regressions_on_tiny_data():
    t = analysis.from_lab(_lab_table())
    slopes, fit = analysis.attack_scaling(t, by=("model", "num_params"))
    assert list(slopes["model"]) == ["zoo-a", "zoo-b"] and (slopes["slope"] > 0).all()
    assert fit is None  # two sizes: no slope-vs-size fit
    row, res = analysis.robustness_vs_size(t, 3)
    assert row["n"] == 4 and row["slope_low"] <= row["slope"] <= row["slope_high"]


def test_analysis_chart_specs():
    t = analysis.from_lab(_lab_table())
    spec = plots.attack_flops_curves(t).to_dict()
    assert spec["layer"][1]["encoding"]["x"]["scale"]["type"] == "log"
    assert "logit10" in spec["layer"][1]["encoding"]["y"]["title"]
    slopes, _ = analysis.attack_scaling(t, by=("model", "num_params"))
    spec = plots.slopes_vs_params(slopes).to_dict()
    assert spec["layer"][0]["mark"]["type"] == "rule" and spec["layer"][0]["encoding"]["y2"]["field"] == "slope_high"
    points = pd.DataFrame({"model": ["a", "a", "a"], "num_params": [1, 1, 1], "seed": 0, "round": [1, 2, 3],
                           "attack_flops_to_reach": [10.0, 20.0, 40.0], "defense_flops": [100.0, 200.0, 400.0]})
    per = pd.DataFrame({"model": ["a"], "num_params": [1], "slope": [1.0], "intercept": [-1.0]})
    spec = plots.offense_defense(points, per).to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks == ["circle", "line", "line"]
    assert spec["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    assert spec["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"
    with pytest.raises(ValueError, match="lacks column"):
        plots.offense_defense(points.drop(columns="defense_flops"))
