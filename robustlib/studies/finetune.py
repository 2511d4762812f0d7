"""Study of ``notebooks/01_finetune.ipynb``: fine-tune every size x seed of a family.

Records into its run, as it goes: ``artifacts/data.json`` (the :class:`DataSpec` of the
examples used, what later studies read), one row per finished model in the
``finetune`` table and, with ``save_checkpoints``, the weights under
``artifacts/models/<size>__seed<k>/`` (recorded relative to the run). A killed study
resumes: models already in the table are skipped, never retrained or counted twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import is_int
from ..finetune import FinetuneConfig, finetune
from ..record import share_files
from .base import DataSpec, StudyConfig

log = logging.getLogger("robustlib.studies.finetune")


@dataclass
class FinetuneStudyConfig(StudyConfig):
    """The parameters of ``01_finetune``; one fine-tuning per (size, seed)."""

    notebook = "01_finetune"

    task: str = "password_match"
    family: str = "zoo"
    sizes: list = field(default_factory=lambda: ["zoo-0.3m", "zoo-1m"])
    seeds: list = field(default_factory=lambda: [0])
    seeds_by_size: dict = field(default_factory=dict)
    n_train: int = 128
    n_val: int = 64
    data_seed: int = 0
    data_source: str = ""
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    schedule: str = "linear"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 512
    device: str = "auto"
    dtype: str = "auto"
    save_checkpoints: bool = True

    def validate(self) -> None:
        from .. import models, tasks

        task = tasks.get_task(self.task, kind="classification")  # unknown: lists the registered ones
        sizes = models.family_sizes(self.family)
        if not self.sizes:
            raise self.bad("sizes", self.sizes, f"a non-empty list of {self.family} models: {sizes}")
        wrong = [s for s in self.sizes if s not in sizes and not _is_path_or_hub_id(s)]
        if wrong:
            raise ValueError(f"sizes {wrong} are not in family {self.family!r}; accepted: {sizes} "
                             "(or a local model folder / hub id)")
        if len(set(self.sizes)) != len(self.sizes):
            raise self.bad("sizes", self.sizes, "distinct models", "duplicates")
        if not self.seeds or not all(is_int(s) for s in self.seeds):
            raise self.bad("seeds", self.seeds, "a non-empty list of integers")
        if len(set(self.seeds)) != len(self.seeds):
            raise self.bad("seeds", self.seeds, "distinct integers", "duplicates")
        for size, seeds in self.seeds_by_size.items():
            if size not in self.sizes:
                raise self.bad("seeds_by_size", self.seeds_by_size, f"a mapping of members of sizes {self.sizes} "
                               "to lists of seeds", f"{size!r} is not in sizes")
            if not isinstance(seeds, list) or not seeds or not all(is_int(s) for s in seeds) \
                    or len(set(seeds)) != len(seeds):
                raise self.bad("seeds_by_size", self.seeds_by_size, "a mapping of sizes to non-empty lists of "
                               "distinct integers", f"{size!r}: {seeds!r}")
        self.check_positive("n_train", "n_val")
        if self.data_source:
            if task.generated:
                raise self.bad("data_source", self.data_source, "'' (empty)", f"task {task.name!r} is generated")
            path = Path(self.data_source).expanduser()
            if not path.exists():
                raise self.bad("data_source", self.data_source, "'' or an existing file or folder", "not found")
            # Absolute: kernels run in the run's folder, not where the path was typed.
            self.data_source = str(path.resolve())
        self.training(seed=0)  # validates the training settings
        models.pick_device(self.device)  # 'cuda' without a GPU: refused here, before any kernel
        for size in self.sizes:
            if models.is_hub_id(size):  # offline or unreachable: fail now, not after a minute of retries
                models.check_hub_model(models.PRESETS[size].source if size in models.PRESETS else size)

    def models(self) -> list[tuple[str, int]]:
        """Every (size, seed) to fine-tune: each size with its ``seeds_by_size`` entry, else ``seeds``."""
        return [(size, seed) for size in self.sizes for seed in self.seeds_by_size.get(size, self.seeds)]

    def training(self, seed: int) -> FinetuneConfig:
        return FinetuneConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            schedule=self.schedule, warmup_ratio=self.warmup_ratio, weight_decay=self.weight_decay,
            max_length=self.max_length, seed=seed, device=self.device, dtype=self.dtype,
        )

    def data(self) -> DataSpec:
        from .. import tasks

        task = tasks.get_task(self.task)
        return DataSpec(task=task.name, task_version=task.version, source=self.data_source or None,
                        seed=self.data_seed, n_train=self.n_train, n_val=self.n_val)


def _is_path_or_hub_id(name) -> bool:
    return isinstance(name, str) and (Path(name).expanduser().exists() or name.count("/") == 1)


def model_key(size: str, seed: int) -> str:
    """Folder-safe name of one fine-tuned model in a run: ``<size>__seed<k>``."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in size)
    return f"{safe}__seed{seed}"


