"""Altair charts. Functions return charts; they never display or save them.

Conventions follow the paper: model size on a log axis, medians over seeds with
min-max bands. Exporting (SVG/PNG/self-contained HTML) lives in
:mod:`robustlib.report`.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd


def accuracy_vs_params(table: pd.DataFrame, title: str = "Validation accuracy vs model size") -> alt.Chart:
    """Fine-tuned accuracy per seed (points) and the median over seeds (line), with the
    min-max band, against classifier parameter count (log scale).

    ``table``: one row per model x seed with columns ``model``, ``num_params``,
    ``seed``, ``val_accuracy``.
    """
    missing = {"model", "num_params", "seed", "val_accuracy"} - set(table.columns)
    if missing:
        raise ValueError(f"table lacks column(s) {sorted(missing)}")
    x = alt.X("num_params:Q", scale=alt.Scale(type="log"), title="parameters")
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
        x=x, y=alt.Y("val_accuracy:Q", scale=y_scale), color=alt.Color("seed:N", title="seed"),
        tooltip=["model", "seed", "val_accuracy"],
    )
    return (band + line + points).properties(title=title, width=420, height=280)


def use_notebook_renderer() -> None:
    """Show charts as inline SVG rendered by vl-convert.

    Why not vega-lite data: Altair 6 emits it under ``application/vnd.vegalite.v6.json``,
    which nbformat's schema rejects (JSON outputs must end in ``+json``), so Papermill
    cannot save the executed notebook; and the default HTML renderer loads vega from
    a CDN, which offline reports must not. SVG is valid, static and self-contained.
    """
    alt.renderers.enable("svg")


def _with_logit(table: pd.DataFrame) -> pd.DataFrame:
    from .evaluate import laplace_logit10

    out = table.copy()
    out["logit_asr"] = laplace_logit10(out["asr"], out["n_correct_before"])
    return out


def asr_curves(table: pd.DataFrame, x: str = "iteration", title: str | None = None) -> alt.Chart:
    """ASR (logit10 with Laplace smoothing, the paper's axis) against attack iterations
    (``x="iteration"``) or cumulative attack FLOPs per example (``x="flops_per_example"``,
    log axis), one line per model size: median over seeds with a min-max band.

    ``table``: the ``attack`` table of ``02_attack`` (columns model, num_params, seed,
    iteration, asr, n_correct_before, flops_paper).
    """
    accepted = ("iteration", "flops_per_example")
    if x not in accepted:
        raise ValueError(f"x={x!r}; accepted: {accepted}")
    missing = {"model", "num_params", "seed", "iteration", "asr", "n_correct_before", "flops_paper"} - set(
        table.columns)
    if missing:
        raise ValueError(f"table lacks column(s) {sorted(missing)}")
    data = _with_logit(table)
    # Attack FLOPs are summed over the attacked examples (those correct before).
    data["flops_per_example"] = data["flops_paper"] / data["n_correct_before"].clip(lower=1)
    if x == "flops_per_example":
        data = data[data["iteration"] > 0]  # log axis: no zero-compute point
    # Seeds spend different FLOPs at the same iteration, so aggregate per iteration:
    # x is the median over seeds, y the median with its min-max band.
    band = data.groupby(["model", "num_params", "iteration"], as_index=False).agg(
        median=("logit_asr", "median"), min=("logit_asr", "min"), max=("logit_asr", "max"),
        flops_per_example=("flops_per_example", "median"),
    )
    x_enc = (alt.X(f"{x}:Q", title="attack iterations") if x == "iteration"
             else alt.X(f"{x}:Q", scale=alt.Scale(type="log"), title="attack FLOPs per example (paper convention)"))
    color = alt.Color("num_params:O", title="parameters", scale=alt.Scale(scheme="viridis"))
    area = alt.Chart(band).mark_area(opacity=0.15).encode(x=x_enc, y="min:Q", y2="max:Q", color=color)
    line = alt.Chart(band).mark_line(point=True).encode(
        x=x_enc, y=alt.Y("median:Q", title="logit10(ASR), Laplace-smoothed"), color=color,
        tooltip=["model", x, "median", "min", "max"],
    )
    return (area + line).properties(title=title or f"ASR vs {x.replace('_', ' ')}", width=420, height=280)


def asr_vs_params(summary: pd.DataFrame, iteration: int, title: str | None = None) -> alt.Chart:
    """ASR at a fixed budget against model size: median (line), min-max band.

    ``summary``: :func:`robustlib.evaluate.asr_at` output (model, num_params, median, min, max).
    """
    missing = {"model", "num_params", "median", "min", "max"} - set(summary.columns)
    if missing:
        raise ValueError(f"summary lacks column(s) {sorted(missing)}")
    x = alt.X("num_params:Q", scale=alt.Scale(type="log"), title="parameters")
    y = alt.Scale(domain=[0, 1])
    band = alt.Chart(summary).mark_area(opacity=0.2).encode(x=x, y=alt.Y("min:Q", scale=y), y2="max:Q")
    line = alt.Chart(summary).mark_line(point=True).encode(
        x=x, y=alt.Y("median:Q", scale=y, title=f"ASR after {iteration} iterations"),
        tooltip=["model", "num_params", "median", "min", "max"],
    )
    return (band + line).properties(title=title or f"ASR at {iteration} iterations vs size", width=420, height=280)


def _robustness_at(robustness: pd.DataFrame, iteration: int) -> pd.DataFrame:
    if "n_attacked" in robustness.columns and "n_correct_before" not in robustness.columns:
        # a tidy table (robustlib.analysis): same content, the tidy names
        robustness = robustness.rename(columns={"n_attacked": "n_correct_before",
                                                "defense_flops": "defense_flops_paper"})
        if "train_attack" not in robustness.columns:
            robustness = robustness.assign(train_attack=robustness["attack"])
    need = {"model", "num_params", "seed", "round", "iteration", "asr", "n_correct_before",
            "defense_flops_paper", "train_attack"}
    missing = need - set(robustness.columns)
    if missing:
        raise ValueError(f"robustness table lacks column(s) {sorted(missing)}")
    at = robustness[robustness["iteration"] == iteration]
    if at.empty:
        raise ValueError(f"no ASR recorded at iteration {iteration}; "
                         f"recorded: {sorted(set(robustness['iteration']))}")
    data = _with_logit(at)
    return data.groupby(["model", "num_params", "train_attack", "round"], as_index=False).agg(
        median=("logit_asr", "median"), min=("logit_asr", "min"), max=("logit_asr", "max"),
        asr=("asr", "median"), defense_flops=("defense_flops_paper", "median"))


def _per_size_lines(band: pd.DataFrame, x_enc, y_title: str, title: str) -> alt.Chart:
    color = alt.Color("num_params:O", title="parameters", scale=alt.Scale(scheme="viridis"))
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

    ``robustness``: the ``robustness`` table of ``03_adversarial_training``.
    """
    band = _robustness_at(robustness, iteration)
    return _per_size_lines(band, alt.X("round:Q", title="adversarial-training round"),
                           f"logit10(ASR@{iteration}), Laplace-smoothed",
                           title or f"ASR after {iteration} attack iterations vs training round")


def asr_vs_defense_flops(robustness: pd.DataFrame, iteration: int, title: str | None = None) -> alt.Chart:
    """As :func:`asr_vs_round`, against cumulative defense FLOPs (training plus attack
    generation, paper convention; log axis, so round 0 is left out)."""
    band = _robustness_at(robustness, iteration)
    band = band[band["defense_flops"] > 0]
    return _per_size_lines(band, alt.X("defense_flops:Q", scale=alt.Scale(type="log"),
                                       title="defense FLOPs (paper convention)"),
                           f"logit10(ASR@{iteration}), Laplace-smoothed",
                           title or f"ASR after {iteration} attack iterations vs defense compute")


def transfer_heatmap(matrix: pd.DataFrame, title: str = "Transfer: ASR by training and evaluation attack") -> alt.Chart:
    """Heatmap of a transfer matrix: rows the training attack@position (``none``: not
    adversarially trained), columns the evaluation attack@position with its budget,
    colour and label the median ASR over seeds; one panel per model size.

    ``matrix``: :func:`robustlib.advtrain.transfer_matrix` output (model, num_params,
    train, eval, asr_median).
    """
    missing = {"model", "num_params", "train", "eval", "asr_median"} - set(matrix.columns)
    if missing:
        raise ValueError(f"matrix lacks column(s) {sorted(missing)}")
    base = alt.Chart(matrix).encode(
        x=alt.X("eval:N", title="evaluation attack"), y=alt.Y("train:N", title="training attack"))
    cells = base.mark_rect().encode(
        color=alt.Color("asr_median:Q", title="ASR", scale=alt.Scale(domain=[0, 1], scheme="reds")),
        tooltip=["model", "train", "eval", "asr_median"])
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("asr_median:Q", format=".2f"),
        color=alt.condition(alt.datum.asr_median > 0.6, alt.value("white"), alt.value("black")))
    order = matrix.sort_values("num_params")["model"].drop_duplicates().tolist()
    return (cells + text).properties(width=60 * matrix["eval"].nunique(), height=28 * matrix["train"].nunique()) \
        .facet(column=alt.Column("model:N", title="model", sort=order)).properties(title=title)


