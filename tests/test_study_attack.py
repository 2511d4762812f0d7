"""robustlib.studies.attack: 02_attack's config (one attack spec) and its study loop:
the data the fine-tuning run recorded, resume, tidy rows."""

import json

import pandas as pd
import pytest

from robustlib import studies
from robustlib.studies import attack as study
from robustlib.studies.base import DataSpec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"attack": "pgd"}, "attack: unknown attack 'pgd'; accepted: beast, gcg, random_token"),
        ({"attack": {"name": "gcg", "iterations": 0}}, "iterations=0"),
        ({"attack": {"name": "gcg", "position": 0.5}}, "'position' is set by position"),
        ({"attack": {"name": "gcg", "seed": 3}}, "'seed' is set by the study's seed"),
        ({"attack": {"name": "gcg", "stop_on_success": True}}, "'stop_on_success' is set by the study"),
        ({"attack": {"name": "gcg", "n_attack_tokens": 0}}, "n_attack_tokens=0"),
        ({"attack": {"name": "random_token", "top_k": 2}}, r"unknown random_token option\(s\) \['top_k'\]"),
        ({"attack": ["gcg"]}, "attack=\\['gcg'\\] is invalid; accepted: a mapping"),
        ({"position": 1.5}, "position=1.5"),
        ({"position": float("nan")}, "position=nan"),
        ({"n_examples": 0}, "n_examples"),
        ({"threads": -1}, "threads"),
        ({"seed": True}, "seed=True"),
        ({"dtype": "fp8"}, "dtype='fp8'.*bfloat16"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_bad_attack_study_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        study.AttackStudyConfig(**kwargs)


def test_unknown_parameter_named():
    with pytest.raises(ValueError, match="unknown parameter.*budget"):
        study.AttackStudyConfig.from_dict({"budget": 3})


def test_every_attack_option_can_be_set():
    cfg = study.AttackStudyConfig(attack={"name": "random_token", "resample_tries": 3, "iterations": 5})
    assert cfg.spec().config().resample_tries == 3 and cfg.iterations == 5
    assert study.AttackStudyConfig(attack="beast").attack == {"name": "beast"}  # a bare name: its defaults
    assert study.AttackStudyConfig(attack="beast").iterations == 25


def test_attack_study_records_and_resumes(store, make_finetune_run, make_tiny_classifier, monkeypatch):
    data = DataSpec("password_match", "1", None, 0, 16, 8)
    make_finetune_run(store, "s", {"a": make_tiny_classifier(hidden=8, layers=1)}, data)
    cfg = study.AttackStudyConfig(attack={"name": "gcg", "iterations": 2, "top_k": 16, "n_candidates": 8})
    run = cfg.open_run("s", store=store)
    table = study.run(cfg, run, progress=False)
    assert list(table["iteration"]) == [0, 1, 2] and table["asr"].iloc[0] == 0
    assert table["attack_flops_paper"].is_monotonic_increasing and table["attack_flops_real"].iloc[-1] > 0
    assert (table["attack_flops_real"] <= table["attack_flops_paper"]).all()  # the prefix cache saves work
    assert set(table["task"]) == {"password_match"} and set(table["round"]) == {0}
    per_example = pd.DataFrame(run.load_json("attack_examples/a__seed0.json"))
    assert set(per_example["iteration"]) <= {1, 2} and per_example["attack"].map(type).eq(str).all()
    m = study.metrics(cfg, table)
    assert m["iterations"] == 2 and m["attack"] == "gcg"
    final = table.iloc[-1]
    assert m["attack_flops_paper_total"] == round(final["attack_flops_paper"] * max(1, final["n_attacked"]))

    from robustlib import attacks

    monkeypatch.setattr(attacks, "run_attack", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-ran")))
    again = study.run(cfg, run, progress=False)
    pd.testing.assert_frame_equal(again, table, check_like=True)


def test_validation_examples_come_from_the_recorded_source(store, make_finetune_run, make_tiny_classifier,
                                                          tmp_path, monkeypatch):
    """The fine-tuning data were local Spam files: the attack reads its validation
    examples from them too, never the hub, and attacks them at a chunk position."""
    from robustlib.tasks import hub

    folder = tmp_path / "spam"
    folder.mkdir()
    for split in ("train", "validation"):
        rows = [{"text": f"Subject: {split} note {i}\nSee you in room {i}.", "label": i % 2} for i in range(12)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(hub, "_load_hub_rows", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the hub")))
    make_finetune_run(store, "s", {"a": make_tiny_classifier(hidden=8, layers=1)},
                      DataSpec("spam", "1", str(folder), 0, 8, 8))
    from robustlib import evaluate

    seen = []
    real = evaluate.attack

    def spy(*args, **kw):  # (model, tokenizer, examples, spec); labels include 'model'
        seen.extend(args[2])
        return real(*args, **kw)

    monkeypatch.setattr(evaluate, "attack", spy)
    cfg = study.AttackStudyConfig(attack={"name": "random_token", "iterations": 2}, position=0.0, n_examples=5)
    table = study.run(cfg, cfg.open_run("s", store=store), progress=False)
    assert set(table["task"]) == {"spam"} and set(table["n_examples"]) == {5} and set(table["position"]) == {0.0}
    assert len(seen) == 5 and all(ex.content.startswith("Subject: validation note") for ex in seen)
    before, _ = seen[0].attack_split(0.0)
    assert before == seen[0].instructions  # the prefix: the attack goes before the email


def test_slot_tasks_refuse_other_positions(store, make_finetune_run, make_tiny_classifier):
    make_finetune_run(store, "s", {"a": make_tiny_classifier(hidden=8, layers=1)},
                      DataSpec("password_match", "1", None, 0, 8, 4))
    cfg = study.AttackStudyConfig(position=0.5)
    with pytest.raises(ValueError, match="fixed attack slot"):
        study.run(cfg, cfg.open_run("s", store=store), progress=False)


def test_registered_as_the_notebooks_config():
    assert studies.config_class("02_attack") is study.AttackStudyConfig


def test_a_study_moved_to_another_path_keeps_working(store, make_finetune_run, make_tiny_classifier, tmp_path):
    """Inputs are recorded as <study>/<run> and checkpoints relative to their run: a whole
    store moved (or copied to another machine) is read where it now is."""
    import shutil

    from robustlib import record

    make_finetune_run(store, "s", {"a": make_tiny_classifier(hidden=8, layers=1)},
                      DataSpec("password_match", "1", None, 0, 8, 4))
    cfg = study.AttackStudyConfig(attack={"name": "random_token", "iterations": 1}, n_examples=2)
    run = cfg.open_run("s", store=store)
    first = study.run(cfg, run, progress=False)
    run.mark_completed()
    moved = record.RunStore(tmp_path / "moved")
    shutil.move(str(store.root), str(moved.root))
    again = cfg.open_run("s", store=moved)
    assert again.path.parent.parent == moved.root and again.input_run("finetune_run").path.exists()
    table = study.run(cfg, again, progress=False)
    pd.testing.assert_frame_equal(table, first, check_like=True)  # read back from the moved tables, not redone
    assert not any(str(store.root) in str(v) for v in table.to_numpy().ravel())


def test_attacks_at_another_precision(store, make_finetune_run, make_tiny_classifier):
    """dtype='bfloat16' loads the targets in bf16 and says so in every row; 'auto' is
    float32 on the CPU (the paper's precision)."""
    data = DataSpec("password_match", "1", None, 0, 16, 8)
    make_finetune_run(store, "s", {"a": make_tiny_classifier(hidden=8, layers=1)}, data)
    attack = {"name": "random_token", "iterations": 2}
    tables = {}
    for dtype in ("auto", "bfloat16"):
        cfg = study.AttackStudyConfig(attack=attack, dtype=dtype)
        tables[dtype] = study.run(cfg, cfg.open_run("s", store=store), progress=False)
    assert set(tables["auto"]["dtype"]) == {"float32"} and set(tables["bfloat16"]["dtype"]) == {"bfloat16"}
    assert len(tables["auto"]) == len(tables["bfloat16"]) == 3


def test_cuda_refused_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda"):
        study.AttackStudyConfig(device="cuda")
