"""Sweeps, without running anything: grid expansion, per-notebook settings, bad grids
refused before any compute, dependency order, run identities, the --dry-run arithmetic."""

from __future__ import annotations

import pytest

from robustlib import models, runner, sweep
from robustlib.__main__ import main
from robustlib.sweep import estimate

SMALL = {"n_train": 32, "n_val": 16, "epochs": 1.0}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUSTLIB_REPORTS", str(tmp_path / "reports"))


def grid_file(**grid):
    return {"study": "g", "grid": {"family": "zoo", "sizes": ["zoo-0.3m", "zoo-1m"], "seeds": [0, 1], **grid},
            "notebooks": {"01_finetune": dict(SMALL), "02_attack": {"n_examples": 2},
                          "03_adversarial_training": {}, "04_offense_defense": {}}}


def by_stage(jobs):
    out = {}
    for j in jobs:
        out.setdefault(j.notebook, {}).setdefault(j.kind, []).append(j)
    return out


def test_a_pipeline_file_is_a_one_cell_grid():
    planned = sweep.plan("params/smoke.yaml")
    stages = by_stage(planned.jobs)
    # smoke: 01 defaults (zoo-0.3m, zoo-1m; seed 0): one job per model and stage, one merge each
    assert [len(stages["01_finetune"]["model"]), len(stages["01_finetune"]["merge"])] == [2, 1]
    assert [len(stages["02_attack"]["model"]), len(stages["03_adversarial_training"]["model"])] == [2, 2]
    assert len(stages["04_offense_defense"]["cell"]) == 1
    assert {j.study for j in planned.jobs if j.kind == "model"} == {"smoke.models"}
    assert {j.study for j in planned.jobs if j.kind != "model"} == {"smoke"}
    # the merged 01 is the run the pipeline's 01 makes (same settings, so the same run name)
    merged = planned.run_of(stages["01_finetune"]["merge"][0].key)
    assert merged.name == runner.planned_run("01_finetune", {}, "smoke").name


def test_axes_expand_into_cells_and_per_model_jobs():
    data = grid_file(task=["password_match", "word_length"], seeds_by_size={"zoo-1m": [0]},
                     attacks=[{"name": "gcg", "iterations": 1, "top_k": 8, "n_candidates": 4},
                              {"name": "random_token", "iterations": 2}], positions=[1.0])
    data["notebooks"]["03_adversarial_training"] = {"cells": {"task": ["word_length"]}}
    del data["notebooks"]["04_offense_defense"]
    planned = sweep.plan(data)
    cells = planned.study_file.cells
    assert [(c.task, c.study) for c in cells] == [("password_match", "g-password_match-zoo"),
                                                  ("word_length", "g-word_length-zoo")]
    assert cells[0].models == [("zoo-0.3m", 0), ("zoo-0.3m", 1), ("zoo-1m", 0)]
    stages = by_stage(planned.jobs)
    assert len(stages["01_finetune"]["model"]) == 2 * 3  # cells x models
    assert len(stages["02_attack"]["model"]) == 2 * 2 * 3  # cells x attacks x models
    assert len(stages["02_attack"]["merge"]) == 2 * 2
    assert {j.cell.task for j in stages["03_adversarial_training"]["model"]} == {"word_length"}
    one = next(j for j in stages["02_attack"]["model"] if j.size == "zoo-1m" and j.attack.startswith("random"))
    assert one.params["attack"] == {"name": "random_token", "iterations": 2}
    assert one.deps == (f"01_finetune:{one.cell.task}/zoo/zoo-1m/seed0",)
    merged_ft = next(j for j in stages["01_finetune"]["merge"] if j.cell.task == "password_match")
    assert merged_ft.params["seeds_by_size"] == {"zoo-1m": [0]} and len(merged_ft.merges) == 3


