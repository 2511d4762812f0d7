"""robustlib.analysis: checked against direct computations on the paper's released CSVs
(read at test time from beside the repository, never copied into it; skipped when
absent) and on tiny synthetic frames."""

import math

import numpy as np
import pandas as pd
import pytest
from paper_direct import (
    RESULTS,
    csv,
    hand_crossing,
    latest,
    needs_results,
    pythia_pm_offense_defense,
    pythia_pm_training,
)

from robustlib import analysis, flops


@pytest.fixture(scope="module")
def tidy():
    return analysis.load_paper_results(RESULTS)


# ---------------------------------------------------------------------------- the released CSVs


@needs_results
def test_sources_tasks_and_models(tidy):
    s = analysis.describe_sources(tidy).set_index("source")
    assert s.loc["ian_107_gcg_pythia_pm.csv", "task"] == "password_match"
    assert s.loc["tom_013_eval_niki_171_gcg.csv", "task"] == "password_match"
    assert s.loc["oskar_026a_gcg_eval_qwen25_adv_spam.csv", "task"] == "spam"
    assert s.loc["ian_142a_gen_strongreject_gcg_qwen25.csv", "task"] == "strongreject"
    assert s.loc["tom_019b_beast_eval_pythia_ft_harmless.csv", "attack"] == "beast"
    assert s.loc["ian_106_gcg_pythia_imdb.csv", "attack"] == "gcg"
    assert s.loc["tom_013_eval_niki_171_gcg.csv", "first_iteration"] == 12  # recorded every 12th iteration
    assert set(tidy["model"]) >= {"pythia-14m", "pythia-1.4b", "pythia-12b", "Qwen2.5-0.5B", "Qwen2.5-7B-Instruct"}
    assert list(tidy.columns) == analysis.COLUMNS + list(analysis.released.RELEASED_EXTRAS)
    assert tidy.attrs["duplicates_dropped"]["ian_107_gcg_pythia_pm.csv"] == 0


@needs_results
def test_asr_at_10_medians_equal_the_csv(tidy):
    raw = latest(csv("ian_107_gcg_pythia_pm.csv"), ["num_params", "seed_idx", "adv_training_round", "iteration"])
    direct = raw[raw["iteration"] == 10].groupby("num_params")["asr"].agg(["median", "min", "max"])
    ours = analysis.asr_at_budget(tidy[tidy["source"] == "ian_107_gcg_pythia_pm.csv"], 10)
    assert len(ours) == 10 and list(ours["seeds"]) == [5] * 10
    for row in ours.to_dict("records"):
        assert row["median"] == pytest.approx(direct.loc[row["num_params"], "median"])
        assert (row["min"], row["max"]) == pytest.approx(tuple(direct.loc[row["num_params"], ["min", "max"]]))
    assert ours.iloc[0]["model"] == "pythia-14m" and ours.iloc[-1]["model"] == "pythia-12b"


