import pytest
import torch

from robustlib import flops, models


def test_pythia_14m_forward_flops_per_token():
    n = models.num_params("pythia-14m", "causal_lm")
    assert n == 14_067_712
    assert flops.forward_flops(n, 1) == 28_135_424


def test_paper_convention_ratios():
    assert flops.backward_flops(10, 3) == 2 * flops.forward_flops(10, 3)
    assert flops.training_flops(7, 11) == 6 * 7 * 11
    assert flops.pretrain_flops(1_000) == 6 * 1_000 * flops.PYTHIA_PRETRAIN_TOKENS


def test_pretrain_compute_is_the_releases_convention():
    """6 N D with N the backbone (no head, no unembedding): Pythia-14m's 7,628,800, not
    its causal LM's 14,067,712; Qwen2.5 at its published 18T tokens."""
    assert models.pretrain_compute("pythia-14m") == 6 * 7_628_800 * 299_892_736_000
    assert models.num_params("pythia-14m", "backbone") == 7_628_800 == models.num_params("pythia-14m") - 2 * 128
    backbone = models.num_params("qwen2.5-0.5B", "backbone")
    assert models.pretrain_compute("qwen2.5-0.5B") == 6 * backbone * 18_000_000_000_000
    assert backbone == models.num_params("qwen2.5-0.5B") - 2 * 896
    with pytest.raises(ValueError, match="kind='lm'.*backbone"):
        models.num_params("pythia-14m", "lm")


def test_counted_tallies_both_conventions(tiny_classifier):
    model, tok = tiny_classifier
    n = flops.count_params(model)
    x = torch.randint(1, 100, (3, 20))
    tally = flops.FlopTally()
    for _ in range(2):
        flops.counted(tally, ("fwd", 3, 20), n, x.numel(), False, lambda: model(input_ids=x))
    assert tally.paper == 2 * (2 * n * 60)
    assert tally.tokens == 120
    # The real count comes from the kernels: measured once, reused for the same shape.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as mode:
        model(input_ids=x)
    assert tally.real == 2 * mode.get_total_flops() > 0
    # A training step counts the backward too: about 3x a forward's matmuls.
    t2 = flops.FlopTally()

    def step():
        out = model(input_ids=x).logits.sum()
        out.backward()

    flops.counted(t2, ("train", 3, 20), n, x.numel(), True, step)
    assert t2.paper == 6 * n * 60
    assert 2.5 * mode.get_total_flops() <= t2.real <= 3.5 * mode.get_total_flops()


def test_measurements_are_shared_by_runs_on_the_same_architecture(tiny_classifier, monkeypatch):
    """A second run (another seed, a later round) on a model of the same architecture
    reuses the first's measurement; the tally's totals are the same."""
    import copy

    import torch.utils.flop_counter as fc

    model, tok = tiny_classifier
    n = flops.count_params(model)
    x = torch.randint(1, 100, (2, 9))
    first = flops.FlopTally()
    flops.counted(first, ("fwd", 2, 9), n, x.numel(), False, lambda: model(input_ids=x),
                   cache=flops.measured(model))

    class Refuse(fc.FlopCounterMode):
        def __enter__(self):
            raise AssertionError("measured again")

    monkeypatch.setattr(fc, "FlopCounterMode", Refuse)
    twin = copy.deepcopy(model)  # other weights would not matter either
    second = flops.FlopTally()
    flops.counted(second, ("fwd", 2, 9), n, x.numel(), False, lambda: twin(input_ids=x),
                   cache=flops.measured(twin))
    assert second.real == first.real > 0


def _measure(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as mode:
        fn()
    return int(mode.get_total_flops())


@pytest.mark.parametrize("arch", ["gpt_neox", "qwen2", "llama"])
def test_unseen_shapes_are_computed_exactly_once_the_fit_is_checked(arch, make_tiny_lm, zoo_tokenizer):
    """After five measured lengths the quadratic predicts every other (batch, length),
    forward and training step alike, to the FLOP the counter would report."""
    model = make_tiny_lm(arch, zoo_tokenizer)
    n = flops.count_params(model)

    def forward(b, s):
        x = torch.randint(1, 100, (b, s))
        return lambda: model(input_ids=x)

    def train(b, s):
        x = torch.randint(1, 100, (b, s))
        return lambda: model(input_ids=x).logits.sum().backward()

    for tag, step in (("fwd", forward), ("train", train)):
        cache: dict = {}
        tally = flops.FlopTally()
        for s in (7, 11, 12, 20, 31):  # measured (batch 2); the fit is checked on the last two
            flops.counted(tally, (tag, 2, s), n, 2 * s, tag == "train", step(2, s), cache=cache)
        for b, s in ((3, 9), (1, 57), (5, 140)):
            before = tally.real
            flops.counted(tally, (tag, b, s), n, b * s, tag == "train", step(b, s), cache=cache)
            assert (tag, b, s) not in cache  # computed, not measured
            assert tally.real - before == _measure(step(b, s)) > 0
        assert cache[(tag, "fit")], "the quadratic fits the five measurements"


def test_a_cost_off_the_quadratic_keeps_being_measured():
    """A step whose FLOPs are cubic in the length never gets a fit: every shape is measured."""
    def step(s):
        a = torch.ones(s, s)
        return lambda: a @ a  # 2 s^3 FLOPs

    cache: dict = {}
    tally = flops.FlopTally()
    for s in (2, 3, 4, 5, 6, 7):
        flops.counted(tally, ("cube", 1, s), 1, s, False, step(s), cache=cache)
    assert cache[("cube", "fit")] is False
    assert ("cube", 1, 7) in cache and tally.real == sum(2 * s**3 for s in (2, 3, 4, 5, 6, 7))


def test_mfu_rejects_nonpositive():
    assert flops.mfu(1e12, 2.0, 1e12) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seconds"):
        flops.mfu(1.0, 0.0, 1.0)