def test_jobs_come_after_what_they_need_and_analyses_read_merged_runs():
    planned = sweep.plan(grid_file())
    position = {j.key: i for i, j in enumerate(planned.jobs)}
    for job in planned.jobs:
        assert all(position[d] < position[job.key] for d in job.deps), job.key
    analysis = next(j for j in planned.jobs if j.notebook == "04_offense_defense")
    assert {planned.by_key[k].kind for k in analysis.inputs.values()} == {"merge"}
    # a per-model 02 run names its own model's 01 run as input, the merged 02 the merged 01
    attack = next(j for j in planned.jobs if j.notebook == "02_attack" and j.kind == "model")
    refs = planned.input_refs(attack)
    assert refs["finetune_run"].startswith("g.models/01_finetune-")


def test_per_model_defense_trains_as_long_as_the_merged_run_would():
    data = grid_file(sizes=["zoo-0.3m", "zoo-1m", "zoo-3m"], seeds=[0])
    data["notebooks"]["03_adversarial_training"] = {"rounds": 9, "min_rounds": 3, "rounds_by_size": {"zoo-1m": 5}}
    planned = sweep.plan(data)
    jobs = {j.size: j for j in planned.jobs if j.notebook == "03_adversarial_training" and j.kind == "model"}
    cfg = runner.validate_parameters("03_adversarial_training", data["notebooks"]["03_adversarial_training"])
    from robustlib.studies import AdvTrainStudyConfig

    cfg = AdvTrainStudyConfig.from_dict(cfg)
    n = {s: models.num_params(s) for s in jobs}
    expected = {s: cfg.rounds_for(s, n[s], min(n.values()), max(n.values())) for s in jobs}
    assert expected == {"zoo-0.3m": 9, "zoo-1m": 5, "zoo-3m": 3}
    assert {s: j.params["rounds_by_size"] for s, j in jobs.items()} == {s: {s: r} for s, r in expected.items()}


@pytest.mark.parametrize("change,match", [
    (lambda d: d["grid"].update(sizez=["zoo-1m"]), r"unknown grid key\(s\) \['sizez'\]"),
    (lambda d: d["grid"].update(seeds=[]), "seeds"),
    (lambda d: d["grid"].update(seeds=[0, 0]), "duplicates"),
    (lambda d: d["grid"].update(family=["zoo", "pythia"]), "mapping of each family"),
    (lambda d: d["grid"].update(seeds_by_size={"zoo-8m": [0]}), r"seeds_by_size names \['zoo-8m'\]"),
    (lambda d: d["notebooks"]["01_finetune"].update(sizes=["zoo-1m"]), "set both in grid.sizes"),
    (lambda d: d["notebooks"]["02_attack"].update(finetune_study="other"), "sweep sets itself"),
    (lambda d: d["notebooks"]["03_adversarial_training"].update(sizes=["zoo-3m"]), r"names \['zoo-3m'\]"),
    (lambda d: d["notebooks"]["03_adversarial_training"].update(cells={"task": ["spam"]}), "matches no cell"),
    (lambda d: d["notebooks"]["02_attack"].update(resources={"gpu": 1}), "resources"),
    (lambda d: d["notebooks"].update({"09_nope": {}}), "unknown notebook"),
    (lambda d: d.update(grids={}), "unknown top-level"),
    (lambda d: d["notebooks"]["02_attack"].update(n_examples=0), r"job 02_attack:password_match/zoo/.*n_examples"),
    (lambda d: d["notebooks"]["01_finetune"].update(lr="fast"), r"job 01_finetune:.*lr"),
    (lambda d: d["notebooks"].pop("03_adversarial_training"), "04_offense_defense on cell .* needs"),
])
def test_bad_grids_are_refused_before_anything_runs(change, match, tmp_path):
    data = grid_file()
    change(data)
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        sweep.plan(data)
    assert not (tmp_path / "runs").exists()  # nothing recorded


def test_the_command_line_refuses_a_bad_grid_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("study: g\ngrid: {seeds: [0], sizes: [zoo-9m]}\nnotebooks: {01_finetune: {}}\n")
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zoo-9m" in err and "accepted" in err