@needs_results
@pytest.mark.parametrize("threshold", [0.02, 0.05])
def test_compute_to_reach_equals_a_hand_computation(tidy, threshold):
    raw = csv("tom_013_eval_niki_171_gcg.csv")
    curve = raw[(raw["num_params"] == 7629056) & (raw["seed_idx"] == 0) & (raw["adv_training_round"] == 10)]
    curve = latest(curve, ["iteration"]).sort_values("iteration")
    asr, its = curve["asr"].to_numpy(), curve["iteration"].to_numpy()
    assert asr[0] < threshold  # crosses between two recorded iterations
    expect_it = hand_crossing(its, asr, threshold)
    per_example = curve["flops_per_iteration"].iloc[0] / curve["dataset_n_val"].iloc[0]
    sub = tidy[tidy["source"] == "tom_013_eval_niki_171_gcg.csv"]
    got = analysis.compute_to_reach(sub, threshold).set_index(["model", "seed", "round"])
    row = got.loc[("pythia-14m", 0, 10)]
    assert row["iterations_to_reach"] == pytest.approx(expect_it)
    assert row["attack_flops_to_reach"] == pytest.approx(expect_it * per_example)
    # the paper's convention: interpolated iterations x the size's mean cost per iteration
    size_mean = analysis.compute_to_reach(sub, threshold, flops="size_mean").set_index(["model", "seed", "round"])
    runs = latest(raw[raw["num_params"] == 7629056], ["seed_idx", "adv_training_round", "iteration"])
    mean_cost = (runs["flops_per_iteration"] / runs["dataset_n_val"]).groupby(
        [runs["seed_idx"], runs["adv_training_round"]]).first().mean()
    assert size_mean.loc[("pythia-14m", 0, 10), "attack_flops_to_reach"] == pytest.approx(expect_it * mean_cost)
    # defense compute joined from the training table of the same size, seed and round
    train = csv("niki_171_adv_tr_gcg_pm_small.csv")
    t = train[(train["num_params"] == 7629056) & (train["seed_idx"] == 0) & (train["adv_training_round"] == 10)]
    assert row["defense_flops"] == pytest.approx(t["train_total_flops"].item())
    assert row["pretrain_compute"] == pytest.approx(t["pretrain_compute"].astype(float).item())
    # a curve already past the threshold at its first recorded iteration (12): from ASR@0 = 0
    first = raw[raw["iteration"] == 12].sort_values(["num_params", "seed_idx", "adv_training_round"])
    early = first[first["asr"] > threshold].iloc[0]
    key = (tidy.loc[tidy["num_params"] == early["num_params"], "model"].iloc[0], early["seed_idx"],
           early["adv_training_round"])
    assert got.loc[key, "iterations_to_reach"] == pytest.approx(12 * threshold / early["asr"])


@needs_results
def test_offense_defense_fit_equals_a_direct_fit(tidy):
    import statsmodels.api as sm

    threshold = 0.05
    direct = pythia_pm_offense_defense(threshold)

    points, per_size, pooled_row, _ = analysis.offense_defense(
        tidy[tidy["source"] == "tom_013_eval_niki_171_gcg.csv"], threshold)
    assert len(points) == len(direct)
    one = direct[direct["n"] == 7629056]
    fit = sm.OLS(one["y"].to_numpy(), sm.add_constant(one["x"].to_numpy())).fit()
    row = per_size[per_size["model"] == "pythia-14m"].iloc[0]
    assert row["slope"] == pytest.approx(fit.params[1]) and row["intercept"] == pytest.approx(fit.params[0])
    assert (row["slope_low"], row["slope_high"]) == pytest.approx(tuple(fit.conf_int()[1]))
    assert row["r2"] == pytest.approx(fit.rsquared) and row["n"] == len(one)
    # pooled with a size term: numpy least squares, statsmodels for the interval
    A = np.column_stack([np.ones(len(direct)), direct["x"], np.log10(direct["n"].astype(float))])
    coef, *_ = np.linalg.lstsq(A, direct["y"], rcond=None)
    assert pooled_row["slope"] == pytest.approx(coef[1]) and pooled_row["n"] == len(direct)
    pooled = sm.OLS(direct["y"].to_numpy(), A).fit()
    assert (pooled_row["slope_low"], pooled_row["slope_high"]) == pytest.approx(tuple(pooled.conf_int()[1]))
    assert pooled_row["slope_high"] < 1  # the paper's finding: doubling both favours the attacker
    # defense="size_median": the median over seeds of each size and round on the x axis
    med, _, med_row, _ = analysis.offense_defense(tidy[tidy["source"] == "tom_013_eval_niki_171_gcg.csv"],
                                                  threshold, defense="size_median")
    assert len(med) > len(points)  # curves whose own training row was a glitch come back
    one = med[(med["model"] == "pythia-1.4b") & (med["round"] == 4)]
    tr = pythia_pm_training()
    direct_median = tr[(tr["num_params"] == 1311629312) & (tr["adv_training_round"] == 4)]["train_total_flops"]
    assert (one["defense_flops"] == direct_median.median()).all()
    with pytest.raises(ValueError, match="defense='mean'"):
        analysis.offense_defense(tidy[tidy["source"] == "tom_013_eval_niki_171_gcg.csv"], 0.05, defense="mean")


