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
    return compute(tidy, cfg)


def compute(tidy, cfg):
    finetuned = paper.finetuned(tidy)
    at_budget, _ = paper.asr_at_budget(finetuned, cfg.budgets)
    scaling, _, _ = paper.attack_scaling(finetuned, cfg.asr_range)
    groups = paper.adversarial(tidy)
    fits, charts, skipped = paper.offense_defense(groups, cfg.thresholds)
    transfer, _ = paper.rounds_table(paper.adversarial(tidy, "transfer"), cfg.robustness_budgets)
    generative, _ = paper.asr_at_budgets(paper.generative(tidy), cfg.robustness_budgets)
    return {"finetuned": finetuned, "groups": groups, "fits": fits, "skipped": skipped, "transfer": transfer,
            "metrics": paper.metrics(tidy, at_budget, scaling, fits, transfer, generative)}


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
    assert "ian_142a_gen_strongreject_gcg_qwen25.csv" not in set(finetuned["source"])  # generative, apart


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
    cfg = paper.PaperResultsConfig(results_dir=str(tmp_path))
    expected, again = compute(named, cfg)["metrics"], compute(renamed, cfg)["metrics"]
    expected.pop("sources"), again.pop("sources")
    assert again == expected and len(expected["offense_defense_pooled_slopes"]) >= 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"budgets": {"gcg": 0}}, "budgets="), ({"budgets": {"gcg": 2.5}}, "budgets="),
        ({"budgets": 10}, "budgets=10"), ({"robustness_budgets": {"": 5}}, "robustness_budgets"),
        ({"robustness_budgets": {"gcg": -1}}, "robustness_budgets"),
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
    with pytest.raises(ValueError, match="budgets=.*positive integers"):
        paper.PaperResultsConfig(results_dir=str(tmp_path), budgets={"gcg": 0})
    with pytest.raises(ValueError, match="asr_range"):
        paper.PaperResultsConfig(results_dir=str(tmp_path), asr_range=[0.5, 0.1])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['budget'\]"):
        paper.PaperResultsConfig.from_dict({"budget": 3})
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


# ------------------------------------------------------------- the new figures, against the CSVs


def by_size(raw):
    """The size name of each row of a released table (pythia-14m, Qwen2.5-0.5B, ...)."""
    return raw["model_name_or_path"].str.extract(r"(pythia-[0-9.]+[mb]|Qwen2\.5-[0-9.]+B(?:-Instruct)?)")[0]


@needs_results
def test_every_attack_is_read_at_its_own_budget(computed):
    """BEAST on fine-tuned Pythia (Harmless) at its 25 iterations, GCG on the same task at
    10: medians over seeds, straight from the CSVs."""
    recorded = computed["metrics"]["asr_at_budget_median"]
    for name, iteration, label in (("tom_019b_beast_eval_pythia_ft_harmless.csv", 25, "pythia harmless, beast"),
                                   ("ian_102a_gcg_pythia_harmless.csv", 10, "pythia harmless, gcg"),
                                   ("tom_022b_beast_eval_qwen25_ft_spam.csv", 25, "qwen2.5 spam, beast")):
        raw = latest(csv(name), ["num_params", "seed_idx", "iteration"])
        at = raw[raw["iteration"] == iteration]
        direct = at.groupby(by_size(at))["asr"].median()
        assert recorded[label] == pytest.approx(direct.to_dict(), abs=1e-6), label


