"""Altair charts. Functions return charts; they never display or save them.

Conventions follow the paper: model size and compute on log axes, ASR as logit10 of
the Laplace-smoothed rate where it spans decades, medians over seeds with min-max
bands. Exporting (SVG/PNG/self-contained HTML) lives in :mod:`robustlib.report`.

The paper's figures, on tidy tables (:mod:`robustlib.analysis`; the lab's own tables
go through :func:`robustlib.analysis.from_lab`):

=========================================  ==========================================
ASR at a budget vs size                    :func:`asr_vs_params`
logit10 ASR vs iterations or attack FLOPs  :func:`asr_curves`
attack-scaling slopes vs size              :func:`slopes_vs_params`
ASR vs adversarial-training round          :func:`asr_vs_round`
ASR vs defense FLOPs                       :func:`asr_vs_defense_flops`
transfer matrix                            :func:`transfer_heatmap`
offense vs defense                         :func:`offense_defense`
judged ASR / refusal rate, Wilson bands    :func:`judged_rate` (the generative setting)
=========================================  ==========================================

Every function checks its input's columns first and raises ``ValueError`` naming the
missing ones.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from .analysis import require_columns, with_logit

# Log axes: SI-style labels for sizes (156k, 2.6M), exponents for compute (1e13), and
# labels that would overlap dropped rather than drawn over each other.
_PARAMS_AXIS = alt.Axis(format="~s", labelOverlap="greedy")
_FLOPS_AXIS = alt.Axis(labelOverlap="greedy", labelExpr=(  # powers of ten only, written 1e13
    "abs(log(datum.value) / LN10 - round(log(datum.value) / LN10)) < 1e-6 ? "
    "'1e' + round(log(datum.value) / LN10) : ''"))


def _params_x(title: str = "parameters") -> alt.X:
    return alt.X("num_params:Q", scale=alt.Scale(type="log"), title=title, axis=_PARAMS_AXIS)


def _flops(channel, field: str, title: str, **kw):
    return channel(f"{field}:Q", scale=alt.Scale(type="log"), title=title, axis=_FLOPS_AXIS, **kw)


#: Legend symbols at full opacity: a legend shared by a faint min-max band and its line
#: would otherwise draw every symbol as faint as the band.
_LEGEND = alt.Legend(symbolOpacity=1)


def size_colour(frame: pd.DataFrame) -> alt.Color:
    """One colour per model, named in the legend, smallest first, from a categorical
    palette whose neighbours are easy to tell apart (category10; tableau20 past 10)."""
    order = frame.sort_values("num_params")["model"].drop_duplicates().tolist()
    scheme = "category10" if len(order) <= 10 else "tableau20"
    return alt.Color("model:N", title="model", sort=order, scale=alt.Scale(scheme=scheme), legend=_LEGEND)


def accuracy_vs_params(table: pd.DataFrame, title: str = "Validation accuracy vs model size") -> alt.Chart:
    """Fine-tuned accuracy per seed (points) and the median over seeds (line), with the
    min-max band, against classifier parameter count (log scale).

    ``table``: one row per model x seed with columns ``model``, ``num_params``,
    ``seed``, ``val_accuracy``.
    """
    require_columns(table, {"model", "num_params", "seed", "val_accuracy"}, "table")
    x = _params_x()
    y_scale = alt.Scale(domain=[0.4, 1.0])
    agg = (
        table.groupby(["model", "num_params"], as_index=False)["val_accuracy"]
        .agg(median="median", min="min", max="max")
    )
    band = alt.Chart(agg).mark_area(opacity=0.2).encode(x=x, y=alt.Y("min:Q", scale=y_scale), y2="max:Q")
    line = alt.Chart(agg).mark_line(point=True).encode(
        x=x,
        y=alt.Y("median:Q", scale=y_scale, title="validation accuracy"),
        tooltip=["model", "num_params", "median", "min", "max"],
    )
    points = alt.Chart(table).mark_circle(size=40, opacity=0.6).encode(
        x=x, y=alt.Y("val_accuracy:Q", scale=y_scale), color=alt.Color("seed:N", title="seed", legend=_LEGEND),
        tooltip=["model", "seed", "val_accuracy"],
    )
    return (band + line + points).properties(title=title, width=420, height=280)


def describe(spec: dict) -> str:
    """Alt text for a vega-lite ``spec``: its title and what its axes and colours show."""
    titles, axes = [], {}

    def walk(node):
        if isinstance(node, dict):
            title = node.get("title")
            if isinstance(title, str):
                titles.append(title)
            elif isinstance(title, dict) and isinstance(title.get("text"), str):
                titles.append(title["text"])
            for channel in ("x", "y", "color", "column", "row"):
                enc = (node.get("encoding") or {}).get(channel)
                if isinstance(enc, dict) and (channel not in axes or (enc.get("title") and not axes[channel][0])):
                    axes[channel] = (enc.get("title"), enc.get("field"))  # a titled layer wins
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    what = {"x": "x axis", "y": "y axis", "color": "one colour per", "column": "one panel per", "row": "rows by"}
    parts = [f"{what[c]}: {title or field}" for c, (title, field) in axes.items()
             if isinstance(title or field, str) and (title or field)]
    return f"Chart: {titles[0] if titles else 'untitled'}" + (f" ({'; '.join(parts)})" if parts else "")


def _described_svg(spec: dict, **metadata):
    """Altair's SVG renderer, with the chart's :func:`describe` text recorded as the
    output's alt text (the report shows it; an image without one says nothing)."""
    from altair.vegalite.v6.display import svg_renderer

    return svg_renderer(spec, **metadata), {"image/svg+xml": {"alt": describe(spec)}}


