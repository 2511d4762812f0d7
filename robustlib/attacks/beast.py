"""BEAST (Sadasivan et al. 2024, "Fast Adversarial Attacks on Language Models In One
GPU Minute"), as the paper used it against classifiers.

A gradient-free beam search that grows the attack by one token per iteration:

1. a small *sampler* causal LM reads the text before the attack followed by each
   beam's attack tokens and proposes ``samples_per_beam`` next tokens per beam,
   sampled without replacement from its next-token distribution (temperature
   ``sampler_temperature``), restricted to the tokens an attack may use;
2. each proposal is a candidate one token longer than its beam; candidates that do
   not survive decode/re-encode in context are dropped;
3. the target model scores every candidate (batched across examples, prefix KV
   cache), and the ``beam_size`` lowest-loss candidates become the new beams; the
   best one is the current attack.

The first iteration expands the empty attack into ``beam_size x samples_per_beam``
first tokens. Paper settings: 25 tokens (so 25 iterations), beam 7.

**The sampler.** By default it is the language model the classifier was made from
(what :func:`robustlib.models.load_classifier` records as ``robustlib_base_model`` and
:func:`robustlib.models.save_classifier` keeps): its unembedding proposes the tokens.
``sampler_model`` names another (a preset, folder or hub id; the paper used a small
base LM of the target's family), or pass ``sampler=`` a loaded causal LM. Either way
the sampler's tokenizer must map the same strings to the same ids as the target's
(checked; sizes alone are not enough: a 49,152-token sampler of a 4,096-token target
would propose ids of another vocabulary), and errors say which sampler was used and
how to choose another.

Compute per example and iteration (paper convention): the sampler's forward passes,
``2 N_s (L_prefix + t)`` per beam, plus ``2 N L`` per candidate scored by the target.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from .. import flops as _flops
from ..config import is_int
from .base import Attack, run_batched
from .config import AttackConfig
from .result import AttackResult, StepOutcome


@dataclass
class BEASTConfig(AttackConfig):
    """BEAST settings (paper values as defaults) on top of :class:`AttackConfig`."""

    n_attack_tokens: int = 25  # the attack's final length; one token per iteration
    iterations: int = 25
    beam_size: int = 7  # k1: beams kept
    samples_per_beam: int = 7  # k2: next tokens proposed per beam
    sampler_model: str = ""  # causal LM proposing tokens; "" = the one the classifier was made from
    sampler_temperature: float = 1.0

    def validate(self) -> None:
        super().validate()
        for name in ("beam_size", "samples_per_beam"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise self.bad(name, value, "a positive integer")
        if self.iterations > self.n_attack_tokens:
            raise self.bad("iterations", self.iterations, f"at most n_attack_tokens={self.n_attack_tokens}",
                           "BEAST adds one token per iteration")
        if not isinstance(self.sampler_temperature, (int, float)) or not self.sampler_temperature > 0:
            raise self.bad("sampler_temperature", self.sampler_temperature, "a positive number")
        if self.sampler_model and not isinstance(self.sampler_model, str):
            raise self.bad("sampler_model", self.sampler_model, "a model name or path")


def sampler_name(config: BEASTConfig, model) -> str:
    """The sampler BEAST uses on ``model``: ``config.sampler_model``, else the language
    model the classifier was made from."""
    from ..models import BASE_MODEL_KEY

    name = config.sampler_model or getattr(model.config, BASE_MODEL_KEY, None)
    if not name:
        raise ValueError("BEAST needs a sampler language model and this classifier does not record the one it was "
                         f"made from ({BASE_MODEL_KEY}); set sampler_model to a causal LM that shares its tokenizer "
                         "(a preset such as zoo-0.3m, a folder or a hub id)")
    return name


@functools.lru_cache(maxsize=2)
def _cached_sampler(name: str, device: str):
    from .. import models

    return models.load_causal_lm(name, device=device)


def load_sampler(name: str, tokenizer=None, device: str = "cpu"):
    """The proposal LM ``name`` (a preset, folder or hub id) in eval mode on ``device``,
    loaded once per process and device; with ``tokenizer`` (the target's), checked to
    share its vocabulary (:func:`check_vocabulary`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"sampler_model={name!r} is invalid; accepted: a preset, a local folder or a hub id")
    try:
        model, sampler_tokenizer = _cached_sampler(name, str(device))
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"BEAST's sampler {name!r} cannot be loaded: {err}") from None
    if tokenizer is not None:
        check_vocabulary(name, sampler_tokenizer, tokenizer)
    return model


def check_vocabulary(name: str, sampler_tokenizer, tokenizer) -> None:
    """Every token string of the target's ``tokenizer`` must have the same id in the
    sampler's (special tokens aside): BEAST proposes ids, so another vocabulary would
    propose meaningless ones silently."""
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    theirs = sampler_tokenizer.get_vocab()
    wrong = [(tok, i, theirs.get(tok)) for tok, i in tokenizer.get_vocab().items()
             if tok not in special and theirs.get(tok) != i]
    if wrong:
        tok, i, j = wrong[0]
        raise ValueError(f"BEAST's sampler {name!r} maps {len(wrong)} of the target tokenizer's {len(tokenizer)} "
                         f"tokens to other ids (e.g. {tok!r}: {i} in the target, {j} in the sampler): it would "
                         "propose ids of another vocabulary; set sampler_model to a language model that shares the "
                         "target's tokenizer (by default BEAST uses the model the classifier was made from)")


