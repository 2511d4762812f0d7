"""Study of ``notebooks/03_adversarial_training.ipynb``: defend every fine-tuned model,
measure robustness along the way, then fill the transfer matrix.

One defended model per (fine-tuned model) x (training attack spec, training position),
trained by :func:`robustlib.advtrain.adversarial_training` on the data the input
``01_finetune`` run recorded. Records into its run as it goes: tables ``advtrain``
(one row per defended model x round: compute, pool, accuracy), ``robustness``
(:func:`robustlib.evaluate.attack_rows` of the evaluation attack at the training
position, at round 0, every ``eval_every`` rounds and the last, with the cumulative
defense compute) and ``transfer`` (the same rows for every defended model's last round
and every undefended model, the ``none`` row, against every transfer attack spec x
position, each at its own budget). A killed study resumes: rounds from their
checkpoints, finished models and cells are not redone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..advtrain import TRAINING_OWNS, AdvTrainConfig, adversarial_training, load_round, rounds_for_size
from ..attacks.spec import AttackSpec, parse_specs
from ..config import is_int
from ..finetune import FinetuneConfig
from .attack import check_placement, evaluation_owns, model_labels
from .base import DataSpec, StudyConfig

#: Which rounds' checkpoints a defended model keeps: the latest only, those evaluated, all.
KEEP = ("latest", "evaluated", "all")


@dataclass
class AdvTrainStudyConfig(StudyConfig):
    """The parameters of ``03_adversarial_training``."""

    notebook = "03_adversarial_training"
    reads = {"finetune_run": ("finetune_study", "01_finetune")}

    finetune_study: str = ""
    sizes: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    seeds_by_size: dict = field(default_factory=dict)
    train_attacks: list = field(default_factory=lambda: [
        {"name": "gcg", "n_attack_tokens": 10, "top_k": 32, "n_candidates": 8}])
    train_positions: list = field(default_factory=lambda: [1.0])
    rounds: int = 2
    min_rounds: int = 0
    rounds_by_size: dict = field(default_factory=dict)
    n_attack_examples: int = 8
    attack_iterations_start: int = 1
    attack_iterations_end: int = 2
    train_examples_per_round: int = 32
    adv_fraction: float = 0.8
    sampling: str = "rank"
    sampling_decay: float = 0.005
    loss_rank_weight: float = 0.5
    lr: float = 0.0005
    batch_size: int = 32
    optimizer: str = "adamw"
    schedule: str = "linear"
    epochs_per_round: float = 1.0
    warmup_ratio: float = 0.2
    carry_optimizer: bool = False
    stop_on_success: bool = True
    keep_checkpoints: str = "latest"
    eval_every: int = 0
    eval_attack: dict = field(default_factory=dict)
    eval_iterations: int = 2
    eval_examples: int = 4
    eval_data_seed: int = 1
    transfer_attacks: list = field(default_factory=lambda: [
        {"name": "gcg", "iterations": 2, "n_attack_tokens": 10, "top_k": 32, "n_candidates": 8},
        {"name": "random_token", "iterations": 8, "n_attack_tokens": 10}])
    transfer_positions: list = field(default_factory=lambda: [1.0])
    data_seed: int = 2
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0

    def validate(self) -> None:
        self.check_positive("rounds", "n_attack_examples", "attack_iterations_start", "attack_iterations_end",
                            "train_examples_per_round", "eval_iterations", "eval_examples")
        self.check_positive("min_rounds", "eval_every", "threads", zero=True)
        if not all(isinstance(k, str) and isinstance(v, list) and v and all(is_int(x) for x in v)
                   for k, v in self.seeds_by_size.items()):
            raise self.bad("seeds_by_size", self.seeds_by_size, "a mapping of model names to non-empty lists of seeds")
        if not isinstance(self.rounds_by_size, dict) or not all(
                isinstance(k, str) and is_int(v) and v > 0 for k, v in self.rounds_by_size.items()):
            raise self.bad("rounds_by_size", self.rounds_by_size, "a mapping of model names to positive integers")
        if not self.epochs_per_round > 0:
            raise self.bad("epochs_per_round", self.epochs_per_round, "a positive number")
        self.check_fraction("warmup_ratio", open_high=True)
        check_placement(self)
        if self.keep_checkpoints not in KEEP:
            raise self.bad("keep_checkpoints", self.keep_checkpoints, str(KEEP))
        self.check_fractions("train_positions")
        self.check_fractions("transfer_positions")
        self.train_attacks = [s.to_dict() for s in self.train_specs()]
        self.transfer_attacks = [s.to_dict() for s in self.transfer_specs()]
        if self.eval_attack:
            self.eval_attack = self.eval_spec(None).to_dict()
        for spec in self.train_specs():  # every setting of every defended model, built once
            for p in self.train_positions:
                self.model_config(spec, p, self.max_rounds())
                self.eval_spec(spec).config(iterations=self.eval_iterations, position=p)
        for spec in self.transfer_specs():
            for p in self.transfer_positions:
                spec.config(position=p)

    def train_specs(self) -> list[AttackSpec]:
        owns = {**TRAINING_OWNS, "position": "train_positions", "seed": "seed"}
        return parse_specs(self.train_attacks, "train_attacks", owns)

    def transfer_specs(self) -> list[AttackSpec]:
        return parse_specs(self.transfer_attacks, "transfer_attacks", evaluation_owns("transfer_positions"))

    def eval_spec(self, train_spec: AttackSpec | None) -> AttackSpec:
        """The attack measuring robustness: ``eval_attack``, or ({}) the training attack."""
        if not self.eval_attack:
            return train_spec
        return AttackSpec.parse(self.eval_attack, "eval_attack",
                                evaluation_owns("train_positions (robustness is measured where a model was trained)",
                                                "eval_iterations"))

    def model_config(self, spec: AttackSpec, position: float, rounds: int) -> AdvTrainConfig:
        return AdvTrainConfig(
            rounds=rounds, attack=spec.to_dict(), position=position, n_attack_examples=self.n_attack_examples,
            attack_iterations_start=self.attack_iterations_start, attack_iterations_end=self.attack_iterations_end,
            stop_on_success=self.stop_on_success, train_examples_per_round=self.train_examples_per_round,
            adv_fraction=self.adv_fraction, sampling=self.sampling, sampling_decay=self.sampling_decay,
            loss_rank_weight=self.loss_rank_weight, seed=self.seed, carry_optimizer=self.carry_optimizer,
            training=FinetuneConfig(epochs=self.epochs_per_round, lr=self.lr, batch_size=self.batch_size,
                                    optimizer=self.optimizer, schedule=self.schedule,
                                    warmup_ratio=self.warmup_ratio, device=self.device, dtype=self.dtype,
                                    progress=False),
        )

    def max_rounds(self) -> int:
        """The most rounds any model of the study trains for."""
        return max([self.rounds, *self.rounds_by_size.values()])

    def rounds_for(self, model: str, num_params: int, smallest: int, largest: int) -> int:
        """Rounds for ``model``: its entry in ``rounds_by_size``, else ``rounds`` for the
        smallest size down to ``min_rounds`` for the largest (:func:`rounds_for_size`)."""
        if model in self.rounds_by_size:
            return self.rounds_by_size[model]
        return rounds_for_size(num_params, smallest, largest, self.rounds, self.min_rounds)

    def eval_rounds(self, rounds: int) -> list[int]:
        every = list(range(self.eval_every, rounds, self.eval_every)) if self.eval_every else []
        return sorted({0, rounds, *every})

    def kept_rounds(self, rounds: int) -> list[int]:
        """The rounds whose checkpoints stay (the latest always does)."""
        return {"latest": [], "evaluated": self.eval_rounds(rounds), "all": list(range(rounds + 1))}[
            self.keep_checkpoints]


def defended_key(model_key: str, label: str, position: float) -> str:
    """Folder-safe name of one defended model: ``<size>__seed<k>__<attack label>@<position>``."""
    return f"{model_key}__{label}@{float(position):g}"


def select_models(table, cfg: AdvTrainStudyConfig):
    """The fine-tuned models (a :func:`~robustlib.studies.finetune.fine_tuned_models`
    table) that ``cfg.sizes`` and ``cfg.seeds`` select (empty lists: all), the sizes
    named in ``cfg.seeds_by_size`` with those seeds only."""
    for name, col in (("sizes", "model"), ("seeds", "seed")):
        wanted = getattr(cfg, name)
        if wanted:
            have = sorted(set(table[col]))
            missing = [w for w in wanted if w not in have]
            if missing:
                raise ValueError(f"{name} {missing} are not in the fine-tuning study; accepted: {have}")
            table = table[table[col].isin(wanted)]
    for size, seeds in cfg.seeds_by_size.items():
        have = sorted(set(table.loc[table["model"] == size, "seed"]))
        if not have or any(s not in have for s in seeds):
            raise ValueError(f"seeds_by_size {{{size!r}: {seeds}}}: the models to defend have "
                             f"{'no ' + repr(size) if not have else f'seeds {have} of {size!r}'}")
        table = table[(table["model"] != size) | table["seed"].isin(seeds)]
    unknown = sorted(set(cfg.rounds_by_size) - set(table["model"]))
    if unknown:
        raise ValueError(f"rounds_by_size names {unknown}, not among the models to defend; accepted: "
                         f"{sorted(set(table['model']))}")
    return table.sort_values(["num_params", "seed"])


@dataclass
class _Context:
    """What every defended model of one study run shares."""

    cfg: AdvTrainStudyConfig
    run: object
    data: DataSpec
    clean: list
    fresh: list
    val: list
    smallest: int
    largest: int
    progress: bool


def run(cfg: AdvTrainStudyConfig, run, progress: bool = True):
    """Defend, evaluate and transfer every selected model, recording into ``run``.
    Returns the ``advtrain``, ``robustness`` and ``transfer`` tables (pandas)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from ..runtime import torch_threads
    from .finetune import fine_tuned_models

    ft_run = run.input_run("finetune_run")
    table = select_models(fine_tuned_models(ft_run), cfg)
    data = DataSpec.of_run(ft_run)
    val = data.examples("validation", n=cfg.eval_examples, seed=cfg.eval_data_seed)
    for p in {*cfg.train_positions, *cfg.transfer_positions}:
        val[0].attack_split(p)  # a bad position fails here, before any model loads
    ctx = _Context(cfg, run, data, data.examples("train"),
                   data.examples("train", n=cfg.max_rounds() * cfg.n_attack_examples, seed=cfg.data_seed), val,
                   int(table["num_params"].min()), int(table["num_params"].max()), progress)
    tables = {name: run.load_rows(name) for name in ("advtrain", "robustness", "transfer")}
    models = table.to_dict("records")
    jobs = [(rec, spec, p) for rec in models for spec in cfg.train_specs() for p in cfg.train_positions]
    with torch_threads(cfg.threads):
        done = {r["defended_key"] for r in tables["advtrain"]}
        for rec, spec, position in tqdm(jobs, desc="defended models", disable=not progress):
            if defended_key(rec["model_key"], spec.label, position) not in done:
                _defend(ctx, rec, spec, position, tables)
        targets = [(rec, None, math.nan) for rec in models] + jobs
        for rec, spec, position in tqdm(targets, desc="transfer", disable=not progress):
            _transfer(ctx, rec, spec, position, tables)
    return tuple(pd.DataFrame(tables[name]) for name in ("advtrain", "robustness", "transfer"))


