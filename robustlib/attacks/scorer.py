"""Batched scoring of attack rows: losses, successes and one-hot gradients, with a
prefix KV cache and compute accounting.

A *row* is an (example, candidate attack) pair: the example's context is a
:class:`Site`, the candidate a list of token ids; :class:`Scorer` returns a
:class:`RowScore` per row.

**Targets.** ``target="label"``: the model is a sequence classifier (HF
``...ForSequenceClassification`` with a ``score`` head); the loss is the cross-entropy
of its two logits, read at the last token, toward ``example.target`` (the wrong class);
success means the classifier predicts the target. ``target="string"``: the model is a
causal LM; the loss is the mean cross-entropy of the tokens of ``config.target_string``
appended after the attacked text (teacher forcing); success means every target token
is the greedy (arg-max) prediction, i.e. greedy decoding would start with the target.
Each site carries its own target tokens (``Site.target_ids``), so a batch may aim every
example at a different string (the generative setting's per-prompt targets).

**Loss evaluation** (the speed-critical part). The token sequence of a row (an
(example, candidate) pair) is ``before_ids`` (fixed per example) + ``attack_ids`` (varies)
+ ``tail_ids`` (fixed: ``after_ids``, plus the target tokens in string mode). With
``use_prefix_cache`` the key/value cache of ``before_ids`` is computed once per example
(batch 1, kept for the life of the attack object, which holds ``batch_examples``
examples at most) and only ``attack + tail`` is run for each row, with position ids
continuing from the prefix length. The rows of one example attend to a single copy of
its prefix's keys and values (:mod:`robustlib.attacks.shared_prefix`, for every model
whose attention goes through transformers' attention interface); other models get the
cache expanded along the batch (passed as ``cache=`` where the base model's forward
takes it, transformers 5.24 on, else as ``past_key_values=``). Rows are
grouped by ``(prefix length, suffix length, target length)``: within a group every row has the same
shape, so nothing is padded, no attention mask is needed, and the classifier head is
applied to the hidden state at the very last position, which is the last real token.
Rows of different examples that share a group are batched together (their caches are
concatenated along the batch). We chose grouping over left-padding prefixes because it
is exact (no padded keys, whose NaN rows under SDPA could leak through a 0-weight
attention), needs no per-architecture mask or position handling, and costs nothing in
the common case: GCG's ``n_candidates`` rows per example already fill a batch. Groups
are split into chunks of ``candidate_batch_size`` rows, a size that halves (for the
rest of the attack) when a chunk runs out of memory.

**Shared attack prefixes.** GCG's candidates each change one token of the current
attack, so most of them agree with it on a first stretch. :meth:`evaluate` sorts the
rows of an example (with a cached prefix and at least ``TIER_MIN_ROWS`` rows) into
``tiers`` groups by how many leading attack tokens they share with the example's
reference attack (the most common token at each position: the current attack, for
GCG), at the fixed split points ``n * t // tiers``; a row of the tier at ``s`` runs only
``attack[s:] + tail`` on the prefix cache extended by ``reference[:s]`` (one small
forward per example and call). The result is the same up to rounding. With 3 tiers, a
10-token attack and a 5-token target, GCG's candidate scoring runs 20% fewer real
FLOPs and takes 11-19% less time on 2 CPU cores (zoo-3m, zoo-8m; more tiers save more
FLOPs in smaller batches, which ran no faster). Rows that share nothing with the
reference (RandomToken's) stay as they are; the split points are fixed so that the
row shapes, and their FLOP measurements, recur from step to step.

**Compute**, per example and iteration, two conventions (:mod:`robustlib.flops`):

* paper: ``2 N`` FLOPs per token of every forward row and ``4 N`` more per token of
  every backward row, counting the *full* sequence (prefix included, as if no KV cache
  were used), so a GCG iteration costs ``6 N L + 2 N L K`` for an example of ``L``
  tokens with ``K`` candidates kept after the filter. Clean evaluation is reported
  separately (``clean_flops_*``), not in the per-iteration numbers.
* real: the FLOPs ``torch.utils.flop_counter.FlopCounterMode`` counts for what was
  actually executed (prefix cache included, so the prefix is run once, not per row;
  the backward computes only input gradients), measured once per distinct shape and
  cached. A chunk's real FLOPs are shared equally among its rows; the prefix pass is
  charged to the iteration that computed it (the first one).
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import flops as _flops
from ..runtime import halving_chunks
from .shared_prefix import shared_prefix, supports

log = logging.getLogger("robustlib.attacks")

#: Fewest rows of one example worth re-cutting on shared attack prefixes.
TIER_MIN_ROWS = 16
#: Keys of the caches of derived sites (an example's prefix plus part of its reference
#: attack), kept apart from the examples' own keys; dropped when the call ends.
DERIVED = 1 << 48


@dataclass
class Site:
    """One example's attack context: ``before_ids + attack + tail_ids``, where
    ``tail_ids = after_ids (+ target tokens in string mode)``."""

    key: int  # example index; keys the prefix cache (negative: never cached)
    before: str
    after: str
    before_ids: list[int]
    after_ids: list[int]
    tail_ids: list[int]
    target: int  # class aimed at (label mode)
    n_attack: int
    target_ids: list[int] = field(default_factory=list)  # string mode: the tokens aimed at (end of tail_ids)

    @property
    def prefix_len(self) -> int:
        return len(self.before_ids)

    @property
    def suffix_len(self) -> int:
        return self.n_attack + len(self.tail_ids)

    @property
    def full_len(self) -> int:
        return self.prefix_len + self.suffix_len


@dataclass
class RowScore:
    loss: float
    success: bool
    prediction: int | None
    flops_paper: int
    flops_real: float
    grad: torch.Tensor | None = None  # (n_attack, vocab) for gradient rows


class Scorer:
    """Batched losses (and one-hot gradients) of rows ``(site, attack_ids)``.

    See the module docstring for the grouping, the prefix cache and the accounting.
    ``batch_size`` (rows per forward) halves on out-of-memory.
    """

    def __init__(self, model, mode: str, use_cache: bool, batch_size: int, shared: bool | None = None,
                 tiers: int = 3):
        self.model = model
        self.tiers = tiers  # shared attack-prefix tiers of :meth:`evaluate` (below 2: off)
        self.mode = mode
        # None: shared-prefix attention where the model supports it, else an expanded cache
        self.shared_prefix = supports(model) if shared is None else bool(shared)
        self.use_cache = use_cache
        self.batch_size = batch_size
        if mode == "label":
            head = getattr(model, "score", None)
            if not isinstance(head, torch.nn.Module):
                raise ValueError(
                    f"target='label' needs a sequence classifier with a `score` head (GPT-NeoX/Qwen2 "
                    f"...ForSequenceClassification); {type(model).__name__} has none. "
                    "For a causal LM use target='string'"
                )
        else:
            head = model.get_output_embeddings()
            if head is None:
                raise ValueError(
                    f"target='string' needs a causal LM with an output embedding; {type(model).__name__} has none"
                )
        self.head = head
        self.base = model.base_model
        if self.base is model:
            raise ValueError(
                f"{type(model).__name__} has no separate base model (model.base_model is the model itself)"
            )
        self.embed = model.get_input_embeddings()
        self.device = self.embed.weight.device
        self.num_params = _flops.count_params(model)
        self._kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._real = _measured_flops(model, self.mode, self.use_cache, self.shared_prefix)  # per row, by shape
        self._cache_name = _cache_argument(self.base)

    # ---- compute accounting

    def _measured(self, key: tuple, rows: int, fn: Callable[[], Any]) -> tuple[Any, float]:
        """Run ``fn`` on ``rows`` rows of one shape; return its output and its real FLOPs
        per row. Matmul and attention FLOPs are linear in the number of rows, so they are
        measured once per ``key`` (the shape of a row) whatever the row count: counting
        every call cost about a third of a GPU attack's wall time on small models."""
        if key in self._real:
            return fn(), self._real[key]
        from torch.utils.flop_counter import FlopCounterMode

        mode = FlopCounterMode(display=False)
        with mode:
            out = fn()
        self._real[key] = int(mode.get_total_flops()) / rows
        return out, self._real[key]

    def _chunked(self, n_rows: int, run_chunk: Callable[[int, int], None]) -> None:
        """Call ``run_chunk(start, stop)`` over ``range(n_rows)`` in chunks of at most
        ``batch_size`` rows, halving the size on out-of-memory."""
        self.batch_size = halving_chunks(n_rows, self.batch_size, run_chunk, "rows per forward", log)

    # ---- prefix cache

    def ensure_prefix(self, sites: Sequence[Site]) -> dict[int, int]:
        """Compute (once) the KV cache of each site's ``before_ids``; returns the real
        FLOPs spent per site key (only for caches computed now)."""
        spent: dict[int, int] = {}
        if not self.use_cache:
            return spent
        todo = [s for s in sites if s.key >= 0 and s.prefix_len > 0 and s.key not in self._kv]
        groups: dict[int, list[Site]] = {}
        for s in todo:
            groups.setdefault(s.prefix_len, []).append(s)
        for plen in sorted(groups):
            group = groups[plen]

            def run_chunk(a: int, b: int, group=group, plen=plen) -> None:
                chunk = group[a:b]
                ids = torch.tensor([s.before_ids for s in chunk], device=self.device)

                def fn():
                    with torch.no_grad():
                        return getattr(self.base(input_ids=ids, use_cache=True), self._cache_name)

                cache, real = self._measured(("prefix", plen), len(chunk), fn)
                layers = [(layer.keys, layer.values) for layer in cache.layers]
                for j, s in enumerate(chunk):
                    self._kv[s.key] = [(k[j : j + 1], v[j : j + 1]) for k, v in layers]
                    spent[s.key] = spent.get(s.key, 0) + real

            self._chunked(len(group), run_chunk)
        return spent

    def _cache_for(self, sites: Sequence[Site]):
        from transformers import DynamicCache

        # Rows are sorted by site, so consecutive rows share a site: expand (no copy)
        # each site's batch-1 cache over its rows, then concatenate.
        runs = _runs(sites)
        n_layers = len(self._kv[runs[0][0]])
        data = []
        for layer in range(n_layers):
            ks, vs = [], []
            for key, count in runs:
                k, v = self._kv[key][layer]
                ks.append(k.expand(count, *k.shape[1:]))
                vs.append(v.expand(count, *v.shape[1:]))
            data.append((ks[0] if len(ks) == 1 else torch.cat(ks), vs[0] if len(vs) == 1 else torch.cat(vs)))
        return DynamicCache(data, config=self.model.config)

    # ---- forward

    def _suffix_hidden(self, sites: Sequence[Site], suffix_embeds: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(rows, suffix_len, d)`` of the suffix tokens of rows that
        all share ``prefix_len`` and ``suffix_len``."""
        plen = sites[0].prefix_len
        rows, slen = suffix_embeds.shape[:2]
        if self.use_cache and plen > 0 and sites[0].key >= 0:
            pos = torch.arange(plen, plen + slen, device=self.device).unsqueeze(0).expand(rows, -1)
            if self.shared_prefix:
                runs = _runs(sites)
                prefix = [[self._kv[key][layer] for key, _ in runs] for layer in range(len(self._kv[runs[0][0]]))]
                with shared_prefix(self.base, prefix, [count for _, count in runs]):
                    return self.base(inputs_embeds=suffix_embeds, position_ids=pos, use_cache=False).last_hidden_state
            cache = self._cache_for(sites)
            out = self.base(inputs_embeds=suffix_embeds, position_ids=pos, use_cache=True,
                            **{self._cache_name: cache})
            return out.last_hidden_state
        if plen > 0:
            before = torch.tensor([s.before_ids for s in sites], device=self.device)
            embeds = torch.cat([self.embed(before), suffix_embeds], dim=1)
        else:
            embeds = suffix_embeds
        pos = torch.arange(embeds.shape[1], device=self.device).unsqueeze(0).expand(rows, -1)
        out = self.base(inputs_embeds=embeds, position_ids=pos, use_cache=False)
        return out.last_hidden_state[:, plen:]

    def _loss(self, sites: Sequence[Site], hidden: torch.Tensor):
        """Per-row loss, success and prediction from suffix hidden states."""
        if self.mode == "label":
            logits = self.head(hidden[:, -1]).float()
            target = torch.tensor([s.target for s in sites], device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits, target, reduction="none")
            pred = logits.argmax(-1)
            return loss, pred == target, pred
        t = len(sites[0].target_ids)  # one target length per group (see _groups)
        s = hidden.shape[1]
        logits = self.head(hidden[:, s - t - 1 : s - 1]).float()  # positions predicting the target
        target = torch.tensor([site.target_ids for site in sites], device=logits.device)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(-1)
        return loss, (logits.argmax(-1) == target).all(-1), None

    @staticmethod
    def _groups(sites: Sequence[Site]) -> list[list[int]]:
        """Row indices grouped by (prefix_len, suffix_len, target length), each group
        ordered by site."""
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, s in enumerate(sites):
            groups.setdefault((s.prefix_len, s.suffix_len, len(s.target_ids)), []).append(i)
        return [sorted(groups[k], key=lambda i: (sites[i].key, i)) for k in sorted(groups)]

    def evaluate(self, sites: Sequence[Site], attacks: Sequence[Sequence[int]] | torch.Tensor) -> list[RowScore]:
        """Loss, success and prediction of each row ``(sites[i], attacks[i])``.

        Prefix caches missing so far are computed first (their cost is only accounted
        when :meth:`ensure_prefix` is called explicitly, as ``Attack.step`` does)."""

        def forward(gs: list[Site], rows: list[list]):
            ids = torch.tensor([row + s.tail_ids for row, s in zip(rows, gs)], device=self.device)
            with torch.no_grad():
                loss, ok, pred = self._loss(gs, self._suffix_hidden(gs, self.embed(ids)))
            return loss, ok, pred, None

        self.ensure_prefix(sites)  # the examples' caches, which the re-cut rows extend
        try:
            tiered, rows, extension = self._tiered(sites, attacks)
            out = self._score_rows("eval", tiered, rows, forward, _flops.forward_flops)
        finally:
            for key in [k for k in self._kv if k >= DERIVED]:
                del self._kv[key]  # this call's extended caches
        for i, real in extension.items():
            out[i].flops_real += real
        return out

    def _tiered(self, sites: Sequence[Site], attacks) -> tuple[list[Site], list[list[int]], dict[int, float]]:
        """Rows re-cut on shared attack prefixes (module docstring): the sites (derived
        ones, whose caches are made here, for rows that share a first stretch with their
        example's reference), the attack ids each row still runs, and the real FLOPs of
        the cache extensions charged to each row (its share of its example's)."""
        sites = list(sites)
        rows = attacks.tolist() if isinstance(attacks, torch.Tensor) else [list(a) for a in attacks]
        extension: dict[int, float] = {}
        plans = self._tier_plans(sites, rows) if self.tiers >= 2 and self.use_cache else []
        by_shape: dict[tuple[int, int], list] = {}
        for plan in plans:
            by_shape.setdefault((plan[0].prefix_len, max(plan[2])), []).append(plan)
        fresh = itertools.count(DERIVED)
        for (plen, top), group in sorted(by_shape.items()):
            layers, real = self._extended([site for site, *_ in group], [ref[:top] for _, ref, *_ in group])
            for j, (site, reference, tiers, idx) in enumerate(group):
                for split, members in tiers.items():
                    key = next(fresh)
                    self._kv[key] = [(k[j : j + 1, :, : plen + split], v[j : j + 1, :, : plen + split])
                                     for k, v in layers]
                    derived = Site(key, site.before, site.after, site.before_ids + reference[:split],
                                   site.after_ids, site.tail_ids, site.target, site.n_attack - split,
                                   site.target_ids)
                    for i in members:
                        sites[i], rows[i] = derived, rows[i][split:]
                for i in idx:
                    extension[i] = real / len(idx)
        return sites, rows, extension

    def _tier_plans(self, sites: list[Site], rows: list[list[int]]) -> list[tuple]:
        """``(site, reference attack, {split: row indices}, all its row indices)`` for
        each example worth re-cutting (``TIER_MIN_ROWS`` rows, some sharing at least the
        first split's tokens with the reference)."""
        by_site: dict[int, list[int]] = {}
        for i, site in enumerate(sites):
            if site.key >= 0 and site.n_attack >= self.tiers and len(rows[i]) == site.n_attack:
                by_site.setdefault(site.key, []).append(i)
        plans = []
        for idx in by_site.values():
            if len(idx) < TIER_MIN_ROWS:
                continue
            site, n = sites[idx[0]], sites[idx[0]].n_attack
            ids = torch.tensor([rows[i] for i in idx])
            reference = ids.mode(dim=0).values  # per position, the token most rows have
            differs = ids != reference
            shared = torch.where(differs.any(1), differs.int().argmax(1), n).tolist()  # leading tokens in common
            splits = [n * t // self.tiers for t in range(1, self.tiers)]
            tiers: dict[int, list[int]] = {}
            for i, common in zip(idx, shared):
                split = max((b for b in splits if b <= common), default=0)
                if split:
                    tiers.setdefault(split, []).append(i)
            if tiers:
                plans.append((site, reference.tolist(), tiers, idx))
        return plans

    def _extended(self, sites: list[Site], extra: list[list[int]]):
        """Keys and values ``[(k, v) per layer]``, each ``(len(sites), kv_heads, P + E,
        d)``, of each site's prefix (one ``prefix_len`` P) followed by its ``extra``
        tokens (E each), run on the cached prefix; and the real FLOPs per site."""
        plen = sites[0].prefix_len
        ids = torch.tensor(extra, device=self.device)

        def fn():
            with torch.no_grad():
                if plen == 0:
                    return getattr(self.base(input_ids=ids, use_cache=True), self._cache_name)
                pos = torch.arange(plen, plen + ids.shape[1], device=self.device).unsqueeze(0).expand(len(ids), -1)
                out = self.base(input_ids=ids, position_ids=pos, use_cache=True,
                                **{self._cache_name: self._cache_for(sites)})
                return getattr(out, self._cache_name)

        cache, real = self._measured(("extend", plen, ids.shape[1]), len(sites), fn)
        return [(layer.keys, layer.values) for layer in cache.layers], real

    def gradient(self, sites: Sequence[Site], attacks: Sequence[Sequence[int]] | torch.Tensor) -> list[RowScore]:
        """Loss etc. of each row and the gradient of its loss w.r.t. the one-hot
        matrix of its attack tokens, ``(n_attack, vocab)`` (vocab = embedding rows)."""
        weight = self.embed.weight

        def forward_backward(gs: list[Site], rows: list[list]):
            ids = torch.tensor(rows, device=self.device)
            tail = torch.tensor([s.tail_ids for s in gs], device=self.device, dtype=torch.long)
            with torch.enable_grad():
                one_hot = torch.zeros(*ids.shape, weight.shape[0], device=self.device, dtype=weight.dtype)
                one_hot.scatter_(2, ids.unsqueeze(-1), 1.0)
                one_hot.requires_grad_(True)
                embeds = torch.cat([one_hot @ weight, self.embed(tail)], dim=1)
                loss, ok, pred = self._loss(gs, self._suffix_hidden(gs, embeds))
                (grad,) = torch.autograd.grad(loss.sum(), one_hot)
            return loss.detach(), ok, pred, grad

        return self._score_rows("grad", sites, attacks, forward_backward, _flops.training_flops)

    def _score_rows(self, kind: str, sites: Sequence[Site], attacks, run: Callable[[list[Site], list[list]], tuple],
                    paper_flops: Callable[[int, int], int]) -> list[RowScore]:
        """The chunk loop of :meth:`evaluate` and :meth:`gradient`: rows grouped by
        shape, each group run in chunks (halved on out-of-memory) by
        ``run(sites, attack_rows) -> (loss, success, prediction, grad or None)``, real
        FLOPs measured once per ``kind`` and row shape, paper FLOPs per row
        ``paper_flops(num_params, full_len)`` (forward ``2N``, training ``6N`` per token)."""
        self.ensure_prefix(sites)
        out: list[RowScore | None] = [None] * len(sites)
        for group in self._groups(sites):
            def run_chunk(a: int, b: int, group=group) -> None:
                idx = group[a:b]
                gs = [sites[i] for i in idx]
                rows = [list(attacks[i]) for i in idx]
                key = (kind, gs[0].prefix_len, gs[0].suffix_len, len(gs[0].target_ids), self._cached(gs[0]))
                (loss, ok, pred, grad), real = self._measured(key, len(idx), lambda: run(gs, rows))
                loss, ok = loss.tolist(), ok.tolist()
                pred = pred.tolist() if pred is not None else [None] * len(idx)
                for j, i in enumerate(idx):
                    out[i] = RowScore(loss[j], bool(ok[j]), pred[j], paper_flops(self.num_params, gs[j].full_len),
                                      real, grad=grad[j] if grad is not None else None)

            self._chunked(len(group), run_chunk)
        return out  # type: ignore[return-value]

    def _cached(self, site: Site) -> bool:
        return self.use_cache and site.prefix_len > 0 and site.key >= 0


def _measured_flops(model, mode: str, use_cache: bool, shared: bool) -> dict[tuple, float]:
    """Real FLOPs per row by row shape, shared by every scorer on a model of this
    architecture in the process (:func:`robustlib.flops.measured`): they depend on the
    architecture, the dtype and how rows are run, never on the weights, so later
    attacks, adversarial-training rounds and studies reuse them instead of running the
    FLOP counter again."""
    return _flops.measured(model).setdefault(("scorer", mode, use_cache, shared), {})


def _runs(sites: Sequence[Site]) -> list[tuple[int, int]]:
    """``(site key, rows)`` for each run of consecutive rows of one site."""
    runs: list[tuple[int, int]] = []
    for s in sites:
        if runs and runs[-1][0] == s.key:
            runs[-1] = (s.key, runs[-1][1] + 1)
        else:
            runs.append((s.key, 1))
    return runs


def _cache_argument(base) -> str:
    """The name of the KV-cache argument of ``base.forward`` and of its output
    attribute: ``cache`` (transformers 5.24 on, where ``past_key_values`` is
    deprecated) when the forward accepts it, else ``past_key_values``."""
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # no introspectable signature
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


__all__ = ["RowScore", "Scorer", "Site"]