@needs_results
def test_training_pairs_restart_glitches_and_pretraining(tidy):
    train = analysis.load_paper_training(RESULTS)
    assert list(train.columns) == analysis.TRAINING_COLUMNS + list(analysis.released.TRAINING_EXTRAS)
    # The folder grows with more of the release: check the files these numbers are about.
    glitches = train.attrs["restart_glitches"]
    assert glitches["niki_171_adv_tr_gcg_pm_small.csv"] == 30
    assert glitches["oskar_024b_adv_tr_qwen25_gcg_spam.csv"] == 0  # three sub-1% wobbles, kept
    kept = analysis.load_paper_training(RESULTS, drop_restart_glitches=False)
    assert len(kept) - len(train) == sum(glitches.values())
    # what is left never falls by more than a wobble (the largest: 0.9%)
    steps = train.groupby(["source", "num_params", "seed"])["defense_flops"]
    assert (train["defense_flops"] >= 0.99 * steps.cummax()).all()
    # round 0 of the Pythia training is before any adversarial training: no compute
    assert (train[(train["family"] == "pythia") & (train["round"] == 0)]["defense_flops"] == 0).all()
    q = tidy[tidy["source"] == "oskar_026a_gcg_eval_qwen25_adv_spam.csv"]
    p = tidy[tidy["source"] == "tom_013_eval_niki_171_gcg.csv"]
    # every evaluated round pairs with a training row, except those whose row was a glitch
    missing = p[p["defense_flops"].isna()][["model", "seed", "round"]].drop_duplicates()
    assert len(missing) == 17
    assert q["defense_flops"].notna().all()  # Qwen2.5-3B round 2, 0.6% below round 1, pairs too
    assert q["pretrain_compute"].notna().all() and p["pretrain_compute"].notna().all()
    # Pythia sizes without training rows get the release's 6 N D, N the backbone (the released 12b has none)
    big = tidy[(tidy["model"] == "pythia-12b")]
    assert big["pretrain_compute"].iloc[0] == 6 * (11586560000 - 2 * 5120) * flops.PYTHIA_PRETRAIN_TOKENS
    # the training attack is read from the evaluated models' names
    assert set(p["train_attack"]) == {"gcg"} and set(tidy[tidy["round"].eq(0) & tidy["source"].str.startswith(
        "ian_107")]["train_attack"]) == {"none"}


# ---------------------------------------------------------------------------- header variants, dedup


def _release_rows(created, asr_scale, slashes=True, size_col="model_size", name_col="model_name_or_path"):
    prefix = "adversarial_eval/" if slashes else "adversarial_eval_"
    rows = []
    for it in (0, 1, 2):
        rows.append({"asr": min(1.0, asr_scale * it), "iteration": it, size_col: 7629056, "seed_idx": 0,
                     "adv_training_round": 0, "flops_per_iteration": 200.0, "dataset_n_val": 4,
                     f"{prefix}n_correct_pre_attack": 2.0, f"{prefix}n_examples": 4.0,
                     name_col: "AlignmentResearch/robust_llm_pythia-14m_clf_pm_v-x_s-0",
                     "run_created_at": created})
    return rows


