"""The StrongREJECT rubric asked of a local causal LM through transformers (greedy and
batched by :func:`robustlib.generation.generate`, no network): its chat template when it
has one, else the rubric as plain text."""

from __future__ import annotations

import math

from .base import Judge, Verdict, register_judge
from .rubric import parse, prompt_for, score


@register_judge
class LocalRubricJudge(Judge):
    """``model``: a preset, folder or hub id of a causal LM (or ``(model, tokenizer)``
    already loaded); ``max_new_tokens`` of its answer; ``device``."""

    name = "local"

    def __init__(self, model, max_new_tokens: int = 256, device: str = "auto"):
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} is invalid; accepted: a positive integer")
        self._given, self.max_new_tokens, self.device = model, max_new_tokens, device
        self._loaded = None

    def check(self) -> None:
        self._load()

    def _load(self):
        if self._loaded is None:
            if isinstance(self._given, tuple):
                self._loaded = self._given
            else:
                from .. import models

                self._loaded = models.load_causal_lm(self._given, device=self.device)
        return self._loaded

    def _text(self, tokenizer, message: str) -> str:
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                                 add_generation_prompt=True)
        return message + "\n"

    def judge(self, prompts, responses):
        from ..generation import generate

        model, tokenizer = self._load()
        inputs = [tokenizer(self._text(tokenizer, prompt_for(p, r)), add_special_tokens=False)["input_ids"]
                  for p, r in zip(prompts, responses)]
        out = []
        for answer in generate(model, tokenizer, inputs, max_new_tokens=self.max_new_tokens, batch_size=8):
            try:
                value = score(*parse(answer))
            except ValueError:
                value = math.nan
            out.append(Verdict(value, answer))
        return out
