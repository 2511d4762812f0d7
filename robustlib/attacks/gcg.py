"""Greedy Coordinate Gradient (Zou et al. 2023), as used in the paper.

Each iteration, for every attacked example (batched across examples):

1. one forward + backward pass gives the gradient of the loss toward the target
   with respect to the one-hot matrix of the current attack tokens
   (``(n_attack_tokens, vocab)``, through ``model.get_input_embeddings()``); gradients
   of tokens an attack may not use (:func:`~robustlib.attacks.tokens.allowed_token_ids`)
   are set to +inf;
2. the ``top_k`` tokens with the most negative gradient are kept per position;
3. ``n_candidates`` single-token swaps are sampled (position uniform, token uniform
   among that position's top-k; a seeded generator per example); duplicates are not
   removed (the paper's accounting counts every candidate);
4. candidates that do not survive decode/re-encode in context are dropped
   (:func:`~robustlib.attacks.tokens.reencoding_filter`);
5. the remaining candidates are scored in batches (prefix KV cache), and the one with
   the lowest loss becomes the current attack, even if it is worse than the previous
   one (as in GCG and nanoGCG; the record keeps the best loss seen). If no candidate
   survives, the attack is unchanged for this iteration.

The initial attack (``init="lab"``, the default) is one token repeated (``" @"``
first, see :data:`~robustlib.attacks.tokens.INITIAL_ATTACK_TOKENS`), the first that
re-encodes stably in the example's context; ``init="paper"`` starts from the paper's
``"@&@&..."`` cut to the attack's length, and fails (naming the context) where it
does not tokenise stably. Paper settings are the defaults: ``top_k=256``,
``n_candidates=128``, 10 attack tokens; 10 iterations against undefended models, 128
against adversarially trained ones.

Compute per example and iteration (paper convention): ``6 N L`` for the gradient pass
plus ``2 N L K`` for the ``K`` candidates kept, ``L`` the full attacked length.

Usage::

    from robustlib.attacks import gcg
    result = gcg.run(model, tokenizer, examples, gcg.GCGConfig(iterations=10))
    # or step by step
    attack = gcg.GCG(model, tokenizer, examples, gcg.GCGConfig(iterations=10))
    attack.step(); attack.result().asr
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import is_int
from .base import Attack, run_batched
from .config import AttackConfig
from .result import AttackResult, StepOutcome
from .tokens import initial_attack_ids, paper_initial_attack_ids

#: GCG's initial attacks: the lab's (one stable token repeated) or the paper's ("@&" repeated).
INITS = ("lab", "paper")


@dataclass
class GCGConfig(AttackConfig):
    """GCG settings (paper values as defaults) on top of :class:`AttackConfig`."""

    top_k: int = 256  # tokens kept per position, by most negative gradient
    n_candidates: int = 128  # single-token swaps sampled per example and iteration
    init: str = "lab"  # initial attack: "lab" (one stable token repeated) or "paper" ("@&" repeated)

    def validate(self) -> None:
        super().validate()
        for name in ("top_k", "n_candidates"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise self.bad(name, value, "a positive integer")
        if self.init not in INITS:
            raise self.bad("init", self.init, str(INITS))


class GCG(Attack):
    """GCG driven one iteration at a time (see the module docstring)."""

    name = "gcg"
    config_class = GCGConfig

    def _init_attacks(self) -> None:
        n = self.config.n_attack_tokens
        first = paper_initial_attack_ids if self.config.init == "paper" else initial_attack_ids
        for i in self.attacked:
            s = self.sites[i]
            self.current[i] = first(self.tokenizer, s.before, s.after, n, self.allowed, s.before_ids, s.after_ids)

    def _step(self, active: list[int]) -> dict[int, StepOutcome]:
        cfg: GCGConfig = self.config  # type: ignore[assignment]
        n, c = cfg.n_attack_tokens, cfg.n_candidates
        k = min(cfg.top_k, len(self.allowed))
        grads = self.scorer.gradient([self.sites[i] for i in active], [self.current[i] for i in active])

        drawn, drawn_owners = [], []
        for i, g in zip(active, grads):
            if self.iteration == 0:
                self.records[i].initial_loss = g.loss
            grad = g.grad.clone()
            grad[:, ~self.allowed_mask] = float("inf")
            top = (-grad).topk(k, dim=1).indices.cpu()  # (n, k)
            g.grad = None  # free it
            gen = self.generators[i]
            pos = torch.randint(n, (c,), generator=gen)
            choice = torch.randint(k, (c,), generator=gen)
            cands = torch.tensor(self.current[i], dtype=torch.long).repeat(c, 1)
            cands[torch.arange(c), pos] = top[pos, choice]
            drawn += cands.tolist()
            drawn_owners += [i] * c
        # One re-encoding call for every example's candidates.
        keep = self._filter_many(drawn_owners, drawn)
        row_ids = [row for row, ok in zip(drawn, keep) if ok]
        owners = [i for i, ok in zip(drawn_owners, keep) if ok]
        row_sites = [self.sites[i] for i in owners]
        scores = self.scorer.evaluate(row_sites, row_ids) if row_ids else []

        mine = self._rows_by_example(active, owners)
        out = {}
        for i, g in zip(active, grads):
            rows = mine[i]
            paper = g.flops_paper + sum(scores[r].flops_paper for r in rows)
            real = g.flops_real + sum(scores[r].flops_real for r in rows)
            if rows:
                best = min(rows, key=lambda r: scores[r].loss)  # first of equal losses
                self.current[i] = row_ids[best]
                sc = scores[best]
                loss, success, pred = sc.loss, sc.success, sc.prediction
            else:  # nothing survived the filter: keep the attack, its loss from the gradient pass
                loss, success, pred = g.loss, g.success, g.prediction
            out[i] = StepOutcome(ids=list(self.current[i]), loss=loss, success=success, prediction=pred,
                                 n_evaluated=len(rows), flops_paper=paper, flops_real=real)
        return out


def run(model, tokenizer, examples, config: GCGConfig | dict | None = None) -> AttackResult:
    """Attack ``examples`` with GCG (in batches of ``config.batch_examples``)."""
    return run_batched(GCG, model, tokenizer, examples, config)


__all__ = ["GCG", "GCGConfig", "run"]