def _defend(ctx: _Context, rec: dict, spec: AttackSpec, position: float, tables: dict) -> None:
    """Adversarially train one model; append its rounds and robustness rows."""
    from .. import evaluate, models
    from ..runtime import precision

    cfg, key = ctx.cfg, defended_key(rec["model_key"], spec.label, position)
    rounds = cfg.rounds_for(rec["model"], rec["num_params"], ctx.smallest, ctx.largest)
    labels = model_labels(rec, ctx.data, train_attack=spec.label, train_position=position, defended_key=key)
    eval_spec = cfg.eval_spec(spec)
    # float32 weights whatever cfg.dtype says: training keeps a float32 copy and computes
    # in cfg.dtype (mixed precision), and so do the attacks on the model it trains.
    model, tokenizer = models.load_classifier(rec["checkpoint"], device=cfg.device)
    dtype = models.resolve_dtype(cfg.dtype, cfg.device)

    def evaluate_round(round_, model):
        with precision(next(model.parameters()).device, dtype):
            return evaluate.attack(model, tokenizer, ctx.val, eval_spec, position=position, attack_seed=cfg.seed,
                                   iterations=cfg.eval_iterations, dtype=dtype, **labels)[1]

    result = adversarial_training(
        model, tokenizer, ctx.clean, ctx.fresh, cfg.model_config(spec, position, rounds), val_examples=ctx.val,
        evaluate_round=evaluate_round, eval_rounds=cfg.eval_rounds(rounds),
        checkpoint_dir=ctx.run.artifact_path("advtrain", key), keep_rounds=cfg.kept_rounds(rounds),
        progress=ctx.progress,
    )
    defense = {0: (0, 0), **{r["round"]: (r["defense_flops_paper"], r["defense_flops_real"]) for r in result.rounds}}
    base = {k: labels[k] for k in ("model_key", "model", "seed", "num_params", "pretrain_compute", "train_attack",
                                   "train_position", "defended_key")}
    tables["advtrain"].extend({**base, "rounds": rounds, **r} for r in result.rounds)
    for e in result.evaluations:
        paper, real = defense[e["round"]]
        tables["robustness"].append({**e, "defense_flops_paper": paper, "defense_flops_real": real})
    ctx.run.save_table("robustness", tables["robustness"])
    ctx.run.save_table("advtrain", tables["advtrain"])  # last: the model counts as done once both are saved


