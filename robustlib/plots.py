"""Altair charts. Functions return charts; they never display or save them.

Conventions follow the paper: model size on a log axis, medians over seeds with
min-max bands. Exporting (SVG/PNG/self-contained HTML) lives in
:mod:`robustlib.report`.
"""

from __future__ import annotations

import altair as alt
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