def test_dry_run_arithmetic_on_a_small_grid():
    data = {"study": "g", "grid": {"family": "zoo", "sizes": ["zoo-1m"], "seeds": [0, 1]},
            "notebooks": {"01_finetune": dict(SMALL),
                          "02_attack": {"n_examples": 3, "attack": {"name": "gcg", "iterations": 2, "top_k": 8,
                                                                    "n_candidates": 5}}}}
    planned = sweep.plan(data)
    table = estimate.table(planned.jobs, "h100", 0.5).set_index("stage")
    n, length = models.num_params("zoo-1m"), 87  # PasswordMatch's typical tokens
    finetune = 6 * n * length * 32 * 1.0 + 2 * n * length * 16
    attack = 3 * 2 * (3 + 5) * 2 * n * (length + 10)  # examples x iterations x (gradient + candidates) x forward
    assert table.loc["01_finetune", "jobs"] == 3  # two models and their merge
    assert table.loc["01_finetune", "flops"] == pytest.approx(2 * finetune)
    assert table.loc["02_attack", "flops"] == pytest.approx(2 * attack)
    assert table.loc["01_finetune", "disk_bytes"] == 2 * n * 4
    assert table.loc["total", "flops"] == pytest.approx(2 * (finetune + attack))
    assert table.loc["total", "gpu_hours"] == pytest.approx(2 * (finetune + attack) / (989e12 * 0.5) / 3600)
    with pytest.raises(ValueError, match="unknown GPU 'tpu'"):
        estimate.gpu_hours(1.0, "tpu", 0.3)


def test_dry_run_of_the_paper_studies_prices_hub_models_without_the_hub(capsys):
    assert main(["sweep", "params/paper-pythia.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "03_adversarial_training" in out and "GPU-hours: one H100" in out and "total" in out


def test_defending_fewer_seeds_of_some_sizes():
    data = grid_file(seeds=[0, 1, 2])
    data["notebooks"]["03_adversarial_training"] = {"seeds_by_size": {"zoo-1m": [2]}}
    defended = [(j.size, j.seed) for j in sweep.plan(data).jobs
                if j.notebook == "03_adversarial_training" and j.kind == "model"]
    assert defended == [("zoo-0.3m", 0), ("zoo-0.3m", 1), ("zoo-0.3m", 2), ("zoo-1m", 2)]
    # the merged run selects the same models from the fine-tuning table
    import pandas as pd

    from robustlib.studies import AdvTrainStudyConfig, advtrain

    table = pd.DataFrame([{"model": s, "seed": k, "num_params": i} for i, s in enumerate(["zoo-0.3m", "zoo-1m"])
                          for k in (0, 1, 2)])
    cfg = AdvTrainStudyConfig(seeds_by_size={"zoo-1m": [2]})
    assert list(zip(*advtrain.select_models(table, cfg)[["model", "seed"]].T.values)) == defended
    data["notebooks"]["03_adversarial_training"] = {"seeds_by_size": {"zoo-1m": [7]}}
    with pytest.raises(ValueError, match=r"seeds_by_size \{'zoo-1m': \[7\]\}"):
        sweep.plan(data)


@pytest.mark.parametrize("notebook,value,match", [
    ("01_finetune", {"zoo-8m": [0]}, "'zoo-8m' is not in sizes"),
    ("01_finetune", {"zoo-1m": []}, "non-empty lists of distinct integers"),
    ("01_finetune", {"zoo-1m": [0, 0]}, "non-empty lists of distinct integers"),
    ("01_finetune", {"zoo-1m": "0"}, "non-empty lists of distinct integers"),
    ("03_adversarial_training", {"zoo-1m": []}, "non-empty lists of seeds"),
    ("03_adversarial_training", {"zoo-1m": [0.5]}, "non-empty lists of seeds"),
    ("03_adversarial_training", {"zoo-1m": 1}, "non-empty lists of seeds"),
])
def test_bad_seeds_by_size_is_refused(notebook, value, match):
    params = {"sizes": ["zoo-0.3m", "zoo-1m"]} if notebook == "01_finetune" else {}
    with pytest.raises(ValueError, match=rf"seeds_by_size.*{match}"):
        runner.validate_parameters(notebook, {**params, "seeds_by_size": value})