def _transfer(ctx: _Context, rec: dict, spec: AttackSpec | None, position: float, tables: dict) -> None:
    """Attack one model (``spec`` None: undefended; else its last defended round) with
    every transfer spec x position not recorded yet."""
    from .. import evaluate, models

    cfg = ctx.cfg
    key = rec["model_key"] if spec is None else defended_key(rec["model_key"], spec.label, position)
    cells = {(r["defended_key"], r["attack"], r["position"]) for r in tables["transfer"]}
    todo = [(s, p) for s in cfg.transfer_specs() for p in cfg.transfer_positions if (key, s.label, p) not in cells]
    if not todo:
        return
    dtype = models.resolve_dtype(cfg.dtype, cfg.device)
    model, tokenizer = models.load_classifier(rec["checkpoint"], device=cfg.device)
    final_round = 0
    if spec is not None:
        final_round, _ = load_round(ctx.run.artifact_path("advtrain", key), model=model)
    model.to(models.torch_dtype(dtype))  # as 02_attack loads its targets: weights in the attack precision
    labels = model_labels(rec, ctx.data, defended_key=key, train_attack="none" if spec is None else spec.label,
                          train_position=position, round=final_round, dtype=dtype)
    for s, p in todo:
        rows = _measured_already(ctx, rec, key, spec, final_round, s, p, dtype, tables["robustness"])
        if rows is not None:
            rows = [{**{k: v for k, v in r.items() if not k.startswith("defense_flops")}, **labels,
                     "attack": s.label} for r in rows]
        else:
            rows = evaluate.attack(model, tokenizer, ctx.val, s, position=p, attack_seed=cfg.seed, **labels)[1]
        tables["transfer"].extend(rows)
        ctx.run.save_table("transfer", tables["transfer"])