def run(cfg: FinetuneStudyConfig, run, progress: bool = True):
    """Fine-tune every size x seed of ``cfg``, recording into ``run`` (a
    :class:`robustlib.record.Run`) as it goes. Returns the ``finetune`` table (pandas)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .. import models

    spec = cfg.data()
    train, val = spec.examples("train"), spec.examples("validation")
    spec.save(run)
    done = {r["model_key"]: r for r in run.load_rows("finetune")}
    todo = [(size, seed) for size, seed in cfg.models() if model_key(size, seed) not in done]
    if len(todo) < len(cfg.models()):
        log.info("resuming: %d of %d models already fine-tuned", len(done), len(cfg.models()))
    for size, seed in tqdm(todo, desc="models", disable=not progress):
        model, tokenizer = models.load_classifier(size, seed=seed)
        result = finetune(model, tokenizer, train, val, cfg.training(seed))
        key = model_key(size, seed)
        checkpoint = ""
        if cfg.save_checkpoints:
            folder = models.save_classifier(model, tokenizer, run.artifact_path("models", key))
            share_files(folder)
            checkpoint = run.relative(folder)
        preset = models.PRESETS.get(size)
        done[key] = {
            "model_key": key, "model": size, "family": preset.family if preset else "custom", "seed": seed,
            "task": spec.task, "task_version": spec.task_version, "n_train": len(train), "n_val": len(val),
            "checkpoint": checkpoint, "pretrain_compute": models.pretrain_compute(size) if preset else None,
            **result.as_record(),
        }
        run.save_table("finetune", list(done.values()))
        run.save_json(f"losses/{key}.json", result.train_losses)
        del model
    return pd.DataFrame(list(done.values())).sort_values(["num_params", "seed"]).reset_index(drop=True)


def fine_tuned_models(ft_run):
    """The models a fine-tuning run recorded (its ``finetune`` table), checkpoints as
    absolute paths. Raises when it recorded none, or one has no checkpoint."""
    import pandas as pd

    table = pd.DataFrame(ft_run.load_rows("finetune"))
    if table.empty:
        raise ValueError(f"the fine-tuning run {ft_run.study}/{ft_run.name} recorded no models")
    missing = [k for k, c in zip(table["model_key"], table["checkpoint"]) if not c]
    if missing:
        raise ValueError(f"models {missing} have no checkpoint (fine-tune with save_checkpoints=True)")
    table["checkpoint"] = [str(ft_run.resolve(c)) for c in table["checkpoint"]]
    return table.sort_values(["num_params", "seed"]).reset_index(drop=True)


def compute_table(table):
    """Per model x seed: tokens, FLOPs in both conventions (3 significant digits), time."""
    cols = ["model", "seed", "num_params", "train_tokens", "train_flops_paper", "train_flops_real",
            "eval_flops_paper", "eval_flops_real", "wall_seconds"]
    out = table[cols].copy()
    for c in cols:
        if "flops" in c:
            out[c] = out[c].map(lambda v: f"{v:.3g}")
    out["wall_seconds"] = out["wall_seconds"].round(1)
    return out


def summarize(table):
    """Median, min and max validation accuracy over seeds, per model size."""
    g = table.groupby(["model", "num_params"], as_index=False)["val_accuracy"]
    out = g.agg(median="median", min="min", max="max", seeds="count")
    return out.sort_values("num_params").reset_index(drop=True)


def summary(metrics: dict) -> str:
    """The run's findings in words (the report's opening lines)."""
    from ..flops import readable

    flops = readable(metrics["train_flops_paper_total"])
    return (f"fine-tuned {metrics['models']} models; the largest size reached a median validation accuracy of "
            f"{metrics['val_accuracy_median_largest']:.2f}, for {flops} training FLOPs in all (paper convention).")
