"""The results browser of ``06_explore``: a tidy table filtered by linked controls, the
chart and rows of the chosen view, and export (:class:`ResultsBrowser`, over
:mod:`robustlib.explore.browse`)."""

from __future__ import annotations

import html

import ipywidgets as w
import pandas as pd

from . import browse
from .ui import STYLE, draw_chart

ANY = "(any)"
#: The columns the results browser lists under its chart (when the rows have them).
ROW_COLUMNS = ("source", "model", "seed", "round", "train_attack", "attack", "position", "iteration", "asr",
               "n_attacked", "attack_flops", "defense_flops", "median", "train", "eval", "asr_median")


class ResultsBrowser:
    """Filter a tidy table with linked controls and see the chart and rows update.
    ``table``: :func:`~robustlib.explore.browse.study_table` or the paper's
    :func:`~robustlib.analysis.load_paper_results`; ``export_dir``: where Export writes."""

    def __init__(self, table: pd.DataFrame, export_dir="exports"):
        if table is None or table.empty:
            raise ValueError("the table is empty: nothing to browse")
        self.table = table
        self.export_dir = export_dir
        self._holding = False
        columns = [c for c in browse.FILTERS if c in table.columns]
        self.filters = {c: w.Dropdown(description=c, style=STYLE, layout=w.Layout(width="32%")) for c in columns}
        self.view = w.Dropdown(options=list(browse.VIEWS), value="ASR vs iterations", description="view")
        self.budget = w.Dropdown(description="budget", style=STYLE)
        self.caption = w.HTML()
        self.chart = w.HTML()
        self.rows = w.HTML()
        self.export_button = w.Button(description="Export PNG, SVG, CSV")
        self.exported = w.HTML()
        for control in self.filters.values():
            control.observe(self._changed, "value")
        self.view.observe(lambda _: self.update(), "value")
        self.budget.observe(lambda _: self.update(), "value")
        self.export_button.on_click(lambda _: self.export())
        self._relink()
        boxes = list(self.filters.values())
        self.ui = w.VBox([w.HBox(boxes[i:i + 3]) for i in range(0, len(boxes), 3)] + [
            w.HBox([self.view, self.budget, self.export_button]), self.caption, self.chart, self.exported, self.rows])
        self.ui.add_class("rl-results-browser")
        self.update()

    @classmethod
    def from_study(cls, study: str, store=None, **kw):
        return cls(browse.study_table(study, store), **kw)

    @classmethod
    def from_release(cls, path, **kw):
        from .. import analysis

        return cls(analysis.load_paper_results(path), **kw)

    def current(self) -> dict:
        """The filters set now (``None`` for any)."""
        return {c: (None if d.value == ANY else d.value) for c, d in self.filters.items()}

    def _relink(self) -> None:
        """Each control offers what the others leave (see :func:`browse.options`)."""
        self._holding = True
        try:
            left = browse.options(self.table, self.current())
            for column, control in self.filters.items():
                value = control.value
                choices = [ANY] + [v for v in left[column]]
                control.options = [(ANY, ANY)] + [(f"{v:g}" if isinstance(v, float) else str(v), v)
                                                   for v in choices[1:]]
                control.value = value if value in choices else ANY
        finally:
            self._holding = False

    def _changed(self, _change) -> None:
        if self._holding:
            return
        self._relink()
        self.update()

    def filtered(self) -> pd.DataFrame:
        return browse.apply(self.table, {k: v for k, v in self.current().items() if v is not None})

    def update(self) -> None:
        if self._holding:
            return
        rows = self.filtered()
        common = browse.budgets(rows)
        self._holding = True
        try:
            keep = self.budget.value if self.budget.value in common else (common[-1] if common else None)
            self.budget.options = common
            self.budget.value = keep
        finally:
            self._holding = False
        try:
            chart, data = browse.view(rows, self.view.value, self.budget.value)
        except ValueError as err:
            self.caption.value = (f'<span class="rl-caption">{len(rows)} rows &middot; '
                                  f'<span style="color:#b00">{html.escape(str(err))}</span></span>')
            self.chart.value = ""
            self._data = None
            return
        self._chart, self._data = chart, data
        self.caption.value = (f'<span class="rl-caption">{len(rows)} rows match &middot; the chart draws '
                              f'{len(data)}</span>')
        draw_chart(self.chart, chart)
        shown = [c for c in ROW_COLUMNS if c in data.columns] or list(data.columns)
        self.rows.value = data[shown].head(12).to_html(index=False, classes="rl-rows",
                                                       float_format=lambda v: f"{v:.4g}")

    def export(self) -> dict | None:
        if self._data is None:
            self.exported.value = "nothing to export"
            return None
        written = browse.export(self._chart, self._data, self.export_dir)
        self.exported.value = "written: " + ", ".join(html.escape(p) for p in written.values())
        return written