@needs_results
def test_transfer_asr_at_the_last_round_equals_the_csv(computed):
    """RandomToken-trained Pythia attacked with GCG (128 iterations) and suffix-GCG-trained
    Pythia attacked with GCG at the prefix: per size, the median over seeds of the ASR
    at 128 iterations at that size's last evaluated round."""
    recorded = computed["metrics"]["transfer_asr_last_round"]
    for name, label in (("tom_011_eval_niki_151_gcg.csv", "pythia password_match, random_token-trained, gcg"),
                        ("tom_016_eval_niki_170_gcg_prefix.csv", "pythia spam, gcg-trained, gcg@0")):
        raw = latest(csv(name), ["num_params", "seed_idx", "adv_training_round", "iteration"])
        raw = raw[raw["iteration"] == 128].assign(size=by_size)
        last = raw[raw["adv_training_round"] == raw.groupby("size")["adv_training_round"].transform("max")]
        direct = last.groupby("size")["asr"].median()
        assert recorded[label] == pytest.approx(direct.to_dict(), abs=1e-6), label
    # BEAST on GCG-trained Qwen2.5 (Harmless): read at BEAST's 25 iterations, not GCG's 128
    beast = computed["transfer"][computed["transfer"]["condition"] == "qwen2.5 harmless, gcg-trained, beast"]
    assert set(beast["iteration"]) == {25} and len(beast) == 4
    # the paper's finding: GCG-trained models resist BEAST (ASR falls from the first to the last round)
    assert (beast["asr_last"] < beast["asr_first"]).all()


@needs_results
def test_generative_asr_per_size_equals_the_csv(computed):
    raw = csv("ian_142a_gen_strongreject_gcg_qwen25.csv")
    direct = raw.groupby(by_size(raw))["asr"].median()
    assert computed["metrics"]["generative_asr"]["qwen2.5-chat strongreject, gcg"] == pytest.approx(
        direct.to_dict(), abs=1e-6)


@needs_results
def test_offense_defense_as_fractions_of_pretraining_equals_a_direct_fit(tidy, computed):
    """The pooled slope on the pretraining-fraction axes: both axes of each point divided
    by the size's released pretrain_compute (from the training CSV), refitted."""
    direct = pythia_pm_offense_defense(0.05)
    training = csv("niki_171_adv_tr_gcg_pm_small.csv").drop_duplicates("num_params")
    pretrain = direct["n"].map(dict(zip(training["num_params"], training["pretrain_compute"]))).astype(float)
    y, x = direct["y"] - np.log10(pretrain), direct["x"] - np.log10(pretrain)
    A = np.column_stack([np.ones(len(x)), x, np.log10(direct["n"].to_numpy(dtype=float))])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    fits, _, _ = paper.offense_defense({PM_TRAINED: computed["groups"][PM_TRAINED]}, [0.05], normalise="pretrain")
    assert fits.loc[fits["model"] == "pooled", "slope"].item() == pytest.approx(coef[1], abs=1e-6)


@needs_results
def test_slopes_resting_on_the_anchor_alone_are_flagged(computed):
    """GCG at the prefix on suffix-trained Pythia Spam: every curve is past 5% ASR at its
    first recorded iteration (12), so every crossing is a line from (0, 0); the table
    says so and the recorded metrics leave that slope out."""
    raw = csv("tom_016_eval_niki_170_gcg_prefix.csv")
    raw = raw[(raw["adv_training_round"] > 0) & (raw["iteration"] > 0)]
    first = raw[raw["iteration"] == raw.groupby(["num_params", "seed_idx", "adv_training_round"])[
        "iteration"].transform("min")]
    assert (first["asr"] >= 0.05).all()
    fits = computed["fits"]
    prefix = fits[fits["pair"] == "pythia spam, gcg-trained, gcg@0"]
    assert (prefix["anchored"] == 1).all() and prefix["note"].str.contains("line from \\(0, 0\\)").all()
    assert not any(k.startswith("pythia spam") for k in computed["metrics"]["offense_defense_pooled_slopes"])
    pm = fits[(fits["pair"] == PM_TRAINED) & (fits["model"] == "pooled")]
    assert (pm["anchored"] < 0.2).all() and (pm["note"] == "").all()


