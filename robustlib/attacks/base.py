"""Shared machinery for attacks: config, result, token vocabulary, the re-encoding
filter, batched loss evaluation with a prefix KV cache, and compute accounting.

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
``before_ids + attack_ids + after_ids`` (:func:`reencoding_filter`), so that the model is
scored on the very tokens the attack optimised, and the attack string found is the one
the model would see if it were typed in.

**Targets.** ``target="label"``: the model is a sequence classifier (HF
``...ForSequenceClassification`` with a ``score`` head); the loss is the cross-entropy
of its two logits, read at the last token, toward ``example.target`` (the wrong class);
success means the classifier predicts the target. ``target="string"``: the model is a
causal LM; the loss is the mean cross-entropy of the tokens of ``config.target_string``
appended after the attacked text (teacher forcing); success means every target token
is the greedy (arg-max) prediction, i.e. greedy decoding would start with the target.

**Loss evaluation** (the speed-critical part). The token sequence of a row (an
(example, candidate) pair) is ``before_ids`` (fixed per example) + ``attack_ids`` (varies)
+ ``tail_ids`` (fixed: ``after_ids``, plus the target tokens in string mode). With
``use_prefix_cache`` the key/value cache of ``before_ids`` is computed once per example
(batch 1, kept for the life of the attack object, which holds ``batch_examples``
examples at most) and only ``attack + tail`` is run for each row, with the cache
expanded along the batch and position ids continuing from the prefix length. Rows are
grouped by ``(prefix length, suffix length)``: within a group every row has the same
shape, so nothing is padded, no attention mask is needed, and the classifier head is
applied to the hidden state at the very last position, which is the last real token.
Rows of different examples that share a group are batched together (their caches are
concatenated along the batch). We chose grouping over left-padding prefixes because it
is exact (no padded keys, whose NaN rows under SDPA could leak through a 0-weight
attention), needs no per-architecture mask or position handling, and costs nothing in
the common case: GCG's ``n_candidates`` rows per example already fill a batch. Groups
are split into chunks of ``candidate_batch_size`` rows, a size that halves (for the
rest of the attack) when a chunk runs out of memory.

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

import hashlib
import logging
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch

from .. import flops as _flops
from ..config import StrictConfig

log = logging.getLogger("robustlib.attacks")

TARGET_MODES = ("label", "string")

#: Strings tried, in order, for the initial attack (the token repeated
#: ``n_attack_tokens`` times); the first one whose repetition survives the
#: re-encoding filter in an example's context is used for that example.
INITIAL_ATTACK_TOKENS = (" @", "@", " x", "x", "!", " the", " a")

_POSITION_HELP = "None (the task's slot / the chunk's suffix) or a number in [0, 1]"


# ----------------------------------------------------------------------------- config


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass
class AttackConfig(StrictConfig):
    """Settings shared by every attack. Unknown keys are rejected by :meth:`from_dict`.

    Validation happens in ``__post_init__`` (and again in :meth:`validate`), so a bad
    value fails where the config is built, before any compute.
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
    progress: bool = True  # tqdm progress bar in run()

    def __post_init__(self) -> None:
        self.validate()

    def _bad(self, name: str, value: Any, accepted: str, why: str = "") -> None:
        why = f" ({why})" if why else ""
        raise ValueError(f"{type(self).__name__}.{name}={value!r} is invalid{why}; accepted: {accepted}")

    def validate(self) -> None:
        if not _is_int(self.iterations) or self.iterations <= 0:
            self._bad("iterations", self.iterations, "a positive integer",
                      "a budget of zero iterations attacks nothing")
        for name in ("n_attack_tokens", "batch_examples", "candidate_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                self._bad(name, value, "a positive integer")
        p = self.position
        if p is not None:
            if isinstance(p, bool) or not isinstance(p, numbers.Real) or math.isnan(float(p)) or not 0 <= p <= 1:
                self._bad("position", p, _POSITION_HELP)
        if not _is_int(self.seed):
            self._bad("seed", self.seed, "an integer")
        if self.target not in TARGET_MODES:
            self._bad("target", self.target, f"one of {TARGET_MODES}")
        if self.target == "string" and (not isinstance(self.target_string, str) or not self.target_string):
            self._bad("target_string", self.target_string, "a non-empty string (target='string')")
        for name in ("stop_on_success", "skip_incorrect", "use_prefix_cache", "progress"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                self._bad(name, value, "True or False")

    @classmethod
    def coerce(cls, config: AttackConfig | dict | None) -> AttackConfig:
        """``config`` as an instance of ``cls``: None gives the defaults, a dict goes
        through :meth:`from_dict`, a config of a parent class is upgraded (its fields
        kept, the subclass's own fields at their defaults)."""
        if config is None:
            return cls()
        if isinstance(config, dict):
            return cls.from_dict(config)
        if isinstance(config, cls):
            config.validate()
            return config
        if isinstance(config, AttackConfig) and issubclass(cls, type(config)):
            return cls(**asdict(config))
        raise ValueError(f"config must be a {cls.__name__}, a dict or None; got {type(config).__name__}")

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- result


@dataclass
class ExampleRecord:
    """What happened to one example.

    The reported attack (``attack``, ``attack_ids``, ``loss``, ``prediction``) is the
    attack of the *first* iteration at which the example was broken, if it ever was
    (success is sticky and that string is known to work), and otherwise the attack
    with the lowest loss seen. Per-iteration lists have one entry per iteration done
    (iteration 1 first); they are empty for examples that were not attacked.
    """

    index: int  # position in the list of examples given to the attack
    label: int
    target: int  # the class aimed at (label mode); 1 - label
    correct_before: bool  # clean text classified correctly (string mode: target not produced)
    attacked: bool  # False when skipped (skip_incorrect and not correct_before)
    clean_loss: float  # loss toward the target on the clean text
    before: str  # attacked text = before + attack + after
    after: str
    full_tokens: int  # tokens of one attacked row (prefix + attack + tail), the paper's L
    attack: str = ""
    attack_ids: list[int] = field(default_factory=list)
    loss: float = math.nan  # loss of the reported attack
    best_loss: float = math.nan  # lowest loss seen over all iterations
    prediction: int | None = None  # class predicted with the reported attack (label mode)
    success: bool = False  # broken at some iteration
    first_success_iteration: int | None = None
    initial_loss: float = math.nan  # loss of the initial attack (GCG); NaN when not computed
    losses: list[float] = field(default_factory=list)  # loss of the attack held after iteration i
    successes: list[bool] = field(default_factory=list)  # that attack succeeds (not sticky)
    attacks: list[str] = field(default_factory=list)  # that attack's string
    n_evaluated: list[int] = field(default_factory=list)  # candidate rows evaluated (GCG: kept after filter)
    flops_paper: list[int] = field(default_factory=list)
    flops_real: list[float] = field(default_factory=list)

    @property
    def attacked_text(self) -> str:
        return self.before + self.attack + self.after

    def broken_at(self, iteration: int) -> bool:
        """Sticky success: broken by any attack of iterations 1..``iteration``."""
        return self.first_success_iteration is not None and self.first_success_iteration <= iteration


def asr_curve(correct_before: Sequence[bool], first_success: Sequence[int | None], iterations: int) -> list[float]:
    """ASR at iterations 0..``iterations`` (the paper's definition).

    Among examples classified correctly before the attack, the fraction broken by
    iteration ``i`` (sticky: broken if any attack up to ``i`` succeeded).
    ``asr[0] == 0`` by definition; if no example was correct before, every later
    entry is NaN (there is nothing to break).
    """
    counted = [s for c, s in zip(correct_before, first_success) if c]
    out = [0.0]
    for i in range(1, iterations + 1):
        out.append(sum(s is not None and s <= i for s in counted) / len(counted) if counted else math.nan)
    return out


@dataclass
class AttackResult:
    """An attack's outcome over a dataset.

    Per-iteration arrays have ``iterations + 1`` entries, index ``i`` for iteration
    ``i`` (index 0: before any attack, ASR 0 and no compute). FLOPs are summed over the
    examples; paper convention and real (see the module docstring).
    """

    attack: str
    config: dict
    records: list[ExampleRecord]
    asr: list[float]
    flops_per_iteration_paper: list[int]
    flops_per_iteration_real: list[int]
    wall_seconds: float
    n_examples: int
    n_correct_before: int
    clean_accuracy: float
    clean_flops_paper: int
    clean_flops_real: int
    num_params: int

    @property
    def iterations(self) -> int:
        return len(self.asr) - 1

    @property
    def cumulative_flops_paper(self) -> list[int]:
        return _cumsum(self.flops_per_iteration_paper)

    @property
    def cumulative_flops_real(self) -> list[int]:
        return _cumsum(self.flops_per_iteration_real)

    @property
    def final_asr(self) -> float:
        return self.asr[-1]

    def asr_frame(self):
        """One row per iteration 0..n: ``iteration, asr, flops_paper, flops_real``
        (cumulative, summed over examples) and the per-iteration FLOPs."""
        import pandas as pd

        return pd.DataFrame(
            {
                "iteration": range(self.iterations + 1),
                "asr": self.asr,
                "flops_paper": self.cumulative_flops_paper,
                "flops_real": self.cumulative_flops_real,
                "flops_per_iteration_paper": self.flops_per_iteration_paper,
                "flops_per_iteration_real": self.flops_per_iteration_real,
                "n_correct_before": self.n_correct_before,
            }
        )

    def to_frame(self):
        """A tidy long table: one row per (attacked example, iteration >= 1) with
        ``example, iteration, loss, success`` (that iteration's attack), ``broken``
        (sticky), ``correct_before``, ``n_evaluated``, ``flops_paper``, ``flops_real``
        (that example and iteration) and ``attack``."""
        import pandas as pd

        rows = []
        for r in self.records:
            for i, loss in enumerate(r.losses, start=1):
                rows.append(
                    {
                        "example": r.index,
                        "iteration": i,
                        "label": r.label,
                        "correct_before": r.correct_before,
                        "loss": loss,
                        "success": r.successes[i - 1],
                        "broken": r.broken_at(i),
                        "n_evaluated": r.n_evaluated[i - 1],
                        "flops_paper": r.flops_paper[i - 1],
                        "flops_real": r.flops_real[i - 1],
                        "attack": r.attacks[i - 1],
                    }
                )
        columns = ["example", "iteration", "label", "correct_before", "loss", "success", "broken",
                   "n_evaluated", "flops_paper", "flops_real", "attack"]
        return pd.DataFrame(rows, columns=columns)

    def as_record(self) -> dict:
        """A flat summary for the run store."""
        return {
            "attack": self.attack,
            "iterations": self.iterations,
            "n_examples": self.n_examples,
            "n_correct_before": self.n_correct_before,
            "clean_accuracy": self.clean_accuracy,
            "final_asr": self.final_asr,
            "flops_paper": self.cumulative_flops_paper[-1],
            "flops_real": self.cumulative_flops_real[-1],
            "wall_seconds": self.wall_seconds,
            "num_params": self.num_params,
        }

    @classmethod
    def concat(cls, results: Sequence[AttackResult]) -> AttackResult:
        """Merge results of consecutive batches of one dataset (same attack, config and
        number of iterations); record indices are kept as they are."""
        if not results:
            raise ValueError("AttackResult.concat needs at least one result")
        first = results[0]
        if len(results) == 1:
            return first
        if any(r.iterations != first.iterations or r.attack != first.attack for r in results):
            raise ValueError("can only concatenate results of the same attack and number of iterations")
        records = [rec for r in results for rec in r.records]
        n = len(records)
        correct = [rec.correct_before for rec in records]
        return cls(
            attack=first.attack,
            config=first.config,
            records=records,
            asr=asr_curve(correct, [rec.first_success_iteration for rec in records], first.iterations),
            flops_per_iteration_paper=[sum(x) for x in zip(*(r.flops_per_iteration_paper for r in results))],
            flops_per_iteration_real=[sum(x) for x in zip(*(r.flops_per_iteration_real for r in results))],
            wall_seconds=sum(r.wall_seconds for r in results),
            n_examples=n,
            n_correct_before=sum(correct),
            clean_accuracy=sum(correct) / n,
            clean_flops_paper=sum(r.clean_flops_paper for r in results),
            clean_flops_real=sum(r.clean_flops_real for r in results),
            num_params=first.num_params,
        )


def _cumsum(xs: Sequence[int]) -> list[int]:
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out


# -------------------------------------------------------------------- token vocabulary

_ALLOWED_CACHE: dict[int, tuple[Any, torch.Tensor]] = {}


def allowed_token_ids(tokenizer) -> torch.Tensor:
    """Token ids an attack may use, sorted (a 1-D LongTensor).

    Excluded: special tokens (``all_special_ids`` and added tokens marked special), and
    tokens whose decoded string is empty or not entirely ASCII-printable
    (``s.isascii() and s.isprintable()``, as in nanoGCG): this drops byte fragments of
    multi-byte characters (which decode to U+FFFD), control characters and newlines /
    tabs (which are not "printable"; a space is). The result is cached per tokenizer
    object.
    """
    hit = _ALLOWED_CACHE.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for idx, added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(added, "special", False):
            special.add(int(idx))
    vocab = len(tokenizer)
    strings = _decode_many(tokenizer, [[i] for i in range(vocab)])
    ids = [i for i, s in enumerate(strings) if i not in special and s and s.isascii() and s.isprintable()]
    out = torch.tensor(ids, dtype=torch.long)
    _ALLOWED_CACHE[id(tokenizer)] = (tokenizer, out)
    return out


def _decode_many(tokenizer, id_lists: Sequence[Sequence[int]]) -> list[str]:
    if not id_lists:
        return []
    return list(tokenizer.batch_decode([list(map(int, x)) for x in id_lists], clean_up_tokenization_spaces=False))


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def reencoding_filter(
    tokenizer,
    before: str,
    after: str,
    candidates: Sequence[Sequence[int]] | torch.Tensor,
    before_ids: Sequence[int] | None = None,
    after_ids: Sequence[int] | None = None,
) -> list[bool]:
    """For each candidate attack (a list of token ids), whether it survives decoding
    and re-encoding *in context*: ``tokenizer(before + decode(ids) + after)`` must be
    exactly ``before_ids + ids + after_ids`` (``before_ids``/``after_ids`` default to
    ``before``/``after`` tokenised on their own). Tokenising the attack string alone
    is not enough: its first or last token may merge with its neighbours.
    """
    if isinstance(candidates, torch.Tensor):
        candidates = candidates.tolist()
    candidates = [list(map(int, c)) for c in candidates]
    if not candidates:
        return []
    before_ids = list(before_ids) if before_ids is not None else _encode(tokenizer, before)
    after_ids = list(after_ids) if after_ids is not None else _encode(tokenizer, after)
    strings = _decode_many(tokenizer, candidates)
    encoded = tokenizer([before + s + after for s in strings], add_special_tokens=False)["input_ids"]
    return [list(enc) == before_ids + cand + after_ids for enc, cand in zip(encoded, candidates)]


def initial_attack_ids(tokenizer, before: str, after: str, n_tokens: int, allowed: torch.Tensor,
                       before_ids=None, after_ids=None) -> list[int]:
    """A stable initial attack for one context: a single allowed token repeated
    ``n_tokens`` times, the first of :data:`INITIAL_ATTACK_TOKENS` (then the first 512
    allowed ids) whose repetition survives :func:`reencoding_filter` here."""
    allowed_set = set(allowed.tolist())
    tried: list[int] = []
    for s in INITIAL_ATTACK_TOKENS:
        ids = _encode(tokenizer, s)
        if len(ids) == 1 and ids[0] in allowed_set and ids[0] not in tried:
            tried.append(ids[0])
    tried += [i for i in allowed.tolist()[:512] if i not in tried]
    for start in range(0, len(tried), 64):
        block = tried[start : start + 64]
        ok = reencoding_filter(tokenizer, before, after, [[t] * n_tokens for t in block], before_ids, after_ids)
        for t, good in zip(block, ok):
            if good:
                return [t] * n_tokens
    raise ValueError(
        f"no repeated single token makes a stable {n_tokens}-token attack between {before[-30:]!r} and "
        f"{after[:30]!r}; tried {len(tried)} tokens"
    )


def example_seed(seed: int, index: int) -> int:
    """A per-example seed: attacks are reproducible whatever the batching."""
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


# ------------------------------------------------------------------------ validation


def check_examples(examples, position) -> list[tuple[str, str]]:
    """``attack_split(position)`` for every example, with a clear error for an empty
    list or an example that rejects the position (e.g. a slot task given 0.5)."""
    examples = list(examples)
    if not examples:
        raise ValueError("the list of examples is empty: there is nothing to attack (need at least one example)")
    splits = []
    for i, ex in enumerate(examples):
        try:
            splits.append(ex.attack_split(position))
        except ValueError as err:
            task = getattr(ex, "task", "?")
            raise ValueError(f"example {i} (task {task!r}) rejects position={position!r}: {err}") from None
    return splits


def _is_oom(err: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (oom and isinstance(err, oom)) or "out of memory" in str(err).lower()


# -------------------------------------------------------------------------- scoring


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

    def __init__(self, model, mode: str, target_ids: list[int], use_cache: bool, batch_size: int):
        self.model = model
        self.mode = mode
        self.target_ids = list(target_ids)
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
        self._real: dict[tuple, float] = {}  # real FLOPs per row, by row shape

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
        start = 0
        while start < n_rows:
            size = min(self.batch_size, n_rows - start)
            try:
                run_chunk(start, start + size)
            except RuntimeError as err:
                if not _is_oom(err) or size == 1:
                    raise
                self.batch_size = max(1, size // 2)
                log.warning("out of memory with %d rows per forward; retrying with %d", size, self.batch_size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += size

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
                        return self.base(input_ids=ids, use_cache=True).past_key_values

                cache, real = self._measured(("prefix", plen), len(chunk), fn)
                layers = [(layer.keys, layer.values) for layer in cache.layers]
                for j, s in enumerate(chunk):
                    self._kv[s.key] = [(k[j : j + 1], v[j : j + 1]) for k, v in layers]
                    spent[s.key] = spent.get(s.key, 0) + real

            self._chunked(len(group), run_chunk)
        return spent

    def drop_prefix(self, keys) -> None:
        for k in keys:
            self._kv.pop(k, None)

    def _cache_for(self, sites: Sequence[Site]):
        from transformers import DynamicCache

        # Rows are sorted by site, so consecutive rows share a site: expand (no copy)
        # each site's batch-1 cache over its rows, then concatenate.
        runs: list[tuple[int, int]] = []  # (key, count)
        for s in sites:
            if runs and runs[-1][0] == s.key:
                runs[-1] = (s.key, runs[-1][1] + 1)
            else:
                runs.append((s.key, 1))
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
            cache = self._cache_for(sites)
            pos = torch.arange(plen, plen + slen, device=self.device).unsqueeze(0).expand(rows, -1)
            out = self.base(inputs_embeds=suffix_embeds, past_key_values=cache, position_ids=pos, use_cache=True)
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
        t = len(self.target_ids)
        s = hidden.shape[1]
        logits = self.head(hidden[:, s - t - 1 : s - 1]).float()  # positions predicting the target
        target = torch.tensor(self.target_ids, device=logits.device).expand(len(sites), -1)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(-1)
        return loss, (logits.argmax(-1) == target).all(-1), None

    @staticmethod
    def _groups(sites: Sequence[Site]) -> list[list[int]]:
        """Row indices grouped by (prefix_len, suffix_len), each group ordered by site."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(sites):
            groups.setdefault((s.prefix_len, s.suffix_len), []).append(i)
        return [sorted(groups[k], key=lambda i: (sites[i].key, i)) for k in sorted(groups)]

    def evaluate(self, sites: Sequence[Site], attacks: Sequence[Sequence[int]] | torch.Tensor) -> list[RowScore]:
        """Loss, success and prediction of each row ``(sites[i], attacks[i])``.

        Prefix caches missing so far are computed first (their cost is only accounted
        when :meth:`ensure_prefix` is called explicitly, as :meth:`Attack.step` does)."""
        self.ensure_prefix(sites)
        out: list[RowScore | None] = [None] * len(sites)
        for group in self._groups(sites):
            def run_chunk(a: int, b: int, group=group) -> None:
                idx = group[a:b]
                gs = [sites[i] for i in idx]
                ids = torch.tensor([list(attacks[i]) + gs[j].tail_ids for j, i in enumerate(idx)], device=self.device)

                def fn():
                    with torch.no_grad():
                        return self._loss(gs, self._suffix_hidden(gs, self.embed(ids)))

                key = ("eval", gs[0].prefix_len, gs[0].suffix_len, self._cached(gs[0]))
                (loss, ok, pred), real = self._measured(key, len(idx), fn)
                loss, ok = loss.tolist(), ok.tolist()
                pred = pred.tolist() if pred is not None else [None] * len(idx)
                for j, i in enumerate(idx):
                    out[i] = RowScore(loss[j], bool(ok[j]), pred[j],
                                      _flops.forward_flops(self.num_params, gs[j].full_len), real)

            self._chunked(len(group), run_chunk)
        return out  # type: ignore[return-value]

    def gradient(self, sites: Sequence[Site], attacks: Sequence[Sequence[int]] | torch.Tensor) -> list[RowScore]:
        """Loss etc. of each row and the gradient of its loss w.r.t. the one-hot
        matrix of its attack tokens, ``(n_attack, vocab)`` (vocab = embedding rows)."""
        self.ensure_prefix(sites)
        weight = self.embed.weight
        out: list[RowScore | None] = [None] * len(sites)
        for group in self._groups(sites):
            def run_chunk(a: int, b: int, group=group) -> None:
                idx = group[a:b]
                gs = [sites[i] for i in idx]
                ids = torch.tensor([list(attacks[i]) for i in idx], device=self.device)
                tail = torch.tensor([s.tail_ids for s in gs], device=self.device, dtype=torch.long)

                def fn():
                    with torch.enable_grad():
                        one_hot = torch.zeros(*ids.shape, weight.shape[0], device=self.device, dtype=weight.dtype)
                        one_hot.scatter_(2, ids.unsqueeze(-1), 1.0)
                        one_hot.requires_grad_(True)
                        embeds = torch.cat([one_hot @ weight, self.embed(tail)], dim=1)
                        loss, ok, pred = self._loss(gs, self._suffix_hidden(gs, embeds))
                        (grad,) = torch.autograd.grad(loss.sum(), one_hot)
                    return loss.detach(), ok, pred, grad

                key = ("grad", gs[0].prefix_len, gs[0].suffix_len, self._cached(gs[0]))
                (loss, ok, pred, grad), real = self._measured(key, len(idx), fn)
                loss, ok = loss.tolist(), ok.tolist()
                pred = pred.tolist() if pred is not None else [None] * len(idx)
                for j, i in enumerate(idx):
                    out[i] = RowScore(loss[j], bool(ok[j]), pred[j],
                                      _flops.training_flops(self.num_params, gs[j].full_len), real,
                                      grad=grad[j])

            self._chunked(len(group), run_chunk)
        return out  # type: ignore[return-value]

    def _cached(self, site: Site) -> bool:
        return self.use_cache and site.prefix_len > 0 and site.key >= 0


# --------------------------------------------------------------------------- attacks


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
        self.model = model
        self.tokenizer = tokenizer
        self.index_offset = index_offset
        target_ids = _encode(tokenizer, cfg.target_string) if cfg.target == "string" else []
        if cfg.target == "string" and not target_ids:
            raise ValueError(f"target_string={cfg.target_string!r} tokenises to no tokens")
        self.scorer = Scorer(model, cfg.target, target_ids, cfg.use_prefix_cache, cfg.candidate_batch_size)
        self.allowed = allowed_token_ids(tokenizer)
        vocab_rows = self.scorer.embed.weight.shape[0]
        self.allowed = self.allowed[self.allowed < vocab_rows]
        if len(self.allowed) == 0:
            raise ValueError("the tokenizer has no token an attack may use (see allowed_token_ids)")
        self.allowed_mask = torch.zeros(vocab_rows, dtype=torch.bool, device=self.scorer.device)
        self.allowed_mask[self.allowed.to(self.scorer.device)] = True

        t0 = time.perf_counter()
        self.sites: list[Site] = []
        for i, (ex, (before, after)) in enumerate(zip(self.examples, splits)):
            before_ids, after_ids = _encode(tokenizer, before), _encode(tokenizer, after)
            self.sites.append(Site(index_offset + i, before, after, before_ids, after_ids,
                                   after_ids + target_ids, int(ex.target), cfg.n_attack_tokens))
        with _eval_mode(model):
            clean = self._clean_scores(target_ids)
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

    def _step(self, active: list[int]) -> dict[int, dict]:
        """One iteration on the examples ``active`` (indices into ``self.sites``).

        Returns, per example, a dict with ``ids`` (the attack held after this
        iteration, or None if nothing was evaluated), ``loss``, ``success``,
        ``prediction``, ``n_evaluated``, ``flops_paper``, ``flops_real``.
        """
        raise NotImplementedError

    # ---- driving

    @property
    def done(self) -> bool:
        return self.iteration >= self.config.iterations

    def step(self) -> dict:
        """Run one iteration; returns ``{"iteration", "asr", "n_active",
        "flops_paper", "flops_real"}`` for it."""
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
                o = {"ids": None, "loss": rec.losses[-1] if rec.losses else math.nan,
                     "success": rec.successes[-1] if rec.successes else False, "prediction": rec.prediction,
                     "n_evaluated": 0, "flops_paper": 0, "flops_real": 0.0}
            self._record(rec, it, o, extra)
            total_paper += rec.flops_paper[-1]
            total_real += rec.flops_real[-1]
        self.flops_per_iteration_paper.append(int(total_paper))
        self.flops_per_iteration_real.append(round(total_real))
        self.iteration = it
        self.wall_seconds += time.perf_counter() - t0
        return {"iteration": it, "asr": self._asr()[-1], "n_active": len(active),
                "flops_paper": int(total_paper), "flops_real": round(total_real)}

    def run(self) -> AttackResult:
        """Step until ``config.iterations`` are done; return :meth:`result`."""
        while not self.done:
            self.step()
        return self.result()

    def _record(self, rec: ExampleRecord, it: int, o: dict, extra_real: float) -> None:
        ids = o["ids"]
        attack_ids = list(ids) if ids is not None else list(rec.attack_ids)
        attack_str = _decode_many(self.tokenizer, [attack_ids])[0] if attack_ids else ""
        loss = float(o["loss"])
        rec.losses.append(loss)
        rec.successes.append(bool(o["success"]))
        rec.attacks.append(attack_str)
        rec.n_evaluated.append(int(o["n_evaluated"]))
        rec.flops_paper.append(int(o["flops_paper"]))
        rec.flops_real.append(float(o["flops_real"]) + extra_real)
        if not math.isnan(loss) and not (rec.best_loss <= loss):
            rec.best_loss = loss
        if rec.first_success_iteration is None:
            if o["success"]:
                rec.first_success_iteration = it
                rec.success = True
                self._report(rec, attack_ids, attack_str, loss, o["prediction"])
            elif ids is not None and not (rec.loss <= loss) and not math.isnan(loss):
                self._report(rec, attack_ids, attack_str, loss, o["prediction"])

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

    def _clean_scores(self, target_ids: list[int]) -> list[RowScore]:
        """Scores of the clean texts (no prefix cache: pseudo-sites with an empty
        prefix whose 'attack' is the whole clean text)."""
        pseudo, ids = [], []
        for s, ex in zip(self.sites, self.examples):
            text_ids = _encode(self.tokenizer, ex.text)
            pseudo.append(Site(-1, "", "", [], [], list(target_ids), s.target, len(text_ids)))
            ids.append(text_ids)
        return self.scorer.evaluate(pseudo, ids)

    @staticmethod
    def _rows_by_example(active: list[int], owners: list[int]) -> dict[int, list[int]]:
        """Indices of the scored rows that belong to each active example."""
        rows: dict[int, list[int]] = {i: [] for i in active}
        for r, i in enumerate(owners):
            rows[i].append(r)
        return rows

    def _filter(self, i: int, candidates) -> list[bool]:
        s = self.sites[i]
        return reencoding_filter(self.tokenizer, s.before, s.after, candidates, s.before_ids, s.after_ids)


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
    from tqdm.auto import tqdm

    n_batches = math.ceil(len(examples) / cfg.batch_examples)
    results = []
    with tqdm(total=n_batches * cfg.iterations, desc=cls.name, disable=not cfg.progress, leave=False) as bar:
        for start in range(0, len(examples), cfg.batch_examples):
            attack = cls(model, tokenizer, examples[start : start + cfg.batch_examples], cfg, index_offset=start)
            while not attack.done:
                info = attack.step()
                bar.update()
                bar.set_postfix(asr=f"{info['asr']:.2f}")
            results.append(attack.result())
    result = AttackResult.concat(results)
    log.info("%s: %d examples, %d correct before, ASR@%d = %.3f", cls.name, result.n_examples,
             result.n_correct_before, result.iterations, result.final_asr)
    return result


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
    "allowed_token_ids",
    "asr_curve",
    "check_examples",
    "example_seed",
    "initial_attack_ids",
    "reencoding_filter",
    "run_batched",
]
