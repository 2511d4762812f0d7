import numpy as np
import pandas as pd
import pytest
import torch

from robustlib import advtrain, finetune, models, record, tasks
from robustlib.finetune import FinetuneConfig

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- pool sampling


def test_true_ranks_vs_the_papers_argsort():
    losses = [0.3, 0.1, 0.9, 0.2]
    # True ranks: 0.1 is the lowest (rank 0), 0.9 the highest (rank 3).
    assert list(advtrain.loss_ranks(losses, "rank")) == [2, 0, 3, 1]
    # The paper's argsort: the permutation that sorts, not the ranks.
    assert list(advtrain.loss_ranks(losses, "paper")) == [1, 3, 0, 2]
    # Never trained on (None/NaN) counts as +inf: the highest rank.
    assert list(advtrain.loss_ranks([0.5, None, float("nan"), 0.1], "rank")) == [1, 2, 3, 0]


def test_sampling_weights_follow_the_formula():
    losses = [0.3, 0.1, 0.9, 0.2]
    w, decay = 0.5, 0.7
    ranks = (1 - w) * np.arange(4) + w * np.array([2, 0, 3, 1])
    expected = np.exp(decay * (ranks - ranks.max()))
    np.testing.assert_allclose(np.exp(advtrain.sampling_log_weights(losses, decay, w, "rank")), expected)
    probs = advtrain.sampling_probabilities(losses, decay, w, "rank")
    np.testing.assert_allclose(probs, expected / expected.sum())
    # Recency only: the newest example is the likeliest; loss only: the hardest one.
    assert np.argmax(advtrain.sampling_probabilities(losses, 1.0, 0.0)) == 3
    assert np.argmax(advtrain.sampling_probabilities(losses, 1.0, 1.0)) == 2
    np.testing.assert_allclose(advtrain.sampling_probabilities(losses, 1.0, 0.5, "uniform"), 0.25)
    with pytest.raises(ValueError, match="sampling method 'loss'.*accepted"):
        advtrain.sampling_log_weights(losses, 1.0, 0.5, "loss")


def test_sampling_without_replacement_matches_the_weights():
    rng = np.random.default_rng(0)
    logw = np.log(np.array([1.0, 2.0, 3.0, 4.0]))
    firsts = np.zeros(4)
    for _ in range(4000):
        keys = logw + rng.gumbel(size=4)
        firsts[np.argmax(keys)] += 1
    np.testing.assert_allclose(firsts / 4000, [0.1, 0.2, 0.3, 0.4], atol=0.03)
    draw = advtrain.sample_without_replacement(logw, 3, np.random.default_rng(1))
    assert len(set(draw.tolist())) == 3 and draw.max() < 4
    # A huge pool whose oldest weights underflow exp() still samples without error.
    huge = advtrain.sampling_log_weights([None] * 50_000, 0.005, 0.0)
    assert len(advtrain.sample_without_replacement(huge, 800, np.random.default_rng(0))) == 800
    with pytest.raises(ValueError, match="cannot draw 5 examples.*pool of 4"):
        advtrain.sample_without_replacement(logw, 5, rng)