def test_dedup_keeps_the_latest_run(tmp_path):
    """A restarted run: the same (model, seed, round, iteration) twice, the later one
    listed first in the file; the later one wins whatever the order."""
    rows = _release_rows("2024-09-02T00:00:00Z", 0.4) + _release_rows("2024-09-01T00:00:00Z", 0.1)
    pd.DataFrame(rows).to_csv(tmp_path / "x_gcg_pythia_pm.csv", index=False)
    t = analysis.load_paper_results(tmp_path / "x_gcg_pythia_pm.csv")
    assert len(t) == 3 and t["asr"].tolist() == [0.0, 0.4, 0.8]
    assert t.attrs["duplicates_dropped"] == {"x_gcg_pythia_pm.csv": 3}
    assert t["task"].iloc[0] == "password_match" and t["model"].iloc[0] == "pythia-14m"
    assert t["family"].iloc[0] == "pythia" and t["attack"].iloc[0] == "gcg"
    assert t["flops_per_iteration"].iloc[0] == 50.0 and t["attack_flops"].tolist() == [0.0, 50.0, 100.0]
    assert (t["defense_flops"] == 0).all()  # round 0: no adversarial training


def test_both_header_variants_read_alike(tmp_path):
    a = pd.DataFrame(_release_rows("2024-01-01T00:00:00Z", 0.3))
    b = pd.DataFrame(_release_rows("2024-01-01T00:00:00Z", 0.3, slashes=False, size_col="num_params",
                                   name_col="model_name"))
    a.to_csv(tmp_path / "a_beast_pythia_pm.csv", index=False)
    (tmp_path / "sub").mkdir()
    b.to_csv(tmp_path / "sub" / "b_beast_pythia_pm.csv", index=False)
    t = analysis.load_paper_results(tmp_path)  # a folder, searched recursively
    cols = [c for c in analysis.COLUMNS if c != "source"]
    ta, tb = (t[t["source"] == s][cols].reset_index(drop=True) for s in ("a_beast_pythia_pm.csv",
                                                                          "b_beast_pythia_pm.csv"))
    pd.testing.assert_frame_equal(ta, tb)
    assert ta["attack"].iloc[0] == "beast" and ta["n_attacked"].iloc[0] == 2


def test_training_rows_pair_by_size_seed_and_round(tmp_path):
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "training").mkdir()
    name = "AlignmentResearch/robust_llm_clf_pm_pythia-14m_s-0_adv_tr_gcg_t-0"
    ev = [{"asr": 0.5 * it, "iteration": it, "model_size": 7629056, "num_params": 7629056, "seed_idx": 0,
           "adv_training_round": r, "flops_per_iteration": 10.0, "dataset_n_val": 2,
           "adversarial_eval_n_correct_pre_attack": 2.0, "model_name_or_path": name, "model_family": "pythia"}
          for r in (0, 1, 2) for it in (0, 1)]
    pd.DataFrame(ev).to_csv(tmp_path / "evaluation" / "e_gcg.csv", index=False)
    tr = [{"train_total_flops": f, "adv_training_round": r, "num_params": 7629056, "seed_idx": 0,
           "model_name_or_path": "AlignmentResearch/robust_llm_pythia-14m_clf_pm_v-x_s-0",
           "model_key": "clf_pm_pythia-14m_s-0_adv_tr_gcg_t-0", "pretrain_compute": 99.0}
          for r, f in ((0, 0.0), (1, 100.0), (2, 5.0))]  # round 2: a restart's counter
    pd.DataFrame(tr).to_csv(tmp_path / "training" / "t.csv", index=False)
    t = analysis.load_paper_results(tmp_path / "evaluation" / "e_gcg.csv")  # finds ../training
    by_round = t.groupby("round")["defense_flops"].first()
    assert by_round[0] == 0 and by_round[1] == 100 and math.isnan(by_round[2])
    assert (t["pretrain_compute"] == 99).all() and t.attrs["restart_glitches"] == {"t.csv": 1}
    kept = analysis.load_paper_results(tmp_path, drop_restart_glitches=False)
    assert kept.groupby("round")["defense_flops"].first()[2] == 5
    none = analysis.load_paper_results(tmp_path, training=None)
    assert none.groupby("round")["defense_flops"].first().isna().tolist() == [False, True, True]


