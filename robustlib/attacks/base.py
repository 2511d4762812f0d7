"""The attack driver: :class:`Attack`, the base class every attack subclasses, and
:func:`run_batched`, which attacks a dataset in batches of examples.

An attack is nanoGCG-shaped: a config dataclass in, a result dataclass out, and the
caller owns the model (it is never moved, copied or trained; it is put in eval mode
for the duration of each step). Each attack is also an object that can be driven one
iteration at a time (``attack.step()``), which is what an interactive explorer needs;
``attack.run()`` just calls ``step()`` ``config.iterations`` times.

**Where the attack goes.** For every example, :meth:`robustlib.tasks.Example.attack_split`
gives ``(before, after)`` for the configured position; the attacked text is
``before + attack + after``. ``before`` and ``after`` are tokenised once per example
(``before_ids``, ``after_ids``), and an attack is a list of ``n_attack_tokens`` token
ids. A candidate attack is only used if the full attacked text re-tokenises to exactly
``before_ids + attack_ids + after_ids`` (:func:`~robustlib.attacks.tokens.reencoding_filter`).

The rest of the machinery lives in its own module: settings in
:mod:`robustlib.attacks.config`, what is reported in :mod:`robustlib.attacks.result`,
vocabulary and re-encoding in :mod:`robustlib.attacks.tokens`, and batched scoring (the
targets, the prefix KV cache and compute accounting) in :mod:`robustlib.attacks.scorer`.
Their public names are re-exported here.
"""

from __future__ import annotations

import logging
import math
import time
from typing import ClassVar

import torch

from ..runtime import flush_denormals
from .config import TARGET_MODES, AttackConfig
from .result import AttackResult, ExampleRecord, StepOutcome, StepReport, asr_curve
from .scorer import RowScore, Scorer, Site
from .tokens import (
    INITIAL_ATTACK_TOKENS,
    FilterContext,
    _decode_many,
    _encode,
    allowed_token_ids,
    example_seed,
    filter_context,
    filter_many,
    initial_attack_ids,
    reencoding_filter,
)

log = logging.getLogger("robustlib.attacks")


