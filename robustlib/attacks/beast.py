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
first tokens. Paper settings: 25 tokens (so 25 iterations), beam 7. The sampler
defaults to the smallest member of the target's family that the lab ships
(``zoo-0.3m`` for the offline family); pass ``sampler=`` a loaded causal LM (sharing
the target's tokenizer) to use another.

Compute per example and iteration (paper convention): the sampler's forward passes,
``2 N_s (L_prefix + t)`` per beam, plus ``2 N L`` per candidate scored by the target.
"""

from __future__ import annotations

import dataclasses
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
    sampler_model: str = ""  # causal LM proposing tokens; "" = zoo-0.3m (see module docstring)
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


def load_sampler(name: str = ""):
    """The proposal LM: a zoo causal LM by name (default ``zoo-0.3m``), or a folder/hub id."""
    from transformers import AutoModelForCausalLM

    from .. import models, paths

    name = name or "zoo-0.3m"
    preset = models.PRESETS.get(name)
    if preset is not None and preset.family == "zoo":
        folder = paths.zoo_dir() / name
        if not (folder / "model.safetensors").exists():
            raise ValueError(f"sampler_model {name!r} is not built; run `make zoo`")
        src = str(folder)
    elif preset is not None:
        src = preset.source
    else:
        from pathlib import Path

        if not Path(name).expanduser().exists() and name.count("/") != 1:
            raise ValueError(f"sampler_model {name!r} is neither a preset ({sorted(models.PRESETS)}), "
                             "a local folder nor a hub id")
        src = name
    return AutoModelForCausalLM.from_pretrained(src).eval()


class BEAST(Attack):
    """BEAST driven one iteration (one token) at a time (see the module docstring)."""

    name = "beast"
    config_class = BEASTConfig

    def __init__(self, model, tokenizer, examples, config=None, *, sampler=None, **kw):
        cfg = self.config_class.coerce(config)
        self.sampler = sampler if sampler is not None else load_sampler(cfg.sampler_model)
        if self.sampler.get_input_embeddings().weight.shape[0] < len(tokenizer):
            raise ValueError("the sampler's vocabulary is smaller than the target tokenizer's: "
                             "BEAST needs a sampler of the same family")
        self.sampler_params = _flops.count_params(self.sampler)
        self._sampler_tally = _flops.FlopTally()
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
        tally._real_cache = self._sampler_tally._real_cache  # measured once per shape
        logits = _flops.counted(tally, ("sampler",) + tuple(ids.shape), self.sampler_params, ids.numel(), False,
                                lambda: self.sampler(input_ids=ids).logits[:, -1].float().cpu())
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
