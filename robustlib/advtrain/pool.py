"""Pool sampling: which attacked examples a round of adversarial training trains on.

Pool example ``i`` (in order of addition, so ``i`` is its recency rank) has a loss rank
``l_i`` (0 = lowest loss; examples never trained on have loss +inf, so rank highest)
and is drawn with weight ``exp(decay * (rank_i - max rank))`` where ``rank_i = (1 - w)
* i + w * l_i``: recent and hard examples first. ``"rank"`` (the default) uses true
ranks. The paper's code computed ``l = argsort(losses)``, which is the *permutation
that sorts* the losses, not each example's rank (position ``i`` of the argsort holds
the index of the ``i``-th smallest loss), so its loss term weighted examples almost
arbitrarily; ``"paper"`` reproduces that faithfully, ``"uniform"`` ignores both terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SAMPLING = ("rank", "paper", "uniform")


def loss_ranks(losses: Sequence[float], method: str = "rank") -> np.ndarray:
    """Loss term of the sampling rank. ``"rank"``: each example's rank by loss (0 =
    lowest; ties by position; NaN/None = never trained on = +inf). ``"paper"``: the
    paper's ``argsort(losses)``, a permutation rather than ranks (see the module doc)."""
    x = np.array([math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in losses],
                 dtype=float)
    order = np.argsort(x, kind="stable")
    if method == "paper":
        return order.astype(float)
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x))
    return ranks


def sampling_log_weights(losses: Sequence[float], decay: float, loss_rank_weight: float,
                         method: str = "rank") -> np.ndarray:
    """Unnormalised log sampling weights of the pool (in order of addition):
    ``decay * (rank - max rank)`` with ``rank = (1 - w) * recency + w * loss rank``."""
    if method not in SAMPLING:
        raise ValueError(f"sampling method {method!r} is invalid; accepted: {SAMPLING}")
    n = len(losses)
    if method == "uniform" or n == 0:
        return np.zeros(n)
    ranks = (1 - loss_rank_weight) * np.arange(n, dtype=float) + loss_rank_weight * loss_ranks(losses, method)
    return decay * (ranks - ranks.max())


def sampling_probabilities(losses, decay, loss_rank_weight, method="rank") -> np.ndarray:
    """Probability of each pool example to be the *first* one drawn (weights normalised)."""
    logw = sampling_log_weights(losses, decay, loss_rank_weight, method)
    w = np.exp(logw - logw.max()) if len(logw) else logw
    return w / w.sum() if len(w) else w


def sample_without_replacement(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``k`` distinct indices, each draw proportional to the weights of those left
    (successive sampling, as ``numpy.random.choice(replace=False, p=...)``), by the
    Gumbel-top-k trick in log space: no weight underflows however large the pool."""
    n = len(log_weights)
    if not 0 <= k <= n:
        raise ValueError(f"cannot draw {k} examples without replacement from a pool of {n}")
    keys = np.asarray(log_weights, dtype=float) + rng.gumbel(size=n)
    return np.sort(np.argsort(-keys, kind="stable")[:k])
