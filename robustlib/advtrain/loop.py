"""The adversarial-training loop: config in, result out, the caller owns the model.

Once per round ``r = 1..R``:

1. attack ``n_attack_examples`` fresh training examples with the training attack (an
   attack spec: any registered attack with its own options, at any position). Its
   iterations ramp linearly from ``attack_iterations_start`` in round 1 to
   ``attack_iterations_end`` in round R (the paper: GCG 8 -> 64). Every attacked text
   joins the adversarial *pool* with its true label, successful or not;
2. train on ``train_examples_per_round`` examples: ``min(adv_fraction x that, pool
   size)`` drawn from the pool without replacement (:mod:`robustlib.advtrain.pool`),
   the rest clean, with a fresh optimizer (each round of the paper is a new training
   run), or, with ``carry_optimizer``, continuing the last round's optimizer state
   (moments and step counts; the learning rate and its schedule are each round's own);
   an example's loss is recorded in the training step itself, for the sampling;
3. checkpoint; evaluate robustness if ``r`` is one of the evaluation rounds.

**Compute.** Defense compute of a round = its training FLOPs + the FLOPs spent
generating its attacks (the attack's clean forward pass included), in both
conventions (paper 2N/4N/6N, and real); cumulative totals are recorded per round.
By default (``stop_on_success``) the training attack stops working on an example at
its first successful iteration: what joins the pool is that iteration's attack either
way, so the pool and the trained model are the same as with the full budget (bit for
bit on the CPU; on a GPU, kernel rounding depends on the batch's shape), and only the
compute differs. Validation accuracy and robustness evaluations are measurement, not
defense, and are reported separately.

**Resume.** With ``checkpoint_dir`` set, each completed round is saved
(:mod:`robustlib.advtrain.checkpoint`). A killed run restarts from the last completed
round; all randomness of round ``r`` is seeded from ``(seed, r)`` and a carried
optimizer state is saved with the round, so a resumed run ends with exactly the
numbers of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..attacks.spec import AttackSpec
from ..config import StrictConfig, is_int
from ..finetune import FinetuneConfig
from ..flops import count_params
from .checkpoint import load_optimizer, load_round, save_round
from .pool import SAMPLING, sample_without_replacement, sampling_log_weights

log = logging.getLogger("robustlib.advtrain")

#: Training-attack options the loop sets itself, and what sets them.
TRAINING_OWNS = {
    "iterations": "attack_iterations_start/attack_iterations_end (the ramp)",
    "position": "position",
    "seed": "the loop (seeded per round from seed)",
    "skip_incorrect": "the loop (every fresh example is attacked and pooled)",
    "stop_on_success": "stop_on_success",
    "progress": "the loop",
    "target": "the loop (classifiers are attacked toward the wrong label)",
    "target_string": "the loop (classifiers are attacked toward the wrong label)",
}


@dataclass(frozen=True)
class TextExample:
    """A training example as text plus its true label (an attacked text, say)."""

    text: str
    label: int


@dataclass
class AdvTrainConfig(StrictConfig):
    """Settings of one model's adversarial training. Unknown keys are rejected by
    :meth:`from_dict`; bad values raise where the config is built, before any compute:
    the whole attack schedule is built once (its first and last rounds, the ramp's
    ends), so e.g. a BEAST ramp longer than its attack fails here, not in round 5."""

    rounds: int = 10
    attack: dict | str = "gcg"  # the training attack: a name or {"name": ..., **that attack's options}
    position: float | None = None  # None: the task's slot / suffix; else in [0, 1]
    n_attack_examples: int = 200  # fresh training examples attacked per round
    attack_iterations_start: int = 8  # training-attack iterations in round 1
    attack_iterations_end: int = 64  # ... in the last round (linear ramp in between)
    stop_on_success: bool = True  # stop attacking an example once broken (same pool, less compute)
    train_examples_per_round: int = 1000
    adv_fraction: float = 0.8  # at most this fraction of a round's examples come from the pool
    sampling: str = "rank"  # one of SAMPLING
    sampling_decay: float = 0.005
    loss_rank_weight: float = 0.5  # w: 0 = recency only, 1 = loss only
    training: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=1.0, progress=False))
    carry_optimizer: bool = False  # False: a fresh optimizer each round (the paper); True: continue the last one's
    seed: int = 0

    def validate(self) -> None:
        if isinstance(self.training, dict):
            self.training = FinetuneConfig.from_dict(self.training)
        if not isinstance(self.training, FinetuneConfig):
            raise self.bad("training", self.training, "a FinetuneConfig or a dict of its settings")
        self.attack = self.spec().to_dict()
        for name in ("rounds", "n_attack_examples", "attack_iterations_start", "attack_iterations_end",
                     "train_examples_per_round"):
            if getattr(self, name) <= 0:
                raise self.bad(name, getattr(self, name), "a positive integer")
        for name, high in (("adv_fraction", 1), ("loss_rank_weight", 1), ("sampling_decay", math.inf)):
            if not 0 <= getattr(self, name) <= high:
                raise self.bad(name, getattr(self, name), f"a number in [0, {high}]" if high == 1 else "a number >= 0")
        if self.sampling not in SAMPLING:
            raise self.bad("sampling", self.sampling, str(SAMPLING))
        for r in sorted({1, self.rounds}):
            try:
                self.attack_config(r)
            except ValueError as err:
                raise ValueError(f"AdvTrainConfig: the training attack of round {r} "
                                 f"({self.attack_iterations(r)} iterations) is invalid: {err}") from None

    def spec(self) -> AttackSpec:
        return AttackSpec.parse(self.attack, "AdvTrainConfig.attack", TRAINING_OWNS)

    def attack_iterations(self, round_: int) -> int:
        """Training-attack iterations in round ``round_`` (1-based): a linear ramp."""
        if self.rounds == 1:
            return self.attack_iterations_start
        frac = (round_ - 1) / (self.rounds - 1)
        return int(round(self.attack_iterations_start + frac * (self.attack_iterations_end
                                                                - self.attack_iterations_start)))

    def attack_config(self, round_: int):
        """The training attack's config in round ``round_``."""
        # What is pooled is the attack of the first successful iteration either way
        # (success is sticky and each example has its own random stream), so
        # stop_on_success changes nothing but the compute spent.
        return self.spec().config(iterations=self.attack_iterations(round_), position=self.position,
                                  seed=_round_seed(self.seed, round_, 1), skip_incorrect=False,
                                  stop_on_success=self.stop_on_success, progress=False)


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