# ---------------------------------------------------------------------------- interpolation


def test_interpolation_edge_cases():
    f = analysis.interpolate_crossing
    assert f([0, 1, 2], [0.0, 0.1, 0.3], 0.1) == (1.0, 1.0)  # exact hit
    assert all(math.isnan(v) for v in f([0, 1, 2], [0.0, 0.1, 0.3], 0.5))  # never reached
    assert f([0, 1, 2], [0.0, 0.5, 0.6], 0.25) == (0.5, 0.5)  # reached at the first iteration
    assert f([0, 1, 2, 3], [0.0, 0.4, 0.1, 0.8], 0.2) == (0.5, 0.5)  # non-monotone: the first crossing
    assert f([0, 1, 2, 3], [0.0, 0.1, 0.05, 0.3], 0.2) == (2.6, pytest.approx(2.6))  # dips first, then crosses
    its, flops = f([0, 1, 2], [0.0, 0.2, 0.6], 0.4, cumulative=[0, 10, 30])
    assert (its, flops) == (pytest.approx(1.5), pytest.approx(20.0))
    # recorded from iteration 12 on: ASR@0 = 0 at zero compute anchors the first segment
    assert f([12, 24], [0.1, 0.3], 0.05, cumulative=[120, 240]) == (pytest.approx(6.0), pytest.approx(60.0))
    assert f([12, 24], [0.1, 0.3], 0.05, anchor_zero=False) == (12.0, 12.0)
    assert f([24, 12], [0.3, 0.1], 0.2) == (pytest.approx(18.0), pytest.approx(18.0))  # order does not matter
    assert f([0, 1, 2], [0.0, np.nan, 0.4], 0.2) == (1.0, 1.0)  # NaN points ignored
    assert all(math.isnan(v) for v in f([], [], 0.1))
    with pytest.raises(ValueError, match="threshold=0"):
        f([0, 1], [0, 1], 0)
    with pytest.raises(ValueError, match="length"):
        f([0, 1], [0, 1, 1], 0.5)


# ---------------------------------------------------------------------------- the lab's tables


def _lab_table(sizes=(("zoo-a", 100), ("zoo-b", 1000))):
    rows = []
    for model, n in sizes:
        for seed in (0, 1):
            for it in range(4):
                rows.append({"model_key": f"{model}-{seed}", "model": model, "family": "zoo", "num_params": n,
                             "seed": seed, "attack": "gcg", "position": 1.0, "task": "password_match",
                             "task_version": 1, "iteration": it,
                             "asr": min(1.0, it * 0.3 / (1 + seed) * (100 / n) ** 0.25), "n_attacked": 10,
                             "n_examples": 12, "attack_flops_paper": it * n * 2.0, "attack_flops_real": it * n * 1.5,
                             "flops_per_iteration_paper": n * 2.0 if it else 0.0,
                             "flops_per_iteration_real": n * 1.5 if it else 0.0, "wall_seconds": 1.0})
    return pd.DataFrame(rows)


def _robustness_table():
    rows = []
    for rnd, defense in ((0, 0), (2, 5000), (4, 12000), (6, 30000)):
        t = _lab_table().assign(round=rnd, defense_flops_paper=defense * 1.0, defense_flops_real=defense * 0.5,
                                train_attack="gcg", train_position=1.0, pretrain_compute=float("nan"))
        t["asr"] = (t["asr"] / (1 + rnd)).clip(upper=1)
        rows.append(t)
    return pd.concat(rows, ignore_index=True)


