"""Regressions on tidy attack tables (statsmodels OLS, 95% intervals).

* **attack scaling** (:func:`attack_scaling`, :func:`attack_scaling_pooled`):
  logit10(ASR) on log10(attack FLOPs per example), per size, then the slopes on
  log10(parameters);
* **robustness vs size** (:func:`robustness_vs_size`) at a fixed attack budget;
* **offense vs defense** (:func:`offense_defense`): log10(attack FLOPs per example to
  reach X% ASR) on log10(defense FLOPs), per size and pooled with a size term. A
  slope below 1 means each extra decade of defense compute raises the attacker's cost
  by less than a decade: doubling both budgets favours the attacker.

Every fit returns its rows as plain dicts or frames with :data:`FIT_COLUMNS`. A fit the
data cannot support (fewer than 3 points, or a response or predictor that never
changes: ASR 0 everywhere, one model size) is not made: per-size fits leave that size
out, single fits raise :class:`NotEnoughSignal` saying why, instead of printing a
slope of 1e-16 with an R^2 of -inf and an interval from nan to nan.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .tidy import compute_to_reach, require_columns, require_one_condition, with_logit


class NotEnoughSignal(ValueError):
    """The data cannot support the fit asked for (see the module docstring)."""


def signal(data: pd.DataFrame, y: str, x: str) -> str | None:
    """Why ``y`` on ``x`` cannot be fitted on ``data`` (None when it can)."""
    if len(data) < 3:
        return f"{len(data)} point(s); a line with an interval needs 3 or more"
    if data[y].nunique() < 2:
        return f"{y} is {data[y].iloc[0]:.3g} at every point"
    if data[x].nunique() < 2:
        return f"{x} is {data[x].iloc[0]:.3g} at every point"
    return None


#: The columns of one fitted slope (after its labels): :func:`summarize_fit`.
FIT_COLUMNS = ["slope", "slope_low", "slope_high", "intercept", "r2", "n", "p_value"]


def _fits_frame(rows: list[dict], labels: list[str]) -> pd.DataFrame:
    """Fitted rows as a frame; with no rows, an empty frame that still has the columns."""
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*labels, *FIT_COLUMNS])


def _row(res, term: str, **labels) -> dict:
    lo, hi = res.conf_int(alpha=0.05).loc[term]
    return {**labels, "slope": float(res.params[term]), "slope_low": float(lo), "slope_high": float(hi),
            "intercept": float(res.params["Intercept"]), "r2": float(res.rsquared), "n": int(res.nobs),
            "p_value": float(res.pvalues[term])}


def summarize_fit(result, term: str, **labels) -> pd.DataFrame:
    """One-row frame of a statsmodels OLS fit: ``term``'s slope with its 95% CI
    (``slope_low``, ``slope_high``), the intercept, R^2, n and the slope's p-value,
    after any ``labels`` columns."""
    return pd.DataFrame([_row(result, term, **labels)])


def _fit(data: pd.DataFrame, formula: str, term: str, **labels) -> tuple[dict, object]:
    import statsmodels.formula.api as smf

    y = formula.split("~")[0].strip()
    why = signal(data, y, term)
    if why:
        raise NotEnoughSignal(f"not enough signal to fit {y} on {term}: {why}")
    res = smf.ols(formula, data=data).fit()
    return _row(res, term, **labels), res


def _scaling_points(tidy, asr_range, n):
    require_columns(tidy, {"iteration", "asr", "n_attacked", "attack_flops", "model", "num_params"})
    data = tidy[(tidy["iteration"] > 0) & (tidy["attack_flops"] > 0)]
    if asr_range is not None:
        lo, hi = asr_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"asr_range={asr_range!r} is invalid; accepted: (low, high) with 0 <= low < high <= 1")
        data = data[data["asr"].between(lo, hi)]
    data = with_logit(data, n)
    data["log_flops"] = np.log10(data["attack_flops"])
    return data


def attack_scaling(tidy: pd.DataFrame, by=("source", "model", "num_params"), asr_range=None,
                   n: str = "n_attacked"):
    """Attack scaling: per size, OLS of logit10(ASR) (Laplace-
    smoothed, :func:`with_logit`) on log10(attack FLOPs per example) over every seed's
    points with iteration >= 1; then those slopes regressed on log10(parameters).

    One source/task/attack/round at a time. ``asr_range``: keep only points with ASR in
    [low, high] (the paper's regression kept 0.01..0.99: saturated points carry no
    slope). Returns ``(slopes, size_fit)``: a frame with one row per size (slope with
    95% CI, intercept, R^2, n) and the statsmodels result of ``slope ~ log_params``
    (None with fewer than 3 sizes; :func:`summarize_fit` makes it a row). A size with
    fewer than 3 points, a single FLOP value or a single ASR is left out (a line
    through two points has no interval, a flat one no signal); when none is left the
    frame is empty, with the same columns.
    """
    require_one_condition(tidy, ("source", "task", "train_attack", "attack", "round"), "attack_scaling")
    data = _scaling_points(tidy, asr_range, n)
    rows = []
    for key, g in data.groupby(list(by), sort=True):
        if signal(g, "logit_asr", "log_flops"):
            continue
        row, _ = _fit(g, "logit_asr ~ log_flops", "log_flops", **dict(zip(by, key)))
        rows.append(row)
    slopes = _fits_frame(rows, list(by))
    size_fit = None
    if len(slopes):
        slopes = slopes.sort_values("num_params").reset_index(drop=True)
        slopes["log_params"] = np.log10(slopes["num_params"].astype(float))
        if not signal(slopes, "slope", "log_params"):
            import statsmodels.formula.api as smf

            size_fit = smf.ols("slope ~ log_params", data=slopes).fit()
    return slopes, size_fit


def attack_scaling_pooled(tidy: pd.DataFrame, asr_range=(0.01, 0.99), n: str = "n_attacked"):
    """The paper's pooled attack-scaling regression: logit10(ASR) on log10(attack FLOPs
    per example) with one intercept per size (``logit_asr ~ log_flops + C(model)``), on
    points with ASR in ``asr_range``. One common slope; returns ``(row, result)``."""
    require_one_condition(tidy, ("source", "task", "train_attack", "attack", "round"), "attack_scaling_pooled")
    data = _scaling_points(tidy, asr_range, n)
    if len(data) < 3:
        raise NotEnoughSignal(f"only {len(data)} points with ASR in {asr_range}; nothing to fit")
    formula = "logit_asr ~ log_flops + C(model)" if data["model"].nunique() > 1 else "logit_asr ~ log_flops"
    return _fit(data, formula, "log_flops", model="pooled")


def robustness_vs_size(tidy: pd.DataFrame, iteration: int, n: str = "n_attacked"):
    """OLS of logit10(ASR at ``iteration``) on log10(parameters), every seed a point.
    One source/task/attack/round at a time. Returns ``(row, result)``: slope with
    95% CI, intercept, R^2, n, and the fit."""
    require_one_condition(tidy, ("source", "task", "train_attack", "attack", "round"), "robustness_vs_size")
    at = tidy[tidy["iteration"] == iteration]
    if at.empty:
        raise ValueError(f"no ASR recorded at iteration {iteration}")
    at = with_logit(at, n)
    at["log_params"] = np.log10(at["num_params"].astype(float))
    return _fit(at, "logit_asr ~ log_params", "log_params", iteration=iteration)


#: Which defense compute :func:`offense_defense` puts on the x axis.
DEFENSE = ("seed", "size_median", "seed_mean")


def offense_defense(tidy: pd.DataFrame, threshold: float = 0.02, normalise: str | None = None,
                    pretrain_compute: dict | None = None, flops: str = "cumulative", defense: str = "seed"):
    """Offense vs defense: log10(attack FLOPs per example to reach
    ``threshold`` ASR) on log10(defense FLOPs), per size and pooled with a size term
    (``log_attack ~ log_defense + log_params``). Every (size, seed, round) with defense
    compute is a point; rounds with none (round 0) and curves that never reach the
    threshold within their budget are left out. One source/task/attack at a time.

    ``flops``: see :func:`compute_to_reach` (``"size_mean"`` is the paper's choice).
    ``defense``: ``"seed"`` (the default) takes each curve's own defense compute;
    ``"size_median"`` the median over the seeds this table evaluated at that size and
    round (robust to one seed's mis-recorded compute; where only one seed was evaluated
    it is that seed's own figure, so a seed whose figure is missing stays out);
    ``"seed_mean"`` the mean over the *training* seeds of that size and round, the
    paper's axis (``defense_flops_seed_mean`` of the released tables, which averages
    every training seed whether evaluated or not; for a table without that column, the
    mean over its own seeds). With ``seed_mean`` an evaluated seed whose own training
    row was a restart glitch keeps its point. ``normalise="pretrain"`` divides both
    axes by the model's pretraining compute, the paper's "fraction of pretraining
    compute". The normaliser is the table's ``pretrain_compute`` (6ND: the released
    tables carry it; the lab's robustness table when 03 recorded it), overridden by
    ``pretrain_compute={model: FLOPs}``. For the lab's offline family that is the
    FLOPs of its own pretraining (6 N D with the D tokens of the zoo manifest); pass
    whatever figure the comparison calls for. Models with neither raise. Per-size
    slopes do not change under this normalisation (both axes shift by the same
    constant); the pooled slope does unless the normaliser is a power of N.

    Every fitted row also has ``anchored``: the share of its points whose crossing is a
    line from (0, 0) (:func:`~robustlib.analysis.tidy.crossing_from_anchor`: the
    curve's first recorded iteration already past the threshold). At 1.0 the slope
    rests on no measured crossing at all and says nothing about attack scaling.

    Returns ``(points, per_size, pooled_row, pooled_result)``; ``points`` has
    ``log_attack``, ``log_defense``, ``log_params`` and ``scale`` (what the axes are).
    """
    if normalise not in (None, "pretrain"):
        raise ValueError(f"normalise={normalise!r} is invalid; accepted: None or 'pretrain'")
    if defense not in DEFENSE:
        raise ValueError(f"defense={defense!r} is invalid; accepted: {DEFENSE}")
    require_columns(tidy, {"defense_flops", "num_params"})
    require_one_condition(tidy, ("source", "task", "attack", "position", "train_attack", "train_position",
                                  "train_variant"),
                   "offense_defense")
    points = compute_to_reach(tidy, threshold, flops=flops)
    if defense == "size_median":
        points["defense_flops"] = points.groupby(["model", "round"])["defense_flops"].transform("median")
    elif defense == "seed_mean":
        own = points.groupby(["model", "round"])["defense_flops"].transform("mean")
        points["defense_flops"] = points["defense_flops_seed_mean"].where(points["defense_flops_seed_mean"].notna(),
                                                                          own)
    points = points[(points["defense_flops"] > 0) & points["attack_flops_to_reach"].notna()].copy()
    if points.empty:
        raise ValueError(f"no adversarially trained curve reaches ASR {threshold}; nothing to fit")
    points["scale"] = "FLOPs"
    if normalise == "pretrain":
        if pretrain_compute:
            points["pretrain_compute"] = points["model"].map(pretrain_compute).fillna(points["pretrain_compute"])
        missing = sorted(set(points.loc[points["pretrain_compute"].isna(), "model"]))
        if missing:
            raise ValueError(f"models {missing} have no pretraining compute; pass pretrain_compute={{model: FLOPs}}")
        points["attack_flops_to_reach"] /= points["pretrain_compute"]
        points["defense_flops"] /= points["pretrain_compute"]
        points["scale"] = "fraction of pretraining compute"
    points["log_attack"] = np.log10(points["attack_flops_to_reach"])
    points["log_defense"] = np.log10(points["defense_flops"])
    points["log_params"] = np.log10(points["num_params"].astype(float))
    rows = []
    for (model, n), g in points.groupby(["model", "num_params"], sort=False):
        if not signal(g, "log_attack", "log_defense"):
            row, _ = _fit(g, "log_attack ~ log_defense", "log_defense", model=model, num_params=n)
            rows.append({**row, "anchored": float(g["from_anchor"].mean())})
    per_size = _fits_frame(rows, ["model", "num_params"]).sort_values("num_params").reset_index(drop=True)
    if "anchored" not in per_size:
        per_size["anchored"] = pd.Series(dtype=float)
    formula = "log_attack ~ log_defense + log_params" if points["num_params"].nunique() > 1 else \
        "log_attack ~ log_defense"
    pooled_row, pooled = _fit(points, formula, "log_defense", model="pooled")
    pooled_row["anchored"] = float(points["from_anchor"].mean())
    return points.reset_index(drop=True), per_size, pooled_row, pooled