class Attack:
    """Base class: an attack on a list of examples, driven one iteration at a time.

    ``Attack(model, tokenizer, examples, config)`` validates everything, tokenises the
    contexts and evaluates the clean texts (to know which examples are correct before
    the attack); then each :meth:`step` runs one iteration on every attacked example
    and :meth:`result` reports what happened so far. Subclasses implement
    :meth:`_init_attacks` and :meth:`_step`. The object holds the prefix caches of
    all its examples; :func:`run_attack` attacks a dataset in batches of
    ``config.batch_examples`` examples.
    """

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[AttackConfig]] = AttackConfig

    def __init__(self, model, tokenizer, examples, config: AttackConfig | dict | None = None, *,
                 index_offset: int = 0):
        self.config = cfg = self.config_class.coerce(config)
        self.examples = list(examples)
        splits = check_examples(self.examples, cfg.position)
        check_model(model, tokenizer)
        flush_denormals()
        self.model = model
        self.tokenizer = tokenizer
        self.index_offset = index_offset
        targets = example_targets(self.examples, tokenizer, cfg)
        self.scorer = Scorer(model, cfg.target, cfg.use_prefix_cache, cfg.candidate_batch_size,
                             tiers=cfg.prefix_tiers)
        self.allowed = allowed_token_ids(tokenizer)
        vocab_rows = self.scorer.embed.weight.shape[0]
        self.allowed = self.allowed[self.allowed < vocab_rows]
        if len(self.allowed) == 0:
            raise ValueError("the tokenizer has no token an attack may use (see allowed_token_ids)")
        self.allowed_mask = torch.zeros(vocab_rows, dtype=torch.bool, device=self.scorer.device)
        self.allowed_mask[self.allowed.to(self.scorer.device)] = True

        t0 = time.perf_counter()
        self.sites: list[Site] = []
        self._contexts: dict[int, FilterContext] = {}
        for i, (ex, (before, after), target_ids) in enumerate(zip(self.examples, splits, targets)):
            before_ids, after_ids = _encode(tokenizer, before), _encode(tokenizer, after)
            self.sites.append(Site(index_offset + i, before, after, before_ids, after_ids,
                                   after_ids + target_ids, int(ex.target), cfg.n_attack_tokens, target_ids))
        with _eval_mode(model):
            clean = self._clean_scores()
        self.records = [
            ExampleRecord(
                index=s.key, label=int(ex.label), target=int(ex.target), correct_before=not c.success,
                attacked=(not c.success) or not cfg.skip_incorrect, clean_loss=c.loss, before=s.before,
                after=s.after, full_tokens=s.full_len,
            )
            for s, ex, c in zip(self.sites, self.examples, clean)
        ]
        self.clean_flops_paper = sum(c.flops_paper for c in clean)
        self.clean_flops_real = round(sum(c.flops_real for c in clean))
        self.attacked = [i for i, r in enumerate(self.records) if r.attacked]
        self.generators = {i: torch.Generator().manual_seed(example_seed(cfg.seed, self.sites[i].key))
                           for i in self.attacked}
        self.current: dict[int, list[int]] = {}
        self._init_attacks()
        self.iteration = 0
        self.flops_per_iteration_paper = [0]
        self.flops_per_iteration_real = [0]
        self.wall_seconds = time.perf_counter() - t0

    # ---- subclass hooks

    def _init_attacks(self) -> None:
        """Set up per-example state (e.g. ``self.current``) before the first step."""

    def _step(self, active: list[int]) -> dict[int, StepOutcome]:
        """One iteration on the examples ``active`` (indices into ``self.sites``):
        what it did to each (an example missing from the answer is held frozen)."""
        raise NotImplementedError

    # ---- driving

    @property
    def done(self) -> bool:
        return self.iteration >= self.config.iterations

    def step(self) -> StepReport:
        """Run one iteration; returns what it did (ASR after it, FLOPs spent)."""
        if self.done:
            raise RuntimeError(f"the attack already ran its {self.config.iterations} iterations")
        t0 = time.perf_counter()
        it = self.iteration + 1
        active = [i for i in self.attacked
                  if not (self.config.stop_on_success and self.records[i].first_success_iteration is not None)]
        with _eval_mode(self.model):
            prefix = self.scorer.ensure_prefix([self.sites[i] for i in active])
            outcome = self._step(active) if active else {}
        total_paper, total_real = 0, 0.0
        for i in self.attacked:
            rec = self.records[i]
            o = outcome.get(i)
            extra = prefix.get(self.sites[i].key, 0.0)
            if o is None:  # frozen after success: hold the successful attack, spend nothing
                o = StepOutcome(ids=None, loss=rec.losses[-1] if rec.losses else math.nan,
                                success=rec.successes[-1] if rec.successes else False, prediction=rec.prediction)
            self._record(rec, it, o, extra)
            total_paper += rec.flops_paper[-1]
            total_real += rec.flops_real[-1]
        self.flops_per_iteration_paper.append(int(total_paper))
        self.flops_per_iteration_real.append(round(total_real))
        self.iteration = it
        self.wall_seconds += time.perf_counter() - t0
        return StepReport(iteration=it, asr=self._asr()[-1], n_active=len(active),
                          flops_paper=int(total_paper), flops_real=round(total_real))

    def run(self) -> AttackResult:
        """Step until ``config.iterations`` are done; return :meth:`result`."""
        while not self.done:
            self.step()
        return self.result()

    def _record(self, rec: ExampleRecord, it: int, o: StepOutcome, extra_real: float) -> None:
        ids = o.ids
        attack_ids = list(ids) if ids is not None else list(rec.attack_ids)
        attack_str = _decode_many(self.tokenizer, [attack_ids])[0] if attack_ids else ""
        loss = float(o.loss)
        rec.losses.append(loss)
        rec.successes.append(bool(o.success))
        rec.attacks.append(attack_str)
        rec.n_evaluated.append(int(o.n_evaluated))
        rec.flops_paper.append(int(o.flops_paper))
        rec.flops_real.append(float(o.flops_real) + extra_real)
        if not math.isnan(loss) and not (rec.best_loss <= loss):
            rec.best_loss = loss
        if rec.first_success_iteration is None:
            if o.success:
                rec.first_success_iteration = it
                rec.success = True
                self._report(rec, attack_ids, attack_str, loss, o.prediction)
            elif ids is not None and not (rec.loss <= loss) and not math.isnan(loss):
                self._report(rec, attack_ids, attack_str, loss, o.prediction)

    @staticmethod
    def _report(rec: ExampleRecord, ids: list[int], string: str, loss: float, prediction) -> None:
        rec.attack_ids, rec.attack, rec.loss, rec.prediction = list(ids), string, loss, prediction

    def _asr(self) -> list[float]:
        return asr_curve([r.correct_before for r in self.records],
                         [r.first_success_iteration for r in self.records], self.iteration)

    def result(self) -> AttackResult:
        """What happened so far (after :attr:`iteration` iterations)."""
        n = len(self.records)
        correct = sum(r.correct_before for r in self.records)
        return AttackResult(
            attack=self.name,
            config=self.config.to_dict(),
            records=self.records,
            asr=self._asr(),
            flops_per_iteration_paper=list(self.flops_per_iteration_paper),
            flops_per_iteration_real=list(self.flops_per_iteration_real),
            wall_seconds=self.wall_seconds,
            n_examples=n,
            n_correct_before=correct,
            clean_accuracy=correct / n,
            clean_flops_paper=self.clean_flops_paper,
            clean_flops_real=self.clean_flops_real,
            num_params=self.scorer.num_params,
        )

    # ---- helpers for subclasses

    def _clean_scores(self) -> list[RowScore]:
        """Scores of the clean texts (no prefix cache: pseudo-sites with an empty
        prefix whose 'attack' is the whole clean text)."""
        pseudo, ids = [], []
        for s, ex in zip(self.sites, self.examples):
            text_ids = _encode(self.tokenizer, ex.text)
            pseudo.append(Site(-1, "", "", [], [], list(s.target_ids), s.target, len(text_ids), list(s.target_ids)))
            ids.append(text_ids)
        return self.scorer.evaluate(pseudo, ids)

    @staticmethod
    def _rows_by_example(active: list[int], owners: list[int]) -> dict[int, list[int]]:
        """Indices of the scored rows that belong to each active example."""
        rows: dict[int, list[int]] = {i: [] for i in active}
        for r, i in enumerate(owners):
            rows[i].append(r)
        return rows

    def _context(self, i: int) -> FilterContext:
        """Example ``i``'s re-encoding window, worked out once per attack."""
        ctx = self._contexts.get(i)
        if ctx is None:
            s = self.sites[i]
            ctx = self._contexts[i] = filter_context(self.tokenizer, s.before, s.after, s.before_ids, s.after_ids)
        return ctx

    def _filter(self, i: int, candidates) -> list[bool]:
        """Whether each candidate (rows of token ids) of example ``i`` survives re-encoding."""
        return self._filter_many([i] * len(candidates), candidates)

    def _filter_many(self, owners: list[int], candidates) -> list[bool]:
        """The same for rows of several examples (``owners[r]`` is row ``r``'s), in one call."""
        rows = candidates.tolist() if isinstance(candidates, torch.Tensor) else candidates
        return filter_many(self.tokenizer, [self._context(i) for i in owners], rows)


