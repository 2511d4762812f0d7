"""Counting compute, two ways.

**Paper convention** (Howe et al., "Scaling Trends in Language Model Robustness",
section on compute; the same accounting as Kaplan et al. 2020 and Hoffmann et al.
2022): a forward pass costs ``2 N`` FLOPs per token and a backward pass ``4 N``, so a
training step costs ``6 N`` per token, where ``N`` is the parameter count of the model
as loaded (embeddings included) and tokens include padding, counted as if no KV cache
were used. Pretraining compute is ``6 N D``.

**Real**: what the kernels actually executed: the matrix-multiply FLOPs that
``torch.utils.flop_counter.FlopCounterMode`` counts for the exact shapes run
(attention's quadratic terms included, embedding look-ups excluded, padding included
because padded positions are computed too). Counting is done on the step itself, once
per distinct input shape, and cached, so it costs no extra forward pass; once a few
sequence lengths of a step are measured and fit the quadratic a transformer's cost
follows, the rest are computed from it (:func:`counted`).

Worked example: Pythia-14m as a causal LM has 14,067,712 parameters, so a forward
pass costs 2 x 14,067,712 = 28,135,424 FLOPs per token.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

#: Tokens every Pythia model was pretrained on: 299.89B (the deduplicated Pile, seen
#: for about 1.5 epochs); the paper's pretraining compute is 6 N times this.
PYTHIA_PRETRAIN_TOKENS = 299_892_736_000
#: Tokens Qwen2.5 was pretrained on, as published (18T, every size; Qwen2.5 technical
#: report). The paper's release does not use one count for its Qwen2.5 sizes: see
#: :func:`robustlib.models.pretrain_compute`.
QWEN25_PRETRAIN_TOKENS = 18_000_000_000_000


def forward_flops(num_params: int, tokens: int) -> int:
    """Paper convention: ``2 N`` FLOPs per token for a forward pass."""
    return 2 * int(num_params) * int(tokens)


def backward_flops(num_params: int, tokens: int) -> int:
    """Paper convention: ``4 N`` FLOPs per token for a backward pass."""
    return 4 * int(num_params) * int(tokens)


def training_flops(num_params: int, tokens: int) -> int:
    """Paper convention: ``6 N`` FLOPs per token for a training step (forward + backward)."""
    return 6 * int(num_params) * int(tokens)


def pretrain_flops(num_params: int, tokens: int = PYTHIA_PRETRAIN_TOKENS) -> int:
    """``6 N D``: compute spent pretraining a model of ``N`` parameters on ``D`` tokens."""
    return training_flops(num_params, tokens)


def count_params(model: torch.nn.Module) -> int:
    """Parameter count of a model as loaded (the paper's ``N``)."""
    return sum(p.numel() for p in model.parameters())


@dataclass
class FlopTally:
    """Running totals in both conventions, plus the tokens they were computed on.

    ``paper`` follows the 2N/4N rule; ``real`` is what was executed (FlopCounterMode).
    """

    paper: int = 0
    real: int = 0
    tokens: int = 0
    _real_cache: dict = field(default_factory=dict, repr=False)

    def as_dict(self, prefix: str = "") -> dict[str, int]:
        return {f"{prefix}flops_paper": self.paper, f"{prefix}flops_real": self.real, f"{prefix}tokens": self.tokens}


@contextmanager
def _counting():
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    with mode:
        yield mode


# Real FLOPs of a step, by model fingerprint and step key: shared by every run in the
# process (a second seed, a later adversarial-training round, another study).
_MEASURED: dict[tuple, dict] = {}


def fingerprint(model) -> tuple:
    """What a model's real FLOPs for a given input shape depend on: its class, its
    configuration, its parameters' dtype and its device type (never its weights).
    Read afresh on every call (about 0.1 ms), so a configuration changed in place counts."""
    param = next(model.parameters())
    config = model.config.to_json_string(use_diff=False) if hasattr(model, "config") else ""
    return type(model).__name__, config, str(param.dtype), param.device.type


def measured(model) -> dict:
    """The process-wide cache of real FLOPs per step key for models like ``model``."""
    return _MEASURED.setdefault(fingerprint(model), {})


def counted(tally: FlopTally, key, num_params: int, tokens: int, backward: bool, fn: Callable[[], object],
            cache: dict | None = None):
    """Run ``fn`` (a forward, or forward+backward, step) and add its cost to ``tally``.

    ``key`` identifies the shape of the step (e.g. ``("train", batch, seq)``): the real
    FLOP count is measured the first time a key is seen and reused afterwards, since
    matmul FLOPs depend only on shapes. ``cache``: where measurements are kept, e.g.
    ``measured(model)`` (taken once per run, outside the step loop) to share them with
    every run on a model of the same architecture in the process; by default ``tally``'s.
    """
    tally.paper += (training_flops if backward else forward_flops)(num_params, tokens)
    tally.tokens += tokens
    cache = tally._real_cache if cache is None else cache
    known = cache.get(key)
    if known is None:
        known = _predicted(cache, key)
    if known is not None:
        tally.real += known
        return fn()
    with _counting() as mode:
        out = fn()
    cache[key] = int(mode.get_total_flops())
    tally.real += cache[key]
    return out


#: Distinct sequence lengths measured before a ``(tag, batch, seq)`` key is predicted
#: rather than measured: three fix the quadratic, every further one checks it.
_FIT_POINTS = 5


def _predicted(cache: dict, key) -> int | None:
    """The real FLOPs of ``key = (tag, batch, seq)`` from earlier measurements, or None.

    A transformer step's matmul FLOPs are ``batch * (a + b seq + c seq^2)`` (linear
    layers per token, attention's two products per pair of tokens). Once
    :data:`_FIT_POINTS` sequence lengths of a tag are measured and all fall exactly on
    the quadratic through three of them, every other length is computed from it; a
    model for which they do not (an architecture whose cost is not of that form) keeps
    being measured shape by shape. The verdict is kept in ``cache`` under ``(tag, "fit")``.
    """
    if not (isinstance(key, tuple) and len(key) == 3 and all(isinstance(v, int) for v in key[1:])):
        return None
    tag, batch, seq = key
    fit = cache.get((tag, "fit"))
    if fit is None:
        per_row, linear_in_batch = {}, True
        for k, total in cache.items():
            if isinstance(k, tuple) and len(k) == 3 and k[0] == tag and isinstance(k[2], int) and k[1]:
                linear_in_batch &= total % k[1] == 0 and per_row.get(k[2], total // k[1]) == total // k[1]
                per_row[k[2]] = total // k[1]
        if linear_in_batch and len(per_row) < _FIT_POINTS:
            return None
        fit = linear_in_batch and _quadratic(per_row)
        cache[(tag, "fit")] = fit
    if not fit:
        return None
    a, b, c = fit
    value = a + b * seq + c * seq * seq
    return None if value.denominator != 1 or value < 0 else batch * int(value)


def _quadratic(points: dict[int, int]):
    """Exact coefficients ``(a, b, c)`` (Fractions) of the quadratic through the first
    three points that every point lies on, or False."""
    from fractions import Fraction

    (x0, y0), (x1, y1), (x2, y2) = sorted(points.items())[:3]
    # Newton's divided differences, exactly.
    d01 = Fraction(y1 - y0, x1 - x0)
    d12 = Fraction(y2 - y1, x2 - x1)
    c = (d12 - d01) / (x2 - x0)
    b = d01 - c * (x0 + x1)
    a = y0 - b * x0 - c * x0 * x0
    ok = all(a + b * x + c * x * x == y for x, y in points.items())
    return (a, b, c) if ok else False


def readable(value: float, digits: int = 3) -> str:
    """A large (or tiny) number as people write compute: ``1.91e13`` (``digits``
    significant digits, no ``+`` or leading zeros in the exponent); ordinary numbers
    as they are."""
    value = float(value)
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        if value.is_integer():
            return str(int(value))
        text = f"{value:.{digits}g}"
        return f"{float(text):f}".rstrip("0").rstrip(".") if "e" in text else text
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def mfu(flops: float, seconds: float, peak_flops_per_second: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s as a fraction of the hardware's peak."""
    if seconds <= 0 or peak_flops_per_second <= 0:
        raise ValueError(f"seconds ({seconds}) and peak ({peak_flops_per_second}) must be positive")
    return flops / seconds / peak_flops_per_second
