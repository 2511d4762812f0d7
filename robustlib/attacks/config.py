"""The settings every attack shares (:class:`AttackConfig`); each attack's config
subclasses it with its own fields.

A config is checked where it is built (:class:`robustlib.config.StrictConfig`: unknown
keys rejected, field types checked, then :meth:`AttackConfig.validate` checks values),
so a bad value fails before any compute.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..config import StrictConfig, is_int

#: ``AttackConfig.target``: ``"label"`` attacks a sequence classifier toward
#: ``example.target``; ``"string"`` attacks a causal LM toward ``target_string``
#: (see :mod:`robustlib.attacks.scorer`).
TARGET_MODES = ("label", "string")

_POSITION_HELP = "None (the task's slot / the chunk's suffix) or a number in [0, 1]"


@dataclass
class AttackConfig(StrictConfig):
    """Settings shared by every attack. Unknown keys are rejected by :meth:`from_dict`.

    Validation happens in ``__post_init__`` (types, then :meth:`validate`; again in
    :meth:`validate` when :meth:`coerce` is given a config), so a bad value fails where
    the config is built, before any compute.
    """

    n_attack_tokens: int = 10  # tokens in the attack string
    iterations: int = 10  # attack iterations (the attack's budget)
    position: float | None = None  # None = the task's slot / the chunk's suffix; else in [0, 1]
    seed: int = 0  # the same seed gives the same attack on the same machine
    batch_examples: int = 32  # examples attacked together (their prefix caches are held)
    target: str = "label"  # "label": toward example.target; "string": toward target_string
    target_string: str = " Sure, here"  # used when target == "string"
    stop_on_success: bool = False  # freeze an example once it succeeded (still counted)
    skip_incorrect: bool = True  # do not attack examples the model gets wrong before the attack
    use_prefix_cache: bool = True  # run the fixed prefix once per example (KV cache)
    candidate_batch_size: int = 128  # rows per forward pass; halves on out-of-memory
    prefix_tiers: int = 3  # candidates re-cut on their shared attack prefix (robustlib.attacks.scorer); < 2: off
    progress: bool = True  # tqdm progress bar in run()

    def check_types(self) -> None:
        # The position first: the generic check would only say "a finite number or
        # None", while the accepted range is what a user needs to read.
        self._check_position()
        super().check_types()

    def _check_position(self) -> None:
        p = self.position
        if p is not None:
            if isinstance(p, bool) or not isinstance(p, numbers.Real) or math.isnan(float(p)) or not 0 <= p <= 1:
                raise self.bad("position", p, _POSITION_HELP)

    def validate(self) -> None:
        if not is_int(self.iterations) or self.iterations <= 0:
            raise self.bad("iterations", self.iterations, "a positive integer",
                           "a budget of zero iterations attacks nothing")
        for name in ("n_attack_tokens", "batch_examples", "candidate_batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise self.bad(name, value, "a positive integer")
        if not is_int(self.prefix_tiers) or self.prefix_tiers < 0:
            raise self.bad("prefix_tiers", self.prefix_tiers, "an integer >= 0 (below 2: no tiers)")
        self._check_position()
        if not is_int(self.seed):
            raise self.bad("seed", self.seed, "an integer")
        if self.target not in TARGET_MODES:
            raise self.bad("target", self.target, f"one of {TARGET_MODES}")
        if self.target == "string" and (not isinstance(self.target_string, str) or not self.target_string):
            raise self.bad("target_string", self.target_string, "a non-empty string (target='string')")
        for name in ("stop_on_success", "skip_incorrect", "use_prefix_cache", "progress"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise self.bad(name, value, "True or False")


__all__ = ["TARGET_MODES", "AttackConfig"]