def _check_inputs(cfg: AdvTrainConfig, clean, fresh, val_examples, eval_rounds) -> None:
    # Round 1 draws the most clean examples: its pool holds one round of attacks only.
    n_clean_needed = cfg.train_examples_per_round - min(int(cfg.adv_fraction * cfg.train_examples_per_round),
                                                        cfg.n_attack_examples)
    if len(clean) < n_clean_needed:
        raise ValueError(f"{len(clean)} clean examples given; round 1 draws {n_clean_needed} "
                         f"(train_examples_per_round={cfg.train_examples_per_round}, "
                         f"adv_fraction={cfg.adv_fraction}, n_attack_examples={cfg.n_attack_examples})")
    need = cfg.rounds * cfg.n_attack_examples
    if len(fresh) < need:
        raise ValueError(f"{len(fresh)} fresh examples given; {cfg.rounds} rounds x "
                         f"{cfg.n_attack_examples} attacked per round need {need}")
    bad_rounds = [r for r in eval_rounds if not is_int(r) or not 0 <= r <= cfg.rounds]
    if bad_rounds:
        raise ValueError(f"eval_rounds {bad_rounds} are invalid; accepted: integers in 0..{cfg.rounds}")
    fresh[0].attack_split(cfg.position)  # a bad position fails here, before any compute
    if val_examples is not None and not len(val_examples):
        raise ValueError("val_examples is empty; pass None to skip validation")


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


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

    The model is moved to the training device first (``config.training.device``: the
    GPU when there is one), so every attack, training step and evaluation runs there;
    the training attack computes at the training precision (``config.training.dtype``).
    Flushes denormal floats for the process (:func:`robustlib.runtime.flush_denormals`).
    Returns an :class:`AdvTrainResult`; each round record has ``defense_flops_paper``
    and ``defense_flops_real`` (cumulative) besides that round's own numbers.
    """
    from tqdm.auto import tqdm

    from ..models import pick_device
    from ..runtime import flush_denormals

    cfg = AdvTrainConfig.coerce(config)
    _check_inputs(cfg, clean_examples, fresh_examples, val_examples, eval_rounds)
    flush_denormals()
    model.to(pick_device(cfg.training.device))
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start, state = _resume(checkpoint_dir, model, cfg)
    carried = load_optimizer(checkpoint_dir, start) if cfg.carry_optimizer and start else None

    def checkpoint(round_):
        if checkpoint_dir is not None:
            save_round(checkpoint_dir, round_, model, state, set(keep_rounds), optimizer_state=carried)

    def maybe_evaluate(round_):
        if evaluate_round is not None and round_ in eval_rounds and round_ not in state["evaluated"]:
            rows = evaluate_round(round_, model) or []
            state["evaluations"].extend({**r, "round": round_} for r in rows)
            state["evaluated"].append(round_)

    if start == 0 and 0 in eval_rounds and 0 not in state["evaluated"]:
        maybe_evaluate(0)
        checkpoint(0)
    bar = tqdm(range(start + 1, cfg.rounds + 1), desc=f"adversarial training ({cfg.spec().label})",
               disable=not progress, leave=False)
    for r in bar:
        rec, carried = _train_round(model, tokenizer, cfg, r, clean_examples, fresh_examples, state, val_examples,
                                    carried)
        state["rounds"].append(rec)
        maybe_evaluate(r)  # then checkpoint: a round counts only once both are saved
        checkpoint(r)
        bar.set_postfix(asr=f"{rec['train_attack_asr']:.2f}", loss=f"{rec['train_loss']:.3f}")
    return AdvTrainResult(rounds=state["rounds"], evaluations=state["evaluations"], pool_size=len(state["pool"]),
                          resumed_from=start)


def _resume(checkpoint_dir: Path | None, model, cfg: AdvTrainConfig) -> tuple[int, dict]:
    """The round to continue after and the state so far (a fresh one without checkpoints)."""
    start, state = 0, None
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        start, state = load_round(checkpoint_dir, model=model)
        if state is not None and state.get("config") != _jsonable(asdict(cfg)):
            raise ValueError(f"{checkpoint_dir} holds a run with other settings; use a new folder "
                             f"(saved: {state.get('config')})")
    if start:
        log.info("resuming after round %d of %d", start, cfg.rounds)
    if state is None:
        state = {"config": _jsonable(asdict(cfg)), "pool": [], "rounds": [], "evaluations": [], "evaluated": []}
    return start, state


def _train_round(model, tokenizer, cfg: AdvTrainConfig, r: int, clean_examples, fresh_examples, state: dict,
                 val_examples, optimizer_state: dict | None) -> tuple[dict, dict | None]:
    """Round ``r``: attack fresh examples into the pool, train on pool + clean (continuing
    ``optimizer_state`` if given); its record and, with ``carry_optimizer``, the
    optimizer's state at its end (else None)."""
    from .. import attacks
    from ..finetune import finetune
    from ..models import resolve_dtype
    from ..runtime import precision

    t0 = time.time()
    fresh = fresh_examples[(r - 1) * cfg.n_attack_examples : r * cfg.n_attack_examples]
    device = next(model.parameters()).device
    with precision(device, resolve_dtype(cfg.training.dtype, device)):  # attacks at the training precision
        result = attacks.run_attack(cfg.spec().name, model, tokenizer, fresh, cfg.attack_config(r))
    attack_seconds = time.time() - t0
    attack_paper = result.clean_flops_paper + sum(result.flops_per_iteration_paper)
    attack_real = result.clean_flops_real + sum(result.flops_per_iteration_real)
    pool = state["pool"]
    pool.extend({"text": rec.attacked_text, "label": rec.label, "round": r, "loss": None} for rec in result.records)

    n_adv = min(int(cfg.adv_fraction * cfg.train_examples_per_round), len(pool))
    n_clean = cfg.train_examples_per_round - n_adv
    rng = np.random.default_rng(_round_seed(cfg.seed, r, 2))
    logw = sampling_log_weights([p["loss"] for p in pool], cfg.sampling_decay, cfg.loss_rank_weight, cfg.sampling)
    adv_idx = sample_without_replacement(logw, n_adv, rng)
    clean_idx = np.sort(rng.choice(len(clean_examples), size=n_clean, replace=False))
    batch = [TextExample(pool[i]["text"], pool[i]["label"]) for i in adv_idx] + [clean_examples[i] for i in clean_idx]
    train_cfg = FinetuneConfig.from_dict({**asdict(cfg.training), "seed": _round_seed(cfg.seed, r, 3),
                                          "progress": False})
    fit = finetune(model, tokenizer, batch, val_examples if val_examples is not None else batch[:1], train_cfg,
                   optimizer_state=optimizer_state, keep_optimizer_state=cfg.carry_optimizer)
    for j, i in enumerate(adv_idx):
        if not math.isnan(fit.example_losses[j]):
            pool[i]["loss"] = fit.example_losses[j]

    prev = state["rounds"][-1] if state["rounds"] else {"defense_flops_paper": 0, "defense_flops_real": 0}
    train_paper, train_real = fit.flops["train_flops_paper"], fit.flops["train_flops_real"]
    return {
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
        "num_params": count_params(model),
        "attack_seconds": attack_seconds,
        "wall_seconds": time.time() - t0,
    }, fit.optimizer_state

