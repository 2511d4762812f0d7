"""What every config dataclass of the lab shares: built from a dict, unknown keys rejected.

A typo in a parameter (``learning_rate`` for ``lr``) must be an error that names it and
lists what is accepted, not a silently ignored setting.
"""

from __future__ import annotations

from dataclasses import fields


class StrictConfig:
    """Mixin for dataclasses: ``from_dict`` rejects keys that are not fields."""

    #: How unknown keys are called in the error ("FinetuneConfig key(s)", "parameter(s)").
    _unknown_label: str | None = None

    @classmethod
    def from_dict(cls, values: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            label = cls._unknown_label or f"{cls.__name__} key(s)"
            raise ValueError(f"unknown {label} {unknown}; accepted: {sorted(known)}")
        return cls(**values)