def test_rounds_shrink_with_size_and_ramp():
    assert advtrain.rounds_for_size(10, 10, 1000, rounds=60, min_rounds=5) == 60
    assert advtrain.rounds_for_size(1000, 10, 1000, rounds=60, min_rounds=5) == 5
    assert advtrain.rounds_for_size(100, 10, 1000, rounds=60, min_rounds=6) == 33
    assert advtrain.rounds_for_size(100, 10, 1000, rounds=60) == 60  # min_rounds=0: fixed
    cfg = advtrain.AdvTrainConfig(rounds=8, attack_iterations_start=8, attack_iterations_end=64)
    assert [cfg.attack_iterations(r) for r in (1, 8)] == [8, 64]
    assert cfg.attack_iterations(4) == 32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rounds": 0}, "rounds"),
        ({"attack": "pgd"}, "pgd"),
        ({"adv_fraction": 1.5}, "adv_fraction"),
        ({"sampling": "loss"}, "sampling"),
        ({"loss_rank_weight": -1}, "loss_rank_weight"),
        ({"position": 2.0}, "position"),
        ({"n_attack_examples": 0}, "n_attack_examples"),
        ({"stop_on_success": 1}, "stop_on_success"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        advtrain.AdvTrainConfig(**kwargs)


def test_unknown_key_named():
    with pytest.raises(ValueError, match="unknown AdvTrainConfig key.*rounds_max"):
        advtrain.AdvTrainConfig.from_dict({"rounds_max": 3})


# ---------------------------------------------------------------------------- the loop

def _small_cfg(**kw):
    values = dict(rounds=3, attack="random_token", n_attack_examples=6, attack_iterations_start=1,
                  attack_iterations_end=3, train_examples_per_round=10, adv_fraction=0.8,
                  training=FinetuneConfig(epochs=1.0, lr=1e-3, optimizer="adamw", batch_size=4, progress=False))
    values.update(kw)
    return advtrain.AdvTrainConfig(**values)


@pytest.fixture(scope="module")
def data():
    clean = tasks.load_examples("password_match", "train", n=24, seed=0)
    fresh = tasks.load_examples("password_match", "train", n=24, seed=5)
    val = tasks.load_examples("password_match", "validation", n=6, seed=1)
    return clean, fresh, val


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_mixing_proportions_and_compute(tiny_classifier, data):
    model, tok = tiny_classifier
    clean, fresh, val = data
    n_params = sum(p.numel() for p in model.parameters())
    res = advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(), val_examples=val, progress=False)
    rounds = res.rounds_frame()
    assert list(rounds["round"]) == [1, 2, 3] and list(rounds["attack_iterations"]) == [1, 2, 3]
    # The pool grows by every attacked example; 80% of 10 come from it once it holds 8.
    assert list(rounds["pool_size"]) == [6, 12, 18]
    assert list(rounds["n_adversarial"]) == [6, 8, 8]
    assert list(rounds["n_clean"]) == [4, 2, 2]
    assert (rounds["n_adversarial"] + rounds["n_clean"] == 10).all()
    # Defense compute = attack generation + training, cumulative, both conventions.
    for conv in ("paper", "real"):
        per_round = rounds[f"attack_flops_{conv}"] + rounds[f"train_flops_{conv}"]
        assert (rounds[f"round_flops_{conv}"] == per_round).all()
        assert list(rounds[f"defense_flops_{conv}"]) == list(per_round.cumsum())
        assert (rounds[f"attack_flops_{conv}"] > 0).all()
    # Paper convention for training: 6 N per token, tokens including padding.
    assert (rounds["train_flops_paper"] % (6 * n_params) == 0).all()
    assert (rounds["train_flops_paper"] // (6 * n_params) >= 10 * 5).all()  # 10 examples, >= 5 tokens each
    assert rounds["val_accuracy"].between(0, 1).all()


def test_training_data_really_is_attacked_text(tiny_classifier, data, monkeypatch):
    model, tok = tiny_classifier
    clean, fresh, val = data
    seen = []
    original = finetune.finetune

    def spy(model, tokenizer, train, val_, cfg):
        seen.append(list(train))
        return original(model, tokenizer, train, val_, cfg)

    monkeypatch.setattr(finetune, "finetune", spy)  # the loop imports it at call time
    advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(rounds=1), progress=False)
    batch = seen[0]
    adv = [ex for ex in batch if isinstance(ex, advtrain.TextExample)]
    assert len(adv) == 6
    for ex in adv:
        # attacked text = a fresh example's text with an attack string in its slot, true label kept
        hosts = [f for f in fresh[:6] if _wraps(ex.text, *f.attack_split(None))]
        assert hosts and hosts[0].label == ex.label


