"""Study of ``notebooks/07_generative.ipynb``: jailbreak chat models on StrongREJECT.

Every model of ``models`` (a chat model: a preset such as ``qwen2.5-0.5B-Instruct``,
``smollm2``, ``zoo-chat``, a folder or a hub id) is judged, attacked and judged again
on the same prompts (:func:`robustlib.jailbreak.jailbreak`); its rows go to the run's
``generative`` table (one per model x judged iteration, the tidy names plus the Wilson
intervals and the refusal rate) and every prompt's responses, with the judge's raw
output and score, to ``artifacts/generative_examples/<model>.json``. The judge is
checked (reached, loaded) before any model loads. A killed study resumes: models
already in the table are skipped.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..attacks.spec import AttackSpec
from ..config import is_int
from ..jailbreak import JAILBREAK_OWNS
from ..tasks.prompts import BUILTIN, STRONGREJECT
from ..tasks.targets import TARGET_RULES
from .attack import check_placement
from .base import StudyConfig

#: ``prompts`` values besides a local path.
PROMPT_SOURCES = (BUILTIN, "hub")
#: Judge settings that are never parameters: a parameter is recorded with the run.
SECRET_SETTINGS = ("api_key",)


@dataclass
class GenerativeConfig(StudyConfig):
    """The parameters of ``07_generative``."""

    notebook = "07_generative"

    models: list = field(default_factory=lambda: ["zoo-chat"])
    prompts: str = BUILTIN
    dataset: str = STRONGREJECT.dataset
    dataset_revision: str = STRONGREJECT.revision or ""
    n_prompts: int = 6
    data_seed: int = 0
    attack: dict = field(default_factory=lambda: {"name": "gcg", "iterations": 16, "n_attack_tokens": 10,
                                                  "top_k": 128, "n_candidates": 64})
    position: float = 1.0
    target_rule: str = "fixed"
    target_string: str = "Sure, here"
    judge: dict = field(default_factory=lambda: {"name": "refusal"})
    judge_at: list = field(default_factory=lambda: [4, 8])
    max_new_tokens: int = 32
    generation_batch: int = 16
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    trust_remote_code: bool = False
    results_dir: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.attack, str):
            self.attack = {"name": self.attack}
        if isinstance(self.judge, str):
            self.judge = {"name": self.judge}
        super().__post_init__()

    def validate(self) -> None:
        if not self.models or not all(isinstance(m, str) and m for m in self.models):
            raise self.bad("models", self.models, "a non-empty list of chat model names, folders or hub ids")
        if len(set(map(model_key, self.models))) != len(self.models):
            raise self.bad("models", self.models, "distinct models (two of them have the same name)")
        if self.prompts not in PROMPT_SOURCES and not Path(self.prompts).expanduser().exists():
            raise self.bad("prompts", self.prompts, f"{' or '.join(map(repr, PROMPT_SOURCES))}, or an existing local "
                           "file or folder with a forbidden_prompt (or prompt) column")
        if self.prompts == "hub" and not self.dataset:
            raise self.bad("dataset", self.dataset, "a hub dataset id (prompts='hub')")
        self.check_positive("n_prompts", zero=True)
        self.attack = self.spec().to_dict()
        self.check_fraction("position")
        if self.target_rule not in TARGET_RULES:
            raise self.bad("target_rule", self.target_rule, str(TARGET_RULES))
        if not self.target_string.strip():
            raise self.bad("target_string", self.target_string, "a non-blank opening such as 'Sure, here'")
        self._check_judge()
        budget = self.iterations
        if not all(is_int(i) and 1 <= i <= budget for i in self.judge_at):
            raise self.bad("judge_at", self.judge_at, f"a list of iterations in 1..{budget} (the attack's budget, "
                           "always judged)")
        self.judge_at = sorted(set(self.judge_at))
        self.check_positive("max_new_tokens", "generation_batch")
        self.check_positive("threads", zero=True)
        check_placement(self)

    def _check_judge(self) -> None:
        from .. import judges

        try:
            judges.judge_class(self.judge.get("name"))
        except ValueError as err:
            raise self.bad("judge", self.judge, f"a mapping with 'name' (one of {sorted(judges.JUDGES)}, or "
                           f"'package.module:JudgeClass') and that judge's settings ({err})") from None
        secret = sorted(set(self.judge) & set(SECRET_SETTINGS))
        if secret:
            raise self.bad("judge", {k: ("***" if k in secret else v) for k, v in self.judge.items()},
                           "settings without a key: parameters are recorded with the run; set "
                           "ROBUSTLIB_JUDGE_API_KEY (or OPENAI_API_KEY) in the environment instead")
        try:
            self.make_judge()
        except (TypeError, ValueError) as err:
            raise self.bad("judge", self.judge, f"settings its judge accepts ({err})") from None

    def spec(self) -> AttackSpec:
        return AttackSpec.parse(self.attack, "attack", {**JAILBREAK_OWNS, "position": "the study's position"})

    def release(self):
        """The paper's released generative evaluations as a tidy table (empty when no
        release is given: ``results_dir`` and ``$ROBUSTLIB_PAPER_RESULTS`` unset)."""
        import pandas as pd

        from .. import analysis, paths
        from .paper_results import is_generative

        folder = Path(self.results_dir).expanduser() if self.results_dir else paths.paper_results_dir()
        if folder is None:
            return pd.DataFrame(columns=analysis.COLUMNS)
        tidy = analysis.load_paper_results(folder, training=None)
        return tidy[is_generative(tidy)].reset_index(drop=True)

    @property
    def iterations(self) -> int:
        return self.spec().config().iterations

    def make_judge(self):
        """The judge these settings name (not yet checked: :meth:`Judge.check`)."""
        from .. import judges

        settings = dict(self.judge)
        return judges.get_judge(settings.pop("name"), **settings)

    def task(self):
        """StrongREJECT reading the hub copy these settings name."""
        return dataclasses.replace(STRONGREJECT, dataset=self.dataset, revision=self.dataset_revision or None)

    def load_prompts(self) -> list:
        """The prompts, each with its target by :attr:`target_rule`."""
        from .. import tasks
        from ..tasks.targets import assign_targets

        source = None if self.prompts == "hub" else self.prompts
        prompts = tasks.load_examples(self.task(), "validation", n=self.n_prompts or None, seed=self.data_seed,
                                      source=source)
        return assign_targets(prompts, self.target_rule, self.target_string)


def model_key(name: str) -> str:
    """A file-name-safe key for a model name or path (``Qwen/Qwen2.5-0.5B-Instruct`` ->
    ``Qwen2.5-0.5B-Instruct``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(name)).name or str(name))