def test_from_lab_picks_a_convention_and_fills_what_a_table_lacks():
    t = analysis.from_lab(_lab_table())
    assert list(t.columns) == analysis.COLUMNS
    assert t["attack_flops"].iloc[3] == pytest.approx(3 * 100 * 2)  # the lab records per attacked example
    assert t["flops_per_iteration"].iloc[3] == pytest.approx(100 * 2)
    assert (t["round"] == 0).all() and (t["defense_flops"] == 0).all() and t["family"].iloc[0] == "zoo"
    assert (t["train_attack"] == "none").all() and (t["source"] == "lab").all()
    real = analysis.from_lab(_lab_table(), convention="real")
    assert real["attack_flops"].iloc[3] == pytest.approx(3 * 100 * 1.5)
    assert analysis.from_lab(_lab_table(), family="other")["family"].eq("other").all()
    assert analysis.from_lab(_lab_table().drop(columns="family"))["family"].iloc[0] == "zoo"  # the name's prefix
    rob = analysis.from_lab(_robustness_table(), convention="real")
    assert list(rob.columns) == analysis.COLUMNS + ["train_position"]
    assert set(rob["train_attack"]) == {"gcg"}
    assert sorted(rob["round"].unique()) == [0, 2, 4, 6] and rob["defense_flops"].max() == 15000
    with pytest.raises(ValueError, match="convention='fast'.*accepted"):
        analysis.from_lab(_lab_table(), convention="fast")
    with pytest.raises(ValueError, match="lacks column.*asr"):
        analysis.from_lab(_lab_table().drop(columns="asr"))


def test_asr_at_budget_options():
    t = analysis.from_lab(_lab_table())
    short = t[~((t["model"] == "zoo-b") & (t["iteration"] == 3))]
    with pytest.raises(ValueError, match="iteration 9"):
        analysis.asr_at_budget(t, 9)
    with pytest.raises(ValueError, match="iteration='x'"):
        analysis.asr_at_budget(t, "x")
    skip = analysis.asr_at_budget(short, 3, by=("model", "num_params"), missing="skip")
    assert list(skip["model"]) == ["zoo-a"]
    last = analysis.asr_at_budget(short, 3, by=("model", "num_params"), missing="last")
    assert list(last["iteration"]) == [3, 2]
    assert analysis.asr_at_budget(t, "last", by=("model",))["iteration"].tolist() == [3, 3]


def test_regressions_on_tiny_data():
    sizes = (("zoo-a", 100), ("zoo-b", 1000), ("zoo-c", 10000))
    t = analysis.from_lab(_lab_table(sizes))
    slopes, fit = analysis.attack_scaling(t)
    assert list(slopes["model"]) == ["zoo-a", "zoo-b", "zoo-c"]
    assert (slopes["slope_low"] <= slopes["slope"]).all() and (slopes["slope"] <= slopes["slope_high"]).all()
    b, a = np.polyfit(np.log10(slopes["num_params"]), slopes["slope"], 1)
    size = analysis.summarize_fit(fit, "log_params", what="slope vs size")
    assert size["slope"].item() == pytest.approx(b) and size["intercept"].item() == pytest.approx(a)
    assert list(size.columns[:2]) == ["what", "slope"] and size["n"].item() == 3
    two, fit2 = analysis.attack_scaling(analysis.from_lab(_lab_table()))
    assert fit2 is None and len(two) == 2  # fewer than 3 sizes: no slope-vs-size fit
    short = t[t["iteration"] <= 2]  # one seed x two iterations per size: no interval, no fit
    none, fit0 = analysis.attack_scaling(short[short["seed"] == 0])
    assert none.empty and fit0 is None and {"model", "slope", "slope_low", "r2"} <= set(none.columns)
    row, res = analysis.attack_scaling_pooled(t, asr_range=(0.0, 1.0))
    assert row["n"] == (t["iteration"] > 0).sum() and "C(model)[T.zoo-b]" in res.params
    row, _ = analysis.robustness_vs_size(t, 3)
    assert row["n"] == 6 and row["slope_low"] <= row["slope"] <= row["slope_high"]
    two_sources = pd.concat([t, t.assign(source="other")])
    with pytest.raises(ValueError, match="one source/task/train_attack/attack/round"):
        analysis.attack_scaling(two_sources)
    with pytest.raises(ValueError, match="asr_range"):
        analysis.attack_scaling(t, asr_range=(0.5, 0.1))


