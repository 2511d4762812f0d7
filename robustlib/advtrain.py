"""Adversarial training: the defense side of the study, resumable, every FLOP counted.

The loop (PAPER.md, "Adversarial training"), once per round ``r = 1..R``:

1. Attack ``n_attack_examples`` fresh training examples with the training attack (any
   registered attack, at any position). Its strength ramps linearly from
   ``attack_iterations_start`` in round 1 to ``attack_iterations_end`` in round R (the
   paper: GCG 8 -> 64). Every attacked text joins the adversarial *pool* with its true
   label, successful or not.
2. Train one epoch on ``train_examples_per_round`` examples: ``min(adv_fraction x that,
   pool size)`` drawn from the pool without replacement, the rest clean.
3. Checkpoint; evaluate robustness if ``r`` is one of the evaluation rounds.

**Pool sampling.** Pool example ``i`` (in order of addition, so ``i`` is its recency
rank) has a loss rank ``l_i`` (0 = lowest loss; examples never trained on have loss
+inf, so rank highest) and is drawn with weight
``exp(decay * (rank_i - max rank))`` where ``rank_i = (1 - w) * i + w * l_i``: recent
and hard examples first. ``sampling="rank"`` (the default) uses true ranks. The
paper's code computed ``l = argsort(losses)``, which is the *permutation that sorts*
the losses, not each example's rank (position ``i`` of the argsort holds the index of
the ``i``-th smallest loss), so its loss term weighted examples almost arbitrarily;
``sampling="paper"`` reproduces that faithfully, ``"uniform"`` ignores both terms.
An example's loss is the one it had the last time it was trained on (recorded in the
training step itself, so it costs no extra compute).

**Compute.** Defense compute of a round = its training FLOPs + the FLOPs spent
generating its attacks (the attack's clean forward pass included), in both
conventions (paper 2N/4N/6N, and real); cumulative totals are recorded per round.
By default (``stop_on_success``) the training attack stops working on an example at
its first successful iteration: what joins the pool is that iteration's attack either
way, so the pool and the trained model are the same as with the full budget (bit for
bit on the CPU; on a GPU, kernel rounding depends on the batch's shape), and only the
compute differs (``stop_on_success=False`` spends, and counts, every iteration).
Validation accuracy and robustness evaluations are measurement, not defense, and are
reported separately.

**Resume.** With ``checkpoint_dir`` set, each completed round saves the weights
(safetensors), the pool and everything recorded into ``round_<r>/`` and then moves
the ``latest.json`` pointer to it (atomically). A killed run restarts from the last
completed round. All randomness of round ``r`` is seeded from ``(seed, r)``, the
optimizer is fresh each round (as each round of the paper is a new training run),
so a resumed run ends with exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import StrictConfig
from .finetune import FinetuneConfig

log = logging.getLogger("robustlib.advtrain")

SAMPLING = ("rank", "paper", "uniform")


@dataclass(frozen=True)
class TextExample:
    """A training example as text plus its true label (an attacked text, say)."""

    text: str
    label: int


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class AdvTrainConfig(StrictConfig):
    """Settings of one model's adversarial training. Unknown keys are rejected by
    :meth:`from_dict`; bad values raise in ``__post_init__``, before any compute."""

    rounds: int = 10
    attack: str = "gcg"  # the training attack (a registered attack name)
    position: float | None = None  # None: the task's slot / suffix; else in [0, 1]
    n_attack_examples: int = 200  # fresh training examples attacked per round
    attack_iterations_start: int = 8  # training-attack iterations in round 1
    attack_iterations_end: int = 64  # ... in the last round (linear ramp in between)
    n_attack_tokens: int = 10
    top_k: int = 256  # GCG
    n_candidates: int = 128  # GCG
    beam_size: int = 7  # BEAST
    batch_examples: int = 32
    stop_on_success: bool = True  # stop attacking an example once broken (same pool, less compute)
    train_examples_per_round: int = 1000
    adv_fraction: float = 0.8  # at most this fraction of a round's examples come from the pool
    sampling: str = "rank"  # one of SAMPLING
    sampling_decay: float = 0.005
    loss_rank_weight: float = 0.5  # w: 0 = recency only, 1 = loss only
    training: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=1.0, progress=False))
    seed: int = 0

    def __post_init__(self):
        from . import attacks

        if isinstance(self.training, dict):
            self.training = FinetuneConfig.from_dict(self.training)
        attacks.get_attack(self.attack)

        def bad(name, accepted):
            raise ValueError(f"AdvTrainConfig.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")

        for name in ("rounds", "n_attack_examples", "attack_iterations_start", "attack_iterations_end",
                     "train_examples_per_round"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                bad(name, "a positive integer")
        if not isinstance(self.adv_fraction, (int, float)) or isinstance(self.adv_fraction, bool) \
                or not 0 <= self.adv_fraction <= 1:
            bad("adv_fraction", "a number in [0, 1]")
        if self.sampling not in SAMPLING:
            bad("sampling", SAMPLING)
        if not isinstance(self.sampling_decay, (int, float)) or self.sampling_decay < 0:
            bad("sampling_decay", "a number >= 0")
        if not isinstance(self.loss_rank_weight, (int, float)) or not 0 <= self.loss_rank_weight <= 1:
            bad("loss_rank_weight", "a number in [0, 1]")
        if not _is_int(self.seed):
            bad("seed", "an integer")
        if not isinstance(self.stop_on_success, bool):
            bad("stop_on_success", "True or False")
        self.attack_config(1)  # validates position, tokens, top_k, ...

    def attack_iterations(self, round_: int) -> int:
        """Training-attack iterations in round ``round_`` (1-based): a linear ramp."""
        if self.rounds == 1:
            return self.attack_iterations_start
        frac = (round_ - 1) / (self.rounds - 1)
        return int(round(self.attack_iterations_start + frac * (self.attack_iterations_end
                                                                - self.attack_iterations_start)))

    def attack_config(self, round_: int):
        from . import attacks

        cls = attacks.get_config_class(self.attack)
        values = {
            "iterations": self.attack_iterations(round_), "n_attack_tokens": self.n_attack_tokens,
            "position": self.position, "seed": _round_seed(self.seed, round_, 1),
            "batch_examples": self.batch_examples, "progress": False,
            # Every fresh example is attacked and pooled, even one the model already gets wrong.
            "skip_incorrect": False,
            # What is pooled is the attack of the first successful iteration either way
            # (success is sticky and each example has its own random stream), so stopping
            # there changes nothing but the compute spent (bit for bit on the CPU; on a GPU
            # the shrinking batch changes kernel rounding, so a path can differ).
            "stop_on_success": self.stop_on_success,
        }
        extra = {"top_k": self.top_k, "n_candidates": self.n_candidates, "beam_size": self.beam_size}
        names = set(cls.__dataclass_fields__)
        values.update({k: v for k, v in extra.items() if k in names})
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        return asdict(self)


def _round_seed(seed: int, round_: int, stream: int) -> int:
    """Independent seeds per (seed, round, purpose), stable across runs and resumes."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, round_, stream]).generate_state(1)[0])


