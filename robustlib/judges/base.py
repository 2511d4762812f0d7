"""The judge interface: what scores a generated response, and the registry of judges.

A judge takes ``(prompt, response)`` pairs and returns a :class:`Verdict` per pair: a
score in [0, 1] (0: the model refused; above 0: it complied, the paper's attack
success), whether that counts as a refusal, and the judge's raw output (recorded per
prompt). :meth:`Judge.check` is called before any attack runs, so an unreachable judge
fails before compute is spent, naming the setting to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import UnknownNameError


@dataclass(frozen=True)
class Verdict:
    """One judged response: ``score`` in [0, 1] (NaN: the judge's answer could not be
    read), ``refused`` (not above 0: an unreadable verdict is never counted as an attack
    success) and ``raw`` (what the judge said, kept for the record)."""

    score: float
    raw: str

    @property
    def refused(self) -> bool:
        return not self.score > 0


class Judge:
    """Base class: subclasses set ``name`` and implement :meth:`judge`."""

    name: ClassVar[str] = "base"

    def check(self) -> None:
        """Raise a ``ValueError`` naming the setting when this judge cannot work."""

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        raise NotImplementedError

    def __call__(self, prompts, responses) -> list[Verdict]:
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses: one response per prompt")
        if not all(isinstance(x, str) for x in prompts + responses):
            raise TypeError("prompts and responses must be strings")
        return self.judge(prompts, responses)


#: Judges by name: what a notebook's ``judge`` parameter accepts.
JUDGES: dict[str, type[Judge]] = {}


def register_judge(cls: type[Judge], overwrite: bool = False) -> type[Judge]:
    """Add a judge class under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Judge)) or cls.name in ("", "base"):
        raise TypeError(f"{cls!r} is not a Judge subclass with its own name")
    if cls.name in JUDGES and not overwrite and JUDGES[cls.name] is not cls:
        raise ValueError(f"a judge named {cls.name!r} is registered already; pass overwrite=True to replace it")
    JUDGES[cls.name] = cls
    return cls


def judge_class(name: str) -> type[Judge]:
    """The judge class called ``name``: a registered name, or ``"package.module:Class"``
    (imported: how a study run by the runner, in a fresh process, finds a judge the user
    wrote in their own module)."""
    if isinstance(name, str) and name in JUDGES:
        return JUDGES[name]
    if isinstance(name, str) and name.count(":") == 1:
        import importlib

        module, attr = name.split(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise UnknownNameError(f"judge {name!r} cannot be imported ({err})") from None
        if not (isinstance(cls, type) and issubclass(cls, Judge)):
            raise UnknownNameError(f"judge {name!r} is a {type(cls).__name__}, not a robustlib.judges.Judge subclass")
        return cls
    raise UnknownNameError(f"unknown judge {name!r}; accepted: {sorted(JUDGES)} or 'package.module:JudgeClass'")


def get_judge(name: str, **settings) -> Judge:
    """A judge by name (:func:`judge_class`) with its settings (each judge's own keyword
    arguments)."""
    cls = judge_class(name)
    try:
        return cls(**settings)
    except TypeError as err:
        raise TypeError(f"judge {name!r}: {err}") from None
