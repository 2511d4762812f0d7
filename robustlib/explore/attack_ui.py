"""The attack explorer of ``06_explore``: step an attack on one example and watch it
work (:class:`AttackExplorer`, over :class:`~robustlib.explore.session.AttackSession`)."""

from __future__ import annotations

import html
import json
import math
import threading

import ipywidgets as w
import pandas as pd

from .session import AttackSession
from .ui import STYLE, draw_chart

#: Placement choices of the attack explorer: label -> position (None: the task's slot).
POSITIONS = {"suffix": 1.0, "prefix": 0.0, "infix (middle)": 0.5, "the task's slot": None}


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

        self.model = w.Dropdown(options=list(models), description="model", style=STYLE)
        self.search = w.Text(placeholder="search the examples", description="search", style=STYLE)
        self.example = w.Dropdown(description="example", style=STYLE, layout=w.Layout(width="60%"))
        self.attack = w.Dropdown(options=["gcg", "random_token", "beast"], value="gcg", description="attack")
        self.tokens = w.BoundedIntText(value=6, min=1, max=64, description="attack tokens", style=STYLE)
        self.position = w.Dropdown(options=list(POSITIONS), value="suffix", description="position")
        self.options = w.Text(value="{}", description="options (JSON)", style=STYLE,
                              placeholder='{"n_candidates": 64}')
        self.iterations = w.BoundedIntText(value=iterations, min=1, max=100_000, description="budget",
                                           style=STYLE)
        self.n = w.BoundedIntText(value=5, min=1, max=10_000, description="N", layout=w.Layout(width="120px"))
        self.step_button = w.Button(description="Step", button_style="primary")
        self.run_button = w.Button(description="Run N")
        self.stop_button = w.Button(description="Stop", disabled=True)
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
            self._live_stop(False)
            return
        self._enable(True)
        self._show(self.session.state())

    def _live_stop(self, on: bool) -> None:
        """Stop is orange only while a run can be stopped (a disabled button keeps its style)."""
        self.stop_button.disabled = not on
        self.stop_button.button_style = "warning" if on else ""

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
            draw_chart(self.chart, chart)
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
        self._live_stop(True)

        def work():
            try:
                self.run(n)
            except Exception as err:  # shown, not lost in a thread
                self.status.value = f'<span style="color:#b00">stopped: {html.escape(str(err))}</span>'
            finally:
                self._live_stop(False)
                self._enable(True)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()
        return self._thread