def test_stop_on_success_changes_only_the_compute(make_tiny_classifier, zoo_tokenizer, data, tmp_path):
    """Stopping the training attack at an example's first success pools the same texts
    and trains the same weights as spending every iteration; it only spends less."""
    clean, fresh, val = data
    runs = {}
    for stop in (True, False):
        model = make_tiny_classifier()
        cfg = _small_cfg(attack="gcg", top_k=8, n_candidates=4, attack_iterations_start=3, attack_iterations_end=4,
                         rounds=2, stop_on_success=stop)
        res = advtrain.adversarial_training(model, zoo_tokenizer, clean, fresh, cfg, progress=False,
                                            checkpoint_dir=tmp_path / str(stop))
        runs[stop] = (res.rounds_frame(), advtrain.load_round(tmp_path / str(stop))[1]["pool"], _state(model))
    (early, pool_early, w_early), (full, pool_full, w_full) = runs[True], runs[False]
    assert early["train_attack_success"].sum() > 0  # some examples were broken early enough to matter
    assert [p["text"] for p in pool_early] == [p["text"] for p in pool_full]
    assert all(torch.equal(w_early[k], w_full[k]) for k in w_full)
    assert list(early["train_attack_asr"]) == list(full["train_attack_asr"])
    assert (early["attack_flops_paper"] < full["attack_flops_paper"]).all()
    assert (early["train_flops_paper"] == full["train_flops_paper"]).all()


def _wraps(text, before, after):
    return text.startswith(before) and text.endswith(after) and len(text) > len(before) + len(after)


def test_kill_and_resume_gives_the_uninterrupted_numbers(tiny_classifier, data, tmp_path):
    model, tok = tiny_classifier
    clean, fresh, val = data
    start = _state(model)

    def evaluate_round(r, m):
        with torch.no_grad():
            acc, loss, _ = finetune.evaluate(m, tok, val)
        return [{"val_loss": loss, "acc": acc}]

    kw = dict(val_examples=val, evaluate_round=evaluate_round, eval_rounds=[0, 2, 3], progress=False)
    full = advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(), **kw)
    full_state = _state(model)

    model.load_state_dict(start)

    class Killed(Exception):
        pass

    calls = []

    def dying(r, m):
        calls.append(r)
        if r == 3:
            raise Killed  # killed while evaluating round 3: rounds 1-2 are saved
        return evaluate_round(r, m)

    with pytest.raises(Killed):
        advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(), **{**kw, "evaluate_round": dying},
                                      checkpoint_dir=tmp_path / "ck")
    assert calls == [0, 2, 3]
    assert advtrain.load_round(tmp_path / "ck")[0] == 2
    model.load_state_dict(start)  # a new process: weights come from the checkpoint
    for p in model.parameters():
        p.data.add_(1.0)
    resumed = advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(), **kw,
                                            checkpoint_dir=tmp_path / "ck")
    assert resumed.resumed_from == 2
    drop = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]  # noqa: E731
    assert drop(resumed.rounds) == drop(full.rounds)
    assert resumed.evaluations == full.evaluations
    for k, v in _state(model).items():
        assert torch.equal(v, full_state[k]), k
    # Only the latest round's checkpoint is kept (unless asked).
    assert sorted(p.name for p in (tmp_path / "ck").glob("round_*")) == ["round_0003"]
    # Other settings in the same folder: refused, nothing overwritten.
    with pytest.raises(ValueError, match="other settings"):
        advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(adv_fraction=0.5), **kw,
                                      checkpoint_dir=tmp_path / "ck")
    assert advtrain.load_round(tmp_path / "ck")[0] == 3


def test_bad_inputs_fail_before_compute(tiny_classifier, data):
    model, tok = tiny_classifier
    clean, fresh, val = data
    with pytest.raises(ValueError, match="24 fresh examples given.*need 30"):
        advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(rounds=5), progress=False)
    with pytest.raises(ValueError, match="3 clean examples given"):
        advtrain.adversarial_training(model, tok, clean[:3], fresh, _small_cfg(), progress=False)
    with pytest.raises(ValueError, match="eval_rounds \\[7\\]"):
        advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(), eval_rounds=[7], progress=False)
    with pytest.raises(ValueError, match="position"):
        advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(position=0.5), progress=False)
    with pytest.raises(ValueError, match="val_examples is empty"):
        advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(), val_examples=[], progress=False)