class _eval_mode:
    """Eval mode for the duration of a block; the caller's mode is restored."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def run_batched(cls: type[Attack], model, tokenizer, examples, config=None) -> AttackResult:
    """Attack ``examples`` in batches of ``config.batch_examples`` (each batch runs all
    its iterations before the next starts, so only one batch's prefix caches are held)
    and merge the results. All inputs are validated before any compute."""
    cfg = cls.config_class.coerce(config)
    examples = list(examples)
    check_examples(examples, cfg.position)
    check_model(model, tokenizer)
    from tqdm.auto import tqdm

    n_batches = math.ceil(len(examples) / cfg.batch_examples)
    results = []
    with tqdm(total=n_batches * cfg.iterations, desc=cls.name, disable=not cfg.progress, leave=False) as bar:
        for start in range(0, len(examples), cfg.batch_examples):
            attack = cls(model, tokenizer, examples[start : start + cfg.batch_examples], cfg, index_offset=start)
            while not attack.done:
                report = attack.step()
                bar.update()
                bar.set_postfix(asr=f"{report.asr:.2f}")
            results.append(attack.result())
    result = AttackResult.concat(results)
    log.info("%s: %d examples, %d correct before, ASR@%d = %.3f", cls.name, result.n_examples,
             result.n_correct_before, result.iterations, result.final_asr)
    return result


def check_model(model, tokenizer) -> None:
    """A torch model and a tokenizer that belong together: every id the tokenizer can
    produce must have a row in the model's input embedding (else torch fails later with
    an IndexError deep inside the forward pass)."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"model must be a transformers model (robustlib.models.load_classifier gives one); "
                        f"got {type(model).__name__}")
    if not callable(tokenizer) or not hasattr(tokenizer, "batch_decode"):
        raise TypeError(f"tokenizer must be a transformers tokenizer; got {type(tokenizer).__name__}")
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's input embedding has {rows} "
                         "rows: they do not belong together; load the model's own tokenizer")