def test_offense_defense_on_tiny_data():
    rob = analysis.from_lab(_robustness_table())
    points, per_size, pooled_row, pooled = analysis.offense_defense(rob, 0.05)
    assert set(points["round"]) <= {2, 4, 6} and (points["scale"] == "FLOPs").all()
    assert set(per_size["model"]) <= {"zoo-a", "zoo-b"} and pooled_row["model"] == "pooled"
    assert "log_params" in pooled.params
    with pytest.raises(ValueError, match=r"models \['zoo-a', 'zoo-b'\] have no pretraining compute"):
        analysis.offense_defense(rob, 0.05, normalise="pretrain")
    frac, per_frac, _, _ = analysis.offense_defense(rob, 0.05, normalise="pretrain",
                                                    pretrain_compute={"zoo-a": 1e6, "zoo-b": 1e7})
    assert frac["defense_flops"].max() < 1 and frac["scale"].iloc[0] == "fraction of pretraining compute"
    # per-size slopes do not change when both axes are divided by the same number
    pd.testing.assert_series_equal(per_frac["slope"], per_size["slope"])
    with pytest.raises(ValueError, match="normalise='6nd'"):
        analysis.offense_defense(rob, 0.05, normalise="6nd")
    with pytest.raises(ValueError, match="reaches ASR 1"):
        analysis.offense_defense(rob.assign(asr=0.0), 1.0)
    with pytest.raises(ValueError, match="flops='mean'"):
        analysis.compute_to_reach(rob, 0.05, flops="mean")


# ---------------------------------------------------------------------------- bad input


def test_bad_paths_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        analysis.load_paper_results(tmp_path / "nope")
    with pytest.raises(ValueError, match=f"{tmp_path.name}.*holds no .csv"):
        analysis.load_paper_results(tmp_path)
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(ValueError, match="x.txt.*not a .csv"):
        analysis.load_paper_results(tmp_path / "x.txt")
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match="no evaluation results"):
        analysis.load_paper_results(tmp_path)
    with pytest.raises(ValueError, match="no training results"):
        analysis.load_paper_training(tmp_path)
    with pytest.raises(ValueError, match="threshold"):
        analysis.compute_to_reach(analysis.from_lab(_lab_table()), 0.0)
    with pytest.raises(ValueError, match="n='n_val'"):
        analysis.with_logit(analysis.from_lab(_lab_table()), n="n_val")


def test_laplace_logit10_matches_the_formula():
    assert analysis.laplace_logit10(0.0, 0) == 0.0  # (0+1)/(0+2) = 1/2
    assert analysis.laplace_logit10(1.0, 2) == pytest.approx(math.log10(3))  # p = 3/4
    out = analysis.laplace_logit10(pd.Series([0.0, 0.5]), pd.Series([8, 8]))
    assert out[0] == pytest.approx(math.log10((1 / 10) / (9 / 10)))
    assert out[1] == pytest.approx(0.0)


def _defended_table():
    rows = []
    for model, n in (("a", 100), ("b", 1000)):
        for seed in (0, 1):
            for rnd, dflops in ((0, 0), (2, 50 * n), (4, 120 * n)):
                for it in (0, 5):
                    rows.append({"source": "lab", "task": "t", "family": "zoo", "model": model, "num_params": n,
                                 "seed": seed, "round": rnd, "train_attack": "gcg", "train_position": 1.0,
                                 "attack": "gcg", "position": 1.0, "iteration": it,
                                 "asr": 0.0 if it == 0 else max(0.0, 0.9 - 0.2 * rnd + 0.05 * seed),
                                 "n_attacked": 10.0, "n_examples": 10.0, "flops_per_iteration": 1.0,
                                 "attack_flops": float(it), "defense_flops": float(dflops + seed),
                                 "pretrain_compute": math.nan})
    return pd.DataFrame(rows)