class BEAST(Attack):
    """BEAST driven one iteration (one token) at a time (see the module docstring)."""

    name = "beast"
    config_class = BEASTConfig

    def __init__(self, model, tokenizer, examples, config=None, *, sampler=None, **kw):
        cfg = self.config_class.coerce(config)
        if sampler is None:
            device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else "cpu"
            sampler = load_sampler(sampler_name(cfg, model), tokenizer, device=str(device))
        self.sampler = sampler
        rows = self.sampler.get_input_embeddings().weight.shape[0]
        if rows < len(tokenizer):
            raise ValueError(f"the sampler has {rows} token embeddings but the target tokenizer {len(tokenizer)} "
                             "tokens: BEAST needs a sampler that shares the target's tokenizer (sampler_model)")
        self.sampler_params = _flops.count_params(self.sampler)
        self._sampler_flops = _flops.measured(self.sampler)  # real FLOPs per shape, measured once per process
        super().__init__(model, tokenizer, examples, cfg, **kw)

    def _init_attacks(self) -> None:
        self.beams: dict[int, list[list[int]]] = {i: [[]] for i in self.attacked}
        for i in self.attacked:
            self.current[i] = []

    @torch.no_grad()
    def _propose(self, i: int, n_samples: int) -> tuple[list[list[int]], int, float]:
        """Candidates one token longer than each beam of example ``i``; returns them
        with the sampler's paper and real FLOPs."""
        cfg: BEASTConfig = self.config  # type: ignore[assignment]
        beams = self.beams[i]
        site = self.sites[i]
        device = next(self.sampler.parameters()).device
        ids = torch.tensor([site.before_ids + b for b in beams], dtype=torch.long, device=device)
        tally = _flops.FlopTally()
        logits = _flops.counted(tally, ("sampler",) + tuple(ids.shape), self.sampler_params, ids.numel(), False,
                                lambda: self.sampler(input_ids=ids).logits[:, -1].float().cpu(),
                                cache=self._sampler_flops)
        logits = logits / cfg.sampler_temperature
        mask = torch.full_like(logits, float("-inf"))
        allowed = self.allowed[self.allowed < logits.shape[-1]].cpu()
        mask[:, allowed] = 0.0
        probs = torch.softmax(logits + mask, dim=-1)
        n = min(n_samples, len(allowed))
        picks = torch.multinomial(probs, n, replacement=False, generator=self.generators[i])
        cands = [b + [int(t)] for b, row in zip(beams, picks.tolist()) for t in row]
        return cands, tally.paper, float(tally.real)

    def _step(self, active: list[int]) -> dict[int, StepOutcome]:
        cfg: BEASTConfig = self.config  # type: ignore[assignment]
        row_sites, row_ids, owners, sampler_cost = [], [], [], {}
        for i in active:
            first = self.beams[i] == [[]]
            cands, paper, real = self._propose(i, cfg.beam_size * cfg.samples_per_beam if first
                                               else cfg.samples_per_beam)
            sampler_cost[i] = (paper, real)
            keep = self._filter(i, torch.tensor(cands, dtype=torch.long))
            grown = dataclasses.replace(self.sites[i], n_attack=len(cands[0]))
            for cand, ok in zip(cands, keep):
                if ok:
                    row_sites.append(grown)
                    row_ids.append(cand)
                    owners.append(i)
        scores = self.scorer.evaluate(row_sites, row_ids) if row_ids else []
        mine = self._rows_by_example(active, owners)
        out = {}
        for i in active:
            rows = sorted(mine[i], key=lambda r: scores[r].loss)  # stable: first of equal losses
            paper = sampler_cost[i][0] + sum(scores[r].flops_paper for r in rows)
            real = sampler_cost[i][1] + sum(scores[r].flops_real for r in rows)
            if rows:
                self.beams[i] = [row_ids[r] for r in rows[: cfg.beam_size]]
                self.current[i] = self.beams[i][0]
                best = scores[rows[0]]
                loss, success, pred, ids = best.loss, best.success, best.prediction, list(self.current[i])
            else:  # nothing survived the filter: the beams stay as they were
                rec = self.records[i]
                loss = rec.losses[-1] if rec.losses else rec.clean_loss
                success, pred, ids = False, rec.prediction, None
            if self.iteration == 0:
                self.records[i].initial_loss = loss
            out[i] = StepOutcome(ids=ids, loss=loss, success=success, prediction=pred,
                                 n_evaluated=len(rows), flops_paper=paper, flops_real=real)
        return out


def run(model, tokenizer, examples, config: BEASTConfig | dict | None = None) -> AttackResult:
    """Attack ``examples`` with BEAST (in batches of ``config.batch_examples``)."""
    return run_batched(BEAST, model, tokenizer, examples, config)


__all__ = ["BEAST", "BEASTConfig", "load_sampler", "run"]