def example_targets(examples, tokenizer, cfg: AttackConfig) -> list[list[int]]:
    """The token ids each example is attacked toward in string mode (``[]`` in label
    mode): the example's own ``target_response`` where it has one (a generative prompt
    with a per-prompt target), else ``cfg.target_string``."""
    if cfg.target != "string":
        return [[] for _ in examples]
    out = []
    for i, ex in enumerate(examples):
        string = getattr(ex, "target_response", None) or cfg.target_string
        ids = _encode(tokenizer, string)
        if not ids:
            raise ValueError(f"the target {string!r} of example {i} tokenises to no tokens")
        out.append(ids)
    return out


def check_examples(examples, position) -> list[tuple[str, str]]:
    """``attack_split(position)`` for every example, with a clear error for an empty
    list or an example that rejects the position (e.g. a slot task given 0.5)."""
    examples = list(examples)
    if not examples:
        raise ValueError("the list of examples is empty: there is nothing to attack (need at least one example)")
    for i, ex in enumerate(examples):
        if not all(hasattr(ex, a) for a in ("attack_split", "text", "label", "target")):
            raise TypeError(f"examples must be robustlib.tasks.Example objects (robustlib.tasks.load_examples or "
                            f"Task.make_example make them); example {i} is a {type(ex).__name__}: {ex!r:.60}")
    splits = []
    for i, ex in enumerate(examples):
        try:
            splits.append(ex.attack_split(position))
        except ValueError as err:
            task = getattr(ex, "task", "?")
            raise ValueError(f"example {i} (task {task!r}) rejects position={position!r}: {err}") from None
    return splits


__all__ = [
    "INITIAL_ATTACK_TOKENS",
    "TARGET_MODES",
    "Attack",
    "AttackConfig",
    "AttackResult",
    "ExampleRecord",
    "RowScore",
    "Scorer",
    "Site",
    "StepOutcome",
    "StepReport",
    "allowed_token_ids",
    "asr_curve",
    "check_examples",
    "check_model",
    "example_seed",
    "initial_attack_ids",
    "reencoding_filter",
    "run_batched",
]
