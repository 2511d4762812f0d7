"""The task spec and the example: what the classifier reads, and where an attack may go.

A :class:`Task` is data (instructions, content template, answer prompt, the two class
strings, attack kind, data source, version); :meth:`Task.make_example` fills its
template into an :class:`Example`, whose :meth:`Example.attack_split` places the attack
by the rules of :func:`_check_position` and :func:`_snap_to_word_end`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from typing import Any

from robustlib.config import is_number

ANSWER_PROMPT = "\n\nAnswer:"
ATTACK_KINDS = ("slot", "chunk")
GENERATED = "generated"

_POSITION_HELP = "a number in [0, 1] (1.0 = suffix, 0.0 = prefix, 0.9 = infix90) or None"


def _normalize(name: str) -> str:
    """How task names are compared, here (a name must keep some letters or digits) and
    in the registry: ``"PasswordMatch"``, ``"password-match"`` and ``"password_match"``
    all give ``"passwordmatch"``."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclasses.dataclass(frozen=True)
class Task:
    """A binary classification task, as data.

    Attributes:
        name: registry key, lower_snake_case by convention (``"password_match"``).
        version: bumped whenever anything that changes the text or the labels changes;
            copied into every :class:`Example` so results say which data they used.
        instructions: text before the content (ends with its own separator).
        content_template: :meth:`str.format` template for the content.
        answer_prompt: text after the content (always ``"\\n\\nAnswer:"`` here).
        class_strings: the strings for label 0 and label 1, with a leading space.
        attack_kind: ``"slot"`` (fixed empty slot after the content) or ``"chunk"``
            (inside an attackable chunk of the content, at a position in [0, 1]).
        source: a Hugging Face hub id, or ``"generated"``.
        data_dir: ``data_dir`` passed to :func:`datasets.load_dataset` (hh-rlhf).
        chunk_field: for ``"chunk"`` tasks, the template field that is the attackable
            chunk; ``None`` means the whole content is the chunk.
        description: one line for humans (shown in listings and reports).
        typical_tokens: an example's typical length in tokens of the paper's models'
            tokenizers, for what a study will cost (``sweep --dry-run``); None: unknown.
    """

    name: str
    version: str
    instructions: str
    content_template: str
    class_strings: tuple[str, str]
    attack_kind: str
    source: str
    answer_prompt: str = ANSWER_PROMPT
    data_dir: str | None = None
    chunk_field: str | None = None
    description: str = ""
    typical_tokens: int | None = None

    kind = "classification"  # see robustlib.tasks.prompts for the generative kind

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _normalize(self.name):
            raise ValueError(f"task name must be a non-empty string with letters or digits, got {self.name!r}")
        if not isinstance(self.version, str) or not self.version:
            raise ValueError(f"task {self.name!r}: version must be a non-empty string, got {self.version!r}")
        strings = tuple(self.class_strings)
        if len(strings) != 2 or not all(isinstance(s, str) and s.strip() for s in strings) or strings[0] == strings[1]:
            raise ValueError(
                f"task {self.name!r}: class_strings must be two distinct non-blank strings, got {self.class_strings!r}"
            )
        object.__setattr__(self, "class_strings", strings)
        if self.attack_kind not in ATTACK_KINDS:
            raise ValueError(f"task {self.name!r}: attack_kind must be one of {ATTACK_KINDS}, got {self.attack_kind!r}")
        fields = self.template_fields
        if self.chunk_field is not None:
            if self.attack_kind != "chunk":
                raise ValueError(f"task {self.name!r}: chunk_field only makes sense for attack_kind='chunk'")
            if fields.count(self.chunk_field) != 1:
                raise ValueError(
                    f"task {self.name!r}: chunk_field {self.chunk_field!r} must appear exactly once in "
                    f"content_template (its fields: {fields})"
                )

    @property
    def template_fields(self) -> list[str]:
        """Names of the ``{fields}`` in :attr:`content_template`, in order."""
        try:
            parsed = list(string.Formatter().parse(self.content_template))
        except ValueError as err:
            raise ValueError(f"task {self.name!r}: bad content_template: {err}") from None
        fields = [f for _, f, _, _ in parsed if f is not None]
        if any(not f or not f.isidentifier() for f in fields):
            raise ValueError(
                f"task {self.name!r}: content_template fields must be plain names like {{text}}, got {fields}"
            )
        return fields

    @property
    def generated(self) -> bool:
        return self.source == GENERATED

    def make_example(self, label: int, **fields: str) -> Example:
        """Fill the content template with ``fields`` and return an :class:`Example`.

        The attackable chunk's offsets are computed here, so attack placement never has
        to search the text (which would be ambiguous when the chunk repeats).
        """
        content_parts: list[str] = []
        chunk_span: tuple[int, int] | None = None
        for literal, field, spec, conversion in string.Formatter().parse(self.content_template):
            content_parts.append(literal)
            if field is None:
                continue
            if field not in fields:
                raise ValueError(f"task {self.name!r}: missing field {field!r} (template needs {self.template_fields})")
            value = fields[field]
            if conversion:
                value = {"r": repr, "s": str, "a": ascii}[conversion](value)
            value = format(value, spec or "")
            start = sum(map(len, content_parts))
            if field == self.chunk_field:
                chunk_span = (start, start + len(value))
            content_parts.append(value)
        content = "".join(content_parts)
        if self.attack_kind == "slot":
            chunk_span = (len(content), len(content))  # the empty slot after the content
        elif chunk_span is None:
            chunk_span = (0, len(content))  # the whole content is the chunk
        return Example(
            task=self.name,
            task_version=self.version,
            instructions=self.instructions,
            content=content,
            answer_prompt=self.answer_prompt,
            label=label,
            class_strings=self.class_strings,
            attack_kind=self.attack_kind,
            chunk_start=chunk_span[0],
            chunk_end=chunk_span[1],
        )


