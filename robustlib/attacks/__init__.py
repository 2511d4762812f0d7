"""Attacks on classifiers (and, with ``target="string"``, on causal LMs).

nanoGCG-style: a config dataclass in, an :class:`AttackResult` out, the caller owns
the model::

    from robustlib import attacks
    result = attacks.run_attack("gcg", model, tokenizer, examples, attacks.GCGConfig(iterations=10))
    result.asr            # ASR at iterations 0..10 (ASR@0 = 0)
    result.asr_frame()    # iteration, asr, cumulative FLOPs (paper and real)
    result.to_frame()     # one row per (example, iteration)

Each attack is also a class that can be stepped (``GCG(model, tok, examples, cfg).step()``),
for interactive explorers. Registry: :data:`ATTACKS` (name -> class), :func:`get_attack`.
Shared machinery: the driver (:mod:`robustlib.attacks.base`), settings
(:mod:`~robustlib.attacks.config`), results (:mod:`~robustlib.attacks.result`),
vocabulary and re-encoding filter (:mod:`~robustlib.attacks.tokens`), prefix-cached
batched scoring and compute accounting (:mod:`~robustlib.attacks.scorer`).
"""

from __future__ import annotations

from ..config import UnknownNameError
from .base import Attack, run_batched
from .beast import BEAST, BEASTConfig
from .config import AttackConfig
from .gcg import GCG, GCGConfig
from .random_token import RandomToken, RandomTokenConfig
from .result import AttackResult, ExampleRecord, StepOutcome, StepReport, asr_curve
from .tokens import allowed_token_ids, initial_attack_ids, reencoding_filter

#: Attacks by name.
ATTACKS: dict[str, type[Attack]] = {"random_token": RandomToken, "gcg": GCG, "beast": BEAST}


def get_attack(name: str) -> type[Attack]:
    """The attack class registered as ``name`` (:class:`~robustlib.config.UnknownNameError`,
    a ``KeyError`` and a ``ValueError``, for any other)."""
    if isinstance(name, str) and name in ATTACKS:
        return ATTACKS[name]
    raise UnknownNameError(f"unknown attack {name!r}; accepted: {', '.join(sorted(ATTACKS))}")


def register_attack(cls: type[Attack], *, overwrite: bool = False) -> type[Attack]:
    """Add an :class:`Attack` subclass under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise TypeError(f"register_attack expects an Attack subclass, got {cls!r}")
    if cls.name in ATTACKS and not overwrite:
        raise ValueError(f"attack name {cls.name!r} is already registered; pass overwrite=True to replace it")
    ATTACKS[cls.name] = cls
    return cls


def get_config_class(name: str) -> type[AttackConfig]:
    """The config dataclass of the attack called ``name``."""
    return get_attack(name).config_class


def run_attack(name: str, model, tokenizer, examples, config: AttackConfig | dict | None = None) -> AttackResult:
    """Run the attack called ``name`` on ``examples`` (batches of ``config.batch_examples``).

    ``config`` may be the attack's config, a plain :class:`AttackConfig` (upgraded with
    the attack's defaults), a dict (unknown keys rejected) or None (defaults).
    """
    return run_batched(get_attack(name), model, tokenizer, examples, config)


__all__ = [
    "ATTACKS",
    "BEAST",
    "BEASTConfig",
    "GCG",
    "Attack",
    "AttackConfig",
    "AttackResult",
    "ExampleRecord",
    "GCGConfig",
    "RandomToken",
    "RandomTokenConfig",
    "StepOutcome",
    "StepReport",
    "allowed_token_ids",
    "asr_curve",
    "get_attack",
    "get_config_class",
    "initial_attack_ids",
    "reencoding_filter",
    "register_attack",
    "run_attack",
]