def rounds_for_size(num_params: int, smallest: int, largest: int, rounds: int, min_rounds: int = 0) -> int:
    """Rounds for a model of ``num_params``: ``rounds`` for the smallest size of a study
    down to ``min_rounds`` for the largest, linear in log10(parameters) (the paper: 60
    rounds for the smallest Pythia, 5 for the largest). ``min_rounds=0``: always ``rounds``."""
    if not min_rounds or largest <= smallest:
        return rounds
    frac = (math.log10(num_params) - math.log10(smallest)) / (math.log10(largest) - math.log10(smallest))
    frac = min(1.0, max(0.0, frac))
    return max(1, int(round(rounds + frac * (min_rounds - rounds))))


# ---------------------------------------------------------------------------- pool sampling


def loss_ranks(losses: Sequence[float], method: str = "rank") -> np.ndarray:
    """Loss term of the sampling rank. ``"rank"``: each example's rank by loss (0 =
    lowest; ties by position; NaN/None = never trained on = +inf). ``"paper"``: the
    paper's ``argsort(losses)``, a permutation rather than ranks (see the module doc)."""
    x = np.array([math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in losses],
                 dtype=float)
    order = np.argsort(x, kind="stable")
    if method == "paper":
        return order.astype(float)
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x))
    return ranks


def sampling_log_weights(losses: Sequence[float], decay: float, loss_rank_weight: float,
                         method: str = "rank") -> np.ndarray:
    """Unnormalised log sampling weights of the pool (in order of addition):
    ``decay * (rank - max rank)`` with ``rank = (1 - w) * recency + w * loss rank``."""
    if method not in SAMPLING:
        raise ValueError(f"sampling method {method!r} is invalid; accepted: {SAMPLING}")
    n = len(losses)
    if method == "uniform" or n == 0:
        return np.zeros(n)
    ranks = (1 - loss_rank_weight) * np.arange(n, dtype=float) + loss_rank_weight * loss_ranks(losses, method)
    return decay * (ranks - ranks.max())


def sampling_probabilities(losses, decay, loss_rank_weight, method="rank") -> np.ndarray:
    """Probability of each pool example to be the *first* one drawn (weights normalised)."""
    logw = sampling_log_weights(losses, decay, loss_rank_weight, method)
    w = np.exp(logw - logw.max()) if len(logw) else logw
    return w / w.sum() if len(w) else w


