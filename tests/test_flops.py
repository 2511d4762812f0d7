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


def test_mfu_rejects_nonpositive():
    assert flops.mfu(1e12, 2.0, 1e12) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seconds"):
        flops.mfu(1.0, 0.0, 1.0)