def test_before_after_summary():
    s = analysis.before_after(_defended_table(), 5)
    assert list(s["model"]) == ["a", "b"]
    row = s.iloc[0]
    assert row["asr_before"] == pytest.approx(0.925) and row["asr_after"] == pytest.approx(0.125)
    assert row["after_over_before"] == pytest.approx(0.125 / 0.925)
    assert row["rounds"] == 4 and row["seeds"] == 2 and row["defense_flops"] == 12000.5
    # the same medians as ASR at the budget per round
    at = analysis.asr_at_budget(_defended_table(), 5, by=("model", "num_params", "round"))
    assert at[(at["model"] == "a") & (at["round"] == 4)]["median"].item() == row["asr_after"]
    with pytest.raises(ValueError, match="iteration 7"):
        analysis.before_after(_defended_table(), 7)
    with pytest.raises(ValueError, match="empty"):
        analysis.before_after(_defended_table().iloc[:0])


def _one_valid_row():
    return {"asr": 0.5, "iteration": 1, "model_size": 7629056, "seed_idx": 0, "flops_per_iteration": 10.0,
            "dataset_n_val": 2, "adversarial_eval_n_correct_pre_attack": 2.0,
            "model_name_or_path": "AlignmentResearch/robust_llm_pythia-14m_clf_pm_v-x_s-0"}


@pytest.mark.parametrize(
    "change,match",
    [
        ({"asr": "high"}, "column 'asr' holds values that are not numbers: \\['high'\\]"),
        ({"iteration": "one"}, "column 'iteration' holds values that are not numbers"),
        ({"iteration": None}, "column 'iteration' has 1 empty cells"),
        ({"model_size": "big"}, "column 'model_size' holds values that are not numbers"),
        ({"seed_idx": None}, "column 'seed_idx' has 1 empty cells"),
        ({"flops_per_iteration": "x"}, "column 'flops_per_iteration'"),
        ({"dataset_n_val": None, "drop": "dataset_n_val"}, "lacks a n_examples column"),
        ({"drop": "model_size"}, "lacks a num_params column; looked for \\['num_params', 'model_size'\\]"),
        ({"drop": "seed_idx"}, "lacks a seed column"),
        ({"drop": "model_name_or_path"}, "lacks a model_path column"),
        ({"drop": "adversarial_eval_n_correct_pre_attack"}, "lacks a n_attacked column"),
    ],
)
def test_a_bad_released_table_names_the_column(tmp_path, change, match):
    row = _one_valid_row()
    drop = change.pop("drop", None)
    row.update(change)
    if drop:
        row.pop(drop)
    pd.DataFrame([row]).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=match):
        analysis.load_paper_results(tmp_path / "t.csv")


def test_empty_and_binary_files(tmp_path, caplog):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv cannot be read as a CSV table"):
        analysis.load_paper_results(tmp_path / "empty.csv")
    (tmp_path / "binary.csv").write_bytes(b"\x00\x01\x02\xff\xfe")
    with pytest.raises(ValueError, match="binary.csv cannot be read as a CSV table.*UnicodeDecodeError"):
        analysis.load_paper_results(tmp_path / "binary.csv")
    # in a folder, an unreadable file is skipped with a warning; the good ones load
    pd.DataFrame([_one_valid_row()]).to_csv(tmp_path / "good.csv", index=False)
    with caplog.at_level("WARNING", logger="robustlib.analysis"):
        tidy = analysis.load_paper_results(tmp_path)
    assert set(tidy["source"]) == {"good.csv"} and "empty.csv cannot be read" in caplog.text
