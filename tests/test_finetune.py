import random

import pytest
import torch

from robustlib import finetune as ft
from robustlib import tasks

pytestmark = pytest.mark.usefixtures("one_thread")

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
    acc0, _, _ = ft.classify(model, tok, val)
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
        ({"epochs": float("nan")}, "epochs=nan.*finite number"),
        ({"epochs": float("inf")}, "epochs=inf.*finite number"),
        ({"warmup_ratio": "x"}, "warmup_ratio='x'"),
        ({"max_grad_norm": "1"}, "max_grad_norm='1'"),
        ({"seed": 1.5}, "seed=1.5.*an integer"),
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
    with pytest.raises(ValueError, match="unknown FinetuneConfig key.*lrate"):
        ft.finetune(model, tok, toy_examples(4, 0), toy_examples(4, 0), {"lrate": 1e-3})
    with pytest.raises(TypeError, match="config must be a FinetuneConfig, a dict or None; got str"):
        ft.finetune(model, tok, toy_examples(4, 0), toy_examples(4, 0), "fast")


def test_a_dict_config_is_the_same_config(tiny_classifier, zoo_tokenizer):
    from transformers import GPTNeoXForSequenceClassification

    train, val = toy_examples(16, 0), toy_examples(8, 1)
    losses = []
    for config in ({"epochs": 1, "batch_size": 8, "lr": 1e-3, "optimizer": "adamw", "progress": False},
                   ft.FinetuneConfig(epochs=1.0, batch_size=8, lr=1e-3, optimizer="adamw", progress=False)):
        torch.manual_seed(0)
        model = GPTNeoXForSequenceClassification(tiny_classifier[0].config)
        losses.append(ft.finetune(model, zoo_tokenizer, train, val, config).train_losses)
    assert losses[0] == losses[1]