# ---------------------------------------------------------------------------- tidy tables (robustlib.analysis)


def _need(frame: pd.DataFrame, cols, what: str = "table") -> None:
    missing = set(cols) - set(frame.columns)
    if missing:
        raise ValueError(f"{what} lacks column(s) {sorted(missing)}")


def attack_flops_curves(tidy: pd.DataFrame, title: str = "ASR vs attack compute") -> alt.Chart:
    """logit10(ASR) (Laplace-smoothed) against attack FLOPs per example (log axis), one
    line per size: median over seeds per iteration with a min-max band.

    ``tidy``: a tidy attack table (:mod:`robustlib.analysis`), one attack and round."""
    from .analysis import with_logit

    _need(tidy, {"model", "num_params", "seed", "iteration", "asr", "n_attacked", "attack_flops"}, "tidy table")
    data = with_logit(tidy[(tidy["iteration"] > 0) & (tidy["attack_flops"] > 0)])
    band = data.groupby(["model", "num_params", "iteration"], as_index=False).agg(
        median=("logit_asr", "median"), min=("logit_asr", "min"), max=("logit_asr", "max"),
        attack_flops=("attack_flops", "median"))
    x = alt.X("attack_flops:Q", scale=alt.Scale(type="log"), title="attack FLOPs per example")
    color = alt.Color("num_params:O", title="parameters", scale=alt.Scale(scheme="viridis"))
    area = alt.Chart(band).mark_area(opacity=0.15).encode(x=x, y="min:Q", y2="max:Q", color=color)
    line = alt.Chart(band).mark_line().encode(x=x, y=alt.Y("median:Q", title="logit10(ASR), Laplace-smoothed"),
                                              color=color, tooltip=["model", "iteration", "median"])
    return (area + line).properties(title=title, width=420, height=280)


