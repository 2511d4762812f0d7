import math

import numpy as np
import pytest
import torch

from robustlib import advtrain, finetune, tasks
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
        ({"carry_optimizer": "yes"}, "carry_optimizer=.yes. is invalid; accepted: True or False"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        advtrain.AdvTrainConfig(**kwargs)


def test_unknown_key_named():
    with pytest.raises(ValueError, match="unknown AdvTrainConfig key.*rounds_max"):
        advtrain.AdvTrainConfig.from_dict({"rounds_max": 3})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        # BEAST adds one token per iteration: the default ramp (8 -> 64) outgrows its 25 tokens
        ({"attack": "beast"}, r"round 10 \(64 iterations\).*at most n_attack_tokens=25"),
        ({"attack": {"name": "beast", "n_attack_tokens": 25}, "attack_iterations_end": 30}, "round 10"),
        ({"attack": {"name": "gcg", "iterations": 5}}, "'iterations' is set by attack_iterations_start"),
        ({"attack": {"name": "gcg", "position": 0.5}}, "'position' is set by position"),
        ({"attack": {"name": "gcg", "beam_size": 3}}, r"unknown gcg option\(s\) \['beam_size'\]; accepted: .*top_k"),
        ({"attack": {"name": "gcg", "top_k": 0}}, "top_k=0"),
        ({"attack": {"top_k": 3}}, "accepted: an attack name, or a mapping with 'name'"),
        ({"attack": 3}, "accepted: an attack name"),
        ({"training": "fast"}, "training='fast' is invalid; accepted: a FinetuneConfig or a dict"),
        ({"training": {"lr": 5}}, "lr=5.0"),
        ({"adv_fraction": float("nan")}, "adv_fraction=nan.*finite number"),
        ({"seed": "0"}, "seed='0'"),
    ],
)
def test_the_whole_schedule_is_checked_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        advtrain.AdvTrainConfig(**kwargs)


def test_attack_spec_options_reach_every_round():
    cfg = advtrain.AdvTrainConfig(rounds=3, attack={"name": "beast", "n_attack_tokens": 12, "samples_per_beam": 3},
                                  attack_iterations_start=4, attack_iterations_end=12, position=1.0, seed=7)
    first, last = cfg.attack_config(1), cfg.attack_config(3)
    assert (first.iterations, last.iterations) == (4, 12)
    assert first.samples_per_beam == last.samples_per_beam == 3 and first.n_attack_tokens == 12
    assert first.skip_incorrect is False and first.stop_on_success is True and first.position == 1.0
    assert first.seed != last.seed  # each round its own stream
    assert cfg.attack == {"name": "beast", "n_attack_tokens": 12, "samples_per_beam": 3}  # normalised, recorded
    assert advtrain.AdvTrainConfig(attack="gcg").attack == {"name": "gcg"}


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

    def spy(model, tokenizer, train, val_, cfg, **kw):
        seen.append(list(train))
        return original(model, tokenizer, train, val_, cfg, **kw)

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
        cfg = _small_cfg(attack={"name": "gcg", "top_k": 8, "n_candidates": 4}, attack_iterations_start=3,
                         attack_iterations_end=4, rounds=2, stop_on_success=stop)
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


def test_a_carried_optimizer_continues_from_round_to_round(tiny_classifier, data, monkeypatch):
    model, tok = tiny_classifier
    clean, fresh, val = data
    given, ended = [], []
    original = finetune.finetune

    def spy(*args, optimizer_state=None, **kw):
        given.append(optimizer_state)
        res = original(*args, optimizer_state=optimizer_state, **kw)
        ended.append(res.optimizer_state)
        return res

    monkeypatch.setattr(finetune, "finetune", spy)
    start = _state(model)
    carried = advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(carry_optimizer=True),
                                            val_examples=val, progress=False)
    assert given[0] is None and given[1] is ended[0] and given[2] is ended[1]
    steps = [{float(s["step"]) for s in state.values()} for state in ended]
    per_round = [math.ceil(10 / 4)] * 3  # 10 examples a round in batches of 4, one epoch
    assert steps == [{float(sum(per_round[: r + 1]))} for r in range(3)]
    given.clear()
    ended.clear()
    model.load_state_dict(start)
    fresh_opt = advtrain.adversarial_training(model, tok, clean, fresh, _small_cfg(), val_examples=val,
                                              progress=False)
    assert given == [None, None, None] and ended == [None, None, None]  # nothing copied out when not carried
    # the same attacks and data in round 1; from round 2 on the optimizers differ
    assert carried.rounds[0]["train_loss"] == fresh_opt.rounds[0]["train_loss"]
    assert carried.rounds[1]["train_loss"] != fresh_opt.rounds[1]["train_loss"]


@pytest.mark.parametrize("carry", [False, True], ids=["fresh optimizer", "carried optimizer"])
def test_kill_and_resume_gives_the_uninterrupted_numbers(tiny_classifier, data, tmp_path, carry):
    model, tok = tiny_classifier
    clean, fresh, val = data
    start = _state(model)

    def cfg(**kw):
        return _small_cfg(carry_optimizer=carry, **kw)

    def evaluate_round(r, m):
        with torch.no_grad():
            acc, loss, _ = finetune.classify(m, tok, val)
        return [{"val_loss": loss, "acc": acc}]

    kw = dict(val_examples=val, evaluate_round=evaluate_round, eval_rounds=[0, 2, 3], progress=False)
    full = advtrain.adversarial_training(model, tok, clean, fresh, cfg(), **kw)
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
        advtrain.adversarial_training(model, tok, clean, fresh, cfg(), **{**kw, "evaluate_round": dying},
                                      checkpoint_dir=tmp_path / "ck")
    assert calls == [0, 2, 3]
    assert advtrain.load_round(tmp_path / "ck")[0] == 2
    model.load_state_dict(start)  # a new process: weights come from the checkpoint
    for p in model.parameters():
        p.data.add_(1.0)
    resumed = advtrain.adversarial_training(model, tok, clean, fresh, cfg(), **kw,
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
        advtrain.adversarial_training(model, tok, clean, fresh, cfg(adv_fraction=0.5), **kw,
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
