"""Restarted adversarial-training runs in released training tables: which rows to trust.

``train_total_flops`` is cumulative, so within one (model, seed) it should never fall
from round to round. Restarted runs break that in two ways, and only one of them is a
glitch worth dropping:

* **a counter that restarted**: the value falls to a small fraction of what an earlier
  round had reached (Pythia-14m seed 0 in the PasswordMatch table: 6.6e11 at round 43
  after 3.9e16 at round 42). Such a row says nothing about the compute spent;
* **a tiny wobble**: a later round sits a fraction of a percent below an earlier one
  (Qwen2.5-3B seed 0 in the Spam table: 3.910e17 at round 2 after 3.934e17 at round 1,
  0.6% lower). Both rows are within rounding of each other; neither is dropped.

The rule (:func:`restart_glitches`):

1. Walking each run's rounds in order, a value below ``fall`` times the largest value
   kept so far is a disagreement between the two rows. The one farther (in log10)
   from the median of the other seeds at its own round is the glitch: a lone spike can
   be the earlier row, after which the later rows are kept. Where either row has no
   other seed to compare with, the later row is taken for the restarted counter (the
   common case).
2. Then, with at least ``min_peers`` seeds left at a (size, round), a value more than
   ``far`` times off their median (either way) is a glitch: a restart at round 1 cannot
   fall below round 0's zero, but sits orders of magnitude below the other seeds.
   This comes second because where most seeds of a round restarted (Pythia-2.8b round
   3: three of five), the median of all of them is a restart's figure.
3. Anything else, tiny decreases included, is kept.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: A fall to below this fraction of an earlier round's value is a restarted counter.
FALL = 0.5
#: A value more than this factor off the median of the other seeds is a glitch.
FAR = 10.0
#: Seeds a (size, round) needs before its median judges a value on its own.
MIN_PEERS = 3


def _peer_median(values: pd.Series, cohort: pd.Series, keep: pd.Series, index) -> float:
    """Median of the kept values of the same cohort (size and round), ``index`` itself left out."""
    same = (cohort == cohort[index]) & keep
    same[index] = False
    peers = values[same]
    return float(peers.median()) if len(peers) else math.nan


def restart_glitches(frame: pd.DataFrame, value: str = "defense_flops", run=("num_params", "seed"),
                     seed: str = "seed", order: str = "round", fall: float = FALL, far: float = FAR,
                     min_peers: int = MIN_PEERS) -> pd.Series:
    """Boolean Series (``frame``'s index): True for rows that are restart glitches by the
    rule in the module docstring. ``frame``: one training table, one row per run (the
    ``run`` columns) and ``order`` value, deduplicated already. The other seeds of a
    row are the rows sharing its ``run`` columns except ``seed``, at the same ``order``."""
    if not 0 < fall < 1:
        raise ValueError(f"fall={fall!r} is invalid; accepted: a fraction in (0, 1)")
    if not far > 1:
        raise ValueError(f"far={far!r} is invalid; accepted: a factor above 1")
    run = list(run)
    if seed not in run:
        raise ValueError(f"seed={seed!r} must be one of the run columns {run}")
    values = frame[value].astype(float)
    cohort_keys = [c for c in run if c != seed] + [order]
    cohort = pd.Series(list(zip(*(frame[c] for c in cohort_keys))), index=frame.index)
    glitch = pd.Series(False, index=frame.index)
    # 1. large falls within a run, resolved against the other seeds
    log_dev = lambda i: abs(math.log10(values[i] / m)) if values[i] > 0 and (  # noqa: E731
        m := _peer_median(values, cohort, ~glitch, i)) > 0 else math.nan
    for _, g in frame.sort_values(run + [order], kind="stable").groupby(run, sort=False, dropna=False):
        kept: list = []
        for i in g.index:
            if np.isnan(values[i]):
                continue
            while kept:
                top = max(kept, key=lambda k: values[k])
                if values[i] >= fall * values[top]:
                    break
                dev_top, dev_new = log_dev(top), log_dev(i)
                if not (math.isnan(dev_top) or math.isnan(dev_new)) and dev_top > dev_new:
                    glitch[top] = True  # the earlier row was the outlier: drop it, look again
                    kept.remove(top)
                    continue
                glitch[i] = True
                break
            if not glitch[i]:
                kept.append(i)
    # 2. far off the other seeds at that size and round, once restarted counters are out
    # (where most seeds of a round restarted, their median is itself a restart's figure)
    clean = values.where(~glitch)
    peers = frame.assign(_v=clean).groupby(cohort_keys, dropna=False)["_v"]
    median, count = peers.transform("median"), peers.transform("count")
    off = ~glitch & (count >= min_peers) & ((values < median / far) | (values > median * far))
    glitch |= off.fillna(False)
    return glitch