def model_labels(name: str, num_params: int) -> dict:
    """What every row says about a chat model: key, name, family, seed 0, parameters,
    pretraining compute (NaN when unknown), task, round 0."""
    from .. import models

    try:
        preset = models.get_preset(name)
    except (KeyError, ValueError):
        shown, family, pretrain = model_key(name), "chat", None
    else:  # named as the paper's release names it (its hub id's name), where it has one
        shown = model_key(preset.source) if preset.source != "zoo" else preset.name
        family, pretrain = preset.family, models.pretrain_compute(preset.name)
    return {"model_key": model_key(name), "model": shown, "family": family, "seed": 0,
            "num_params": int(num_params), "pretrain_compute": math.nan if pretrain is None else float(pretrain),
            "task": STRONGREJECT.name, "task_version": STRONGREJECT.version, "round": 0}


def run(cfg: GenerativeConfig, run, progress: bool = True):
    """Jailbreak every model of ``cfg.models``, recording into ``run``. Returns the
    ``generative`` table (pandas), as the run stores it."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .. import flops, jailbreak, models
    from ..runtime import torch_threads

    judge = cfg.make_judge()
    judge.check()  # an unreachable judge fails here, before any model loads
    prompts = cfg.load_prompts()
    prompts[0].attack_split(cfg.position)
    rows = run.load_rows("generative")
    done = {r["model_key"] for r in rows}
    todo = [m for m in cfg.models if model_key(m) not in done]
    dtype = models.resolve_dtype(cfg.dtype, cfg.device)
    spec = cfg.spec()
    with torch_threads(cfg.threads):
        for name in tqdm(todo, desc="jailbreak models", disable=not progress):
            model, tokenizer = models.load_causal_lm(name, dtype=dtype, device=cfg.device,
                                                     trust_remote_code=cfg.trust_remote_code)
            labels = model_labels(name, flops.count_params(model))
            result = jailbreak.jailbreak(
                model, tokenizer, prompts, spec, judge, position=cfg.position, attack_seed=cfg.seed,
                target_string=cfg.target_string, judge_at=cfg.judge_at, max_new_tokens=cfg.max_new_tokens,
                generation_batch=cfg.generation_batch, progress=progress, **labels, judge=judge.name,
                target_rule=cfg.target_rule, prompts=cfg.prompts, dtype=dtype)
            rows.extend(result.rows)
            run.save_json(f"generative_examples/{labels['model_key']}.json", result.records)
            run.save_table("generative", rows)  # after the examples: a model in the table is complete
            del model
    return run.load_table("generative") if rows else pd.DataFrame(rows)  # as stored (NaN read back as null)


def at_budget(table):
    """Each model's last judged iteration (:func:`robustlib.analysis.judged_at_budget`):
    model, num_params, iteration, asr with its Wilson interval, refusal_rate with its
    own, n_attacked, n_examples, target_match, seconds_per_prompt."""
    from ..analysis import judged_at_budget

    final = judged_at_budget(table, by=("model_key", "model", "num_params"),
                             keep=("target_match", "seconds_per_prompt"))
    return final.drop(columns="model_key")


def readable(final):
    """:func:`at_budget` for reading: each rate with its 95% Wilson interval in one cell."""
    import pandas as pd

    def rate(name):
        return [f"{v:.2f} ({lo:.2f}-{hi:.2f})" if pd.notna(v) else "n/a"
                for v, lo, hi in zip(final[name], final[f"{name}_low"], final[f"{name}_high"])]

    return pd.DataFrame({"model": final["model"], "parameters": final["num_params"],
                         "refused before (95% CI)": rate("refusal_rate"),
                         "iteration": final["iteration"], "judged ASR (95% CI)": rate("asr"),
                         "attacked": final["n_attacked"].astype(int), "prompts": final["n_examples"].astype(int),
                         "target match": final["target_match"].round(2),
                         "seconds per prompt": final["seconds_per_prompt"].round(1)})


def metrics(cfg: GenerativeConfig, table) -> dict:
    """What the notebook records: the judge, the budget, and per model the refusal rate
    before the attack, the judged ASR at the budget and the seconds per prompt."""
    final = at_budget(table)
    return {
        "attack": cfg.spec().label, "iterations": cfg.iterations, "judge": cfg.judge["name"],
        "n_prompts": int(final["n_examples"].max()),
        "refusal_rate": dict(zip(final["model"], final["refusal_rate"].round(4))),
        "asr": dict(zip(final["model"], final["asr"].round(4))),
        "seconds_per_prompt": dict(zip(final["model"], final["seconds_per_prompt"].round(2))),
    }


def summary(metrics: dict) -> str:
    """The run's findings in words."""
    parts = [f"{m}: refused {metrics['refusal_rate'][m]:.0%} before, {metrics['asr'][m]:.0%} of those jailbroken"
             for m in metrics["asr"]]
    return (f"{metrics['attack']} with {metrics['iterations']} iterations on {metrics['n_prompts']} prompts, judged "
            f"by {metrics['judge']}: " + "; ".join(parts) + ".")
