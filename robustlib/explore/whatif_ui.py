"""The offense/defense what-if of ``06_explore``: fits and their read-offs both ways
(:class:`WhatIfExplorer`, over :mod:`robustlib.explore.whatif`)."""

from __future__ import annotations

import html

import ipywidgets as w

from . import browse, whatif
from .ui import STYLE, draw_chart


class WhatIfExplorer:
    """Offense/defense fits and their read-offs. ``groups``: ``{label: tidy table of an
    adversarial-training evaluation}`` (a lab study's robustness table, or the paper's
    groups from :func:`robustlib.studies.paper_results.adversarial`)."""

    def __init__(self, groups: dict):
        groups = {k: g for k, g in groups.items() if len(g)}
        if not groups:
            raise ValueError("no adversarial-training evaluations to fit")
        fits = {k: whatif.fittable(g) for k, g in groups.items()}
        if not any(fits.values()):
            raise ValueError(f"no target ASR from {whatif.THRESHOLDS[0]:.0%} to {whatif.THRESHOLDS[-1]:.0%} gives a "
                             f"fit in {list(groups)}: the defended models' curves never reach them")
        groups = {k: g for k, g in groups.items() if fits[k]}
        self.groups = groups
        self.data = w.Dropdown(options=list(groups), description="data", layout=w.Layout(width="60%"))
        first = fits[self.data.value]
        self.threshold = w.FloatSlider(value=0.05 if 0.05 in first else first[0], min=0.01, max=0.5, step=0.01,
                                       description="target ASR", readout_format=".2f", style=STYLE)
        self.axis = w.ToggleButtons(options=["FLOPs", "fraction of pretraining"], value="FLOPs")
        self.sizes = w.SelectMultiple(description="sizes", rows=5)
        self.defense = w.FloatText(value=0.0, description="defense budget", style=STYLE)
        self.attack = w.FloatText(value=0.0, description="attack budget", style=STYLE)
        self.readout = w.HTML()
        self.chart = w.HTML()
        self.fit: whatif.WhatIf | None = None
        self._holding = False
        for control in (self.data, self.threshold, self.axis):
            control.observe(lambda _: self.refit(), "value")
        for control in (self.sizes, self.defense, self.attack):
            control.observe(lambda _: self.read(), "value")
        self.ui = w.VBox([self.data, w.HBox([self.threshold, self.axis]), self.sizes,
                          w.HBox([self.defense, self.attack]), self.readout, self.chart])
        self.ui.add_class("rl-what-if")
        self.refit()

    @classmethod
    def from_study(cls, study: str, store=None):
        table = browse.study_table(study, store)
        rob = table[table["source"] == "robustness"]
        return cls({f"{study}: {a}-trained, {e}": g for (a, e), g in rob.groupby(["train_attack", "attack"])})

    @classmethod
    def from_release(cls, path):
        from ..studies import paper_results

        return cls(paper_results.adversarial(paper_results.load(path).evaluations))

    def refit(self) -> None:
        normalise = "pretrain" if self.axis.value != "FLOPs" else None
        try:
            self.fit = whatif.fit(self.groups[self.data.value], self.threshold.value, normalise=normalise)
        except ValueError as err:
            self.fit = None
            self.readout.value = f'<span class="rl-readout" style="color:#b00">{html.escape(str(err))}</span>'
            self.chart.value = ""
            return
        models, seen = self.fit.models, self.fit.points["defense_flops"]
        self._holding = True  # one read-off once every control is set, not one per control
        try:
            keep = tuple(m for m in self.sizes.value if m in models)
            self.sizes.options = models
            self.sizes.value = keep or (tuple(models[-2:]) if len(models) > 1 else tuple(models))
            if not seen.min() <= self.defense.value <= seen.max():  # a budget on this axis's scale
                self.defense.value = float(f"{seen.median():.3g}")
            if self.attack.value and not 0.01 * seen.min() <= self.attack.value <= 100 * seen.max():
                self.attack.value = 0.0
        finally:
            self._holding = False
        self.read()

    def read(self) -> None:
        if self.fit is None or self._holding:
            return
        unit = "FLOPs" if self.fit.scale == "FLOPs" else "x pretraining"
        lines = []
        for model in self.sizes.value:
            if self.defense.value > 0:
                r = self.fit.attack_needed(model, self.defense.value)
                where = "" if r["inside"] else " (extrapolated)"
                lines.append(f"<b>{model}</b> trained with {self.defense.value:.3g} {unit} of defense: reaching "
                             f"{self.threshold.value:.0%} ASR takes <b class='rl-attack'>{r['attack']:.3g}</b> "
                             f"{unit} per example (95%: {r['low']:.3g} to {r['high']:.3g}){where}")
            if self.attack.value > 0:
                r = self.fit.defense_needed(model, self.attack.value)
                said = "no defense budget gets there (slope not positive)" if r["defense"] is None else \
                    f"needs <b>{r['defense']:.3g}</b> {unit} of defense"
                lines.append(f"{model}: an attacker spending {self.attack.value:.3g} {unit} {said}")
        self.readout.value = '<div class="rl-readout">' + "<br>".join(lines or ["pick a size"]) + "</div>"
        self._draw()

    def _draw(self) -> None:
        from .. import plots

        keep = list(self.sizes.value)
        points = self.fit.points[self.fit.points["model"].isin(keep)]
        per_size = self.fit.per_size[self.fit.per_size["model"].isin(keep)]
        if points.empty:
            self.chart.value = ""
            return
        chart = plots.offense_defense(points, per_size, title=f"{self.data.value}: attack to "
                                                             f"{self.threshold.value:.0%} ASR")
        band = self.fit.lines()
        band = band[band["model"].isin(keep)]
        # the fits' 95% bands, titled as plots.offense_defense titles its axes (equal titles merge)
        unit = "" if self.fit.scale == "FLOPs" else " (fraction of pretraining compute)"
        area = plots.alt.Chart(band).mark_area(opacity=0.12, color="gray").encode(
            x=plots._flops(plots.alt.X, "defense_flops", "defense FLOPs" + unit),
            y=plots._flops(plots.alt.Y, "low", "attack FLOPs per example to reach the ASR" + unit),
            y2="high:Q", detail="model:N")
        draw_chart(self.chart, plots.alt.layer(chart, area))