# ---------------------------------------------------------------------------- the study


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"train_attacks": ["pgd"]}, "pgd"),
        ({"train_attacks": []}, "train_attacks is empty"),
        ({"transfer_iterations": [10]}, "one budget per transfer attack"),
        ({"transfer_iterations": [10, 0]}, "transfer_iterations"),
        ({"eval_every": -1}, "eval_every"),
        ({"eval_n_candidates": -1}, "eval_n_candidates"),
        ({"sizes": "zoo-1m"}, "sizes"),
        ({"eval_attack": "pgd"}, "pgd"),
        ({"min_rounds": -2}, "min_rounds"),
        ({"lr": 2.0}, "lr"),
        ({"epochs_per_round": 0}, "epochs_per_round=0"),
        ({"warmup_ratio": 1.0}, "warmup_ratio=1.0"),
        ({"stop_on_success": "yes"}, "stop_on_success='yes'"),
    ],
)
def test_bad_study_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        advtrain.AdvTrainStudyConfig(**kwargs)


def test_study_eval_rounds():
    cfg = advtrain.AdvTrainStudyConfig(eval_every=2)
    assert cfg.eval_rounds(5) == [0, 2, 4, 5]
    assert advtrain.AdvTrainStudyConfig().eval_rounds(5) == [0, 5]
    assert cfg.eval_config("gcg", 10, 1.0).n_candidates == cfg.n_candidates
    assert advtrain.AdvTrainStudyConfig(eval_n_candidates=7).eval_config("gcg", 10, 1.0).n_candidates == 7


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, make_tiny_classifier, zoo_tokenizer):
    """Two tiny fine-tuned models (sizes 'a' < 'b') saved as checkpoints, like 01_finetune records them."""
    root = tmp_path_factory.mktemp("study")
    rows = []
    for name, hidden in (("a", 8), ("b", 16)):
        model = make_tiny_classifier(hidden=hidden, layers=1)
        path = models.save_classifier(model, zoo_tokenizer, root / name)
        rows.append({"model_key": f"{name}__seed0", "model": name, "seed": 0,
                     "num_params": sum(p.numel() for p in model.parameters()), "checkpoint": str(path),
                     "pretrain_compute": None})
    return pd.DataFrame(rows)


