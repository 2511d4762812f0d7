"""robustlib.studies.paper_results: what 05_paper_results computes and records,
checked against direct computations on the released CSVs (read from beside the
repository, never copied into it; skipped when absent), on renamed copies of them, and
its config's bad values."""

import shutil

import numpy as np
import pytest
from paper_direct import RESULTS, csv, latest, needs_results, pythia_pm_offense_defense

from robustlib import analysis, studies
from robustlib.studies import paper_results as paper


@pytest.fixture(scope="module")
def tidy():
    return analysis.load_paper_results(RESULTS)


@pytest.fixture(scope="module")
def computed(tidy):
    """Everything the notebook computes, on the default parameters."""
    cfg = paper.PaperResultsConfig(results_dir=str(RESULTS))
    finetuned = paper.finetuned(tidy)
    at_budget = paper.asr_at_budget(finetuned, cfg.budget)
    scaling, _, _ = paper.attack_scaling(finetuned, cfg.asr_range)
    groups = paper.adversarial(tidy)
    fits, charts, skipped = paper.offense_defense(groups, cfg.thresholds)
    return {"finetuned": finetuned, "groups": groups, "fits": fits, "skipped": skipped,
            "metrics": paper.metrics(tidy, at_budget, scaling, fits)}


PM = "pythia password_match, gcg"
PM_TRAINED = "pythia password_match, gcg-trained, gcg"


@needs_results
def test_sources_are_told_apart_by_content(tidy, computed):
    finetuned, groups = computed["finetuned"], computed["groups"]
    assert (finetuned["round"] == 0).all() and (finetuned["train_attack"] == "none").all()
    trained = set(tidy[tidy["round"] > 0]["source"])
    assert {g["source"].iloc[0] for g in groups.values()} == trained
    assert not trained & set(finetuned["source"])
    assert groups[PM_TRAINED]["source"].iloc[0] == "tom_013_eval_niki_171_gcg.csv"
    assert len(set(groups)) == len(trained)  # one label each


@needs_results
def test_recorded_asr_medians_equal_the_csv(computed):
    raw = latest(csv("ian_107_gcg_pythia_pm.csv"), ["num_params", "seed_idx", "iteration"])
    at10 = raw[raw["iteration"] == 10]
    direct = at10.groupby(at10["model_name_or_path"].str.extract(r"(pythia-[0-9.]+[mb])")[0])["asr"].median()
    recorded = computed["metrics"]["asr_at_budget_median"][PM]
    assert set(recorded) == set(direct.index)
    for model, value in recorded.items():
        assert value == pytest.approx(direct[model], abs=1e-6)


@needs_results
def test_recorded_attack_scaling_slope_equals_a_direct_fit(computed):
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
    assert computed["metrics"]["attack_scaling_slopes"][PM]["pythia-14m"] == pytest.approx(slope, abs=1e-5)


@needs_results
def test_recorded_offense_defense_slope_equals_a_direct_fit(computed):
    """Pooled offense/defense fit at 5% ASR for Pythia PasswordMatch, straight from the
    CSVs: crossing interpolated from ASR@0 = 0, cost per example from the run's own
    FLOPs per iteration, defense compute from the training table of the same size, seed
    and round, with the restart glitches left out."""
    direct = pythia_pm_offense_defense(0.05)
    y, x, size = direct["y"].to_numpy(), direct["x"].to_numpy(), np.log10(direct["n"].to_numpy(dtype=float))
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(x), x, size]), y, rcond=None)
    assert computed["metrics"]["offense_defense_pooled_slopes"][f"{PM_TRAINED} @ 0.05"] == pytest.approx(
        coef[1], abs=1e-5)
    fits = computed["fits"]
    pooled = fits[(fits["model"] == "pooled") & (fits["pair"] == PM_TRAINED) & (fits["threshold"] == 0.05)]
    assert pooled["n"].item() == len(direct)
    assert pooled["slope_low"].item() < coef[1] < pooled["slope_high"].item()
    # the paper's finding, from its own numbers: doubling both favours the attacker
    assert pooled["slope_high"].item() < 1


