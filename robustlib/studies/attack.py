"""Study of ``notebooks/02_attack.ipynb``: attack every model a fine-tuning run recorded.

Each (size, seed) checkpoint of the input ``01_finetune`` run is attacked on the same
validation examples (drawn from the data that run recorded, its local source
included) with one attack spec, and its ASR curve appended to the run's ``attack``
table (:func:`robustlib.evaluate.attack_rows`, one row per model x iteration); each
example's attack per iteration goes to ``artifacts/attack_examples/<model>.json``.
A killed study resumes: models already in the table are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..attacks.spec import AttackSpec
from .base import DataSpec, StudyConfig

#: Attack options a classifier evaluation sets itself, and the parameter that does.
EVALUATION_OWNS = {
    "seed": "the study's seed",
    "progress": "the study",
    "skip_incorrect": "the study (ASR counts the examples classified correctly before the attack)",
    "stop_on_success": "the study (every example spends the full budget, so FLOPs per example compare)",
    "target": "the study (classifiers are attacked toward the wrong label)",
    "target_string": "the study (classifiers are attacked toward the wrong label)",
}


def check_placement(cfg) -> None:
    """``cfg.device`` and ``cfg.dtype`` are accepted names, and an explicit device is
    there (``cuda`` without a GPU is refused before any model loads)."""
    from ..models import DTYPES, pick_device

    pick_device(cfg.device)
    if cfg.dtype not in DTYPES:
        raise cfg.bad("dtype", cfg.dtype, str(DTYPES))


def evaluation_owns(position: str, iterations: str | None = None) -> dict[str, str]:
    """:data:`EVALUATION_OWNS` plus the position (and, if the study sets the budget, the
    iterations), each naming the study parameter that sets it."""
    return {**EVALUATION_OWNS, "position": position, **({"iterations": iterations} if iterations else {})}


@dataclass
class AttackStudyConfig(StudyConfig):
    """The parameters of ``02_attack``."""

    notebook = "02_attack"
    reads = {"finetune_run": ("finetune_study", "01_finetune")}

    finetune_study: str = ""
    attack: dict = field(default_factory=lambda: {"name": "gcg", "iterations": 3, "n_attack_tokens": 10,
                                                  "top_k": 64, "n_candidates": 16})
    position: float = 1.0
    n_examples: int = 4
    data_seed: int = 1
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.attack, str):  # a bare attack name is a spec with its defaults
            self.attack = {"name": self.attack}
        super().__post_init__()

    def validate(self) -> None:
        self.attack = self.spec().to_dict()
        self.check_fraction("position")
        self.check_positive("n_examples")
        self.check_positive("threads", zero=True)
        check_placement(self)

    def spec(self) -> AttackSpec:
        return AttackSpec.parse(self.attack, "attack", evaluation_owns("position"))

    @property
    def iterations(self) -> int:
        """The attack's budget (its spec's ``iterations``, or the attack's default)."""
        return self.spec().config().iterations


def run(cfg: AttackStudyConfig, run, progress: bool = True):
    """Attack every model of the input fine-tuning run, recording into ``run``.
    Returns the ``attack`` table (pandas)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .. import evaluate, models
    from ..runtime import torch_threads
    from .finetune import fine_tuned_models

    ft_run = run.input_run("finetune_run")
    table = fine_tuned_models(ft_run)
    data = DataSpec.of_run(ft_run)
    examples = data.examples("validation", n=cfg.n_examples, seed=cfg.data_seed)
    spec = cfg.spec()
    examples[0].attack_split(cfg.position)  # a bad position fails here, before any model loads
    rows = run.load_rows("attack")
    done = {r["model_key"] for r in rows}
    todo = table[~table["model_key"].isin(done)].to_dict("records")
    dtype = models.resolve_dtype(cfg.dtype, cfg.device)
    with torch_threads(cfg.threads):
        for rec in tqdm(todo, desc=f"{spec.label} attacks", disable=not progress):
            model, tokenizer = models.load_classifier(rec["checkpoint"], device=cfg.device, dtype=dtype)
            result, new = evaluate.attack(model, tokenizer, examples, spec, position=cfg.position, attack_seed=cfg.seed,
                                          **model_labels(rec, data), dtype=dtype)
            rows.extend(new)
            run.save_table("attack", rows)
            run.save_json(f"attack_examples/{rec['model_key']}.json", result.to_frame().to_dict("records"))
    return pd.DataFrame(rows)


#: What every evaluation row says about the model it attacked.
MODEL_LABELS = ("model_key", "model", "family", "seed", "num_params", "pretrain_compute")


def model_labels(rec: dict, data: DataSpec, **extra) -> dict:
    """The labels of rows about the fine-tuned model ``rec`` (a ``finetune`` table row)
    trained on ``data``: :data:`MODEL_LABELS`, the task and its version, round 0."""
    return {**{k: rec.get(k) for k in MODEL_LABELS}, "task": data.task, "task_version": data.task_version,
            "round": 0, **extra}


def metrics(cfg: AttackStudyConfig, table) -> dict:
    """What the notebook records: the attack and its budget, the median ASR at the
    budget of the largest and smallest size, and the attack FLOPs spent in total (both
    conventions, summed over models and attacked examples)."""
    from ..analysis import asr_at_budget, from_lab

    at_budget = asr_at_budget(from_lab(table), cfg.iterations, by=("model", "num_params"))
    final = table[table["iteration"] == cfg.iterations]
    attacked = final["n_attacked"].clip(lower=1)
    return {
        "attack": cfg.spec().label,
        "iterations": cfg.iterations,
        "asr_median_largest": float(at_budget["median"].iloc[-1]),
        "asr_median_smallest": float(at_budget["median"].iloc[0]),
        "attack_flops_paper_total": int(round((final["attack_flops_paper"] * attacked).sum())),
        "attack_flops_real_total": int(round((final["attack_flops_real"] * attacked).sum())),
    }


def summary(metrics: dict) -> str:
    """The run's findings in words (the report's opening lines)."""
    return (f"{metrics['attack']} with {metrics['iterations']} iterations broke {metrics['asr_median_smallest']:.0%} "
            f"of the correctly classified examples of the smallest model and {metrics['asr_median_largest']:.0%} "
            "of the largest (medians over seeds).")
