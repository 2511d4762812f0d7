import random

import pytest
import torch

from robustlib import finetune as ft
from robustlib import tasks

TOY = tasks.Task(
    name="toy_colour",
    version="1",
    instructions="Is the colour warm?\n\n",
    content_template="Colour: {c}\n",
    class_strings=(" NO", " YES"),
    attack_kind="slot",
    source="generated",
)
WARM, COLD = ["red", "orange", "yellow", "pink"], ["blue", "green", "cyan", "grey"]


def toy_examples(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        out.append(TOY.make_example(label, c=rng.choice(WARM if label else COLD)))
    return out


def test_tiny_model_learns(tiny_classifier):
    model, tok = tiny_classifier
    train, val = toy_examples(256, 0), toy_examples(64, 1)
    acc0, _, _ = ft.evaluate(model, tok, val)
    cfg = ft.FinetuneConfig(epochs=3, batch_size=16, lr=1e-2, optimizer="adamw", warmup_ratio=0.1, progress=False)
    res = ft.finetune(model, tok, train, val, cfg)
    assert acc0 <= 0.75 and res.val_accuracy >= 0.95  # it learned, from chance
    assert res.steps == 48 and res.examples_seen == 768
    assert sum(res.train_losses[-5:]) / 5 < sum(res.train_losses[:5]) / 5 / 4
    n = sum(p.numel() for p in model.parameters())
    assert res.num_params == n
    assert res.flops["train_flops_paper"] == 6 * n * res.flops["train_tokens"]
    assert res.flops["eval_flops_paper"] == 2 * n * res.flops["eval_tokens"]
    assert res.flops["train_flops_real"] > 0 and res.flops["eval_flops_real"] > 0


def test_adafactor_runs_and_is_deterministic(tiny_classifier, zoo_tokenizer):
    train, val = toy_examples(32, 0), toy_examples(16, 1)
    cfg = ft.FinetuneConfig(epochs=1, batch_size=8, lr=1e-3, optimizer="adafactor", progress=False, seed=5)
    results = []
    for _ in range(2):
        from transformers import GPTNeoXForSequenceClassification

        torch.manual_seed(0)
        model = GPTNeoXForSequenceClassification(tiny_classifier[0].config)
        results.append(ft.finetune(model, zoo_tokenizer, train, val, cfg))
    assert results[0].train_losses == results[1].train_losses
    assert results[0].val_loss == results[1].val_loss


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"optimizer": "sgd"}, "optimizer"),
        ({"lr": 0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"schedule": "step"}, "schedule"),
        ({"dtype": "float8"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"epochs": -1}, "epochs"),
    ],
)
def test_bad_training_settings_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ft.FinetuneConfig(**kwargs)


def test_unknown_key_and_empty_data(tiny_classifier):
    with pytest.raises(ValueError, match="unknown FinetuneConfig key"):
        ft.FinetuneConfig.from_dict({"learning_rate": 1e-3})
    model, tok = tiny_classifier
    with pytest.raises(ValueError, match="empty"):
        ft.finetune(model, tok, [], toy_examples(4, 0), ft.FinetuneConfig(progress=False))
    with pytest.raises(ValueError, match="max_length"):
        ft.finetune(model, tok, toy_examples(4, 0), toy_examples(4, 0), ft.FinetuneConfig(max_length=3))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"task": "passwordmatchx"}, "passwordmatchx"),
        ({"family": "gpt5"}, "gpt5"),
        ({"sizes": ["pythia-14m"]}, "not in family"),
        ({"sizes": []}, "non-empty"),
        ({"seeds": [0, 0]}, "duplicates"),
        ({"seeds": ["a"]}, "integers"),
        ({"n_train": 0}, "n_train"),
        ({"lr": 2.0}, "lr"),
    ],
)
def test_study_config_rejects_bad_values(kwargs, match):
    with pytest.raises((ValueError, KeyError), match=match):
        ft.FinetuneStudyConfig(**kwargs)


def test_study_config_rejects_unknown_parameter():
    with pytest.raises(ValueError, match="unknown parameter"):
        ft.FinetuneStudyConfig.from_dict({"size": ["zoo-1m"]})


def test_study_records_checkpoints_and_resumes_without_retraining(tmp_path, monkeypatch):
    from robustlib import models, record

    cfg = ft.FinetuneStudyConfig(sizes=["zoo-0.3m"], seeds=[0, 1], n_train=16, n_val=8, batch_size=8)
    run = record.RunStore(tmp_path).create_run("s", {"k": 1}, notebook="01_finetune")
    real_finetune = ft.finetune
    calls = []

    def killed_after_first(*a, **k):
        if calls:
            raise KeyboardInterrupt  # the process dies while training the second model
        calls.append(1)
        return real_finetune(*a, **k)

    monkeypatch.setattr(ft, "finetune", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        ft.run_study(cfg, run, progress=False)
    table = run.load_table("finetune")
    assert list(table["model_key"]) == ["zoo-0.3m__seed0"]  # the finished model is recorded
    first = table.iloc[0].to_dict()

    monkeypatch.setattr(ft, "finetune", real_finetune)
    resumed = ft.run_study(cfg, run, progress=False)
    assert list(resumed["model_key"]) == ["zoo-0.3m__seed0", "zoo-0.3m__seed1"]
    assert resumed.iloc[0]["val_accuracy"] == first["val_accuracy"]  # not retrained
    assert resumed.iloc[0]["wall_seconds"] == first["wall_seconds"]
    # Checkpoints are safetensors and reload into the same classifier.
    model, tok = models.load_classifier(resumed.iloc[1]["checkpoint"])
    assert (run.artifact_path("models", "zoo-0.3m__seed1") / "model.safetensors").exists()
    assert sum(p.numel() for p in model.parameters()) == resumed.iloc[1]["num_params"]
    summary = ft.summarize(resumed)
    assert list(summary["seeds"]) == [2]
    assert summary["min"].iloc[0] <= summary["median"].iloc[0] <= summary["max"].iloc[0]