@needs_results
def test_groups_without_defense_compute_are_skipped_with_a_reason(computed):
    """An evaluation whose training table is not in the folder has no defense compute:
    its offense/defense fit is left out, and the notebook says why."""
    fitted = set(computed["fits"]["pair"])
    for name, g in computed["groups"].items():
        if g.loc[g["round"] > 0, "defense_flops"].isna().all():
            assert name not in fitted
            assert any(line.startswith(name) for line in computed["skipped"])


@needs_results
def test_renamed_copies_give_the_same_numbers(tidy, tmp_path):
    """What a table is comes from its content: the release under other file names (and
    without its evaluation/training folders) gives the same recorded numbers. Tables
    whose content does not name their attack (no run name) are left out of both."""
    import pandas as pd

    kept = [p for p in sorted(RESULTS.rglob("*.csv"))
            if "train_total_flops" in (header := pd.read_csv(p, nrows=0).columns) or "run_name" in header]
    for i, path in enumerate(kept):
        shutil.copy(path, tmp_path / f"table_{i:02d}.csv")
    renamed = analysis.load_paper_results(tmp_path)
    named = tidy[tidy["source"].isin({p.name for p in kept})]
    finetuned = paper.finetuned(named)
    expected = paper.metrics(named, paper.asr_at_budget(finetuned, 10),
                             paper.attack_scaling(finetuned, [0.01, 0.99])[0],
                             paper.offense_defense(paper.adversarial(named), [0.02, 0.05])[0])
    finetuned = paper.finetuned(renamed)
    at_budget = paper.asr_at_budget(finetuned, 10)
    scaling, _, _ = paper.attack_scaling(finetuned, [0.01, 0.99])
    fits, _, _ = paper.offense_defense(paper.adversarial(renamed), [0.02, 0.05])
    again = paper.metrics(renamed, at_budget, scaling, fits)
    assert again == expected and len(expected["offense_defense_pooled_slopes"]) >= 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"budget": 0}, "budget=0"), ({"budget": 2.5}, "budget=2.5"), ({"robustness_budget": -1}, "robustness_budget"),
        ({"thresholds": []}, "thresholds=\\[\\]"), ({"thresholds": [0]}, "thresholds=\\[0\\]"),
        ({"thresholds": 0.02}, "thresholds=0.02"), ({"asr_range": [0.5]}, "asr_range=\\[0.5\\]"),
        ({"asr_range": [0.2, 0.1]}, "asr_range"), ({"asr_range": [0, 2]}, "asr_range"),
        ({"results_dir": 3}, "results_dir=3"), ({"asr_range": ["a", "b"]}, "asr_range"),
    ],
)
def test_more_bad_values(tmp_path, kwargs, match):
    (tmp_path / "x.csv").write_text("asr,iteration\n0,0\n")
    with pytest.raises(ValueError, match=match):
        paper.PaperResultsConfig(**{"results_dir": str(tmp_path), **kwargs})


def test_config_bad_values(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        paper.PaperResultsConfig(results_dir=str(tmp_path / "missing-folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*holds no .csv"):
        paper.PaperResultsConfig(results_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"thresholds=\[0.02, 5\]"):
        paper.PaperResultsConfig(results_dir=str(tmp_path), thresholds=[0.02, 5])
    with pytest.raises(ValueError, match="budget=0"):
        paper.PaperResultsConfig(results_dir=str(tmp_path), budget=0)
    with pytest.raises(ValueError, match="asr_range"):
        paper.PaperResultsConfig(results_dir=str(tmp_path), asr_range=[0.5, 0.1])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['budgets'\]"):
        paper.PaperResultsConfig.from_dict({"budgets": 3})
    monkeypatch.delenv("ROBUSTLIB_PAPER_RESULTS", raising=False)
    with pytest.raises(FileNotFoundError, match="ROBUSTLIB_PAPER_RESULTS is not set"):
        paper.PaperResultsConfig()
    (tmp_path / "x.csv").write_text("asr,iteration\n0,0\n")
    cfg = paper.PaperResultsConfig(results_dir=str(tmp_path))
    assert cfg.folder() == tmp_path and cfg.resolve_inputs("s") == {"results": str(tmp_path)}
    monkeypatch.setenv("ROBUSTLIB_PAPER_RESULTS", str(tmp_path))
    assert paper.PaperResultsConfig().folder() == tmp_path


def test_registered_as_the_notebooks_config():
    assert studies.config_class("05_paper_results") is paper.PaperResultsConfig