def slopes_vs_params(slopes: pd.DataFrame, title: str = "Attack-scaling slope vs model size") -> alt.Chart:
    """Per-size slopes of logit10(ASR) on log10(attack FLOPs) with their 95% intervals,
    against parameters (log axis). ``slopes``: :func:`robustlib.analysis.attack_scaling`."""
    _need(slopes, {"model", "num_params", "slope", "slope_low", "slope_high"}, "slopes")
    x = alt.X("num_params:Q", scale=alt.Scale(type="log"), title="parameters")
    bars = alt.Chart(slopes).mark_rule().encode(x=x, y=alt.Y("slope_low:Q", title="slope (logit10 ASR per decade)"),
                                                y2="slope_high:Q")
    points = alt.Chart(slopes).mark_point(filled=True, size=60).encode(
        x=x, y="slope:Q", tooltip=["model", "slope", "slope_low", "slope_high", "r2"])
    return (bars + points).properties(title=title, width=420, height=260)


def offense_defense(points: pd.DataFrame, per_size: pd.DataFrame | None = None,
                    title: str = "Offense vs defense") -> alt.Chart:
    """Attack FLOPs to reach the threshold ASR against defense FLOPs, both log axes, one
    colour per size, fitted lines per size (from ``per_size``), and the parity line
    y = x (above it, attacking costs more than the defense spent).

    ``points``, ``per_size``: the first two outputs of :func:`robustlib.analysis.offense_defense`."""
    _need(points, {"model", "num_params", "attack_flops_to_reach", "defense_flops"}, "points")
    lo = float(min(points["attack_flops_to_reach"].min(), points["defense_flops"].min()))
    hi = float(max(points["attack_flops_to_reach"].max(), points["defense_flops"].max()))
    x = alt.X("defense_flops:Q", scale=alt.Scale(type="log"), title="defense FLOPs")
    y = alt.Y("attack_flops_to_reach:Q", scale=alt.Scale(type="log"), title="attack FLOPs to reach the ASR threshold")
    color = alt.Color("num_params:O", title="parameters", scale=alt.Scale(scheme="viridis"))
    layers = [alt.Chart(points).mark_circle(size=30, opacity=0.6).encode(
        x=x, y=y, color=color, tooltip=["model", "seed", "round", "defense_flops", "attack_flops_to_reach"])]
    parity = pd.DataFrame({"defense_flops": [lo, hi], "attack_flops_to_reach": [lo, hi], "line": "parity (y = x)"})
    layers.append(alt.Chart(parity).mark_line(strokeDash=[4, 4], color="gray").encode(
        x="defense_flops:Q", y="attack_flops_to_reach:Q"))
    if per_size is not None and len(per_size):
        _need(per_size, {"model", "num_params", "slope", "intercept"}, "per_size")
        rows = []
        for fit in per_size.to_dict("records"):
            d = points[points["model"] == fit["model"]]["defense_flops"]
            for v in (d.min(), d.max()):
                rows.append({"model": fit["model"], "num_params": fit["num_params"], "defense_flops": v,
                             "attack_flops_to_reach": 10 ** (fit["intercept"] + fit["slope"] * np.log10(v))})
        layers.append(alt.Chart(pd.DataFrame(rows)).mark_line().encode(
            x="defense_flops:Q", y="attack_flops_to_reach:Q", color=color, detail="model:N"))
    return alt.layer(*layers).properties(title=title, width=420, height=300)
