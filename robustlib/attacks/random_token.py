"""RandomToken: the paper's baseline attack.

Each iteration, for every attacked example (batched across examples), draw
``n_attack_tokens`` token ids uniformly from the allowed vocabulary
(:func:`~robustlib.attacks.tokens.allowed_token_ids`) with the example's seeded
generator; ``resample_tries`` draws are made at once and the first that survives the
re-encoding filter is used (if none does, the example skips this iteration: nothing is
evaluated or spent). The draw is scored (prefix KV cache) and the first success is
kept as the example's attack (success is sticky). Draws are independent: there is no
"current" attack to improve. The paper ran 1280 iterations on undefended models.

Compute per example and iteration (paper convention): ``2 N L`` for the one forward
pass, ``L`` the full attacked length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import is_int
from .base import Attack, run_batched
from .config import AttackConfig
from .result import AttackResult, StepOutcome


@dataclass
class RandomTokenConfig(AttackConfig):
    """RandomToken settings on top of :class:`AttackConfig`."""

    resample_tries: int = 8  # draws per example and iteration; the first that re-encodes is used

    def validate(self) -> None:
        super().validate()
        if not is_int(self.resample_tries) or self.resample_tries <= 0:
            raise self.bad("resample_tries", self.resample_tries, "a positive integer")


class RandomToken(Attack):
    """RandomToken driven one iteration at a time (see the module docstring)."""

    name = "random_token"
    config_class = RandomTokenConfig

    def _step(self, active: list[int]) -> dict[int, StepOutcome]:
        cfg: RandomTokenConfig = self.config  # type: ignore[assignment]
        chosen: dict[int, list[int]] = {}
        for i in active:
            draws = self.allowed[torch.randint(len(self.allowed), (cfg.resample_tries, cfg.n_attack_tokens),
                                               generator=self.generators[i])]
            ok = self._filter(i, draws)
            if any(ok):
                chosen[i] = draws[ok.index(True)].tolist()
        order = [i for i in active if i in chosen]
        scores = self.scorer.evaluate([self.sites[i] for i in order], [chosen[i] for i in order]) if order else []
        out = {}
        for i, sc in zip(order, scores):
            out[i] = StepOutcome(ids=chosen[i], loss=sc.loss, success=sc.success, prediction=sc.prediction,
                                 n_evaluated=1, flops_paper=sc.flops_paper, flops_real=sc.flops_real)
        for i in active:
            if i not in chosen:  # no draw re-encoded: nothing evaluated or spent
                out[i] = StepOutcome(ids=None, loss=float("nan"), success=False, prediction=None)
        return out


def run(model, tokenizer, examples, config: RandomTokenConfig | dict | None = None) -> AttackResult:
    """Attack ``examples`` with RandomToken (in batches of ``config.batch_examples``)."""
    return run_batched(RandomToken, model, tokenizer, examples, config)


__all__ = ["RandomToken", "RandomTokenConfig", "run"]