@dataclasses.dataclass(frozen=True)
class Example:
    """One classification example.

    ``text`` (what the classifier sees) is ``instructions + content + answer_prompt``.
    ``content[chunk_start:chunk_end]`` is the attackable chunk; for ``"slot"`` tasks it
    is the empty slot at the end of the content (``chunk_start == chunk_end ==
    len(content)``).
    """

    task: str
    task_version: str
    instructions: str
    content: str
    answer_prompt: str
    label: int
    class_strings: tuple[str, str]
    attack_kind: str
    chunk_start: int
    chunk_end: int

    def __post_init__(self) -> None:
        if isinstance(self.label, bool) or self.label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {self.label!r}")
        if self.attack_kind not in ATTACK_KINDS:
            raise ValueError(f"attack_kind must be one of {ATTACK_KINDS}, got {self.attack_kind!r}")
        if not 0 <= self.chunk_start <= self.chunk_end <= len(self.content):
            raise ValueError(
                f"chunk [{self.chunk_start}, {self.chunk_end}) does not fit in content of length {len(self.content)}"
            )
        if self.attack_kind == "slot" and self.chunk_start != len(self.content):
            raise ValueError("a slot example's chunk must be the empty slot at the end of the content")

    @property
    def target(self) -> int:
        """The class the attacker aims at: the wrong one."""
        return 1 - self.label

    @property
    def text(self) -> str:
        """The clean text the classifier sees."""
        return self.instructions + self.content + self.answer_prompt

    @property
    def class_string(self) -> str:
        return self.class_strings[self.label]

    @property
    def target_string(self) -> str:
        return self.class_strings[self.target]

    @property
    def chunk(self) -> str:
        """The attackable chunk (empty for slot tasks)."""
        return self.content[self.chunk_start : self.chunk_end]

    def attack_split(self, position: float | None = None) -> tuple[str, str]:
        """Split :attr:`text` around the attack: the attacked text is
        ``before + attack_string + after``; with an empty attack it is :attr:`text`.

        ``"slot"`` tasks: the attack goes in the fixed slot right after the content,
        before the answer prompt. ``position`` must be ``None`` or ``1.0``.

        ``"chunk"`` tasks: ``position`` in [0, 1] (``None`` means 1.0) is a fraction of
        the chunk's length in characters. 0.0 puts the attack before the chunk's first
        character (prefix) and 1.0 after its last (suffix). Any other position is
        snapped *back* to the nearest word end at or before ``floor(position * len)``,
        where a word end is a whitespace character preceded by a non-whitespace one
        (the chunk's start counts too). So words are never cut, ``before`` ends with a
        word and ``after`` starts with the whitespace that separated it from the next:
        an attack string that starts with a space (as GPT-NeoX and Qwen word tokens do)
        reads as a separate word. No space is added or removed, which keeps the empty
        attack exact.

        Raises:
            ValueError: the position is not a number in [0, 1] (NaN, a string, a bool),
                or is not ``None``/1.0 on a slot task. Raised before any work.
        """
        offset = self.attack_offset(position)
        return self.instructions + self.content[:offset], self.content[offset:] + self.answer_prompt

    def attack_offset(self, position: float | None = None) -> int:
        """Character offset into :attr:`content` where the attack goes (see
        :meth:`attack_split` for the rule)."""
        if self.attack_kind == "slot":
            try:
                fixed = _check_position(position) == 1.0
            except ValueError:
                fixed = False
            if not fixed:
                raise ValueError(
                    f"task {self.task!r} has a fixed attack slot after the content; position must be None "
                    f"or 1.0, got {position!r}"
                )
            return self.chunk_end
        return self.chunk_start + _snap_to_word_end(self.chunk, _check_position(position))

    def attacked_text(self, attack: str, position: float | None = None) -> str:
        """``before + attack + after`` for the given position."""
        before, after = self.attack_split(position)
        return before + attack + after


def _check_position(position: Any) -> float:
    """Validate an attack position and return it as a float (None -> 1.0)."""
    if position is None:
        return 1.0
    if not is_number(position):
        # ValueError, not TypeError: callers treat every bad parameter value alike.
        raise ValueError(f"attack position must be {_POSITION_HELP}, got {position!r}")  # noqa: TRY004
    p = float(position)
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"attack position must be {_POSITION_HELP}, got {position!r}")
    return p


def _snap_to_word_end(chunk: str, p: float) -> int:
    """Offset in ``chunk`` for position ``p``: 0 and len exactly at the ends, otherwise
    the last word end at or before ``floor(p * len)`` (0 if there is none)."""
    n = len(chunk)
    # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 at 29.
    k = min(n, math.floor(p * n + 1e-9))
    if k in (0, n):
        return k
    for i in range(k, 0, -1):
        if chunk[i].isspace() and not chunk[i - 1].isspace():
            return i
    return 0
