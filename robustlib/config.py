"""What every config dataclass of the lab shares: built from a dict, unknown keys
rejected, simple field types checked, and one error type for unknown names.

A typo in a parameter (``learning_rate`` for ``lr``) must be an error that names it and
lists what is accepted, not a silently ignored setting; a value of the wrong type
(``"3"`` for an ``int``, ``NaN`` for a ``float``) must fail where the config is built,
before any compute.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, fields
from typing import Any


class UnknownNameError(KeyError, ValueError):
    """An unknown name (task, attack, model preset, family, notebook, ...).

    A ``KeyError`` for dictionary-style lookups and a ``ValueError`` for input checks,
    so callers catch it either way; ``str()`` is the message (a plain ``KeyError``
    would show it in quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an int to Python, not to a researcher)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# Annotation (as a string: modules use ``from __future__ import annotations``) -> the
# check and the words for the error message.
_SIMPLE = {
    "int": (is_int, "an integer"),
    "float": (lambda v: is_number(v) and math.isfinite(float(v)), "a finite number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "list": (lambda v: isinstance(v, (list, tuple)), "a list"),
    "dict": (lambda v: isinstance(v, dict), "a mapping"),
}


class StrictConfig:
    """Mixin for config dataclasses.

    * :meth:`from_dict` rejects keys that are not fields, naming them and the accepted ones;
    * :meth:`check_types` checks fields annotated ``int``, ``float``, ``str``, ``bool``,
      ``list`` or ``dict`` (optionally ``| None``), and normalises them: an ``int``
      given for a ``float`` becomes a float and a tuple given for a ``list`` a list, so
      the same settings always give the same recorded parameters (and run name);
    * the default ``__post_init__`` calls :meth:`check_types` then :meth:`validate`,
      where subclasses check values.
    """

    #: How unknown keys are called in the error ("FinetuneConfig key(s)", "parameter(s)").
    _unknown_label: str | None = None

    def __post_init__(self) -> None:
        self.check_types()
        self.validate()

    def validate(self) -> None:
        """Check values (ranges, names); raise ``ValueError`` naming the field."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init]

    @classmethod
    def from_dict(cls, values: dict):
        if not isinstance(values, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a mapping, got {type(values).__name__}")
        known = cls.field_names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            label = cls._unknown_label or f"{cls.__name__} key(s)"
            raise ValueError(f"unknown {label} {unknown}; accepted: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_namespace(cls, namespace: dict):
        """The config from the variables of that name in ``namespace`` (a notebook's
        ``globals()`` after its parameters cell): each field is taken from there."""
        missing = [n for n in cls.field_names() if n not in namespace]
        if missing:
            raise ValueError(f"{cls.__name__}: the namespace lacks {missing}")
        return cls(**{n: namespace[n] for n in cls.field_names()})

    @classmethod
    def coerce(cls, config):
        """``config`` as an instance of ``cls``: None gives the defaults, a dict goes
        through :meth:`from_dict` (unknown keys rejected), an instance is checked again
        (it may have been changed since it was built), and a config of a parent class is
        upgraded (its fields kept, the subclass's own at their defaults). Anything else
        is a ``TypeError`` naming what is accepted."""
        if config is None:
            return cls()
        if isinstance(config, dict):
            return cls.from_dict(config)
        if isinstance(config, cls):
            config.check_types()
            config.validate()
            return config
        if isinstance(config, StrictConfig) and issubclass(cls, type(config)):
            return cls(**asdict(config))
        raise TypeError(f"config must be a {cls.__name__}, a dict or None; got {type(config).__name__}")

    def to_dict(self) -> dict:
        return asdict(self)

    def bad(self, name: str, value: Any, accepted: str, why: str = "") -> ValueError:
        """The error for a bad value of field ``name`` (returned, for ``raise``)."""
        why = f" ({why})" if why else ""
        return ValueError(f"{type(self).__name__}.{name}={value!r} is invalid{why}; accepted: {accepted}")

    def check_types(self) -> None:
        for f in fields(self):
            if not f.init:
                continue
            annotation = str(f.type).replace(" ", "")
            optional = annotation.endswith("|None")
            simple = annotation[: -len("|None")] if optional else annotation
            if simple not in _SIMPLE:
                continue  # an annotation not policed here (the class checks it itself)
            value = getattr(self, f.name)
            if value is None and optional:
                continue
            check, words = _SIMPLE[simple]
            if not check(value):
                raise self.bad(f.name, value, words + (" or None" if optional else ""))
            if simple == "float":
                setattr(self, f.name, float(value))
            elif simple == "int":
                setattr(self, f.name, int(value))
            elif simple == "list":
                setattr(self, f.name, list(value))