def use_notebook_renderer() -> None:
    """Show charts as inline SVG rendered by vl-convert, each with alt text saying what
    it shows (:func:`describe`). A notebook calls this itself: importing the module
    changes nothing.

    Why not vega-lite data: Altair 6 emits it under ``application/vnd.vegalite.v6.json``,
    which nbformat's schema rejects (JSON outputs must end in ``+json``), so Papermill
    cannot save the executed notebook; and the default HTML renderer loads vega from
    a CDN, which offline reports must not. SVG is valid, static and self-contained.
    """
    alt.renderers.register("robustlib-svg", _described_svg)
    alt.renderers.enable("robustlib-svg")


def asr_curves(tidy: pd.DataFrame, x: str = "iteration", title: str | None = None,
               normalise: str | None = None) -> alt.Chart:
    """ASR (logit10 with Laplace smoothing, the paper's axis) against attack iterations
    (``x="iteration"``) or cumulative attack FLOPs per attacked example
    (``x="attack_flops"``, log axis), one line per model size: median over seeds with a
    min-max band. Seeds spend different FLOPs at the same iteration, so points are
    aggregated per iteration (x: the median FLOPs over seeds).

    ``tidy``: a tidy attack table (one attack and round). ``normalise="pretrain"``: FLOPs
    as a fraction of the model's pretraining compute (needs ``pretrain_compute``).
    """
    accepted = ("iteration", "attack_flops")
    if x not in accepted:
        raise ValueError(f"x={x!r}; accepted: {accepted}")
    if normalise not in (None, "pretrain"):
        raise ValueError(f"normalise={normalise!r} is invalid; accepted: None or 'pretrain'")
    need = {"model", "num_params", "seed", "iteration", "asr", "n_attacked", "attack_flops"}
    require_columns(tidy, need | ({"pretrain_compute"} if normalise else set()), "tidy table")
    data = with_logit(tidy)
    if x == "attack_flops":
        data = data[(data["iteration"] > 0) & (data["attack_flops"] > 0)]  # log axis: no zero-compute point
        if normalise:
            data = data.assign(attack_flops=data["attack_flops"] / data["pretrain_compute"])
            data = data[data["attack_flops"].notna()]
    band = data.groupby(["model", "num_params", "iteration"], as_index=False).agg(
        median=("logit_asr", "median"), min=("logit_asr", "min"), max=("logit_asr", "max"),
        attack_flops=("attack_flops", "median"),
    )
    unit = " / pretraining compute" if normalise else " (paper convention)"
    x_enc = (alt.X("iteration:Q", title="attack iterations") if x == "iteration"
             else _flops(alt.X, "attack_flops", "attack FLOPs per example" + unit))
    color = size_colour(band)
    area = alt.Chart(band).mark_area(opacity=0.15).encode(x=x_enc, y="min:Q", y2="max:Q", color=color)
    line = alt.Chart(band).mark_line(point=True).encode(
        x=x_enc, y=alt.Y("median:Q", title="logit10(ASR), Laplace-smoothed"), color=color,
        tooltip=["model", x, "median", "min", "max"],
    )
    default = "ASR vs attack iterations" if x == "iteration" else "ASR vs attack compute"
    return (area + line).properties(title=title or default, width=420, height=280)


