"""Robustness evaluation: attack every fine-tuned model of a study, ASR per iteration.

``run_attack_study(cfg, run, models_table)`` attacks each (size, seed) checkpoint that
``01_finetune`` recorded, on the same validation examples, and appends one row per
(model, seed, iteration) to the run's ``attack`` table: the paper's long format (ASR,
iteration, cumulative attack FLOPs in both conventions, parameters, seed). A killed
study resumes: models already in the table are skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .config import StrictConfig

log = logging.getLogger("robustlib.evaluate")


@dataclass
class AttackStudyConfig(StrictConfig):
    """Everything ``notebooks/02_attack.ipynb`` takes: names match its parameters cell."""

    _unknown_label = "parameter(s)"

    finetune_study: str = ""  # the study whose 01_finetune run holds the models ("" = this study)
    attack: str = "gcg"
    iterations: int = 10
    n_attack_tokens: int = 10
    position: float = 1.0  # 1.0 suffix, 0.0 prefix, 0.9 infix90; slot tasks accept only 1.0
    n_examples: int = 32
    data_seed: int = 1  # which validation examples are attacked
    seed: int = 0  # the attack's own randomness
    top_k: int = 256  # GCG
    n_candidates: int = 128  # GCG
    beam_size: int = 7  # BEAST
    batch_examples: int = 32  # examples attacked together
    threads: int = 0  # torch threads for the attack (0: leave torch's default)

    def __post_init__(self):
        from . import attacks

        attacks.get_attack(self.attack)  # unknown attack: error listing the registered ones
        if not isinstance(self.n_examples, int) or isinstance(self.n_examples, bool) or self.n_examples <= 0:
            raise ValueError(f"n_examples={self.n_examples!r} is invalid; accepted: a positive integer")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads={self.threads!r} is invalid; accepted: 0 (default) or a positive integer")
        self.attack_config(self.position)  # validates iterations, tokens, position, ...

    def position_arg(self, task_kind: str) -> float | None:
        """Slot tasks take no position (their slot is fixed); 1.0 means that slot."""
        return None if task_kind == "slot" and self.position == 1.0 else self.position

    def attack_config(self, position: float | None = 1.0):
        from . import attacks

        cls = attacks.get_config_class(self.attack)
        values = {
            "iterations": self.iterations, "n_attack_tokens": self.n_attack_tokens, "position": position,
            "seed": self.seed, "batch_examples": self.batch_examples, "progress": False,
        }
        extra = {"top_k": self.top_k, "n_candidates": self.n_candidates, "beam_size": self.beam_size}
        names = set(cls.__dataclass_fields__)
        values.update({k: v for k, v in extra.items() if k in names})
        return cls.from_dict(values)


#: Leading columns of the ``attack`` table, in the order shown.
COLUMNS = ["model_key", "model", "seed", "num_params", "attack", "position", "task", "task_version",
           "n_examples", "n_correct_before", "iteration", "asr", "flops_paper", "flops_real",
           "flops_per_iteration_paper", "flops_per_iteration_real", "wall_seconds"]


def run_attack_study(cfg: AttackStudyConfig, run, models_table, task: str, progress: bool = True):
    """Attack every model in ``models_table`` (the ``finetune`` table of a
    ``01_finetune`` run: columns ``model_key, model, seed, num_params, checkpoint``).

    Returns the long table (pandas): one row per model x iteration.
    """
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from . import attacks, models, tasks

    if models_table is None or len(models_table) == 0:
        raise ValueError("the fine-tuning study recorded no models to attack")
    missing = [k for k, c in zip(models_table["model_key"], models_table["checkpoint"]) if not c]
    if missing:
        raise ValueError(f"models {missing} have no checkpoint (fine-tune with save_checkpoints=True)")
    task_obj = tasks.get_task(task)
    examples = tasks.load_examples(task, "validation", n=cfg.n_examples, seed=cfg.data_seed)
    position = cfg.position_arg(task_obj.attack_kind)
    attack_cfg = cfg.attack_config(position)
    examples[0].attack_split(position)  # a bad position fails here, before any model loads

    try:
        rows = run.load_table("attack").to_dict("records")
    except FileNotFoundError:
        rows = []
    done = {r["model_key"] for r in rows}
    todo = models_table[~models_table["model_key"].isin(done)]
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        for rec in tqdm(todo.to_dict("records"), desc=f"{cfg.attack} attacks", disable=not progress):
            model, tokenizer = models.load_classifier(rec["checkpoint"])
            model.to(models.pick_device())  # attack where training ran: the GPU when there is one
            result = attacks.run_attack(cfg.attack, model, tokenizer, examples, attack_cfg)
            frame = result.asr_frame()
            for r in frame.to_dict("records"):
                rows.append({
                    "model_key": rec["model_key"], "model": rec["model"], "seed": rec["seed"],
                    "num_params": rec["num_params"], "attack": cfg.attack,
                    "position": cfg.position, "task": task_obj.name, "task_version": task_obj.version,
                    "n_examples": len(examples), "wall_seconds": result.wall_seconds, **r,
                })
            run.save_table("attack", rows)
            run.save_json(f"attack_examples/{rec['model_key']}.json", result.to_frame().to_dict("records"))
    finally:
        torch.set_num_threads(threads)
    table = pd.DataFrame(rows)
    # Rows read back from the store come with sorted keys; present one column order.
    return table[COLUMNS + sorted(set(table.columns) - set(COLUMNS))]


def asr_at(table, iteration: int):
    """ASR at a fixed attack budget (iteration) per model size: median, min, max over seeds."""
    at = table[table["iteration"] == iteration]
    if at.empty:
        raise ValueError(f"no ASR recorded at iteration {iteration}; "
                         f"recorded: 0..{int(table['iteration'].max())}")
    out = at.groupby(["model", "num_params"], as_index=False)["asr"].agg(
        median="median", min="min", max="max", seeds="count")
    return out.sort_values("num_params").reset_index(drop=True)


def laplace_logit10(asr, n):
    """The paper's plotting transform: log10(p / (1 - p)) with p = (asr*n + 1) / (n + 2).

    Laplace smoothing keeps ASR = 0 and 1 finite; ``n`` is the number of examples the
    ASR is a fraction of (those classified correctly before the attack).
    """
    import numpy as np

    p = (np.asarray(asr, dtype=float) * n + 1) / (np.asarray(n, dtype=float) + 2)
    out = np.log10(p / (1 - p))
    return float(out) if out.ndim == 0 else out


__all__ = ["AttackStudyConfig", "asr_at", "laplace_logit10", "run_attack_study"]
