"""The three explorers of ``06_explore`` as ipywidgets: :class:`AttackExplorer`,
:class:`ResultsBrowser` and :class:`WhatIfExplorer`. Each is a thin layer over the
tested functions of :mod:`~robustlib.explore.session`, :mod:`~robustlib.explore.browse`
and :mod:`~robustlib.explore.whatif`: the widgets hold controls and outputs, and every
update sets only its own widgets' values (charts as inline SVG), never the cell's output.
Show one with ``display(explorer.ui)``; tests drive the same objects without a browser.
"""

from __future__ import annotations

import html
import json
import math
import threading

import ipywidgets as w
import pandas as pd

from . import browse, whatif
from .session import AttackSession

#: Placement choices of the attack explorer: label -> position (None: the task's slot).
POSITIONS = {"suffix": 1.0, "prefix": 0.0, "infix (middle)": 0.5, "the task's slot": None}
ANY = "(any)"
#: The columns the results browser lists under its chart (when the rows have them).
ROW_COLUMNS = ("source", "model", "seed", "round", "train_attack", "attack", "position", "iteration", "asr",
               "n_attacked", "attack_flops", "defense_flops", "median", "train", "eval", "asr_median")
_STYLE = {"description_width": "initial"}


def _chart(target: w.HTML, chart) -> None:
    """Draw ``chart`` into ``target`` as inline SVG (vl-convert), with its alt text.
    A widget value, not an Output area: updates arrive in order however fast they come,
    and the chart's text (title, axes) is in the page for a reader or a test."""
    import vl_convert as vlc

    from .. import plots

    spec = chart.to_dict()
    svg = vlc.vegalite_to_svg(spec)
    label = html.escape(plots.describe(spec), quote=True)
    target.value = f'<div class="rl-chart" role="img" aria-label="{label}">{svg}</div>'


def prompt_html(spans) -> str:
    """The attacked prompt as HTML: attack tokens highlighted, changed ones bold and
    darker; text escaped, line breaks kept."""
    colours = {"attack": "#ffe08a", "changed": "#ff9f43"}
    parts = []
    for span in spans:
        text = html.escape(span.text).replace("\n", "<br>")
        if span.kind == "text":
            parts.append(text)
        else:
            weight = "bold" if span.kind == "changed" else "normal"
            parts.append(f'<span class="rl-{span.kind}" style="background:{colours[span.kind]};'
                         f'font-weight:{weight};border-radius:3px">{text}</span>')
    return ('<div class="rl-prompt" style="font-family:monospace;white-space:normal;line-height:1.5;'
            f'border:1px solid #ddd;padding:6px;max-height:220px;overflow:auto">{"".join(parts)}</div>')


# ----------------------------------------------------------------------------- attack explorer


