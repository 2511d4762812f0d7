"""The generative setting's numbers: judged ASR and the pre-attack refusal rate, each
with a Wilson interval (the paper's choice for this setting), for the lab's
``generative`` table and the paper's released StrongREJECT evaluation alike.

In a tidy attack table of a generative evaluation, ``n_attacked`` is the number of
prompts the model refused before the attack (the ASR's denominator) and ``n_examples``
the number of prompts, so the refusal rate is their ratio: the released tables' "pre
attack accuracy".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .tidy import require_columns


def wilson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n`` at level ``1 - alpha`` (NaNs when
    ``n`` is 0)."""
    if n == 0:
        return math.nan, math.nan
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(int(successes), int(n), alpha=alpha, method="wilson")
    return float(low), float(high)


def _intervals(successes: pd.Series, n: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    pairs = [wilson(int(round(k)), int(m)) if m > 0 else (math.nan, math.nan) for k, m in zip(successes, n)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def with_intervals(tidy: pd.DataFrame) -> pd.DataFrame:
    """``tidy`` plus ``asr_low``/``asr_high`` (Wilson, from ``asr x n_attacked``
    successes of ``n_attacked``) and ``refusal_rate`` (``n_attacked / n_examples``) with
    ``refusal_rate_low``/``refusal_rate_high``; columns already there are kept."""
    require_columns(tidy, {"asr", "n_attacked", "n_examples"}, "tidy table")
    out = tidy.copy()
    n, total = out["n_attacked"].astype(float), out["n_examples"].astype(float)
    if not {"asr_low", "asr_high"} <= set(out.columns):
        out["asr_low"], out["asr_high"] = _intervals(out["asr"].fillna(0) * n, n)
    if "refusal_rate" not in out.columns:
        out["refusal_rate"] = n / total.where(total > 0)
    if not {"refusal_rate_low", "refusal_rate_high"} <= set(out.columns):
        out["refusal_rate_low"], out["refusal_rate_high"] = _intervals(n, total)
    return out


def judged_at_budget(tidy: pd.DataFrame, iteration="last", by=("source", "model", "num_params"),
                     keep=()) -> pd.DataFrame:
    """Per group ``by`` (one curve each: a generative evaluation has one seed), the row
    at ``iteration`` (``"last"``: each curve's largest) with its intervals
    (:func:`with_intervals`): ``by``, ``iteration``, ``asr``, ``asr_low``, ``asr_high``,
    ``refusal_rate`` (+ interval), ``n_attacked``, ``n_examples``, then the columns
    ``keep``."""
    by = [c for c in by if c in tidy.columns]
    require_columns(tidy, {"iteration", *by, *keep}, "tidy table")
    data = with_intervals(tidy)
    if iteration == "last":
        data = data[data["iteration"] == data.groupby(by, dropna=False)["iteration"].transform("max")]
    else:
        data = data[data["iteration"] == iteration]
        if data.empty:
            raise ValueError(f"no generative evaluation recorded at iteration {iteration}")
    if data.duplicated(by).any():
        dup = data[data.duplicated(by, keep=False)][by].drop_duplicates().to_dict("records")
        raise ValueError(f"more than one curve per group {by}: {dup[:3]}; split the table first (seeds, attacks)")
    cols = by + ["iteration", "asr", "asr_low", "asr_high", "refusal_rate", "refusal_rate_low", "refusal_rate_high",
                 "n_attacked", "n_examples", *keep]
    return data[cols].sort_values([c for c in ("source", "num_params") if c in by]).reset_index(drop=True)


__all__ = ["judged_at_budget", "wilson", "with_intervals"]