def asr_vs_params(summary: pd.DataFrame, iteration: int | None, title: str | None = None,
                  color: str | None = None) -> alt.Chart:
    """ASR at a fixed budget against model size (log axis): median (line), min-max band.

    ``summary``: :func:`robustlib.analysis.asr_at_budget` output (model, num_params,
    median, min, max). ``iteration``: the budget, for the axis title; None when the
    lines are read at different budgets (each attack at its own; the tooltip says
    which). ``color``: a column splitting the lines (e.g. ``task`` or ``attack``), one
    colour each.
    """
    require_columns(summary, {"model", "num_params", "median", "min", "max"} | ({color} if color else set()),
                    "summary")
    x = _params_x()
    y = alt.Scale(domain=[0, 1])
    extra = {"color": alt.Color(f"{color}:N", title=color, legend=_LEGEND)} if color else {}
    said = f"after {iteration} iterations" if iteration is not None else "at each attack's budget"
    band = alt.Chart(summary).mark_area(opacity=0.2).encode(x=x, y=alt.Y("min:Q", scale=y), y2="max:Q", **extra)
    tips = ["model", "num_params", "median", "min", "max"] + [c for c in ("iteration",) if c in summary.columns]
    line = alt.Chart(summary).mark_line(point=True).encode(
        x=x, y=alt.Y("median:Q", scale=y, title=f"ASR {said}"),
        tooltip=tips + ([color] if color else []), **extra,
    )
    return (band + line).properties(title=title or f"ASR {said} vs size", width=420, height=280)


def defense_vs_round(compute: pd.DataFrame, title: str = "Defense compute vs adversarial-training round") -> alt.Chart:
    """Cumulative defense FLOPs (log axis) against adversarial-training round, one line
    per size: the median over seeds with its min-max band.

    ``compute``: :func:`robustlib.studies.paper_results.training_compute` output for one
    training condition (``model``, ``num_params``, ``round``, ``median``, ``min``,
    ``max``); round 0 (no compute yet) is left off the log axis."""
    require_columns(compute, {"model", "num_params", "round", "median", "min", "max"}, "compute")
    data = compute[compute["median"] > 0]
    x = alt.X("round:Q", title="adversarial-training round")
    color = size_colour(data)
    area = alt.Chart(data).mark_area(opacity=0.15).encode(x=x, y=_flops(alt.Y, "min", "defense FLOPs"), y2="max:Q",
                                                          color=color)
    line = alt.Chart(data).mark_line(point=True).encode(
        x=x, y=_flops(alt.Y, "median", "defense FLOPs (training + attack generation)"), color=color,
        tooltip=["model", "round", "median", "min", "max", "seeds"])
    return (area + line).properties(title=title, width=420, height=280)


def _robustness_at(tidy: pd.DataFrame, iteration: int) -> pd.DataFrame:
    require_columns(tidy, {"model", "num_params", "seed", "round", "iteration", "asr", "n_attacked", "defense_flops",
                           "train_attack"}, "robustness table")
    at = tidy[tidy["iteration"] == iteration]
    if at.empty:
        raise ValueError(f"no ASR recorded at iteration {iteration}; recorded: {sorted(set(tidy['iteration']))}")
    return with_logit(at).groupby(["model", "num_params", "train_attack", "round"], as_index=False).agg(
        median=("logit_asr", "median"), min=("logit_asr", "min"), max=("logit_asr", "max"),
        asr=("asr", "median"), defense_flops=("defense_flops", "median"))