class AttackExplorer:
    """Step an attack on one example and watch it work.

    ``models``: ``{label: loader}``, each loader a function returning ``(model,
    tokenizer)`` (called once, on first use); ``examples``: the examples to pick from.
    :meth:`from_study` fills both from a study's fine-tuning run.
    """

    def __init__(self, models: dict, examples: list, iterations: int = 50):
        if not models:
            raise ValueError("no models to explore: pass {label: loader}")
        if not examples:
            raise ValueError("no examples to explore")
        self._loaders, self._loaded, self._correct = dict(models), {}, {}
        self.examples = list(examples)
        self.session: AttackSession | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        self.model = w.Dropdown(options=list(models), description="model", style=_STYLE)
        self.search = w.Text(placeholder="search the examples", description="search", style=_STYLE)
        self.example = w.Dropdown(description="example", style=_STYLE, layout=w.Layout(width="60%"))
        self.attack = w.Dropdown(options=["gcg", "random_token", "beast"], value="gcg", description="attack")
        self.tokens = w.BoundedIntText(value=6, min=1, max=64, description="attack tokens", style=_STYLE)
        self.position = w.Dropdown(options=list(POSITIONS), value="suffix", description="position")
        self.options = w.Text(value="{}", description="options (JSON)", style=_STYLE,
                              placeholder='{"n_candidates": 64}')
        self.iterations = w.BoundedIntText(value=iterations, min=1, max=100_000, description="budget",
                                           style=_STYLE)
        self.n = w.BoundedIntText(value=5, min=1, max=10_000, description="N", layout=w.Layout(width="120px"))
        self.step_button = w.Button(description="Step", button_style="primary")
        self.run_button = w.Button(description="Run N")
        self.stop_button = w.Button(description="Stop", button_style="warning", disabled=True)
        self.reset_button = w.Button(description="Reset")
        self.progress = w.IntProgress(min=0, max=1, value=0, description="running", layout=w.Layout(width="40%"))
        self.prediction = w.HTML()
        self.status = w.HTML()
        self.prompt = w.HTML()
        self.chart = w.HTML()
        self.loss_chart = None  # what ``chart`` shows (for tests and exports)

        self.search.observe(lambda _: self._fill_examples(), "value")
        self.model.observe(lambda _: self._fill_examples(), "value")  # marks differ per model
        for control in (self.model, self.example, self.attack, self.tokens, self.position, self.options,
                        self.iterations):
            control.observe(lambda _: self._new_session(), "value")
        self.step_button.on_click(lambda _: self.step())
        self.run_button.on_click(lambda _: self.run_in_background(self.n.value))
        self.stop_button.on_click(lambda _: self._stop.set())
        self.reset_button.on_click(lambda _: self.reset())
        self._fill_examples()
        self.ui = w.VBox([
            w.HBox([self.model, self.search]), self.example, self.prediction,
            w.HBox([self.attack, self.tokens, self.position]), w.HBox([self.options, self.iterations]),
            w.HBox([self.step_button, self.n, self.run_button, self.stop_button, self.reset_button, self.progress]),
            self.status, self.prompt, self.chart,
        ])
        self.ui.add_class("rl-attack-explorer")  # what a browser test (or a user's CSS) finds it by
        self._new_session()

    @classmethod
    def from_study(cls, study: str, n_examples: int = 32, store=None, device: str = "auto", **kw):
        """The models (size x seed) and validation examples of a study's latest
        ``01_finetune`` run."""
        from .. import models as _models
        from .. import record
        from ..studies.base import DataSpec
        from ..studies.finetune import fine_tuned_models

        run = (store or record.RunStore()).latest(study, "01_finetune")
        table = fine_tuned_models(run)
        loaders = {key: (lambda path=path: _models.load_classifier(path, device=device))
                   for key, path in zip(table["model_key"], table["checkpoint"])}
        examples = DataSpec.of_run(run).examples("validation", n=n_examples)
        return cls(loaders, examples, **kw)

    @classmethod
    def from_models(cls, names, examples=None, task: str = "password_match", n_examples: int = 16,
                    device: str = "auto", **kw):
        """Any classifiers the lab loads, by preset, local folder or hub id (each loaded
        on first use), attacked on ``examples`` or ``n_examples`` validation examples of
        ``task``."""
        from .. import models as _models
        from .. import tasks

        names = [names] if isinstance(names, str) else list(names)
        loaders = {str(n): (lambda n=n: _models.load_classifier(n, device=device)) for n in names}
        if examples is None:
            examples = tasks.load_examples(task, "validation", n_examples, seed=0)
        return cls(loaders, examples, **kw)

    # ---- the pieces

    def _model(self):
        label = self.model.value
        if label not in self._loaded:
            self._loaded[label] = self._loaders[label]()
        return self._loaded[label]

    def correct(self) -> list:
        """Per example, whether the chosen model classifies it correctly (None for a
        model that is not a classifier); computed once per model."""
        label = self.model.value
        if label not in self._correct:
            model, tokenizer = self._model()
            if type(model).__name__.endswith("ForSequenceClassification"):
                from ..finetune import classify

                _, _, predictions = classify(model, tokenizer, self.examples)
                self._correct[label] = [int(p) == ex.label for p, ex in zip(predictions, self.examples)]
            else:
                self._correct[label] = [None] * len(self.examples)
        return self._correct[label]

    def _fill_examples(self) -> None:
        """The examples matching the search, each marked with whether the model gets it
        right; the first one it gets right is picked unless one was picked already."""
        needle = self.search.value.strip().lower()
        right = self.correct()
        mark = {True: "\u2713 ", False: "\u2717 ", None: ""}
        shown = [(f"#{i} {mark[right[i]]}{ex.content[:70]!r} (label {ex.label})", i)
                 for i, ex in enumerate(self.examples) if not needle or needle in ex.text.lower()]
        keep = self.example.value if self.example.value in {i for _, i in shown} else None
        if keep is None:
            keep = next((i for _, i in shown if right[i]), shown[0][1] if shown else -1)
        self.example.options = shown or [("no example matches the search", -1)]
        self.example.value = keep

    def spec(self) -> dict:
        """The attack spec the controls describe (``ValueError`` for bad JSON)."""
        try:
            extra = json.loads(self.options.value or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"options={self.options.value!r} is not JSON ({err.msg}); accepted: a JSON object "
                             'such as {"n_candidates": 64}') from None
        if not isinstance(extra, dict):
            raise ValueError(f"options={self.options.value!r} is invalid; accepted: a JSON object")
        return {"name": self.attack.value, "n_attack_tokens": self.tokens.value, **extra}

    def _new_session(self) -> None:
        self.session = None
        if self.example.value is None or self.example.value < 0:
            self.status.value = "<b>pick an example</b>"
            return
        try:
            model, tokenizer = self._model()
            example = self.examples[self.example.value]
            self.session = AttackSession(model, tokenizer, example, self.spec(),
                                         position=POSITIONS[self.position.value], iterations=self.iterations.value)
        except (ValueError, TypeError, KeyError) as err:
            self.status.value = f'<span style="color:#b00">cannot attack: {html.escape(str(err))}</span>'
            self._enable(False)
            self.stop_button.disabled = True
            return
        self._enable(True)
        self._show(self.session.state())

    def _enable(self, on: bool) -> None:
        for b in (self.step_button, self.run_button, self.reset_button):
            b.disabled = not on

    def _show(self, state: dict) -> None:
        s = self.session
        probs, before = state["probabilities"], state["probabilities_before"]
        if probs is not None:
            t = state["target"]
            clean = "correct" if state["correct_before"] else "already wrong"
            self.prediction.value = (f"clean prediction: class {max(range(len(before)), key=before.__getitem__)} "
                                     f"(p={max(before):.3f}; label {state['label']}, {clean})")
            said = f"P(target class {t}) before {before[t]:.3f} &rarr; now {probs[t]:.3f}"
        else:
            self.prediction.value = f"clean continuation: {html.escape(repr(state['continuation_before']))}"
            said = f"continuation now: {html.escape(repr(state['continuation']))}"
        broken = (f' &middot; <b style="color:#b00">broken at iteration {state["broken_at"]}</b>'
                  if state["broken_at"] else "")
        loss = "" if math.isnan(state["loss"]) else f" &middot; loss {state['loss']:.4f}"
        self.status.value = (f'<span class="rl-iteration">iteration {state["iteration"]}</span>{loss} &middot; '
                             f'{said}{broken} &middot; changed tokens: {len(state["changed"])}')
        self.prompt.value = prompt_html(s.spans())
        if state["losses"]:
            from .. import plots

            frame = pd.DataFrame({"iteration": range(1, len(state["losses"]) + 1), "loss": state["losses"]})
            ticks = list(frame["iteration"])[:: max(1, len(frame) // 10)]  # whole iterations only
            chart = plots.alt.Chart(frame).mark_line(point=True).encode(
                x=plots.alt.X("iteration:Q", title="iteration", axis=plots.alt.Axis(format="d", values=ticks)),
                y=plots.alt.Y("loss:Q", title="loss toward the target", scale=plots.alt.Scale(zero=False)),
                tooltip=["iteration", "loss"]).properties(title="Loss per iteration", width=420, height=180)
            self.loss_chart = chart
            _chart(self.chart, chart)
        else:
            self.loss_chart = None
            self.chart.value = ""

    # ---- actions (also what the tests call)

    def step(self) -> dict | None:
        if self.session is None or self.session.done:
            return None
        state = self.session.step()
        self._show(state)
        return state

    def reset(self) -> None:
        if self.session is not None:
            self.session.reset()
            self._show(self.session.state())

    def run(self, n: int) -> dict | None:
        """``n`` iterations in this thread (what :meth:`run_in_background` runs)."""
        if self.session is None:
            return None
        self.progress.max, self.progress.value = n, 0

        def after(state):
            self.progress.value += 1
            self._show(state)

        return self.session.run(n, should_stop=self._stop.is_set, on_step=after)

    def run_in_background(self, n: int) -> threading.Thread:
        """Run ``n`` iterations in a thread, so the Stop button stays live; controls are
        disabled meanwhile."""
        self._stop.clear()
        self._enable(False)
        self.stop_button.disabled = False

        def work():
            try:
                self.run(n)
            except Exception as err:  # shown, not lost in a thread
                self.status.value = f'<span style="color:#b00">stopped: {html.escape(str(err))}</span>'
            finally:
                self.stop_button.disabled = True
                self._enable(True)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()
        return self._thread


# ----------------------------------------------------------------------------- results browser


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
        self.filters = {c: w.Dropdown(description=c, style=_STYLE, layout=w.Layout(width="32%")) for c in columns}
        self.view = w.Dropdown(options=list(browse.VIEWS), value="ASR vs iterations", description="view")
        self.budget = w.Dropdown(description="budget", style=_STYLE)
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
        _chart(self.chart, chart)
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


# ----------------------------------------------------------------------------- what-if


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
                                       description="target ASR", readout_format=".2f", style=_STYLE)
        self.axis = w.ToggleButtons(options=["FLOPs", "fraction of pretraining"], value="FLOPs")
        self.sizes = w.SelectMultiple(description="sizes", rows=5)
        self.defense = w.FloatText(value=0.0, description="defense budget", style=_STYLE)
        self.attack = w.FloatText(value=0.0, description="attack budget", style=_STYLE)
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
        _chart(self.chart, plots.alt.layer(chart, area))
