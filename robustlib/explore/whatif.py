"""The offense/defense what-if: fit log10(attack compute to reach a target ASR) on
log10(defense compute) per size (:func:`robustlib.analysis.offense_defense`), then read
the fits off: the attack compute a defense budget calls for, and the defense budget
that would push the attacker's cost to a given level.

Both read-offs use a size's own fit, ``log_attack = intercept + slope x log_defense``,
with its 95% interval from statsmodels' prediction of the mean. Budgets and results are
in the fit's units: FLOPs, or fractions of pretraining compute when fitted with
``normalise="pretrain"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class WhatIf:
    """Per-size offense/defense fits at one target ASR: ``points`` and ``per_size`` as
    :func:`robustlib.analysis.offense_defense` returns them, the statsmodels result of
    each size (``results``), and the axis (``scale``)."""

    threshold: float
    points: pd.DataFrame
    per_size: pd.DataFrame
    results: dict
    scale: str

    @property
    def models(self) -> list[str]:
        return list(self.per_size["model"])

    def attack_needed(self, model: str, defense: float) -> dict:
        """Attack compute per example to reach the target ASR against ``model`` trained
        with ``defense`` compute: ``{"attack", "low", "high"}`` (95% interval of the
        fitted mean), read off the size's line (extrapolated outside its data: see
        ``inside``)."""
        res = self._result(model)
        if not defense > 0:
            raise ValueError(f"defense={defense!r} is invalid; accepted: a positive compute")
        pred = res.get_prediction(pd.DataFrame({"log_defense": [math.log10(defense)]})).summary_frame(alpha=0.05)
        mean, lo, hi = (float(pred[c].iloc[0]) for c in ("mean", "mean_ci_lower", "mean_ci_upper"))
        seen = self.points.loc[self.points["model"] == model, "defense_flops"]
        power = lambda v: 10 ** v if v < 300 else math.inf  # noqa: E731  (far outside the data)
        return {"model": model, "defense": defense, "attack": power(mean), "low": power(lo), "high": power(hi),
                "inside": bool(seen.min() <= defense <= seen.max())}

    def defense_needed(self, model: str, attack: float) -> dict:
        """The defense compute at which the fitted attack cost of ``model`` reaches
        ``attack`` (the line inverted; None where the slope is not positive, when no
        defense budget raises the attacker's cost)."""
        row = self.per_size[self.per_size["model"] == model]
        if row.empty:
            raise ValueError(f"no fit for {model!r}; fitted: {self.models}")
        if not attack > 0:
            raise ValueError(f"attack={attack!r} is invalid; accepted: a positive compute")
        slope, intercept = float(row["slope"].iloc[0]), float(row["intercept"].iloc[0])
        if slope <= 0:
            return {"model": model, "attack": attack, "defense": None}
        return {"model": model, "attack": attack, "defense": 10 ** ((math.log10(attack) - intercept) / slope)}

    def lines(self, n: int = 20) -> pd.DataFrame:
        """Each size's fitted line with its 95% band over the defense range it was fitted
        on: ``model``, ``num_params``, ``defense_flops``, ``fit``, ``low``, ``high``."""
        out = []
        for model in self.models:
            seen = self.points.loc[self.points["model"] == model, "defense_flops"]
            grid = np.logspace(math.log10(seen.min()), math.log10(seen.max()), n)
            pred = self._result(model).get_prediction(pd.DataFrame({"log_defense": np.log10(grid)})).summary_frame(
                alpha=0.05)
            size = int(self.points.loc[self.points["model"] == model, "num_params"].iloc[0])
            out.append(pd.DataFrame({"model": model, "num_params": size, "defense_flops": grid,
                                     "fit": 10 ** pred["mean"].to_numpy(),
                "low": 10 ** pred["mean_ci_lower"].to_numpy(), "high": 10 ** pred["mean_ci_upper"].to_numpy()}))
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
            columns=["model", "num_params", "defense_flops", "fit", "low", "high"])

    def _result(self, model: str):
        if model not in self.results:
            raise ValueError(f"no fit for {model!r}; fitted: {self.models}")
        return self.results[model]


#: Target ASRs the what-if offers (its slider's stops).
THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


def fittable(tidy: pd.DataFrame, thresholds=THRESHOLDS) -> list[float]:
    """The target ASRs at which ``tidy`` gives at least one size a fit (a study whose
    defended models are never broken gives none)."""
    out = []
    for t in thresholds:
        try:
            if len(fit(tidy, t).models):
                out.append(t)
        except ValueError:
            continue
    return out


def fit(tidy: pd.DataFrame, threshold: float, normalise: str | None = None, models=None, **options) -> WhatIf:
    """Fit the what-if on an adversarial-training evaluation table (one condition):
    ``models`` keeps those sizes (default: all with a fit); ``options`` go to
    :func:`robustlib.analysis.offense_defense`."""
    import statsmodels.formula.api as smf

    from .. import analysis

    points, per_size, _, _ = analysis.offense_defense(tidy, threshold, normalise=normalise, **options)
    if models is not None:
        unknown = sorted(set(models) - set(per_size["model"]))
        if unknown:
            raise ValueError(f"models {unknown} have no fit at ASR {threshold}; fitted: {list(per_size['model'])}")
        per_size = per_size[per_size["model"].isin(models)].reset_index(drop=True)
    results = {m: smf.ols("log_attack ~ log_defense", data=points[points["model"] == m]).fit()
               for m in per_size["model"]}
    scale = points["scale"].iloc[0] if len(points) else "FLOPs"
    return WhatIf(threshold, points[points["model"].isin(per_size["model"])].reset_index(drop=True), per_size,
                  results, scale)