def _measured_already(ctx: _Context, rec: dict, key: str, spec: AttackSpec | None, final_round: int,
                      attack: AttackSpec, position: float, dtype: str, robustness: list[dict]) -> list[dict] | None:
    """The robustness rows that are this transfer cell, or None. A cell is the
    robustness evaluation itself when it attacks the same weights (the undefended model
    is round 0 of each of its defended ones; a defended model's last round is evaluated
    too) with the same attack configuration, budget, position, examples and seed, in
    float32 (where robustness runs in mixed precision on float32 weights and transfer on
    weights cast to the precision, the two are not the same computation)."""
    cfg = ctx.cfg
    if dtype != "float32" or position not in cfg.train_positions:
        return None
    settings = dict(position=position, seed=cfg.seed, progress=False)
    train_specs = [spec] if spec is not None else cfg.train_specs()
    for train_spec in train_specs:
        if cfg.eval_spec(train_spec).config(iterations=cfg.eval_iterations, **settings) != attack.config(**settings):
            continue
        where = key if spec is not None else defended_key(rec["model_key"], train_spec.label, position)
        round_ = final_round if spec is not None else 0
        rows = [r for r in robustness if r["defended_key"] == where and r["round"] == round_
                and r["position"] == position]
        if rows:
            return rows
    return None


def transfer_cells(transfer) -> int:
    """How many (model, evaluation attack, position) cells a transfer table holds."""
    return int(transfer[["defended_key", "attack", "position"]].drop_duplicates().shape[0]) if len(transfer) else 0


def metrics(adv, summary, transfer) -> dict:
    """What the notebook records: defended models, the largest size's median ASR before
    and after (``summary``: :func:`robustlib.analysis.before_after`), the worst
    after/before ratio, the defense FLOPs spent (paper convention, all models) and the
    transfer cells filled."""
    largest = summary[summary["num_params"] == summary["num_params"].max()].iloc[0]
    return {
        "defended_models": int(adv["defended_key"].nunique()),
        "asr_before_largest": float(largest["asr_before"]),
        "asr_after_largest": float(largest["asr_after"]),
        "worst_after_over_before": float(summary["after_over_before"].max()),
        "defense_flops_paper_total": float(adv.groupby("defended_key")["defense_flops_paper"].max().sum()),
        "transfer_cells": transfer_cells(transfer),
    }


def summary(metrics: dict) -> str:
    """The run's findings in words (the report's opening lines)."""
    from ..flops import readable

    worst = metrics.get("worst_after_over_before")
    kept = (f"; every size kept at most {worst:.0%} of its ASR" if worst is not None
            else "; no size had a non-zero ASR before training, so no ratio")
    return (f"adversarial training of {metrics['defended_models']} models took the largest one's ASR from "
            f"{metrics['asr_before_largest']:.0%} to {metrics['asr_after_largest']:.0%}{kept}; "
            f"{readable(metrics['defense_flops_paper_total'])} defense FLOPs in all (paper convention).")