def sample_without_replacement(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``k`` distinct indices, each draw proportional to the weights of those left
    (successive sampling, as ``numpy.random.choice(replace=False, p=...)``), by the
    Gumbel-top-k trick in log space: no weight underflows however large the pool."""
    n = len(log_weights)
    if not 0 <= k <= n:
        raise ValueError(f"cannot draw {k} examples without replacement from a pool of {n}")
    keys = np.asarray(log_weights, dtype=float) + rng.gumbel(size=n)
    return np.sort(np.argsort(-keys, kind="stable")[:k])


# ---------------------------------------------------------------------------- the loop


@dataclass
class AdvTrainResult:
    """What adversarial training recorded. The model is trained in place."""

    rounds: list[dict]  # one record per completed round (compute, losses, accuracy, ...)
    evaluations: list[dict]  # what ``evaluate_round`` returned, tagged with the round
    pool_size: int
    resumed_from: int  # the round a resumed run started after (0: a fresh run)

    def rounds_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rounds)


def _attacked_examples(result) -> list[TextExample]:
    return [TextExample(r.attacked_text, r.label) for r in result.records]


def _save_round(checkpoint_dir: Path, round_: int, model, state: dict, keep: set[int]) -> None:
    from safetensors.torch import save_file

    from .record import atomic_write

    folder = checkpoint_dir / f"round_{round_:04d}"
    if folder.exists():
        shutil.rmtree(folder)
    tmp = checkpoint_dir / f".round_{round_:04d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_untie(weights), str(tmp / "model.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state))
    tmp.rename(folder)
    atomic_write(checkpoint_dir / "latest.json", json.dumps({"round": round_}))
    # Only now is the previous round redundant (unless the caller keeps it).
    for old in checkpoint_dir.glob("round_*"):
        r = int(old.name.split("_")[1])
        if r != round_ and r not in keep:
            shutil.rmtree(old, ignore_errors=True)


def _untie(weights: dict) -> dict:
    """safetensors refuses tensors sharing memory (tied embeddings): clone duplicates."""
    seen, out = set(), {}
    for k, v in weights.items():
        ptr = (v.data_ptr(), v.shape)
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def load_round(checkpoint_dir: str | Path, round_: int | None = None, model=None):
    """The state saved after ``round_`` (None: the latest), and, if ``model`` is given,
    its weights loaded into it. Returns ``(round, state)``; ``(0, None)`` if nothing is saved."""
    checkpoint_dir = Path(checkpoint_dir)
    if round_ is None:
        pointer = checkpoint_dir / "latest.json"
        if not pointer.exists():
            return 0, None
        round_ = json.loads(pointer.read_text())["round"]
    folder = checkpoint_dir / f"round_{round_:04d}"
    if not (folder / "state.json").exists():
        raise FileNotFoundError(f"no checkpoint of round {round_} in {checkpoint_dir}")
    state = json.loads((folder / "state.json").read_text())
    if model is not None and (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return round_, state


def adversarial_training(
    model,
    tokenizer,
    clean_examples: Sequence,
    fresh_examples: Sequence,
    config: AdvTrainConfig | dict | None = None,
    *,
    val_examples: Sequence | None = None,
    evaluate_round: Callable[[int, object], list[dict]] | None = None,
    eval_rounds: Sequence[int] = (),
    checkpoint_dir: str | Path | None = None,
    keep_rounds: Sequence[int] = (),
    progress: bool = True,
) -> AdvTrainResult:
    """Adversarially train ``model`` (in place) for ``config.rounds`` rounds.

    Args:
        clean_examples: the clean training data the non-pool part of each round is drawn
            from (uniformly, without replacement); at least
            ``train_examples_per_round x (1 - adv_fraction)`` of them.
        fresh_examples: examples to attack, consumed in order, ``n_attack_examples`` per
            round: at least ``rounds x n_attack_examples``, so no example is attacked twice.
        val_examples: if given, clean validation accuracy is recorded every round.
        evaluate_round: ``f(round, model) -> list of row dicts``, called after the rounds
            in ``eval_rounds`` (0 = before any adversarial training); its rows are stored
            in the checkpoint with the round, so a resumed run does not redo them.
        checkpoint_dir: where rounds are saved and resumed from (None: no checkpoints).
        keep_rounds: rounds whose checkpoints are kept (the latest one always is).

    Returns an :class:`AdvTrainResult`; each round record has ``defense_flops_paper`` and
    ``defense_flops_real`` (cumulative) besides that round's own numbers.
    """
    from tqdm.auto import tqdm

    from . import attacks
    from . import flops as _flops
    from .finetune import finetune
    from .models import pick_device

    cfg = config if isinstance(config, AdvTrainConfig) else AdvTrainConfig.from_dict(config or {})
    # Round 1 draws the most clean examples: its pool holds one round of attacks only.
    n_clean_needed = cfg.train_examples_per_round - min(int(cfg.adv_fraction * cfg.train_examples_per_round),
                                                        cfg.n_attack_examples)
    if len(clean_examples) < n_clean_needed:
        raise ValueError(f"{len(clean_examples)} clean examples given; round 1 draws {n_clean_needed} "
                         f"(train_examples_per_round={cfg.train_examples_per_round}, "
                         f"adv_fraction={cfg.adv_fraction}, n_attack_examples={cfg.n_attack_examples})")
    need = cfg.rounds * cfg.n_attack_examples
    if len(fresh_examples) < need:
        raise ValueError(f"{len(fresh_examples)} fresh examples given; {cfg.rounds} rounds x "
                         f"{cfg.n_attack_examples} attacked per round need {need}")
    bad_rounds = [r for r in eval_rounds if not _is_int(r) or not 0 <= r <= cfg.rounds]
    if bad_rounds:
        raise ValueError(f"eval_rounds {bad_rounds} are invalid; accepted: integers in 0..{cfg.rounds}")
    fresh_examples[0].attack_split(cfg.position)  # a bad position fails here, before any compute
    attacks.get_attack(cfg.attack)
    if val_examples is not None and not len(val_examples):
        raise ValueError("val_examples is empty; pass None to skip validation")

    # Every round's attack, training and evaluation run on the training device (the GPU
    # when there is one), round 0's evaluation and round 1's attack included.
    model.to(pick_device(cfg.training.device))

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start, state = (0, None)
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        start, state = load_round(checkpoint_dir, model=model)
        if state is not None and state.get("config") != _jsonable(cfg.to_dict()):
            raise ValueError(f"{checkpoint_dir} holds a run with other settings; use a new folder "
                             f"(saved: {state.get('config')})")
    if state is None:
        state = {"config": _jsonable(cfg.to_dict()), "pool": [], "rounds": [], "evaluations": [],
                 "evaluated": []}
    resumed_from = start
    if start:
        log.info("resuming after round %d of %d", start, cfg.rounds)
    num_params = _flops.count_params(model)

    def checkpoint(round_):
        if checkpoint_dir is not None:
            _save_round(checkpoint_dir, round_, model, state, set(keep_rounds))

    def maybe_evaluate(round_):
        if evaluate_round is not None and round_ in eval_rounds and round_ not in state["evaluated"]:
            rows = evaluate_round(round_, model) or []
            state["evaluations"].extend({**r, "round": round_} for r in rows)
            state["evaluated"].append(round_)

    if start == 0 and 0 in eval_rounds and 0 not in state["evaluated"]:
        maybe_evaluate(0)
        checkpoint(0)

    bar = tqdm(range(start + 1, cfg.rounds + 1), desc=f"adversarial training ({cfg.attack})",
               disable=not progress, leave=False)
    for r in bar:
        t0 = time.time()
        # 1. attack fresh examples; pool them all with their true labels
        fresh = fresh_examples[(r - 1) * cfg.n_attack_examples : r * cfg.n_attack_examples]
        result = attacks.run_attack(cfg.attack, model, tokenizer, fresh, cfg.attack_config(r))
        attack_seconds = time.time() - t0
        attack_paper = result.clean_flops_paper + sum(result.flops_per_iteration_paper)
        attack_real = result.clean_flops_real + sum(result.flops_per_iteration_real)
        for ex in _attacked_examples(result):
            state["pool"].append({"text": ex.text, "label": ex.label, "round": r, "loss": None})
        # 2. one epoch on pool + clean
        pool = state["pool"]
        n_adv = min(int(cfg.adv_fraction * cfg.train_examples_per_round), len(pool))
        n_clean = cfg.train_examples_per_round - n_adv
        rng = np.random.default_rng(_round_seed(cfg.seed, r, 2))
        logw = sampling_log_weights([p["loss"] for p in pool], cfg.sampling_decay, cfg.loss_rank_weight,
                                    cfg.sampling)
        adv_idx = sample_without_replacement(logw, n_adv, rng)
        clean_idx = np.sort(rng.choice(len(clean_examples), size=n_clean, replace=False))
        batch = ([TextExample(pool[i]["text"], pool[i]["label"]) for i in adv_idx]
                 + [clean_examples[i] for i in clean_idx])
        train_cfg = FinetuneConfig.from_dict({**asdict(cfg.training), "seed": _round_seed(cfg.seed, r, 3),
                                              "progress": False})
        val = val_examples if val_examples is not None else batch[:1]
        fit = finetune(model, tokenizer, batch, val, train_cfg)
        for j, i in enumerate(adv_idx):
            if not math.isnan(fit.example_losses[j]):
                pool[i]["loss"] = fit.example_losses[j]
        prev = state["rounds"][-1] if state["rounds"] else {"defense_flops_paper": 0, "defense_flops_real": 0}
        train_paper, train_real = fit.flops["train_flops_paper"], fit.flops["train_flops_real"]
        rec = {
            "round": r,
            "attack_iterations": cfg.attack_iterations(r),
            "n_attacked": len(fresh),
            "train_attack_asr": result.asr[-1] if result.n_correct_before else math.nan,
            "train_attack_success": sum(rec.success for rec in result.records) / len(result.records),
            "pool_size": len(pool),
            "n_adversarial": n_adv,
            "n_clean": n_clean,
            "adversarial_from_this_round": int(sum(pool[i]["round"] == r for i in adv_idx)),
            "train_loss": float(np.mean(fit.train_losses)),
            "val_accuracy": fit.val_accuracy if val_examples is not None else math.nan,
            "attack_flops_paper": int(attack_paper),
            "attack_flops_real": int(attack_real),
            "train_flops_paper": int(train_paper),
            "train_flops_real": int(train_real),
            "round_flops_paper": int(attack_paper + train_paper),
            "round_flops_real": int(attack_real + train_real),
            "defense_flops_paper": int(prev["defense_flops_paper"] + attack_paper + train_paper),
            "defense_flops_real": int(prev["defense_flops_real"] + attack_real + train_real),
            "num_params": num_params,
            "attack_seconds": attack_seconds,
            "wall_seconds": time.time() - t0,
        }
        state["rounds"].append(rec)
        # 3. evaluate (if asked), then checkpoint: a round counts only once both are saved
        maybe_evaluate(r)
        checkpoint(r)
        bar.set_postfix(asr=f"{rec['train_attack_asr']:.2f}", loss=f"{rec['train_loss']:.3f}")
    return AdvTrainResult(rounds=state["rounds"], evaluations=state["evaluations"], pool_size=len(state["pool"]),
                          resumed_from=resumed_from)


# ---------------------------------------------------------------------------- the study


def _flag(values) -> bool:
    return isinstance(values, (list, tuple))


@dataclass
class AdvTrainStudyConfig(StrictConfig):
    """Everything ``notebooks/03_adversarial_training.ipynb`` takes: names match its
    parameters cell. One defended model per (fine-tuned model) x (training attack,
    training position); robustness evaluated at chosen rounds; then a transfer matrix."""

    _unknown_label = "parameter(s)"

    finetune_study: str = ""  # the study whose 01_finetune run holds the models ("" = this study)
    sizes: list = field(default_factory=list)  # [] = every size of the fine-tuning study
    seeds: list = field(default_factory=list)  # [] = every seed of the fine-tuning study
    train_attacks: list = field(default_factory=lambda: ["gcg"])
    train_positions: list = field(default_factory=lambda: [1.0])
    rounds: int = 10  # rounds for the smallest size
    min_rounds: int = 0  # rounds for the largest size (log-linear in between); 0 = all get `rounds`
    n_attack_examples: int = 200
    attack_iterations_start: int = 8
    attack_iterations_end: int = 64
    n_attack_tokens: int = 10
    top_k: int = 256
    n_candidates: int = 128
    beam_size: int = 7
    train_examples_per_round: int = 1000
    adv_fraction: float = 0.8
    sampling: str = "rank"
    sampling_decay: float = 0.005
    loss_rank_weight: float = 0.5
    lr: float = 5e-4
    batch_size: int = 32
    optimizer: str = "adamw"
    schedule: str = "linear"
    epochs_per_round: float = 1.0  # passes over each round's examples (the paper: 1)
    warmup_ratio: float = 0.2  # each round's optimizer is fresh: warm it up (0: start at full lr)
    stop_on_success: bool = True  # training attack stops on an example once broken
    eval_every: int = 0  # also evaluate every k-th round (0: only round 0 and the last)
    eval_attack: str = ""  # "" = each model's training attack
    eval_iterations: int = 10
    eval_n_candidates: int = 0  # GCG candidates when evaluating (0: n_candidates)
    eval_examples: int = 32
    eval_data_seed: int = 1  # which validation examples are attacked
    transfer_attacks: list = field(default_factory=lambda: ["gcg", "random_token"])
    transfer_positions: list = field(default_factory=lambda: [1.0])
    transfer_iterations: list = field(default_factory=lambda: [10, 100])  # budget of each transfer attack
    data_seed: int = 2  # which fresh training examples are attacked (fine-tuning used its own)
    seed: int = 0
    batch_examples: int = 32
    threads: int = 0  # torch threads (0: leave torch's default)

    def __post_init__(self):
        from . import attacks

        for name in ("sizes", "seeds", "train_attacks", "train_positions", "transfer_attacks",
                     "transfer_positions", "transfer_iterations"):
            if not _flag(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; accepted: a list")
        for name in ("train_attacks", "train_positions", "transfer_attacks", "transfer_positions"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty; accepted: a non-empty list")
        for a in [*self.train_attacks, *self.transfer_attacks, *([self.eval_attack] if self.eval_attack else [])]:
            attacks.get_attack(a)
        if len(self.transfer_iterations) != len(self.transfer_attacks):
            raise ValueError(f"transfer_iterations={self.transfer_iterations!r} must give one budget per "
                             f"transfer attack ({len(self.transfer_attacks)}: {self.transfer_attacks})")
        for name, values in (("transfer_iterations", self.transfer_iterations),):
            if not all(_is_int(v) and v > 0 for v in values):
                raise ValueError(f"{name}={values!r} is invalid; accepted: positive integers")
        for name in ("eval_every", "threads", "eval_n_candidates"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ValueError(f"{name}={v!r} is invalid; accepted: 0 or a positive integer")
        for name in ("eval_iterations", "eval_examples"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                raise ValueError(f"{name}={v!r} is invalid; accepted: a positive integer")
        if not _is_int(self.min_rounds) or self.min_rounds < 0:
            raise ValueError(f"min_rounds={self.min_rounds!r} is invalid; accepted: 0 or a positive integer")
        if isinstance(self.epochs_per_round, bool) or not isinstance(self.epochs_per_round, (int, float)) \
                or not self.epochs_per_round > 0:
            raise ValueError(f"epochs_per_round={self.epochs_per_round!r} is invalid; accepted: a positive number")
        if isinstance(self.warmup_ratio, bool) or not isinstance(self.warmup_ratio, (int, float)) \
                or not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio!r} is invalid; accepted: a number in [0, 1)")
        for a in self.train_attacks:
            for p in self.train_positions:
                self.model_config(a, p, self.rounds)  # validates every training setting
        for a, it in zip(self.transfer_attacks, self.transfer_iterations):
            for p in self.transfer_positions:
                self.eval_config(a, it, p)

    def model_config(self, attack: str, position, rounds: int) -> AdvTrainConfig:
        return AdvTrainConfig(
            rounds=rounds, attack=attack, position=position, n_attack_examples=self.n_attack_examples,
            attack_iterations_start=self.attack_iterations_start, attack_iterations_end=self.attack_iterations_end,
            n_attack_tokens=self.n_attack_tokens, top_k=self.top_k, n_candidates=self.n_candidates,
            beam_size=self.beam_size, batch_examples=self.batch_examples, stop_on_success=self.stop_on_success,
            train_examples_per_round=self.train_examples_per_round, adv_fraction=self.adv_fraction,
            sampling=self.sampling, sampling_decay=self.sampling_decay, loss_rank_weight=self.loss_rank_weight,
            training=FinetuneConfig(epochs=self.epochs_per_round, lr=self.lr, batch_size=self.batch_size,
                                    optimizer=self.optimizer, schedule=self.schedule,
                                    warmup_ratio=self.warmup_ratio, progress=False),
            seed=self.seed,
        )

    def eval_config(self, attack: str, iterations: int, position: float):
        from .evaluate import AttackStudyConfig

        return AttackStudyConfig(
            attack=attack, iterations=iterations, n_attack_tokens=self.n_attack_tokens, position=position,
            n_examples=self.eval_examples, data_seed=self.eval_data_seed, seed=self.seed, top_k=self.top_k,
            n_candidates=self.eval_n_candidates or self.n_candidates, beam_size=self.beam_size,
            batch_examples=self.batch_examples,
        )

    def eval_rounds(self, rounds: int) -> list[int]:
        every = list(range(self.eval_every, rounds, self.eval_every)) if self.eval_every else []
        return sorted({0, rounds, *every})


def defended_key(model_key: str, attack: str, position: float) -> str:
    """Folder-safe name of one defended model: ``<size>__seed<k>__<attack>@<position>``."""
    return f"{model_key}__{attack}@{float(position):g}"


def _select(models_table, cfg: AdvTrainStudyConfig):
    if models_table is None or len(models_table) == 0:
        raise ValueError("the fine-tuning study recorded no models to train")
    table = models_table
    for name, col in (("sizes", "model"), ("seeds", "seed")):
        wanted = getattr(cfg, name)
        if wanted:
            have = sorted(set(table[col]))
            missing = [w for w in wanted if w not in have]
            if missing:
                raise ValueError(f"{name} {missing} are not in the fine-tuning study; accepted: {have}")
            table = table[table[col].isin(wanted)]
    missing = [k for k, c in zip(table["model_key"], table["checkpoint"]) if not c]
    if missing:
        raise ValueError(f"models {missing} have no checkpoint (fine-tune with save_checkpoints=True)")
    return table.sort_values(["num_params", "seed"])


def _attack_rows(result, base: dict) -> list[dict]:
    return [{**base, "n_examples": result.n_examples, "wall_seconds": result.wall_seconds, **r}
            for r in result.asr_frame().to_dict("records")]


def run_advtrain_study(cfg: AdvTrainStudyConfig, run, models_table, task: str, finetune_params: dict | None = None,
                       progress: bool = True):
    """Adversarially train every selected fine-tuned model with every (training attack,
    position), evaluate robustness at ``cfg.eval_rounds``, then fill the transfer matrix.

    Records into ``run`` as it goes: tables ``advtrain`` (one row per defended model x
    round: compute, pool, accuracy), ``robustness`` (the ``02_attack`` columns plus
    ``round``, ``train_attack``, ``train_position``, cumulative ``defense_flops_*``; one
    row per evaluated round x attack iteration) and ``transfer`` (one row per defended or
    undefended model x evaluation attack/position). A killed study resumes: rounds from
    their checkpoints, finished models and cells are not redone.
    Returns ``(advtrain, robustness, transfer)`` as pandas DataFrames.
    """
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from . import attacks, models, tasks

    ft = finetune_params or {}
    task_obj = tasks.get_task(task)
    table = _select(models_table, cfg)
    smallest, largest = int(table["num_params"].min()), int(table["num_params"].max())
    pos_arg = lambda p: None if task_obj.attack_kind == "slot" and p == 1.0 else p  # noqa: E731
    source = ft.get("data_source") or None
    val = tasks.load_examples(task, "validation", n=cfg.eval_examples, seed=cfg.eval_data_seed, source=source)
    for p in {*cfg.train_positions, *cfg.transfer_positions}:
        val[0].attack_split(pos_arg(p))  # a bad position fails here, before any model loads
    max_rounds = cfg.rounds
    clean = tasks.load_examples(task, "train", n=ft.get("n_train", cfg.train_examples_per_round),
                                seed=ft.get("data_seed", 0), source=source)
    fresh = tasks.load_examples(task, "train", n=max_rounds * cfg.n_attack_examples, seed=cfg.data_seed,
                                source=source)

    def load(name):
        try:
            return run.load_table(name).to_dict("records")
        except FileNotFoundError:
            return []

    adv_rows, rob_rows, tr_rows = load("advtrain"), load("robustness"), load("transfer")
    done = {r["defended_key"] for r in adv_rows}
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    jobs = [(rec, a, p) for rec in table.to_dict("records") for a in cfg.train_attacks for p in cfg.train_positions]
    try:
        for rec, attack, position in tqdm(jobs, desc="defended models", disable=not progress):
            key = defended_key(rec["model_key"], attack, position)
            if key in done:
                continue
            rounds = rounds_for_size(rec["num_params"], smallest, largest, cfg.rounds, cfg.min_rounds)
            mcfg = cfg.model_config(attack, pos_arg(position), rounds)
            eval_name = cfg.eval_attack or attack
            ecfg = cfg.eval_config(eval_name, cfg.eval_iterations, position)
            base = {"model_key": rec["model_key"], "model": rec["model"], "seed": rec["seed"],
                    "num_params": rec["num_params"], "pretrain_compute": rec.get("pretrain_compute"),
                    "train_attack": attack, "train_position": position, "defended_key": key}

            def evaluate_round(round_, model, ecfg=ecfg, eval_name=eval_name, position=position, base=base):
                result = attacks.run_attack(eval_name, model, tokenizer, val, ecfg.attack_config(pos_arg(position)))
                return _attack_rows(result, {**base, "attack": eval_name, "position": position,
                                             "task": task_obj.name, "task_version": task_obj.version})

            model, tokenizer = models.load_classifier(rec["checkpoint"])
            result = adversarial_training(
                model, tokenizer, clean, fresh, mcfg, val_examples=val, evaluate_round=evaluate_round,
                eval_rounds=cfg.eval_rounds(rounds), checkpoint_dir=run.artifact_path("advtrain", key),
                progress=progress,
            )
            defense = {0: (0, 0), **{r["round"]: (r["defense_flops_paper"], r["defense_flops_real"])
                                     for r in result.rounds}}
            for r in result.rounds:
                adv_rows.append({**base, "rounds": rounds, **r})
            for e in result.evaluations:
                paper, real = defense[e["round"]]
                rob_rows.append({**e, "defense_flops_paper": paper, "defense_flops_real": real})
            done.add(key)
            run.save_table("robustness", rob_rows)
            run.save_table("advtrain", adv_rows)  # last: the model counts as done once both are saved
            del model

        # Transfer: every defended model (its last round) and every undefended one, against
        # every evaluation attack x position.
        cells = {(r["defended_key"], r["eval_attack"], r["eval_position"]) for r in tr_rows}
        targets = []
        for rec in table.to_dict("records"):
            targets.append((rec, "none", math.nan, rec["model_key"]))
            for a in cfg.train_attacks:
                for p in cfg.train_positions:
                    targets.append((rec, a, p, defended_key(rec["model_key"], a, p)))
        for rec, attack, position, key in tqdm(targets, desc="transfer", disable=not progress):
            todo = [(a, it, p) for a, it in zip(cfg.transfer_attacks, cfg.transfer_iterations)
                    for p in cfg.transfer_positions if (key, a, p) not in cells]
            if not todo:
                continue
            model, tokenizer = models.load_classifier(rec["checkpoint"])
            model.to(models.pick_device())
            final_round = 0
            if attack != "none":
                final_round, _ = load_round(run.artifact_path("advtrain", key), model=model)
            for a, it, p in todo:
                res = attacks.run_attack(a, model, tokenizer, val, cfg.eval_config(a, it, p).attack_config(pos_arg(p)))
                tr_rows.append({
                    "model_key": rec["model_key"], "model": rec["model"], "seed": rec["seed"],
                    "num_params": rec["num_params"], "defended_key": key, "train_attack": attack,
                    "train_position": position, "round": final_round, "eval_attack": a, "eval_position": p,
                    "iterations": it, "asr": res.asr[-1], "n_correct_before": res.n_correct_before,
                    "n_examples": res.n_examples, "clean_accuracy": res.clean_accuracy,
                    "flops_paper": sum(res.flops_per_iteration_paper),
                    "flops_real": sum(res.flops_per_iteration_real),
                })
                run.save_table("transfer", tr_rows)
            del model
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(adv_rows), pd.DataFrame(rob_rows), pd.DataFrame(tr_rows)


def transfer_matrix(transfer, value: str = "asr"):
    """The transfer table as a matrix: rows ``train`` (training attack@position, or
    "none" for the undefended models), columns ``eval`` (evaluation attack@position
    with its budget), cells the median of ``value`` over seeds, per model size.

    Returns a long frame with columns ``model, num_params, train, eval, asr_median,
    asr_min, asr_max, seeds`` (ready for :func:`robustlib.plots` heatmaps); pivot it with
    ``.pivot_table(index=["model", "train"], columns="eval", values="asr_median")``.
    """
    t = transfer.copy()
    if t.empty:
        raise ValueError("the transfer table is empty")
    t["train"] = [("none" if a == "none" else f"{a}@{float(p):g}") for a, p in zip(t["train_attack"],
                                                                                t["train_position"])]
    t["eval"] = [f"{a}@{float(p):g} ({int(i)} it)" for a, p, i in zip(t["eval_attack"], t["eval_position"],
                                                                     t["iterations"])]
    out = t.groupby(["model", "num_params", "train", "eval"], as_index=False)[value].agg(
        asr_median="median", asr_min="min", asr_max="max", seeds="count")
    return out.sort_values(["num_params", "train", "eval"]).reset_index(drop=True)


def before_after(robustness, iteration: int | None = None):
    """ASR at a budget before (round 0) and after (last evaluated round) adversarial
    training, per size x training attack: medians over seeds, and ``after / before``.

    ``robustness``: the study's ``robustness`` table. ``iteration``: the budget (None:
    the largest iteration recorded).
    """
    import pandas as pd

    if robustness is None or len(robustness) == 0:
        raise ValueError("the robustness table is empty")
    it = int(robustness["iteration"].max()) if iteration is None else iteration
    at = robustness[robustness["iteration"] == it]
    if at.empty:
        raise ValueError(f"no ASR recorded at iteration {it}; recorded: 0..{int(robustness['iteration'].max())}")
    rows = []
    for key, g in at.groupby("defended_key"):
        first, last = g[g["round"] == g["round"].min()], g[g["round"] == g["round"].max()]
        rows.append({"model": g["model"].iloc[0], "num_params": g["num_params"].iloc[0], "seed": g["seed"].iloc[0],
                     "train_attack": g["train_attack"].iloc[0], "train_position": g["train_position"].iloc[0],
                     "eval_attack": g["attack"].iloc[0], "rounds": int(last["round"].iloc[0]),
                     "asr_before": float(first["asr"].iloc[0]), "asr_after": float(last["asr"].iloc[0]),
                     "defense_flops_paper": float(last["defense_flops_paper"].iloc[0])})
    per_seed = pd.DataFrame(rows)
    out = per_seed.groupby(["model", "num_params", "train_attack", "train_position", "eval_attack"],
                           as_index=False).agg(
        asr_before=("asr_before", "median"), asr_after=("asr_after", "median"), rounds=("rounds", "max"),
        defense_flops_paper=("defense_flops_paper", "median"), seeds=("seed", "count"))
    out["after_over_before"] = out["asr_after"] / out["asr_before"].where(out["asr_before"] > 0)
    out["iteration"] = it
    return out.sort_values(["num_params", "train_attack"]).reset_index(drop=True)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


__all__ = [
    "SAMPLING", "AdvTrainConfig", "AdvTrainResult", "AdvTrainStudyConfig", "TextExample", "adversarial_training",
    "before_after", "defended_key", "load_round", "loss_ranks", "rounds_for_size", "run_advtrain_study",
    "sample_without_replacement", "sampling_log_weights", "sampling_probabilities", "transfer_matrix",
]
