"""What a sweep will cost before it runs: FLOPs per job, GPU-hours, checkpoint disk.

FLOPs follow the paper's convention (:mod:`robustlib.flops`): forward ``2 N L``,
backward ``4 N L`` per example of ``L`` tokens, ``N`` the classifier's parameters,
counted as if no KV cache were used. The lab's attacks reuse the prefix's KV cache, so
what they really spend is lower: the estimate is an upper bound on the compute and,
through the utilisation, a planning figure for the time. Per job:

* ``01_finetune``: ``6 N L`` per training example and epoch, ``2 N L`` per validation example;
* ``02_attack``: examples x iterations x the attack's FLOPs per iteration (GCG: one
  gradient pass and ``n_candidates`` forwards; RandomToken: one forward; BEAST:
  ``beam_size x samples_per_beam`` forwards of the target, its sampler model not
  counted);
* ``03_adversarial_training``: per round, the training attack on ``n_attack_examples``
  (iterations ramping from start to end) and ``epochs_per_round`` over
  ``train_examples_per_round``; the robustness evaluations of the rounds evaluated;
  the transfer attacks on the defended and the undefended model;
* ``07_generative``: GCG on every prompt of every chat model, plus the judged
  generations (a forward per new token);
* merges, ``04``, ``05``, ``06``: nothing worth counting (they read tables).

``L`` is the task's typical length in tokens (:attr:`robustlib.tasks.Task.typical_tokens`)
plus the attack tokens. Disk: the weights each run keeps (float32 safetensors, 4 bytes
a parameter): one checkpoint per fine-tuned model, and per defended model the rounds
``keep_checkpoints`` keeps. Merged runs hard-link their models' files: no extra disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grid import ATTACK, DEFEND, FINETUNE, Job

#: Dense bf16 peak FLOP/s of the GPUs a dry run can be priced on (vendor figures, no sparsity).
GPU_PEAK = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "l40s": 362e12, "a10": 125e12}
#: The share of the peak a job sustains, assumed when the lab has not measured one on that
#: GPU: the candidate-scoring target of bench/attack_speed.py's GPU mode.
DEFAULT_UTILIZATION = 0.3
BYTES_PER_PARAM = 4
#: A chat prompt of the generative setting, in tokens, with its chat template.
CHAT_PROMPT_TOKENS = 80
#: StrongREJECT's prompts (PAPER.md), when a study asks for all of them.
STRONGREJECT_PROMPTS = 313


@dataclass
class Estimate:
    """One job's compute (paper-convention FLOPs) and the disk its run keeps (bytes)."""

    flops: float = 0.0
    disk: float = 0.0


def _attack_config(spec):
    from ..attacks.spec import AttackSpec
    from ..studies.attack import evaluation_owns

    return AttackSpec.parse({"name": spec} if isinstance(spec, str) else spec, "attack",
                            evaluation_owns("position")).config()


def attack_flops_per_iteration(spec: dict, num_params: int, tokens: int) -> float:
    """Paper-convention FLOPs of one iteration of attack ``spec`` on one example."""
    config = _attack_config(spec)
    forward = 2 * num_params * (tokens + config.n_attack_tokens)
    name = type(config).__name__
    if name == "GCGConfig":
        return 3 * forward + config.n_candidates * forward
    if name == "BEASTConfig":
        return config.beam_size * config.samples_per_beam * forward
    return forward  # RandomToken: one candidate per iteration


def task_tokens(task: str) -> int:
    """The task's typical example length in tokens (its registry entry's figure)."""
    from .. import tasks

    spec = tasks.get_task(task)
    return int(getattr(spec, "typical_tokens", None) or 256)


def job_estimate(job: Job, num_params: int | None) -> Estimate:
    """Paper-convention FLOPs and checkpoint bytes of one job (zero for merges and
    analyses; ``num_params`` None for a model whose size is unknown offline)."""
    from .. import runner
    from ..studies import config_class

    if job.kind in ("merge",) or num_params is None and job.notebook in (FINETUNE, ATTACK, DEFEND):
        return Estimate()
    if job.notebook not in (FINETUNE, ATTACK, DEFEND, "07_generative"):
        return Estimate()
    cfg = config_class(job.notebook).from_dict(runner.validate_parameters(job.notebook, job.params))
    if job.notebook == "07_generative":
        return _generative(cfg)
    n, length = num_params, task_tokens(job.cell.task)
    if job.notebook == FINETUNE:
        train = 6 * n * length * cfg.n_train * cfg.epochs
        return Estimate(train + 2 * n * length * cfg.n_val, n * BYTES_PER_PARAM if cfg.save_checkpoints else 0)
    if job.notebook == ATTACK:
        return Estimate(cfg.n_examples * cfg.iterations * attack_flops_per_iteration(cfg.attack, n, length))
    return _defense(cfg, job, n, length)


