"""One attack on one example, stepped by hand: what the attack explorer shows.

:class:`AttackSession` wraps any lab attack (RandomToken, GCG, BEAST) on a single
example and keeps what an explorer draws after every step: the loss per iteration, the
attack tokens held and which of them changed, the class probabilities before the attack
and now (a classifier) or the greedy continuation (a causal LM attacked toward a
target string), and the iteration at which the attack first succeeded. Nothing here
imports ipywidgets: the widgets in :mod:`robustlib.explore.widgets` only call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: What a span of the attacked prompt is: untouched text, an attack token, or an attack
#: token that changed at the last step.
SPAN_KINDS = ("text", "attack", "changed")


@dataclass(frozen=True)
class Span:
    """A piece of the attacked prompt: ``text`` and its ``kind`` (:data:`SPAN_KINDS`)."""

    text: str
    kind: str


def _softmax_probabilities(model, tokenizer, text: str) -> list[float]:
    """Class probabilities of a classifier on ``text`` (float32)."""
    device = next(model.parameters()).device
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()[0]
    return torch.softmax(logits, dim=-1).tolist()


def _continuation(model, tokenizer, text: str, n_tokens: int) -> str:
    """The greedy continuation of ``text`` by a causal LM (``n_tokens`` tokens)."""
    device = next(model.parameters()).device
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


class AttackSession:
    """``attack`` (a name or spec mapping, as a study takes it) on ``example`` against
    ``model``. ``position`` places the attack (the task's slot for slot tasks);
    ``iterations`` caps the session (the attack's config budget). The model is only
    read, never trained or moved. ``target="string"`` in the options attacks a causal
    LM toward ``target_string``; the session then reports the greedy continuation
    instead of class probabilities.
    """

    def __init__(self, model, tokenizer, example, attack="gcg", position: float | None = 1.0,
                 iterations: int = 100, seed: int = 0):
        from ..attacks import get_attack
        from ..attacks.spec import AttackSpec

        spec = AttackSpec.parse(attack, "attack", {"iterations": "the session's iterations"})
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
            raise ValueError(f"iterations={iterations!r} is invalid; accepted: a positive integer")
        if spec.name == "beast":  # BEAST adds one token per iteration
            iterations = min(iterations, spec.config(iterations=1).n_attack_tokens)
        # An explorer steps past success, and attacks an example the model already gets
        # wrong unless told otherwise (the state then says so: correct_before False).
        settings = {"iterations": iterations, "seed": seed, "stop_on_success": False,
                    "skip_incorrect": spec.options.get("skip_incorrect", False)}
        if "position" in get_attack(spec.name).config_class.field_names():
            settings["position"] = position
        self.spec, self.model, self.tokenizer, self.example = spec, model, tokenizer, example
        self.config = spec.config(**settings)
        self._cls = get_attack(spec.name)
        self.reset()

    # ---- driving

    def reset(self) -> None:
        """Back to iteration 0: a fresh attack from the same seed."""
        self.attack = self._cls(self.model, self.tokenizer, [self.example], self.config)
        self.record = self.attack.records[0]
        self.site = self.attack.sites[0]
        self.previous_ids: list[int] = []
        self.ids: list[int] = self._held_ids()
        self.before_probabilities = self.probabilities(with_attack=False)
        self.before_continuation = self.continuation(with_attack=False)

    @property
    def iteration(self) -> int:
        return self.attack.iteration

    @property
    def done(self) -> bool:
        return self.attack.done

    @property
    def string_target(self) -> bool:
        return self.config.target == "string"

    def step(self) -> dict:
        """One iteration; returns :meth:`state`."""
        if not self.record.attacked:
            raise ValueError("the model already gets this example wrong: there is nothing to attack "
                             "(pick another example, or set skip_incorrect=False in the attack's options)")
        self.previous_ids = list(self.ids)
        self.attack.step()
        self.ids = self._held_ids()
        return self.state()

    def run(self, n: int, should_stop=lambda: False, on_step=None) -> dict:
        """Up to ``n`` iterations, stopping early when ``should_stop()`` turns true or the
        budget is spent; ``on_step(state)`` after each. Returns the last state."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n={n!r} is invalid; accepted: a positive number of iterations")
        state = self.state()
        for _ in range(n):
            if self.done or should_stop():
                break
            state = self.step()
            if on_step is not None:
                on_step(state)
        return state

    def _held_ids(self) -> list[int]:
        """The attack tokens held now: the attack's working tokens (GCG, BEAST), else its
        reported best (RandomToken samples afresh each iteration)."""
        held = self.attack.current.get(0)
        if held is not None:
            return list(held)
        return list(self.record.attack_ids)

    # ---- what an explorer shows

    @property
    def losses(self) -> list[float]:
        """Loss toward the target after each iteration (index 0: iteration 1)."""
        return list(self.record.losses)

    @property
    def broken_at(self) -> int | None:
        """The first iteration at which the attack succeeded, None while it has not."""
        return self.record.first_success_iteration

    def attacked_text(self, ids: list[int] | None = None) -> str:
        ids = self.ids if ids is None else ids
        return self.site.before + (self.tokenizer.decode(ids) if ids else "") + self.site.after

    def probabilities(self, with_attack: bool = True) -> list[float] | None:
        """Class probabilities with the held attack (or the clean text); None for a
        string target."""
        if self.string_target:
            return None
        text = self.attacked_text() if with_attack else self.example.text
        return _softmax_probabilities(self.model, self.tokenizer, text)

    def continuation(self, with_attack: bool = True) -> str | None:
        """The greedy continuation with the held attack (string target only)."""
        if not self.string_target:
            return None
        text = self.attacked_text() if with_attack else self.example.text
        n = len(self.tokenizer(self.config.target_string, add_special_tokens=False)["input_ids"]) + 8
        return _continuation(self.model, self.tokenizer, text, n)

    def changed(self) -> list[int]:
        """Positions (in the attack) whose token changed at the last step."""
        if not self.previous_ids:
            return list(range(len(self.ids))) if self.iteration else []
        return [i for i, t in enumerate(self.ids) if i >= len(self.previous_ids) or self.previous_ids[i] != t]

    def spans(self) -> list[Span]:
        """The attacked prompt as spans: the text before the attack, one span per attack
        token (``changed`` where it changed at the last step), the text after it.
        Wherever the attack sits (prefix, infix, suffix, a task's slot), the spans
        join to :meth:`attacked_text` up to the tokenizer's decoding of the attack."""
        changed = set(self.changed())
        out = [Span(self.site.before, "text")] if self.site.before else []
        for i, token in enumerate(self.ids):
            out.append(Span(self.tokenizer.decode([token]), "changed" if i in changed else "attack"))
        if self.site.after:
            out.append(Span(self.site.after, "text"))
        return out

    def state(self) -> dict:
        """Everything an explorer draws now."""
        loss = self.record.losses[-1] if self.record.losses else math.nan
        return {"iteration": self.iteration, "loss": loss, "losses": self.losses, "broken_at": self.broken_at,
                "success": bool(self.record.successes[-1]) if self.record.successes else False,
                "changed": self.changed(), "attack": self.tokenizer.decode(self.ids) if self.ids else "",
                "probabilities_before": self.before_probabilities, "probabilities": self.probabilities(),
                "continuation_before": self.before_continuation, "continuation": self.continuation(),
                "target": int(self.example.target), "label": int(self.example.label), "done": self.done,
                "correct_before": bool(self.record.correct_before)}