def test_examples_too_long_are_left_out_and_counted(tiny_classifier, caplog):
    """The paper's length rule: an example longer than max_length, or than the model's
    context less 24 tokens (room for the attack), is left out, with the count recorded."""
    model, tok = tiny_classifier
    train, val = toy_examples(32, 0), toy_examples(8, 1)
    long_text = TOY.make_example(1, c="red " * 600)
    cfg = ft.FinetuneConfig(epochs=1, batch_size=8, lr=1e-3, optimizer="adamw", progress=False)
    with caplog.at_level("WARNING", logger="robustlib.finetune"):
        res = ft.finetune(model, tok, [*train, long_text], [*val, long_text, long_text], cfg)
    assert (res.n_dropped_train, res.n_dropped_val, res.max_tokens) == (1, 2, 488)  # context 512 - 24
    assert len(res.example_losses) == 33 and res.example_losses[-1] != res.example_losses[-1]  # NaN: never drawn
    assert res.examples_seen == 32 and "1 of 33 training examples are longer than 488 tokens" in caplog.text
    assert ft.length_limit(model, 100) == 100
    with pytest.raises(ValueError, match="all 1 training examples are longer than 488 tokens"):
        ft.finetune(model, tok, [long_text], val, cfg)


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_batch(tiny_classifier, zoo_tokenizer, caplog):
    """A forward pass of more than 4 examples 'runs out of memory': training goes on in
    micro-batches whose gradients add up to the batch's, so the numbers are those of an
    uninterrupted run (to float rounding) and the batch stays 8."""
    from transformers import GPTNeoXForSequenceClassification

    train, val = toy_examples(32, 0), toy_examples(8, 1)
    cfg = ft.FinetuneConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="adamw", progress=False, seed=2)

    def fresh():
        torch.manual_seed(0)
        return GPTNeoXForSequenceClassification(tiny_classifier[0].config)

    plain = ft.finetune(fresh(), zoo_tokenizer, train, val, cfg)
    model = fresh()
    real_forward = model.forward
    calls = []

    def small_memory(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        calls.append(rows)
        if rows > 4 and model.training:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    model.forward = small_memory
    with caplog.at_level("WARNING", logger="robustlib.finetune"):
        res = ft.finetune(model, zoo_tokenizer, train, val, cfg)
    assert res.steps == plain.steps == 4 and res.examples_seen == 32
    assert max(r for r in calls if r <= 4) == 4 and "micro-batches of 4 (the batch stays 8)" in caplog.text
    assert res.train_losses == pytest.approx(plain.train_losses, abs=1e-5)
    assert res.val_loss == pytest.approx(plain.val_loss, abs=1e-5)
    # another error is not taken for memory
    model.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        ft.finetune(model, zoo_tokenizer, train, val, cfg)


def test_precisions_and_devices_change_within_one_process():
    """accelerate refuses a second Accelerator with other settings in one process; a
    notebook fine-tunes in float32, then bf16, then on the CPU again: each run works
    and gets its own precision."""
    from robustlib import finetune as ft

    seen = []
    for dtype, device in (("float32", "auto"), ("bfloat16", "auto"), ("float32", "cpu")):
        acc = ft._accelerator(ft.FinetuneConfig(dtype=dtype, device=device))
        seen.append(acc.mixed_precision)
    assert seen == ["no", "bf16", "no"]


def test_the_precision_used_is_recorded(tiny_classifier):
    from robustlib import finetune as ft

    model, tok = tiny_classifier
    train = tasks.load_examples("password_match", "train", n=8, seed=0)
    for dtype, expected in (("auto", "float32"), ("bfloat16", "bfloat16")):
        res = ft.finetune(model, tok, train, train[:4], ft.FinetuneConfig(
            epochs=1, batch_size=8, dtype=dtype, device="cpu", progress=False))
        assert res.dtype == expected and res.device == "cpu" and res.as_record()["dtype"] == expected


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_a_run_continued_from_its_optimizer_state_is_one_run(make_tiny_classifier, zoo_tokenizer, optimizer):
    """Two steps, then two more continuing the first run's optimizer state, end where
    four steps in one run do (one full batch per step, a constant rate: the same
    updates); two more steps from a fresh optimizer do not."""
    train, val = toy_examples(8, 0), toy_examples(4, 1)
    cfg = dict(batch_size=8, lr=1e-2, optimizer=optimizer, schedule="constant", max_grad_norm=0.0, progress=False)
    keep = dict(keep_optimizer_state=True)
    seen = {}
    for name, halves in (("one run", None), ("continued", True), ("fresh", False)):
        model = make_tiny_classifier()
        if halves is None:
            res = ft.finetune(model, zoo_tokenizer, train, val, ft.FinetuneConfig(epochs=4, **cfg), **keep)
        else:
            first = ft.finetune(model, zoo_tokenizer, train, val, ft.FinetuneConfig(epochs=2, **cfg), **keep)
            given = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in e.items()}
                     for k, e in first.optimizer_state.items()}
            res = ft.finetune(model, zoo_tokenizer, train, val, ft.FinetuneConfig(epochs=2, **cfg),
                              optimizer_state=first.optimizer_state if halves else None, **keep)
            for k, entry in given.items():  # what was passed in is left as it was
                assert all(torch.equal(v, first.optimizer_state[k][n]) if torch.is_tensor(v)
                           else v == first.optimizer_state[k][n] for n, v in entry.items())
        # The losses, not the weights: parameters with no gradient but rounding (the
        # attention's key bias) take arbitrary normalised steps in both optimizers.
        seen[name] = res.train_losses[-2:] + [res.val_loss]
        steps = {float(s["step"]) for s in res.optimizer_state.values() if "step" in s}
        assert steps == {4.0 if halves in (None, True) else 2.0}, name
        assert all(v.device.type == "cpu" for s in res.optimizer_state.values() for v in s.values()
                   if torch.is_tensor(v))
        assert "optimizer_state" not in res.as_record()
    assert seen["continued"] == pytest.approx(seen["one run"], rel=1e-5)
    assert seen["fresh"][1:] != pytest.approx(seen["one run"][1:], rel=1e-3)
    # not asked for, the state is not copied out
    assert ft.finetune(make_tiny_classifier(), zoo_tokenizer, train, val,
                       ft.FinetuneConfig(epochs=1, **cfg)).optimizer_state is None


def test_an_optimizer_state_of_another_model_is_refused(make_tiny_classifier, zoo_tokenizer):
    train, val = toy_examples(8, 0), toy_examples(4, 1)
    cfg = ft.FinetuneConfig(epochs=1, batch_size=8, optimizer="adamw", progress=False)
    other = ft.finetune(make_tiny_classifier(hidden=8), zoo_tokenizer, train, val, cfg,
                        keep_optimizer_state=True).optimizer_state
    model = make_tiny_classifier()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"optimizer_state\[\d+\]\['exp_avg'\] has shape"):
        ft.finetune(model, zoo_tokenizer, train, val, cfg, optimizer_state=other)
    extra = {**ft.finetune(make_tiny_classifier(), zoo_tokenizer, train, val, cfg,
                           keep_optimizer_state=True).optimizer_state}
    extra[len(before) + 3] = extra[0]
    with pytest.raises(ValueError, match=f"parameter {len(before) + 3}; this model's adamw has {len(before)}"):
        ft.finetune(model, zoo_tokenizer, train, val, cfg, optimizer_state=extra)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # refused before any step