def _defense(cfg, job: Job, n: int, length: int) -> Estimate:
    rounds = cfg.rounds_by_size[job.size]
    defended = 0.0  # one defended model per training attack x position
    for spec in cfg.train_specs():
        schedule = cfg.model_config(spec, cfg.train_positions[0], rounds)  # the loop's own iteration ramp
        per_it = attack_flops_per_iteration(spec.to_dict(), n, length)
        eval_it = attack_flops_per_iteration(cfg.eval_attack or spec.to_dict(), n, length)
        for r in range(1, rounds + 1):
            defended += cfg.n_attack_examples * schedule.attack_iterations(r) * per_it
            defended += 6 * n * length * cfg.train_examples_per_round * cfg.epochs_per_round
        defended += len(cfg.eval_rounds(rounds)) * cfg.eval_examples * cfg.eval_iterations * eval_it
    models = len(cfg.train_attacks) * len(cfg.train_positions)
    transfer = sum(_attack_config(s).iterations * attack_flops_per_iteration(s, n, length)
                   for s in cfg.transfer_attacks)
    transfer *= (models + 1) * len(cfg.transfer_positions) * cfg.eval_examples  # + 1: the undefended model
    kept = 1 if cfg.keep_checkpoints == "latest" else len(cfg.kept_rounds(rounds))
    return Estimate(defended * len(cfg.train_positions) + transfer, models * kept * n * BYTES_PER_PARAM)


def _generative(cfg) -> Estimate:
    from .. import models

    prompts = cfg.n_prompts or STRONGREJECT_PROMPTS
    flops = 0.0
    for name in cfg.models:
        if name not in models.PRESETS:
            continue
        n = models.num_params(name, "causal_lm")
        per_it = attack_flops_per_iteration(cfg.attack, n, CHAT_PROMPT_TOKENS)
        gen = len(cfg.judge_at) * cfg.max_new_tokens * 2 * n * (CHAT_PROMPT_TOKENS + cfg.max_new_tokens)
        flops += prompts * (_attack_config(cfg.attack).iterations * per_it + gen)
    return Estimate(flops)


def gpu_hours(flops: float, gpu: str, utilization: float) -> float:
    """Hours of one ``gpu`` sustaining ``utilization`` of its bf16 peak for ``flops``."""
    if gpu not in GPU_PEAK:
        raise ValueError(f"unknown GPU {gpu!r}; accepted: {sorted(GPU_PEAK)}")
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization {utilization!r} is invalid; accepted: a number in (0, 1]")
    return flops / (GPU_PEAK[gpu] * utilization) / 3600


def per_job(jobs: list[Job]) -> dict[str, Estimate]:
    """Every job's :class:`Estimate`, by job key."""
    from ..models import without_hub_checks
    from .jobs import model_params

    with without_hub_checks():  # settings were checked when the sweep was planned
        return {j.key: job_estimate(j, model_params(j.size) if j.size else None) for j in jobs}


def table(jobs: list[Job], gpu: str = "h100", utilization: float = DEFAULT_UTILIZATION):
    """Per stage: jobs, paper-convention FLOPs, GPU-hours on ``gpu`` at ``utilization``,
    checkpoint disk (bytes), and a ``total`` row (pandas)."""
    import pandas as pd

    estimates = per_job(jobs)
    frame = pd.DataFrame([{"stage": j.notebook, "kind": j.kind, "flops": estimates[j.key].flops,
                           "disk_bytes": estimates[j.key].disk} for j in jobs])
    out = frame.groupby("stage", sort=False).agg(jobs=("kind", "size"), flops=("flops", "sum"),
                                                disk_bytes=("disk_bytes", "sum")).reset_index()
    out.loc[len(out)] = {"stage": "total", "jobs": int(out["jobs"].sum()), "flops": out["flops"].sum(),
                         "disk_bytes": out["disk_bytes"].sum()}
    out["gpu_hours"] = [gpu_hours(f, gpu, utilization) for f in out["flops"]]
    return out[["stage", "jobs", "flops", "gpu_hours", "disk_bytes"]]


def describe(sweep, gpu: str = "h100", utilization: float = DEFAULT_UTILIZATION) -> str:
    """What ``sweep --dry-run`` prints: the per-stage table (FLOPs readable, disk in MB
    or GB) and the assumptions behind it."""
    from ..flops import readable

    out = table(sweep.jobs, gpu, utilization)
    shown = out.assign(flops=out["flops"].map(lambda v: readable(v) if v else "0"),
                       gpu_hours=out["gpu_hours"].map(lambda v: f"{v:,.1f}"),
                       disk=out["disk_bytes"].map(_bytes)).drop(columns="disk_bytes")
    sf = sweep.study_file
    tokens = {c.task: task_tokens(c.task) for c in sf.cells}
    return "\n".join([
        f"{sf.study}: {len(sweep.jobs)} jobs in {len(sf.cells)} cell(s) (task x family)",
        shown.to_string(index=False),
        "FLOPs: the paper's convention (forward 2N, backward 4N per token, no KV cache: an upper bound on what "
        f"the lab's cached attacks spend); tokens per example {tokens}.",
        f"GPU-hours: one {gpu.upper()} sustaining {utilization:.0%} of its {GPU_PEAK[gpu] / 1e12:.0f} TFLOP/s "
        "bf16 peak, an assumption (no lab GPU benchmark has measured it; adversarial training was seen at "
        "1-4% of peak when host-bound).",
        "Disk: the float32 checkpoints the runs keep (merged runs hard-link them).",
    ])


def _bytes(value: float) -> str:
    return f"{value / 1e9:,.1f} GB" if value >= 1e9 else f"{value / 1e6:,.1f} MB"
