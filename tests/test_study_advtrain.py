"""robustlib.studies.advtrain: every fine-tuned model defended, robustness along the
way, the transfer matrix; settings validated up front; resume."""

import json

import numpy as np
import pytest

from robustlib import analysis, evaluate, studies, tasks
from robustlib.studies import advtrain as study
from robustlib.studies.base import DataSpec

pytestmark = pytest.mark.usefixtures("one_thread")

PM = DataSpec(task="password_match", task_version="1", source=None, seed=0, n_train=16, n_val=8)
SMALL = dict(rounds=3, min_rounds=2, n_attack_examples=4, attack_iterations_start=1, attack_iterations_end=2,
             train_examples_per_round=8, eval_iterations=2, eval_examples=4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"train_attacks": ["pgd"]}, "train_attacks\\[0\\]: unknown attack 'pgd'"),
        ({"train_attacks": []}, "train_attacks=\\[\\] is invalid; accepted: a non-empty list"),
        ({"train_attacks": ["gcg", "gcg"]}, "share a label"),
        ({"train_attacks": [{"name": "gcg", "iterations": 3}]}, "'iterations' is set by attack_iterations_start"),
        ({"train_attacks": [{"name": "gcg", "position": 0.0}]}, "'position' is set by train_positions"),
        ({"train_attacks": ["beast"], "attack_iterations_end": 30}, "at most n_attack_tokens=25"),
        ({"transfer_attacks": [{"name": "gcg", "iterations": 0}]}, "transfer_attacks\\[0\\].*iterations=0"),
        ({"transfer_attacks": [{"name": "random_token", "top_k": 3}]}, "unknown random_token option"),
        ({"eval_attack": {"name": "gcg", "iterations": 5}}, "'iterations' is set by eval_iterations"),
        ({"eval_attack": {"name": "pgd"}}, "eval_attack: unknown attack 'pgd'"),
        ({"eval_every": -1}, "eval_every"),
        ({"sizes": "zoo-1m"}, "sizes='zoo-1m'"),
        ({"train_positions": [1.5]}, "train_positions=\\[1.5\\]"),
        ({"min_rounds": -2}, "min_rounds"),
        ({"lr": 2.0}, "lr"),
        ({"epochs_per_round": 0}, "epochs_per_round=0"),
        ({"warmup_ratio": 1.0}, "warmup_ratio=1.0"),
        ({"stop_on_success": "yes"}, "stop_on_success='yes'"),
        ({"keep_checkpoints": "some"}, "keep_checkpoints='some'.*all"),
        ({"dtype": "half"}, "dtype='half'"),
        ({"rounds_by_size": {"zoo-1m": 0}}, "rounds_by_size=.*positive integers"),
        ({"rounds_by_size": [60, 5]}, "rounds_by_size=\\[60, 5\\]"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
    ],
)
def test_bad_study_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        study.AdvTrainStudyConfig(**kwargs)


def test_specs_normalised_and_eval_rounds():
    cfg = study.AdvTrainStudyConfig(train_attacks=["gcg", {"name": "gcg", "label": "gcg20", "n_attack_tokens": 20}],
                                    eval_every=2)
    assert cfg.train_attacks == [{"name": "gcg"}, {"name": "gcg", "label": "gcg20", "n_attack_tokens": 20}]
    assert [s.label for s in cfg.train_specs()] == ["gcg", "gcg20"]
    assert cfg.eval_rounds(5) == [0, 2, 4, 5] and study.AdvTrainStudyConfig().eval_rounds(5) == [0, 5]
    # eval_attack {} measures each model with its own training attack, options included
    twenty = cfg.train_specs()[1]
    assert cfg.eval_spec(twenty).config(iterations=3).n_attack_tokens == 20
    other = study.AdvTrainStudyConfig(eval_attack={"name": "gcg", "n_candidates": 7})
    assert other.eval_spec(twenty).config().n_candidates == 7


@pytest.fixture()
def tiny_models(make_tiny_classifier):
    """Two tiny random-init classifiers: 'a' smaller than 'b'."""
    return {"a": make_tiny_classifier(hidden=8, layers=1), "b": make_tiny_classifier(hidden=16, layers=1)}