def _per_size_lines(band: pd.DataFrame, x_enc, y_title: str, title: str) -> alt.Chart:
    color = size_colour(band)
    area = alt.Chart(band).mark_area(opacity=0.15).encode(x=x_enc, y="min:Q", y2="max:Q", color=color)
    line = alt.Chart(band).mark_line(point=True).encode(
        x=x_enc, y=alt.Y("median:Q", title=y_title), color=color,
        tooltip=["model", "train_attack", "round", "asr", "defense_flops"],
    )
    chart = (area + line).properties(width=380, height=260)
    if band["train_attack"].nunique() > 1:
        chart = chart.facet(column=alt.Column("train_attack:N", title="training attack"))
    return chart.properties(title=title)


def asr_vs_round(robustness: pd.DataFrame, iteration: int, title: str | None = None) -> alt.Chart:
    """Robustness against adversarial-training round: logit10 ASR (Laplace-smoothed) at
    an attack budget of ``iteration``, one line per size (median over seeds, min-max
    band), one panel per training attack.

    ``robustness``: a tidy table of adversarially trained models (the ``robustness``
    table of ``03_adversarial_training`` through :func:`robustlib.analysis.from_lab`).
    """
    band = _robustness_at(robustness, iteration)
    return _per_size_lines(band, alt.X("round:Q", title="adversarial-training round"),
                           f"logit10(ASR@{iteration}), Laplace-smoothed",
                           title or f"ASR after {iteration} attack iterations vs training round")


def asr_vs_defense_flops(robustness: pd.DataFrame, iteration: int, title: str | None = None) -> alt.Chart:
    """As :func:`asr_vs_round`, against cumulative defense FLOPs (training plus attack
    generation, in the tidy table's convention; log axis, so round 0 is left out)."""
    band = _robustness_at(robustness, iteration)
    band = band[band["defense_flops"] > 0]
    return _per_size_lines(band, _flops(alt.X, "defense_flops", "defense FLOPs"),
                           f"logit10(ASR@{iteration}), Laplace-smoothed",
                           title or f"ASR after {iteration} attack iterations vs defense compute")


def transfer_heatmap(matrix: pd.DataFrame, title: str = "Transfer: ASR by training and evaluation attack") -> alt.Chart:
    """Heatmap of a transfer matrix: rows the training attack (``train``; ``none``: not
    adversarially trained), columns the evaluation attack (``eval``), colour and label
    the median ASR over seeds.

    ``matrix``: columns ``train``, ``eval`` and either ``asr_median`` (already
    aggregated: :func:`robustlib.evaluate.transfer_matrix`) or ``asr`` (one row per
    seed or a single value; the median is taken per cell). Optional: ``model`` (one
    panel per size, ordered by ``num_params`` when present) and ``budget`` (attack
    iterations of the evaluation; one row of panels per budget).
    """
    missing = {"train", "eval"} - set(matrix.columns)
    if not {"asr_median", "asr"} & set(matrix.columns):
        missing.add("asr")
    if missing:
        raise ValueError(f"matrix lacks column(s) {sorted(missing)}; accepted: train, eval and asr (or asr_median), "
                         "optionally model, num_params, budget")
    keys = [c for c in ("model", "num_params", "budget") if c in matrix.columns] + ["train", "eval"]
    if "asr_median" not in matrix.columns:
        matrix = matrix.groupby(keys, as_index=False, dropna=False)["asr"].agg(
            asr_median="median", asr_min="min", asr_max="max", seeds="count")
    base = alt.Chart(matrix).encode(
        x=alt.X("eval:N", title="evaluation attack"), y=alt.Y("train:N", title="training attack"))
    tooltip = [c for c in ("model", "budget", "train", "eval", "asr_median", "seeds") if c in matrix.columns]
    cells = base.mark_rect().encode(
        color=alt.Color("asr_median:Q", title="ASR", scale=alt.Scale(domain=[0, 1], scheme="reds")),
        tooltip=tooltip)
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("asr_median:Q", format=".2f"),
        color=alt.condition(alt.datum.asr_median > 0.6, alt.value("white"), alt.value("black")))
    chart = (cells + text).properties(width=60 * matrix["eval"].nunique(), height=28 * matrix["train"].nunique())
    facet = {}
    if "model" in matrix.columns:
        order = (matrix.sort_values("num_params") if "num_params" in matrix.columns else matrix)["model"]
        facet["column"] = alt.Column("model:N", title="model", sort=order.drop_duplicates().tolist())
    if "budget" in matrix.columns:
        facet["row"] = alt.Row("budget:O", title="attack iterations")
    return (chart.facet(**facet) if facet else chart).properties(title=title)