def test_study_records_robustness_and_transfer(tiny_study, tmp_path, monkeypatch):
    store = record.RunStore(tmp_path)
    run = store.create_run("s", {}, notebook="03_adversarial_training")
    cfg = advtrain.AdvTrainStudyConfig(
        train_attacks=["random_token", "gcg"], rounds=3, min_rounds=2, n_attack_examples=4,
        attack_iterations_start=1, attack_iterations_end=2, top_k=8, n_candidates=4,
        train_examples_per_round=8, eval_iterations=2, eval_examples=4,
        transfer_attacks=["random_token", "gcg"], transfer_iterations=[3, 1],
    )
    adv, rob, tr = advtrain.run_advtrain_study(cfg, run, tiny_study, "password_match",
                                               finetune_params={"n_train": 16}, progress=False)
    # Rounds shrink with size: 3 for the smaller model, 2 for the larger.
    per_model = adv.groupby("defended_key")["round"].max().to_dict()
    assert per_model == {"a__seed0__gcg@1": 3, "a__seed0__random_token@1": 3,
                         "b__seed0__gcg@1": 2, "b__seed0__random_token@1": 2}
    # Robustness: rounds 0 and last, each with iterations 0..2, defense compute attached.
    a_gcg = rob[rob["defended_key"] == "a__seed0__gcg@1"]
    assert sorted(set(a_gcg["round"])) == [0, 3]
    assert sorted(set(a_gcg["iteration"])) == [0, 1, 2]
    assert (a_gcg[a_gcg["round"] == 0]["defense_flops_paper"] == 0).all()
    last = adv[(adv["defended_key"] == "a__seed0__gcg@1") & (adv["round"] == 3)]["defense_flops_paper"].item()
    assert (a_gcg[a_gcg["round"] == 3]["defense_flops_paper"] == last).all()
    # Transfer: (2 models) x (undefended + 2 training attacks) x (2 eval attacks).
    assert len(tr) == 2 * 3 * 2
    m = advtrain.transfer_matrix(tr)
    assert set(m["train"]) == {"none", "gcg@1", "random_token@1"}
    assert set(m["eval"]) == {"gcg@1 (1 it)", "random_token@1 (3 it)"}
    assert m.groupby("model").size().to_dict() == {"a": 6, "b": 6}
    assert m["asr_median"].between(0, 1).all() or m["asr_median"].isna().any()
    # Cell values are what the table holds.
    cell = tr[(tr["model"] == "b") & (tr["train_attack"] == "gcg") & (tr["eval_attack"] == "random_token")]
    got = m[(m["model"] == "b") & (m["train"] == "gcg@1") & (m["eval"] == "random_token@1 (3 it)")]
    assert got["asr_median"].item() == pytest.approx(cell["asr"].item(), nan_ok=True)
    # Undefended rows are evaluated on the fine-tuned weights (round 0).
    assert (tr[tr["train_attack"] == "none"]["round"] == 0).all()
    assert (tr[tr["train_attack"] == "gcg"]["round"] > 0).all()

    # Resume: everything is recorded, so nothing is recomputed.
    from robustlib import attacks

    monkeypatch.setattr(attacks, "run_attack", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-ran")))
    adv2, rob2, tr2 = advtrain.run_advtrain_study(cfg, run, tiny_study, "password_match",
                                                  finetune_params={"n_train": 16}, progress=False)
    assert len(adv2) == len(adv) and len(tr2) == len(tr)


def test_study_rejects_unknown_sizes(tiny_study, tmp_path):
    run = record.RunStore(tmp_path).create_run("s", {}, notebook="03_adversarial_training")
    msg = r"sizes \['zoo-8m'\] are not in the fine-tuning study; accepted: \['a', 'b'\]"
    with pytest.raises(ValueError, match=msg):
        advtrain.run_advtrain_study(advtrain.AdvTrainStudyConfig(sizes=["zoo-8m"]), run, tiny_study,
                                    "password_match")
    with pytest.raises(ValueError, match="no models"):
        advtrain.run_advtrain_study(advtrain.AdvTrainStudyConfig(), run, tiny_study.iloc[:0], "password_match")


def _robustness_table():
    rows = []
    for model, n in (("a", 100), ("b", 1000)):
        for seed in (0, 1):
            for rnd, dflops in ((0, 0), (2, 50 * n), (4, 120 * n)):
                for it in (0, 5):
                    rows.append({"model": model, "num_params": n, "seed": seed, "round": rnd, "iteration": it,
                                 "asr": 0.0 if it == 0 else max(0.0, 0.9 - 0.2 * rnd + 0.05 * seed),
                                 "n_correct_before": 10, "defense_flops_paper": dflops, "train_attack": "gcg",
                                 "train_position": 1.0, "attack": "gcg", "defended_key": f"{model}{seed}"})
    return pd.DataFrame(rows)


def test_before_after_summary():
    s = advtrain.before_after(_robustness_table(), 5)
    assert list(s["model"]) == ["a", "b"]
    row = s.iloc[0]
    assert row["asr_before"] == pytest.approx(0.925) and row["asr_after"] == pytest.approx(0.125)
    assert row["after_over_before"] == pytest.approx(0.125 / 0.925)
    assert row["rounds"] == 4 and row["seeds"] == 2 and row["defense_flops_paper"] == 12000
    with pytest.raises(ValueError, match="iteration 7"):
        advtrain.before_after(_robustness_table(), 7)


def test_robustness_and_transfer_chart_specs():
    from robustlib import plots

    spec = plots.asr_vs_round(_robustness_table(), 5).to_dict()
    area, line = spec["layer"]
    assert line["encoding"]["x"]["field"] == "round" and "logit10" in line["encoding"]["y"]["title"]
    rows = next(v for v in spec["datasets"].values() if v)
    assert len(rows) == 2 * 3  # one point per size x round, seeds aggregated
    spec = plots.asr_vs_defense_flops(_robustness_table(), 5).to_dict()
    assert spec["layer"][1]["encoding"]["x"]["scale"]["type"] == "log"
    rows = next(v for v in spec["datasets"].values() if v)
    assert min(r["defense_flops"] for r in rows) > 0  # round 0 left out of the log axis
    with pytest.raises(ValueError, match="lacks column"):
        plots.asr_vs_round(_robustness_table().drop(columns="round"), 5)
    matrix = pd.DataFrame({"model": ["a", "a"], "num_params": [1, 1], "train": ["none", "gcg@1"],
                           "eval": ["gcg@1 (10 it)"] * 2, "asr_median": [0.9, 0.2]})
    spec = plots.transfer_heatmap(matrix).to_dict()
    assert spec["facet"]["column"]["field"] == "model"
    cells = spec["spec"]["layer"][0]
    assert cells["mark"]["type"] == "rect" and cells["encoding"]["color"]["field"] == "asr_median"
    assert cells["encoding"]["x"]["field"] == "eval" and cells["encoding"]["y"]["field"] == "train"


def test_transfer_across_positions_on_a_chunk_task(tiny_study, tmp_path):
    """Spam (attack inside the email) from local files: models defended at the suffix
    and at the prefix, each attacked at both positions: the matrix is (none, suffix-,
    prefix-trained) x (suffix, prefix), and each defended model's pool holds texts
    attacked where it was trained."""
    import json

    data = tmp_path / "spam"
    data.mkdir()
    for split, n, offset in (("train", 40, 0), ("validation", 8, 100)):
        rows = [{"text": f"Subject: note {i + offset}\nMeeting moved to room {i + offset}, bring the slides.",
                 "label": i % 2} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = record.RunStore(tmp_path / "runs").create_run("s", {}, notebook="03_adversarial_training")
    cfg = advtrain.AdvTrainStudyConfig(
        sizes=["a"], train_attacks=["random_token"], train_positions=[1.0, 0.0], rounds=2, n_attack_examples=4,
        attack_iterations_start=1, attack_iterations_end=2, train_examples_per_round=8, eval_iterations=2,
        eval_examples=4, transfer_attacks=["random_token"], transfer_positions=[1.0, 0.0], transfer_iterations=[3],
    )
    adv, rob, tr = advtrain.run_advtrain_study(cfg, run, tiny_study, "spam",
                                               finetune_params={"n_train": 16, "data_source": str(data)},
                                               progress=False)
    assert sorted(set(adv["defended_key"])) == ["a__seed0__random_token@0", "a__seed0__random_token@1"]
    assert len(tr) == 3 * 2  # (undefended + 2 training positions) x 2 evaluation positions
    m = advtrain.transfer_matrix(tr)
    assert set(m["train"]) == {"none", "random_token@1", "random_token@0"}
    assert set(m["eval"]) == {"random_token@1 (3 it)", "random_token@0 (3 it)"}
    for (train, ev), g in tr.groupby(["train_position", "eval_position"], dropna=False):
        key = "none" if np.isnan(train) else f"random_token@{train:g}"
        cell = m[(m["train"] == key) & (m["eval"] == f"random_token@{ev:g} (3 it)")]
        assert cell["asr_median"].item() == pytest.approx(g["asr"].median(), nan_ok=True)
    # Robustness is measured at the training position.
    assert set(zip(rob["defended_key"], rob["position"])) == {("a__seed0__random_token@1", 1.0),
                                                              ("a__seed0__random_token@0", 0.0)}
    # Pool texts: the suffix-trained model saw the email first, the prefix-trained one the attack first.
    instructions = tasks.get_task("spam").instructions
    for key, position in (("a__seed0__random_token@1", 1.0), ("a__seed0__random_token@0", 0.0)):
        _, state = advtrain.load_round(run.artifact_path("advtrain", key))
        starts_with_email = [p["text"][len(instructions):].startswith("Subject:") for p in state["pool"]]
        assert len(starts_with_email) == 8 and all(starts_with_email) == (position == 1.0)
        assert not any(starts_with_email) or position == 1.0