def test_study_records_robustness_and_transfer(tiny_models, store, make_finetune_run, monkeypatch):
    make_finetune_run(store, "s", tiny_models, PM)
    cfg = study.AdvTrainStudyConfig(
        **SMALL, train_attacks=["random_token", {"name": "gcg", "top_k": 8, "n_candidates": 4}],
        transfer_attacks=[{"name": "random_token", "iterations": 3}, {"name": "gcg", "iterations": 1, "top_k": 8,
                                                                      "n_candidates": 4}],
    )
    run = cfg.open_run("s", store=store)
    assert run.inputs == {"finetune_run": f"s/{store.latest('s', '01_finetune').name}"}
    adv, rob, tr = study.run(cfg, run, progress=False)
    # Rounds shrink with size: 3 for the smaller model, 2 for the larger.
    per_model = adv.groupby("defended_key")["round"].max().to_dict()
    assert per_model == {"a__seed0__gcg@1": 3, "a__seed0__random_token@1": 3,
                         "b__seed0__gcg@1": 2, "b__seed0__random_token@1": 2}
    # Robustness: rounds 0 and last, each with iterations 0..eval_iterations, defense compute attached.
    a_gcg = rob[rob["defended_key"] == "a__seed0__gcg@1"]
    assert sorted(set(a_gcg["round"])) == [0, 3]
    assert sorted(set(a_gcg["iteration"])) == [0, 1, 2]
    assert (a_gcg[a_gcg["round"] == 0]["defense_flops_paper"] == 0).all()
    last = adv[(adv["defended_key"] == "a__seed0__gcg@1") & (adv["round"] == 3)]["defense_flops_paper"].item()
    assert (a_gcg[a_gcg["round"] == 3]["defense_flops_paper"] == last).all()
    assert set(a_gcg["task"]) == {"password_match"} and set(a_gcg["family"]) == {"custom"}
    # Transfer: (2 models) x (undefended + 2 training attacks) x (2 eval attacks), each a curve to its budget.
    assert study.transfer_cells(tr) == 2 * 3 * 2
    budgets = tr.groupby("attack")["iteration"].max().to_dict()
    assert budgets == {"random_token": 3, "gcg": 1}
    m = evaluate.transfer_matrix(tr)
    assert set(m["train"]) == {"none", "gcg@1", "random_token@1"}
    assert set(m["eval"]) == {"gcg@1 (1 it)", "random_token@1 (3 it)"}
    assert m.groupby("model").size().to_dict() == {"a": 6, "b": 6}
    cell = tr[(tr["model"] == "b") & (tr["train_attack"] == "gcg") & (tr["attack"] == "random_token")
              & (tr["iteration"] == 3)]
    got = m[(m["model"] == "b") & (m["train"] == "gcg@1") & (m["eval"] == "random_token@1 (3 it)")]
    assert got["asr_median"].item() == pytest.approx(cell["asr"].item(), nan_ok=True)
    # Undefended rows are evaluated on the fine-tuned weights (round 0).
    assert (tr[tr["train_attack"] == "none"]["round"] == 0).all()
    assert (tr[tr["train_attack"] == "gcg"]["round"] > 0).all()
    # The tables are tidy: before/after works on them directly.
    summary = analysis.before_after(analysis.from_lab(rob), 2)
    assert len(summary) == 4 and set(summary["rounds"]) == {2, 3}

    # Round checkpoints share the store's file mode (safetensors writes 0600 by itself).
    ck = run.artifact_path("advtrain", "a__seed0__gcg@1")
    modes = {p.stat().st_mode & 0o777 for p in ck.rglob("*") if p.is_file()}
    assert len(modes) == 1, modes

    # Resume: everything is recorded, so nothing is recomputed.
    from robustlib import attacks

    monkeypatch.setattr(attacks, "run_attack", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-ran")))
    adv2, rob2, tr2 = study.run(cfg, run, progress=False)
    assert len(adv2) == len(adv) and len(tr2) == len(tr)


def test_transfer_cells_that_are_the_robustness_evaluation_are_not_attacked_again(
        tiny_models, store, make_finetune_run, monkeypatch):
    """GCG as transfer attack with the evaluation's settings and budget: its cells on the
    undefended model (round 0) and on the last round are the robustness rows, relabelled,
    and equal what attacking again gives; other cells are attacked."""
    make_finetune_run(store, "s", tiny_models, PM)
    gcg = {"name": "gcg", "top_k": 8, "n_candidates": 4}
    transfer = [dict(gcg, iterations=2), {"name": "random_token", "iterations": 2}]
    cfg = study.AdvTrainStudyConfig(**SMALL, train_attacks=[gcg], eval_attack=gcg, transfer_attacks=transfer)
    calls = []
    real = evaluate.attack

    def counting(*args, **labels):  # (model, tokenizer, examples, spec), then labels (one is "model")
        calls.append(args[3].name)
        return real(*args, **labels)

    monkeypatch.setattr(evaluate, "attack", counting)
    adv, rob, tr = study.run(cfg, cfg.open_run("s", store=store), progress=False)
    transfer_calls = calls[len(rob[["defended_key", "round"]].drop_duplicates()):]
    assert transfer_calls == ["random_token"] * 4  # 2 models x (undefended, defended): GCG reused every time
    cols = ["defended_key", "attack", "round", "iteration", "asr", "n_attacked", "attack_flops_real"]
    for (key, round_), rows in tr[tr["attack"] == "gcg"].groupby(["defended_key", "round"]):
        source = rob[(rob["defended_key"] == (key if round_ else f"{key}__gcg@1")) & (rob["round"] == round_)]
        assert list(rows.sort_values("iteration")["asr"]) == list(source.sort_values("iteration")["asr"])
    # The same study with nothing reused attacks every cell and gets the same rows.
    make_finetune_run(store, "t", tiny_models, PM)
    monkeypatch.setattr(study, "_measured_already", lambda *a: None)
    calls.clear()
    fresh = study.run(cfg, cfg.open_run("t", store=store), progress=False)[2]
    assert calls.count("gcg") > len(rob[["defended_key", "round"]].drop_duplicates())
    ordered = lambda t: t[cols].sort_values(cols[:4]).reset_index(drop=True)  # noqa: E731
    assert ordered(fresh).equals(ordered(tr))
    assert set(tr[tr["attack"] == "gcg"]["train_attack"]) == {"none", "gcg"}
    assert "defense_flops_paper" not in tr.columns
    assert (tr[tr["train_attack"] == "none"]["round"] == 0).all()


def test_one_study_holds_two_attack_lengths(tiny_models, store, make_finetune_run):
    """GCG with 4 tokens and GCG with 6 tokens (labels tell them apart) in one study:
    each defended model's pool holds attacks of its own length."""
    make_finetune_run(store, "s", {"a": tiny_models["a"]}, PM)
    cfg = study.AdvTrainStudyConfig(
        **{**SMALL, "rounds": 1, "min_rounds": 0}, eval_attack={"name": "random_token"},
        train_attacks=[{"name": "gcg", "label": "gcg4", "n_attack_tokens": 4, "top_k": 8, "n_candidates": 4},
                       {"name": "gcg", "label": "gcg6", "n_attack_tokens": 6, "top_k": 8, "n_candidates": 4}],
        transfer_attacks=[{"name": "random_token", "iterations": 2}])
    run = cfg.open_run("s", store=store)
    adv, rob, tr = study.run(cfg, run, progress=False)
    assert sorted(set(adv["train_attack"])) == ["gcg4", "gcg6"]
    from robustlib import advtrain

    tok = tasks.get_task("password_match")
    for label, n in (("gcg4", 4), ("gcg6", 6)):
        _, state = advtrain.load_round(run.artifact_path("advtrain", f"a__seed0__{label}@1"))
        assert state["config"]["attack"]["n_attack_tokens"] == n
        assert all(p["text"].startswith(tok.instructions) for p in state["pool"])
    assert set(rob["attack"]) == {"random_token"}


def test_beast_at_25_tokens_and_gcg_at_10_in_one_study(tiny_models, store, make_finetune_run):
    """The paper's settings side by side: BEAST (25 tokens, beam 7, 25 iterations) and
    GCG (10 tokens, top-k 256, 128 candidates, 10 iterations) as transfer attacks of one
    study, each at its own length and budget."""
    make_finetune_run(store, "s", {"a": tiny_models["a"]}, PM)
    cfg = study.AdvTrainStudyConfig(
        **{**SMALL, "rounds": 1, "min_rounds": 0, "eval_examples": 2}, train_attacks=["random_token"],
        transfer_attacks=[{"name": "beast", "sampler_model": "zoo-0.3m"}, {"name": "gcg", "init": "paper"}])
    assert [s.config().n_attack_tokens for s in cfg.transfer_specs()] == [25, 10]
    run = cfg.open_run("s", store=store)
    _, _, transfer = study.run(cfg, run, progress=False)
    last = transfer.groupby(["defended_key", "attack"])["iteration"].max().unstack()
    assert (last["beast"] == 25).all() and (last["gcg"] == 10).all() and len(last) == 2  # none + defended
    for _, curve in transfer.groupby(["defended_key", "attack"]):
        assert curve["attack_flops_paper"].is_monotonic_increasing and curve["iteration"].is_unique


def test_rounds_by_size_as_the_paper_set_them(tiny_models, store, make_finetune_run):
    """The paper's schedule is a table, not a line (60 rounds up to Pythia-160m, then 21,
    8, 6, 5): rounds_by_size sets a model's rounds, the others follow rounds/min_rounds,
    and a name the study does not defend is refused before any training."""
    make_finetune_run(store, "s", tiny_models, PM)
    cfg = study.AdvTrainStudyConfig(**{**SMALL, "rounds": 3, "min_rounds": 2}, rounds_by_size={"a": 1},
                                    train_attacks=["random_token"],
                                    transfer_attacks=[{"name": "random_token", "iterations": 1}])
    assert cfg.rounds_for("a", 10, 10, 100) == 1 and cfg.rounds_for("b", 100, 10, 100) == 2
    adv, _, _ = study.run(cfg, cfg.open_run("s", store=store), progress=False)
    assert adv.groupby("model")["round"].max().to_dict() == {"a": 1, "b": 2}
    bad = study.AdvTrainStudyConfig(**SMALL, rounds_by_size={"pythia-14m": 60})
    with pytest.raises(ValueError, match="rounds_by_size names \\['pythia-14m'\\].*accepted: \\['a', 'b'\\]"):
        study.run(bad, bad.open_run("s", store=store), progress=False)


def test_study_rejects_unknown_sizes(tiny_models, store, make_finetune_run):
    make_finetune_run(store, "s", tiny_models, PM)
    run = study.AdvTrainStudyConfig(sizes=["zoo-8m"]).open_run("s", store=store)
    msg = r"sizes \['zoo-8m'\] are not in the fine-tuning study; accepted: \['a', 'b'\]"
    with pytest.raises(ValueError, match=msg):
        study.run(study.AdvTrainStudyConfig(sizes=["zoo-8m"]), run)


def test_no_finetune_run_is_named(store):
    with pytest.raises(LookupError, match="no completed 01_finetune run in study 'nothing'"):
        study.AdvTrainStudyConfig().open_run("nothing", store=store)


def test_transfer_across_positions_on_a_chunk_task(tiny_models, store, make_finetune_run, tmp_path):
    """Spam (attack inside the email) from local files, read through the data the
    fine-tuning run recorded: models defended at the suffix and at the prefix, each
    attacked at both positions: the matrix is (none, suffix-, prefix-trained) x
    (suffix, prefix), and each defended model's pool holds texts attacked where it was
    trained."""
    data = tmp_path / "spam"
    data.mkdir()
    for split, n, offset in (("train", 40, 0), ("validation", 8, 100)):
        rows = [{"text": f"Subject: note {i + offset}\nMeeting moved to room {i + offset}, bring the slides.",
                 "label": i % 2} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spam = DataSpec(task="spam", task_version="1", source=str(data), seed=0, n_train=16, n_val=8)
    make_finetune_run(store, "s", tiny_models, spam)
    cfg = study.AdvTrainStudyConfig(
        sizes=["a"], train_attacks=["random_token"], train_positions=[1.0, 0.0], rounds=2, n_attack_examples=4,
        attack_iterations_start=1, attack_iterations_end=2, train_examples_per_round=8, eval_iterations=2,
        eval_examples=4, transfer_attacks=[{"name": "random_token", "iterations": 3}], transfer_positions=[1.0, 0.0],
    )
    run = cfg.open_run("s", store=store)
    adv, rob, tr = study.run(cfg, run, progress=False)
    assert sorted(set(adv["defended_key"])) == ["a__seed0__random_token@0", "a__seed0__random_token@1"]
    assert study.transfer_cells(tr) == 3 * 2  # (undefended + 2 training positions) x 2 evaluation positions
    m = evaluate.transfer_matrix(tr)
    assert set(m["train"]) == {"none", "random_token@1", "random_token@0"}
    assert set(m["eval"]) == {"random_token@1 (3 it)", "random_token@0 (3 it)"}
    final = tr[tr["iteration"] == 3]
    for (train, ev), g in final.groupby(["train_position", "position"], dropna=False):
        key = "none" if np.isnan(train) else f"random_token@{train:g}"
        cell = m[(m["train"] == key) & (m["eval"] == f"random_token@{ev:g} (3 it)")]
        assert cell["asr_median"].item() == pytest.approx(g["asr"].median(), nan_ok=True)
    # Robustness is measured at the training position.
    assert set(zip(rob["defended_key"], rob["position"])) == {("a__seed0__random_token@1", 1.0),
                                                              ("a__seed0__random_token@0", 0.0)}
    # Pool texts: the suffix-trained model saw the email first, the prefix-trained one the attack first.
    from robustlib import advtrain

    instructions = tasks.get_task("spam").instructions
    for key, position in (("a__seed0__random_token@1", 1.0), ("a__seed0__random_token@0", 0.0)):
        _, state = advtrain.load_round(run.artifact_path("advtrain", key))
        starts_with_email = [p["text"][len(instructions):].startswith("Subject:") for p in state["pool"]]
        assert len(starts_with_email) == 8 and all(starts_with_email) == (position == 1.0)
        assert not any(starts_with_email) or position == 1.0


def test_every_rounds_checkpoint_is_kept_when_asked(tiny_models, store, make_finetune_run):
    """keep_checkpoints='all': every round of a defended model stays, to be attacked later
    (the paper attacks intermediate rounds); 'latest' keeps only the last."""
    from robustlib import advtrain

    make_finetune_run(store, "s", {"a": tiny_models["a"]}, PM)
    for keep, expected in (("all", [0, 1, 2, 3]), ("evaluated", [0, 2, 3]), ("latest", [3])):
        cfg = study.AdvTrainStudyConfig(
            **{**SMALL, "min_rounds": 0}, train_attacks=["random_token"], eval_every=2, keep_checkpoints=keep,
            transfer_attacks=[{"name": "random_token", "iterations": 1}])
        run = cfg.open_run("s", store=store)
        study.run(cfg, run, progress=False)
        folder = run.artifact_path("advtrain", "a__seed0__random_token@1")
        assert sorted(int(p.name.split("_")[1]) for p in folder.glob("round_*")) == expected, keep
        model = tiny_models["a"]
        assert advtrain.load_round(folder, expected[0], model=model)[0] == expected[0]


def test_training_and_attacks_at_bf16(tiny_models, store, make_finetune_run):
    """dtype='bfloat16': the rounds train in mixed precision (weights stay float32, so
    the saved rounds do) and every robustness and transfer row says bfloat16."""
    from robustlib import advtrain

    make_finetune_run(store, "s", {"a": tiny_models["a"]}, PM)
    cfg = study.AdvTrainStudyConfig(**{**SMALL, "min_rounds": 0, "rounds": 2}, train_attacks=["random_token"],
                                    dtype="bfloat16", transfer_attacks=[{"name": "random_token", "iterations": 1}])
    assert cfg.model_config(cfg.train_specs()[0], 1.0, 2).training.dtype == "bfloat16"
    run = cfg.open_run("s", store=store)
    adv, robustness, transfer = study.run(cfg, run, progress=False)
    assert set(robustness["dtype"]) == {"bfloat16"} and set(transfer["dtype"]) == {"bfloat16"}
    assert len(adv) == 2 and np.isfinite(adv["train_loss"]).all()
    model = tiny_models["a"]
    advtrain.load_round(run.artifact_path("advtrain", "a__seed0__random_token@1"), model=model)
    assert next(model.parameters()).dtype.is_floating_point and str(next(model.parameters()).dtype) == "torch.float32"


def test_registered_as_the_notebooks_config():
    assert studies.config_class("03_adversarial_training") is study.AdvTrainStudyConfig