# ---------------------------------------------------------------------------- fits (robustlib.analysis.fits)


def slopes_vs_params(slopes: pd.DataFrame, title: str = "Attack-scaling slope vs model size",
                     size_fit=None) -> alt.Chart:
    """Per-size slopes of logit10(ASR) on log10(attack FLOPs) with their 95% intervals
    (rules), against parameters (log axis). ``slopes``: the first output of
    :func:`robustlib.analysis.attack_scaling`; ``size_fit``: its second (a statsmodels
    result of ``slope ~ log_params``, or a dict with ``intercept`` and ``slope``) draws
    the fitted line."""
    require_columns(slopes, {"model", "num_params", "slope", "slope_low", "slope_high"}, "slopes")
    x = _params_x()
    bars = alt.Chart(slopes).mark_rule().encode(x=x, y=alt.Y("slope_low:Q", title="slope (logit10 ASR per decade)"),
                                                y2="slope_high:Q")
    points = alt.Chart(slopes).mark_point(filled=True, size=60).encode(
        x=x, y="slope:Q", tooltip=["model", "slope", "slope_low", "slope_high"]
        + (["r2"] if "r2" in slopes.columns else []))
    layers = [bars, points]
    if size_fit is not None and len(slopes):
        if isinstance(size_fit, dict):
            a, b = size_fit["intercept"], size_fit["slope"]
        else:
            a, b = size_fit.params["Intercept"], size_fit.params["log_params"]
        ends = np.array([slopes["num_params"].min(), slopes["num_params"].max()], dtype=float)
        fit = pd.DataFrame({"num_params": ends, "slope": a + b * np.log10(ends)})
        layers.append(alt.Chart(fit).mark_line(strokeDash=[4, 4], color="gray").encode(x=x, y="slope:Q"))
    return alt.layer(*layers).properties(title=title, width=420, height=260)


def offense_defense(points: pd.DataFrame, per_size: pd.DataFrame | None = None,
                    title: str = "Offense vs defense", show_points: bool = True) -> alt.Chart:
    """Attack FLOPs per example to reach the threshold ASR against defense FLOPs, both
    on log axes: per size and round, the median over seeds (line) with its min-max
    band; per-seed points (``show_points``); the fitted line of each size (dashed,
    from ``per_size``); and the parity line y = x (gray; above it, attacking costs
    more than the defense did).

    ``points``, ``per_size``: the first two outputs of
    :func:`robustlib.analysis.offense_defense` (axis titles follow its ``scale``)."""
    require_columns(points, {"model", "num_params", "round", "attack_flops_to_reach", "defense_flops"}, "points")
    scale = points["scale"].iloc[0] if "scale" in points.columns and len(points) else "FLOPs"
    unit = "" if scale == "FLOPs" else " (fraction of pretraining compute)"
    band = points.groupby(["model", "num_params", "round"], as_index=False).agg(
        defense_flops=("defense_flops", "median"), median=("attack_flops_to_reach", "median"),
        min=("attack_flops_to_reach", "min"), max=("attack_flops_to_reach", "max"),
        seeds=("attack_flops_to_reach", "count"))
    lo = float(min(points["attack_flops_to_reach"].min(), points["defense_flops"].min()))
    hi = float(max(points["attack_flops_to_reach"].max(), points["defense_flops"].max()))
    x = _flops(alt.X, "defense_flops", "defense FLOPs" + unit)
    y_title = "attack FLOPs per example to reach the ASR" + unit
    y = _flops(alt.Y, "median", y_title)
    color = size_colour(points)
    layers = [
        alt.Chart(band).mark_area(opacity=0.15).encode(
            x=x, y=_flops(alt.Y, "min", y_title), y2="max:Q", color=color),
        alt.Chart(band).mark_line(point=True).encode(
            x=x, y=y, color=color, tooltip=["model", "round", "defense_flops", "median", "min", "max", "seeds"]),
    ]
    if show_points:
        layers.append(alt.Chart(points).mark_circle(size=14, opacity=0.35).encode(
            x=x, y=_flops(alt.Y, "attack_flops_to_reach", y_title), color=color,
            tooltip=[c for c in ("model", "seed", "round", "defense_flops", "attack_flops_to_reach")
                     if c in points.columns]))
    parity = pd.DataFrame({"defense_flops": [lo, hi], "median": [lo, hi]})
    layers.append(alt.Chart(parity).mark_line(strokeDash=[2, 2], color="gray").encode(x=x, y=y))
    if per_size is not None and len(per_size):
        require_columns(per_size, {"model", "num_params", "slope", "intercept"}, "per_size")
        rows = []
        for fit in per_size.to_dict("records"):
            d = points[points["model"] == fit["model"]]["defense_flops"]
            for v in (d.min(), d.max()):
                rows.append({"model": fit["model"], "num_params": fit["num_params"], "defense_flops": v,
                             "median": 10 ** (fit["intercept"] + fit["slope"] * np.log10(v))})
        layers.append(alt.Chart(pd.DataFrame(rows)).mark_line(strokeDash=[6, 3]).encode(
            x=x, y=y, color=color, detail="model:N"))
    return alt.layer(*layers).properties(title=title, width=420, height=300)


