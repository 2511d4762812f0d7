"""robustlib.studies.finetune: the size x seed study of 01_finetune, its checkpoints,
the data it records for later studies, and resume after a kill."""

import json

import pytest

from robustlib import finetune, models, studies
from robustlib.studies import finetune as study
from robustlib.studies.base import DataSpec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"task": "passwordmatchx"}, "passwordmatchx"),
        ({"family": "gpt5"}, "gpt5"),
        ({"sizes": ["pythia-14m"]}, "not in family"),
        ({"sizes": []}, "sizes=\\[\\] is invalid; accepted: a non-empty list"),
        ({"sizes": ["zoo-1m", "zoo-1m"]}, "duplicates"),
        ({"seeds": [0, 0]}, "duplicates"),
        ({"seeds": ["a"]}, "integers"),
        ({"n_train": 0}, "n_train"),
        ({"n_val": -5}, "n_val=-5"),
        ({"lr": 2.0}, "lr"),
        ({"lr": "fast"}, "lr='fast'"),
        ({"task": "spam", "data_source": "/no/such/folder"}, "data_source=./no/such/folder. is invalid .not found"),
        ({"data_source": "/"}, "task 'password_match' is generated"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises((ValueError, KeyError), match=match):
        study.FinetuneStudyConfig(**kwargs)


def test_config_rejects_unknown_parameter():
    with pytest.raises(ValueError, match="unknown parameter"):
        study.FinetuneStudyConfig.from_dict({"size": ["zoo-1m"]})


def test_a_relative_data_source_is_recorded_absolute(tmp_path, monkeypatch):
    """Kernels run in the run's folder: a path typed relative to the user's working
    directory must be resolved where it was typed."""
    (tmp_path / "spam.jsonl").write_text(json.dumps({"text": "hi", "label": 0}) + "\n")
    monkeypatch.chdir(tmp_path)
    cfg = study.FinetuneStudyConfig(task="spam", data_source="spam.jsonl")
    assert cfg.data_source == str(tmp_path / "spam.jsonl")
    assert cfg.data() == DataSpec("spam", "1", str(tmp_path / "spam.jsonl"), 0, 128, 64)


def test_study_records_checkpoints_data_and_resumes_without_retraining(store, monkeypatch):
    cfg = study.FinetuneStudyConfig(sizes=["zoo-0.3m"], seeds=[0, 1], n_train=16, n_val=8, batch_size=8)
    run = cfg.open_run("s", store=store)
    real_finetune = study.finetune
    calls = []

    def killed_after_first(*a, **k):
        if calls:
            raise KeyboardInterrupt  # the process dies while training the second model
        calls.append(1)
        return real_finetune(*a, **k)

    monkeypatch.setattr(study, "finetune", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        study.run(cfg, run, progress=False)
    table = run.load_table("finetune")
    assert list(table["model_key"]) == ["zoo-0.3m__seed0"]  # the finished model is recorded
    first = table.iloc[0].to_dict()

    monkeypatch.setattr(study, "finetune", real_finetune)
    resumed = study.run(cfg, run, progress=False)
    assert list(resumed["model_key"]) == ["zoo-0.3m__seed0", "zoo-0.3m__seed1"]
    assert resumed.iloc[0]["val_accuracy"] == first["val_accuracy"]  # not retrained
    assert resumed.iloc[0]["wall_seconds"] == first["wall_seconds"]
    # Checkpoints are recorded relative to the run, as safetensors, and reload.
    assert resumed.iloc[1]["checkpoint"] == "artifacts/models/zoo-0.3m__seed1"
    model, tok = models.load_classifier(str(run.resolve(resumed.iloc[1]["checkpoint"])))
    folder = run.resolve(resumed.iloc[1]["checkpoint"])
    assert (folder / "model.safetensors").exists()
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert len(set(modes.values())) == 1, modes  # weights are as readable as everything else in the store
    assert sum(p.numel() for p in model.parameters()) == resumed.iloc[1]["num_params"]
    # What later studies read: the data it used, and the models with absolute checkpoints.
    assert DataSpec.of_run(run) == DataSpec("password_match", "1", None, 0, 16, 8)
    listed = study.fine_tuned_models(run)
    assert listed["checkpoint"].map(lambda c: (run.path / "artifacts" / "models").as_posix() in c).all()
    summary = study.summarize(resumed)
    assert list(summary["seeds"]) == [2]
    assert summary["min"].iloc[0] <= summary["median"].iloc[0] <= summary["max"].iloc[0]


def test_a_moved_store_still_finds_its_checkpoints(store, tmp_path):
    """Tables record checkpoints relative to the run: a study folder copied elsewhere works."""
    import shutil

    cfg = study.FinetuneStudyConfig(sizes=["zoo-0.3m"], n_train=8, n_val=4, batch_size=8)
    run = cfg.open_run("s", store=store)
    study.run(cfg, run, progress=False)
    moved = tmp_path / "elsewhere"
    shutil.copytree(store.root, moved)
    shutil.rmtree(store.root)
    from robustlib import record

    again = record.RunStore(moved).runs("s")[0]
    (path,) = study.fine_tuned_models(again)["checkpoint"]
    assert path.startswith(str(moved)) and models.load_classifier(path)[0] is not None


def test_no_models_or_no_checkpoints_are_refused(store):
    run = store.create_run("s", {}, notebook="01_finetune")
    with pytest.raises(ValueError, match="recorded no models"):
        study.fine_tuned_models(run)
    run.save_table("finetune", [{"model_key": "m__seed0", "checkpoint": "", "num_params": 1, "seed": 0}])
    with pytest.raises(ValueError, match=r"\['m__seed0'\] have no checkpoint"):
        study.fine_tuned_models(run)


def test_a_new_task_version_is_refused(store, monkeypatch):
    run = store.create_run("s", {}, notebook="01_finetune")
    DataSpec("password_match", "0", None, 0, 8, 4).save(run)
    with pytest.raises(ValueError, match="version 1 now, but the fine-tuning run used version 0"):
        DataSpec.of_run(run).examples("validation")


def test_registered_as_the_notebooks_config():
    assert studies.config_class("01_finetune") is study.FinetuneStudyConfig
    assert study.FinetuneStudyConfig().training(3) == finetune.FinetuneConfig(
        epochs=1.0, batch_size=32, lr=1e-3, optimizer="adamw", warmup_ratio=0.05, seed=3)