@needs_results
def test_the_papers_defense_axis_is_the_mean_over_training_seeds(tidy):
    """``defense_flops_seed_mean`` equals the release's own ``mean_train_total_flops``
    where no seed of that size and round was a restart glitch (the Spam table has none)."""
    raw = latest(csv("niki_170_adv_tr_gcg_spam_small.csv"), ["num_params", "seed_idx", "adv_training_round"])
    released = raw.groupby(["num_params", "adv_training_round"])["mean_train_total_flops"].first()
    ev = tidy[(tidy["source"] == "tom_016_eval_niki_170_gcg_prefix.csv") & (tidy["round"] > 0)]
    ours = ev.groupby(["num_params", "round"])["defense_flops_seed_mean"].first()
    assert len(ours) > 20
    assert ours.to_numpy() == pytest.approx(released.reindex(ours.index).to_numpy(), rel=1e-9)
    # where the evaluated seed is one of several, the mean differs from its own figure
    assert (ev["defense_flops_seed_mean"] != ev["defense_flops"]).any()


# --------------------------------------------------------------------- any subset of the release


@needs_results
def test_each_file_alone_gives_what_it_supports(tmp_path):
    """One file at a time, renamed: every figure the file supports is computed, none
    raises, and what it holds lands in the right section."""
    cfg_defaults = {}
    for i, path in enumerate(sorted(RESULTS.rglob("*.csv"))):
        folder = tmp_path / f"only_{i:02d}"
        folder.mkdir()
        shutil.copy(path, folder / "results.csv")
        release = paper.load(folder)
        cfg = paper.PaperResultsConfig(results_dir=str(folder), **cfg_defaults)
        tidy = release.evaluations
        if tidy.empty:  # a training table alone
            assert len(release.training) and release.notes
            compute_table = paper.training_compute(release.training)
            assert compute_table["median"].notna().all() and len(compute_table)
            continue
        out = compute(tidy, cfg)
        sections = (len(out["finetuned"]), len(out["groups"]), len(paper.generative(tidy)))
        assert sum(bool(n) for n in sections) == 1, (path.name, sections)
        if out["groups"]:  # no training table beside it: every offense/defense fit is skipped, with the reason
            assert out["fits"].empty and out["skipped"]


def _outputs(run) -> tuple[str, int]:
    """A run's notebook: its printed text and how many charts it drew."""
    import json

    cells = json.loads((run.path / "notebook.ipynb").read_text())["cells"]
    text, charts = [], 0
    for cell in cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            text.append("".join(out.get("text", "")))
            charts += "image/svg+xml" in out.get("data", {})
    return "\n".join(text), charts


@needs_results
@pytest.mark.slow
@pytest.mark.parametrize("subset", ["renamed", "training tables only", "one evaluation file"])
def test_the_notebook_runs_on_any_subset(subset, tmp_path):
    """05 on its defaults, pointed at renamed copies of the whole release, at a folder of
    training tables alone, and at the generative evaluation alone: it runs through,
    draws what the folder supports and says what it skipped."""
    from robustlib import runner

    folder = tmp_path / "release"
    folder.mkdir()
    files = sorted(RESULTS.rglob("*.csv"))
    if subset == "training tables only":
        files = [p for p in files if "train_total_flops" in p.read_text().split("\n", 1)[0]]
    elif subset == "one evaluation file":
        files = [p for p in files if "strongreject" in p.name]  # renamed below: its content must say it
    for i, path in enumerate(files):
        shutil.copy(path, folder / f"t{i:02d}.csv")
    run = runner.run_notebook("05_paper_results", {"results_dir": str(folder)}, study=f"subset-{len(files)}",
                              progress=False)
    assert run.state == "completed"
    text, charts = _outputs(run)
    if subset == "renamed":
        assert charts >= 30 and "skipped" not in text
        assert set(run.metrics) >= {"transfer_asr_last_round", "generative_asr", "offense_defense_pooled_slopes"}
    elif subset == "training tables only":
        assert "no evaluation tables" in text and "skipped: no evaluation of fine-tuned classifiers" in text
        assert charts == len(files)  # defense compute vs round, one chart per training condition (one a file)
    else:
        assert "skipped: no transfer evaluation" in text and "no training tables" in text
        # its content says StrongREJECT (chat models, 313 prompts) but not the attack: no run name
        assert list(run.metrics["generative_asr"]) == ["qwen2.5-chat strongreject, unknown"] and charts == 1