_RATES = {"asr": "judged ASR (among prompts refused before)", "refusal_rate": "refusal rate before the attack"}
_JUDGED_X = {"iteration": "attack iterations", "attack_flops": "attack FLOPs per prompt (paper convention)",
             "num_params": "parameters"}


def judged_rate(frame: pd.DataFrame, x: str = "num_params", y: str = "asr", color: str = "model",
                title: str | None = None) -> alt.Chart:
    """A rate of the generative setting with its Wilson interval as a band: ``y`` is
    ``"asr"`` or ``"refusal_rate"`` (columns ``{y}_low`` / ``{y}_high``, from
    :func:`robustlib.analysis.with_intervals`), against ``x`` (``num_params`` or
    ``attack_flops`` on log axes, or ``iteration``), one line per ``color`` value
    (``model`` or ``source``: the lab's runs beside the paper's release)."""
    if y not in _RATES:
        raise ValueError(f"y={y!r} is invalid; accepted: {sorted(_RATES)}")
    if x not in _JUDGED_X:
        raise ValueError(f"x={x!r} is invalid; accepted: {sorted(_JUDGED_X)}")
    require_columns(frame, {x, y, f"{y}_low", f"{y}_high", color, "model"}, "judged table")
    data = frame[frame[x] > 0] if x in ("attack_flops", "num_params") else frame
    if x == "num_params":
        x_enc = _params_x()
    elif x == "attack_flops":
        x_enc = _flops(alt.X, x, _JUDGED_X[x])
    else:
        x_enc = alt.X(f"{x}:Q", title=_JUDGED_X[x])
    colour = size_colour(data) if color == "model" else alt.Color(f"{color}:N", title=color, legend=_LEGEND)
    scale = alt.Scale(domain=[0, 1])
    band = alt.Chart(data).mark_area(opacity=0.15).encode(x=x_enc, y=alt.Y(f"{y}_low:Q", scale=scale),
                                                          y2=f"{y}_high:Q", color=colour, detail="model:N")
    line = alt.Chart(data).mark_line(point=True).encode(
        x=x_enc, y=alt.Y(f"{y}:Q", scale=scale, title=_RATES[y] + ", 95% Wilson"), color=colour, detail="model:N",
        tooltip=["model", x, y, f"{y}_low", f"{y}_high"])
    layers = [band, line]
    if x == "num_params":  # one point per model: a band alone would not show its interval
        layers.append(alt.Chart(data).mark_rule(strokeWidth=2).encode(x=x_enc, y=f"{y}_low:Q", y2=f"{y}_high:Q",
                                                                      color=colour, detail="model:N"))
    return alt.layer(*layers).properties(title=title or f"{_RATES[y]} vs {_JUDGED_X[x]}", width=420, height=280)


def side_by_side(*charts) -> alt.HConcatChart:
    """Charts in one row, each with its own colour legend (sizes in one, attacks in
    another: a shared scale would merge them into one legend)."""
    return alt.hconcat(*charts).resolve_scale(color="independent")
