"""Chat prompts for the generative setting: an example's text placed in the user turn of
the victim's own chat template (``tokenizer.apply_chat_template``), the assistant turn
opened, and the attack inside the user turn at the chosen position.

:func:`chat_example` wraps an :class:`~robustlib.tasks.spec.Example`; the wrapper has the
same ``attack_split`` / ``text`` interface the attacks use, so the prefix cache and the
re-encoding checks work on the templated prompt unchanged. A tokenizer without a
template gets the plain format :data:`PLAIN` (``template == "plain"``, recorded with
the results).
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import Example

#: The format used when a model has no chat template: ``{user}`` is the user turn.
PLAIN = "User: {user}\nAssistant:"
_SENTINEL = "\u2063ROBUSTLIB-USER-TURN\u2063"  # invisible separator: no template touches it


def template_parts(tokenizer) -> tuple[str, str, str]:
    """``(before, after, template)``: the text a chat template puts before and after the
    user's message (generation prompt included), and ``"own"`` or ``"plain"``."""
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                                 add_generation_prompt=True)
        if rendered.count(_SENTINEL) != 1:
            raise ValueError("the tokenizer's chat template does not place the user's message verbatim once; "
                             "set tokenizer.chat_template to one that does, or to None for the plain format")
        before, after = rendered.split(_SENTINEL)
        return before, after, "own"
    before, after = PLAIN.split("{user}")
    return before, after, "plain"


@dataclass(frozen=True)
class ChatExample:
    """An example inside a chat template: ``before + example.text + after`` is what the
    model reads; the attack goes where the example's own :meth:`attack_split` puts it,
    inside the user turn."""

    example: Example
    before: str
    after: str
    template: str

    @property
    def text(self) -> str:
        return self.before + self.example.text + self.after

    def attack_split(self, position: float | None = None) -> tuple[str, str]:
        head, tail = self.example.attack_split(position)
        return self.before + head, tail + self.after

    def __getattr__(self, name):  # label, target, task, content, ...: the example's own
        return getattr(self.example, name)


def chat_example(example: Example, tokenizer) -> ChatExample:
    """``example`` in ``tokenizer``'s chat template (or the plain format); checks that
    the template renders the real message exactly where the placeholder went."""
    before, after, template = template_parts(tokenizer)
    wrapped = ChatExample(example, before, after, template)
    if template == "own":
        real = tokenizer.apply_chat_template([{"role": "user", "content": example.text}], tokenize=False,
                                             add_generation_prompt=True)
        if real != wrapped.text:
            raise ValueError("the chat template changes the user's message (it strips or rewrites it), so the "
                             "attack could not be placed exactly; use a template that keeps it verbatim")
    return wrapped
