"""Analysis: one tidy schema for attack results, curves, interpolation and regressions.

The lab's own run tables (:func:`from_lab`) and the paper's released CSVs
(:func:`load_paper_results`) both become the same *tidy attack table*: one row per
(model, seed, adversarial-training round, attack, iteration), with the columns of
:data:`COLUMNS`:

====================== ==============================================================
``source``             where the row came from (a CSV file name, or ``lab``)
``task``               ``password_match``, ``imdb``, ``spam``, ``harmless``, ...
``family``             ``pythia``, ``qwen2.5``, ``qwen2.5-chat``, ``zoo``, ...
``model``              size name (``pythia-14m``, ``Qwen2.5-0.5B``, ``zoo-1m``)
``num_params``         parameters of the classifier as loaded (the paper's N)
``seed``               model seed
``round``              adversarial-training round (0: before adversarial training)
``attack``             ``gcg``, ``beast``, ``random_token``
``position``           attack position (NaN when the task has a fixed slot or the
                       source does not say)
``iteration``          attack iteration (0: before the attack, ASR 0)
``asr``                attack success rate among the examples correct before the attack
``n_attacked``         those examples (the ASR's denominator)
``n_examples``         examples evaluated
``flops_per_iteration`` attack FLOPs per example for that iteration
``attack_flops``       cumulative attack FLOPs per example through ``iteration``
``defense_flops``      cumulative adversarial-training FLOPs of that model at ``round``
                       (training plus attack generation; 0 at round 0; NaN unknown)
``pretrain_compute``   6 N D of the model, NaN when there is no such figure
====================== ==============================================================

FLOPs are in the paper's convention unless ``convention="real"`` was asked of
:func:`from_lab`. Functions here return pandas frames and statsmodels results;
charts live in :mod:`robustlib.plots`.

**The released CSVs** (``load_paper_results`` / ``load_paper_training``). Evaluation
files (columns ``asr`` and ``iteration``) and training files (``train_total_flops``)
are told apart by their columns; both header variants (``adversarial_eval/x`` and
``adversarial_eval_x``; ``model_size`` or ``num_params``; ``model_name`` or
``model_name_or_path``) are read. Restarted runs are deduplicated on (model, seed,
round, iteration), the latest ``run_created_at`` winning. ``flops_per_iteration`` there
is summed over the ``dataset_n_val`` evaluated examples and constant within a run, so
the per-example cost is ``flops_per_iteration / dataset_n_val`` and ``attack_flops =
iteration x`` that. Training rows pair with evaluation rows on (family, task, training
attack, parameters, seed, round): the evaluated checkpoint ``adv-training-round-r``
is the model after ``r`` rounds, and the training row of round ``r`` holds the compute
spent through round ``r`` (0 at round 0 for Pythia, whose first round skipped training).
Training rows whose cumulative FLOPs fall below an earlier round's, or below a tenth
of the median of the other seeds of that size and round (a restarted run whose
counter restarted: ``train_total_flops`` of 1e11 after 4e16) are dropped unless
``drop_restart_glitches=False``: their evaluations get ``defense_flops`` NaN. A few
runs restarted early also under-count every later round by the compute before the
restart (Pythia-410m seed 3, Pythia-1b seed 0); ``offense_defense(...,
defense="size_median")`` takes the median over seeds of each size and round instead,
close to the paper's own x axis (the mean over seeds).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import StrictConfig
from .evaluate import laplace_logit10

log = logging.getLogger("robustlib.analysis")

#: The tidy attack table, in this order.
COLUMNS = ["source", "task", "family", "model", "num_params", "seed", "round", "attack", "position", "iteration",
           "asr", "n_attacked", "n_examples", "flops_per_iteration", "attack_flops", "defense_flops",
           "pretrain_compute"]
#: The tidy adversarial-training table (one row per model x seed x round).
TRAINING_COLUMNS = ["source", "task", "family", "model", "num_params", "seed", "round", "train_attack",
                    "defense_flops", "pretrain_compute"]
#: FLOP conventions of the lab's tables.
CONVENTIONS = ("paper", "real")
#: How :func:`compute_to_reach` turns a crossing into attack FLOPs.
FLOPS_TO_REACH = ("cumulative", "size_mean")
#: Pythia's pretraining tokens (PAPER.md: D = 299.89B).
PYTHIA_PRETRAIN_TOKENS = 299_892_736_000

_MODEL = re.compile(r"(pythia-[0-9.]+[mb]|Qwen2\.5-[0-9.]+B(?:-Instruct)?)", re.IGNORECASE)
_TASKS = (("strongreject", "strongreject"), ("harmless", "harmless"), ("helpful", "helpful"), ("imdb", "imdb"),
          ("spam", "spam"), ("_pm_", "password_match"), ("_pm", "password_match"), ("password", "password_match"),
          ("wordlength", "word_length"), ("_wl_", "word_length"))
_ATTACKS = {"gcg": "gcg", "beast": "beast", "rt": "random_token", "random_token": "random_token",
            "randomtoken": "random_token"}
_TRAIN_ATTACK = re.compile(r"adv_tr_([a-z]+)", re.IGNORECASE)
# Released column -> alternatives, first present wins (after '/' -> '_').
_ALIASES = {
    "model_path": ("model_name_or_path", "model_name"),
    "num_params": ("num_params", "model_size"),
    "seed": ("seed_idx", "training_seed"),
    "round": ("adv_training_round",),
    "n_attacked": ("adversarial_eval_n_correct_pre_attack",),
    "n_examples": ("dataset_n_val", "adversarial_eval_n_examples"),
}


# ---------------------------------------------------------------------------- import


def _csv_files(path) -> list[Path]:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"results path {str(path)!r} does not exist; accepted: a .csv file or a folder of them")
    if path.is_file() and path.suffix.lower() != ".csv":
        raise ValueError(f"{str(path)!r} is not a .csv file; accepted: a .csv file or a folder of them")
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"folder {str(path)!r} holds no .csv files")
    return files


def _read(file: Path) -> pd.DataFrame:
    raw = pd.read_csv(file)
    raw.columns = [c.replace("/", "_").replace("@", "_at_") for c in raw.columns]
    return raw


def _col(raw: pd.DataFrame, name: str, file: Path) -> pd.Series:
    for alt in _ALIASES[name]:
        if alt in raw.columns:
            return raw[alt]
    raise ValueError(f"{file.name} lacks a {name} column; looked for {list(_ALIASES[name])}")


def _model_name(path) -> str:
    m = _MODEL.search(str(path))
    return m.group(1) if m else str(path).rsplit("/", 1)[-1]


def _task_of(name: str) -> str:
    low = name.lower()
    for key, task in _TASKS:
        if key in low:
            return task
    return "unknown"


def _family_of(model: str) -> str:
    low = model.lower()
    if low.startswith("pythia"):
        return "pythia"
    if low.startswith("qwen2.5"):
        return "qwen2.5-chat" if low.endswith("-instruct") else "qwen2.5"
    return low.split("-")[0]


def _attack_of(stem: str) -> str:
    for token in stem.lower().split("_"):
        if token in _ATTACKS:
            return _ATTACKS[token]
    return "unknown"


def _position_of(stem: str) -> float:
    low = stem.lower()
    m = re.search(r"infix(\d+)", low)
    if m:
        return int(m.group(1)) / 100
    return 0.0 if "prefix" in low else 1.0 if "suffix" in low else math.nan


def _dedup(frame: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, int]:
    """Restarted runs appear more than once: keep the latest ``run_created_at``."""
    if "run_created_at" in frame.columns:
        order = pd.to_datetime(frame["run_created_at"], utc=True, errors="coerce")
        frame = frame.assign(_t=order).sort_values("_t", kind="stable", na_position="first").drop(columns="_t")
    out = frame.drop_duplicates(keys, keep="last")
    return out, len(frame) - len(out)


def _identity(raw: pd.DataFrame, file: Path) -> pd.DataFrame:
    """Columns every released table shares: source, task, family, model, size, seed, round."""
    paths = _col(raw, "model_path", file).astype(str)
    models = paths.map(_model_name)
    fallback = _task_of(file.stem)
    family = raw["model_family"].astype(str) if "model_family" in raw.columns else models.map(_family_of)
    return pd.DataFrame({
        "source": file.name,
        "task": paths.map(lambda p: t if (t := _task_of(p)) != "unknown" else fallback),
        "family": family, "model": models,
        "num_params": _col(raw, "num_params", file).astype("int64"),
        "seed": _col(raw, "seed", file).astype(int),
        "round": _col(raw, "round", file).astype(int) if "adv_training_round" in raw.columns else 0,
        "run_created_at": raw["run_created_at"] if "run_created_at" in raw.columns else None,
    })


def _train_attack(names: pd.Series, fallback: str) -> pd.Series:
    return names.astype(str).map(lambda s: (m.group(1).lower() if (m := _TRAIN_ATTACK.search(s)) else fallback))


def _training_frame(raw: pd.DataFrame, file: Path, drop_restart_glitches: bool, counts: dict) -> pd.DataFrame:
    out = _identity(raw, file)
    key = raw["model_key"] if "model_key" in raw.columns else pd.Series(file.stem, index=raw.index)
    file_attack = m.group(1).lower() if (m := _TRAIN_ATTACK.search(file.stem)) else "unknown"
    out["train_attack"] = _train_attack(key, file_attack).map(lambda a: _ATTACKS.get(a, a))
    out["defense_flops"] = raw["train_total_flops"].astype(float)
    out["pretrain_compute"] = raw["pretrain_compute"].astype(float) if "pretrain_compute" in raw.columns else math.nan
    out, dups = _dedup(out, ["source", "num_params", "seed", "round"])
    out = out.sort_values(["num_params", "seed", "round"], kind="stable")
    # Cumulative compute never decreases: a drop is a restarted run's counter, not compute.
    # A round-1 restart cannot drop below round 0's zero, but sits orders of magnitude
    # below the other seeds of its size at that round.
    earlier = out.groupby(["num_params", "seed"])["defense_flops"].transform(lambda s: s.cummax().shift())
    peers = out.groupby(["num_params", "round"])["defense_flops"]
    tiny = (out["defense_flops"] < 0.1 * peers.transform("median")) & (peers.transform("size") >= 3)
    glitch = (out["defense_flops"] < earlier) | tiny
    counts.setdefault("duplicates_dropped", {})[file.name] = dups
    counts.setdefault("restart_glitches", {})[file.name] = int(glitch.sum())
    if glitch.any():
        log.info("%s: %d training rows whose cumulative FLOPs fall below an earlier round's (restarts)%s",
                 file.name, int(glitch.sum()), ", dropped" if drop_restart_glitches else "")
    if drop_restart_glitches:
        out = out[~glitch]
    return out[TRAINING_COLUMNS].reset_index(drop=True)


def _evaluation_frame(raw: pd.DataFrame, file: Path, counts: dict) -> pd.DataFrame:
    out = _identity(raw, file)
    n_val = _col(raw, "n_examples", file).astype(float)
    per_iteration = raw["flops_per_iteration"].astype(float) / n_val
    iteration = raw["iteration"].astype(int)
    paths = _col(raw, "model_path", file).astype(str)
    out = out.assign(
        attack=_attack_of(file.stem), position=_position_of(file.stem), iteration=iteration,
        asr=raw["asr"].astype(float), n_attacked=_col(raw, "n_attacked", file).astype(float), n_examples=n_val,
        flops_per_iteration=per_iteration, attack_flops=iteration * per_iteration,
        defense_flops=np.where(out["round"] == 0, 0.0, math.nan), pretrain_compute=math.nan,
        _train_attack=_train_attack(paths, "none").map(lambda a: _ATTACKS.get(a, a)),
    )
    out, dups = _dedup(out, ["source", "num_params", "seed", "round", "iteration"])
    counts.setdefault("duplicates_dropped", {})[file.name] = dups
    if dups:
        log.info("%s: %d duplicated (model, seed, round, iteration) rows dropped, latest run kept", file.name, dups)
    return out


def _merge_counts(counts: dict, extra: dict) -> None:
    for kind, per_file in extra.items():
        for name, n in per_file.items():
            counts.setdefault(kind, {}).setdefault(name, n)


def _kind(file: Path) -> str | None:
    header = {c.replace("/", "_") for c in pd.read_csv(file, nrows=0).columns}
    if "train_total_flops" in header:
        return "training"
    if {"asr", "iteration"} <= header:
        return "evaluation"
    return None


def _load(path, drop_restart_glitches: bool = True, kinds=("evaluation", "training")):
    """Read the CSVs under ``path`` of the wanted kinds: (evaluation frames, training
    frames, counts)."""
    evaluations, trainings, counts = [], [], {}
    for file in _csv_files(path):
        kind = _kind(file)
        if kind is None:
            log.warning("%s is neither an evaluation (asr, iteration) nor a training (train_total_flops) table; "
                        "skipped", file.name)
        elif kind in kinds:
            raw = _read(file)
            if kind == "training":
                trainings.append(_training_frame(raw, file, drop_restart_glitches, counts))
            else:
                evaluations.append(_evaluation_frame(raw, file, counts))
    return evaluations, trainings, counts


def load_paper_training(path, drop_restart_glitches: bool = True) -> pd.DataFrame:
    """The released adversarial-training tables (files with ``train_total_flops``) in a
    file or folder (searched recursively), as one frame with :data:`TRAINING_COLUMNS`:
    one row per (model, seed, round). ``defense_flops`` is ``train_total_flops``
    (training plus attack generation through that round), ``pretrain_compute`` the
    file's 6ND, ``train_attack`` the training attack (from the model key, ``adv_tr_gcg``).

    ``drop_restart_glitches``: drop rows whose cumulative FLOPs fall below an earlier
    round's of the same model and seed, or below a tenth of the median over the
    seeds of that size and round (restarts; see the module docstring). ``frame.attrs``
    records ``duplicates_dropped`` and ``restart_glitches`` per file.
    """
    _, trainings, counts = _load(path, drop_restart_glitches, kinds=("training",))
    if not trainings:
        raise ValueError(f"no training results (files with train_total_flops) under {str(path)!r}")
    out = pd.concat(trainings, ignore_index=True)
    out.attrs.update(counts)
    return out


def load_paper_results(path, training="auto", drop_restart_glitches: bool = True) -> pd.DataFrame:
    """The paper's released evaluation CSVs (a file, or a folder searched recursively)
    as one tidy attack table (:data:`COLUMNS`), deduplicated (latest run wins).

    ``training``: where the adversarial-training tables come from, for
    ``defense_flops`` and ``pretrain_compute``: ``"auto"`` uses the training CSVs among
    those of ``path`` (a folder) or, for a single file, in its folder and in a sibling
    ``training/`` folder (the released layout); a path reads that; None skips them.
    Evaluation rows of round 0 get ``defense_flops = 0``; later rounds with no
    training row stay NaN. ``pretrain_compute`` comes from the training tables by
    (family, parameters); Pythia sizes that have none get 6 N D with the classifier's
    N and D = :data:`PYTHIA_PRETRAIN_TOKENS` (the paper's own figure uses the
    language model's N, 2 x d_model fewer: a difference below 1e-4).

    ``frame.attrs`` records ``duplicates_dropped`` and ``restart_glitches`` per file.
    """
    kinds = ("evaluation", "training") if training == "auto" else ("evaluation",)
    evaluations, trainings, counts = _load(path, drop_restart_glitches, kinds)
    if not evaluations:
        raise ValueError(f"no evaluation results (files with asr and iteration) under {str(path)!r}")
    tidy = pd.concat(evaluations, ignore_index=True)
    if training is not None and training != "auto":
        trainings, extra = _load(training, drop_restart_glitches, ("training",))[1:]
        _merge_counts(counts, extra)
    elif training == "auto" and Path(path).is_file():
        for folder in (Path(path).parent, Path(path).parent.parent / "training"):
            if folder.is_dir() and any(folder.glob("*.csv")):
                found = _load(folder, drop_restart_glitches, ("training",))
                trainings += found[1]
                _merge_counts(counts, found[2])
    train = pd.concat(trainings, ignore_index=True) if trainings else pd.DataFrame(columns=TRAINING_COLUMNS)
    if len(train):
        keys = ["family", "task", "_train_attack", "num_params", "seed", "round"]
        t = train.rename(columns={"train_attack": "_train_attack"})[keys + ["defense_flops"]]
        t = t.drop_duplicates(keys, keep="last").rename(columns={"defense_flops": "_d"})
        tidy = tidy.merge(t, on=keys, how="left", validate="many_to_one")
        tidy["defense_flops"] = tidy["_d"].where(tidy["_d"].notna(), tidy["defense_flops"])
        pre = train.dropna(subset=["pretrain_compute"]).drop_duplicates(["family", "num_params"], keep="last")
        pre = pre.set_index(["family", "num_params"])["pretrain_compute"]
        idx = pd.MultiIndex.from_frame(tidy[["family", "num_params"]])
        tidy["pretrain_compute"] = pre.reindex(idx).to_numpy()
    pythia = tidy["pretrain_compute"].isna() & (tidy["family"] == "pythia")
    tidy.loc[pythia, "pretrain_compute"] = 6.0 * tidy.loc[pythia, "num_params"] * PYTHIA_PRETRAIN_TOKENS
    tidy = tidy[COLUMNS].sort_values(["source", "num_params", "seed", "round", "iteration"]).reset_index(drop=True)
    tidy.attrs.update(counts)
    return tidy


def describe_sources(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per source: task, family, attack, sizes, seeds, rounds, iterations, rows,
    and (for :func:`load_paper_results` output) duplicates dropped."""
    _check(tidy, {"source", "task", "family", "attack", "model", "seed", "round", "iteration", "asr"})
    out = tidy.groupby("source", sort=True).agg(
        task=("task", "first"), family=("family", "first"), attack=("attack", "first"), sizes=("model", "nunique"),
        seeds=("seed", "nunique"), rounds=("round", "nunique"), first_iteration=("iteration", "min"),
        last_iteration=("iteration", "max"), rows=("asr", "size")).reset_index()
    dropped = tidy.attrs.get("duplicates_dropped", {})
    out["duplicates_dropped"] = out["source"].map(lambda s: dropped.get(s, 0))
    return out


def from_lab(table: pd.DataFrame, convention: str = "paper", family: str | None = None) -> pd.DataFrame:
    """The lab's ``attack`` table (``02_attack``) or ``robustness`` table
    (``03_adversarial_training``) as a tidy attack table (:data:`COLUMNS`, then
    ``train_attack`` and ``train_position`` when the table has them).

    FLOPs in the lab's tables are summed over the attacked examples
    (``n_correct_before``); here they are per attacked example, in ``convention``
    (``"paper"``: 2N/4N per token, no KV cache; ``"real"``: as executed). Rows without
    ``round`` are round 0 with ``defense_flops`` 0; ``pretrain_compute`` is taken from
    the table when present (NaN otherwise: pass a normaliser to
    :func:`offense_defense`). ``family``: fill the family column (default: the model
    name's prefix, lower-cased: ``zoo``, ``pythia``, ``qwen2.5``).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r} is invalid; accepted: {CONVENTIONS}")
    need = {"model", "num_params", "seed", "attack", "iteration", "asr", "n_correct_before", "n_examples",
            f"flops_{convention}", f"flops_per_iteration_{convention}"}
    missing = need - set(table.columns)
    if missing:
        raise ValueError(f"table lacks column(s) {sorted(missing)}")
    n = table["n_correct_before"].clip(lower=1).astype(float)
    rnd = table["round"].astype(int) if "round" in table.columns else pd.Series(0, index=table.index)
    dcol = f"defense_flops_{convention}"
    defense = table[dcol].astype(float) if dcol in table.columns else pd.Series(
        np.where(rnd == 0, 0.0, np.nan), index=table.index)
    out = pd.DataFrame({
        "source": "lab", "task": table["task"] if "task" in table.columns else "unknown",
        "family": family or table["model"].map(lambda m: _family_of(str(m))),
        "model": table["model"], "num_params": table["num_params"].astype("int64"), "seed": table["seed"].astype(int),
        "round": rnd, "attack": table["attack"],
        "position": table["position"].astype(float) if "position" in table.columns else math.nan,
        "iteration": table["iteration"].astype(int), "asr": table["asr"].astype(float),
        "n_attacked": table["n_correct_before"].astype(float), "n_examples": table["n_examples"].astype(float),
        "flops_per_iteration": table[f"flops_per_iteration_{convention}"].astype(float) / n,
        "attack_flops": table[f"flops_{convention}"].astype(float) / n, "defense_flops": defense,
        "pretrain_compute": table["pretrain_compute"].astype(float) if "pretrain_compute" in table.columns
        else math.nan,
    })
    for extra in ("train_attack", "train_position"):
        if extra in table.columns:
            out[extra] = table[extra]
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------- summaries


def _check(tidy: pd.DataFrame, need, what: str = "tidy table") -> None:
    missing = set(need) - set(tidy.columns)
    if missing:
        raise ValueError(f"{what} lacks column(s) {sorted(missing)}")


def _one_condition(tidy: pd.DataFrame, keys=("source", "task", "attack"), what: str = "this analysis") -> None:
    keys = [k for k in keys if k in tidy.columns]
    conditions = tidy[keys].drop_duplicates()
    if len(conditions) > 1:
        raise ValueError(f"{what} wants one {'/'.join(keys)} at a time; got {len(conditions)}: "
                         f"{conditions.to_dict('records')[:6]}; filter the table first")


def with_logit(tidy: pd.DataFrame, n: str = "n_attacked") -> pd.DataFrame:
    """Add ``logit_asr``: logit10 of the Laplace-smoothed ASR, (asr*n+1)/(n+2), the
    paper's axis. ``n``: ``"n_attacked"`` (the ASR's denominator, the lab's choice) or
    ``"n_examples"`` (what the paper's plotting code used: ``dataset_n_val``)."""
    if n not in ("n_attacked", "n_examples"):
        raise ValueError(f"n={n!r} is invalid; accepted: 'n_attacked' or 'n_examples'")
    _check(tidy, {"asr", n})
    out = tidy.copy()
    out["logit_asr"] = laplace_logit10(out["asr"], out[n].fillna(0).to_numpy(dtype=float))
    return out


def asr_at_budget(tidy: pd.DataFrame, iteration, by=("source", "model", "num_params", "round"),
                  missing: str = "raise") -> pd.DataFrame:
    """ASR at a fixed attack budget: median, min and max over seeds, per group ``by``
    (columns ``by``, ``iteration``, ``median``, ``min``, ``max``, ``seeds``).

    ``iteration``: the budget, or ``"last"`` for each curve's largest recorded
    iteration. ``missing``: what to do with groups that never recorded ``iteration``:
    ``"raise"`` (if no group did), ``"skip"`` them, or use their ``"last"`` iteration.
    """
    if missing not in ("raise", "skip", "last"):
        raise ValueError(f"missing={missing!r} is invalid; accepted: 'raise', 'skip', 'last'")
    by = list(by)
    _check(tidy, {"iteration", "asr", "seed", *by})
    curve = by + [c for c in ("seed", "round", "source") if c not in by and c in tidy.columns]
    last = tidy.groupby(curve, dropna=False)["iteration"].transform("max")
    if iteration == "last":
        at = tidy[tidy["iteration"] == last]
    else:
        if not isinstance(iteration, (int, np.integer)) or isinstance(iteration, bool):
            raise ValueError(f"iteration={iteration!r} is invalid; accepted: an integer or 'last'")
        at = tidy[tidy["iteration"] == iteration]
        if missing == "last":
            has = tidy.assign(_h=tidy["iteration"] == iteration).groupby(curve, dropna=False)["_h"].transform("any")
            at = pd.concat([at, tidy[~has & (tidy["iteration"] == last)]])
        if at.empty and missing == "raise":
            raise ValueError(f"no ASR recorded at iteration {iteration}; recorded: "
                             f"{int(tidy['iteration'].min())}..{int(tidy['iteration'].max())}")
    out = at.groupby(by, as_index=False, dropna=False).agg(
        iteration=("iteration", "max"), median=("asr", "median"), min=("asr", "min"), max=("asr", "max"),
        seeds=("asr", "count"))
    order = [c for c in ("source", "task", "attack", "num_params", "round") if c in by]
    return out.sort_values(order or by).reset_index(drop=True)


def interpolate_crossing(iterations, asr, threshold: float, cumulative=None,
                         anchor_zero: bool = True) -> tuple[float, float]:
    """Where an ASR curve first reaches ``threshold``: ``(iterations, cumulative)``.

    Linear interpolation between the two recorded iterations that straddle the
    threshold (the first crossing: ASR curves need not be monotone); an exact hit
    returns that iteration; ``(nan, nan)`` when never reached. ``cumulative`` (e.g.
    cumulative attack FLOPs per example, same length) is interpolated the same way
    (default: the iterations themselves). NaN ASRs are ignored.

    ``anchor_zero``: ASR@0 = 0 at zero compute by definition (the paper's
    ``interpolated_iteration_for_asr`` starts from it), so a curve recorded from a
    later iteration (the released adversarial-training evaluations record every 12th)
    is interpolated from (0, 0) when its first recorded point already reaches the
    threshold. Without it, such a curve returns its first recorded iteration.
    """
    if not threshold > 0:
        raise ValueError(f"threshold={threshold!r} is invalid; accepted: an ASR fraction above 0")
    it = np.asarray(iterations, dtype=float)
    a = np.asarray(asr, dtype=float)
    c = np.asarray(cumulative, dtype=float) if cumulative is not None else it.copy()
    if not len(it) == len(a) == len(c):
        raise ValueError(f"iterations, asr and cumulative differ in length: {len(it)}, {len(a)}, {len(c)}")
    keep = ~np.isnan(a)
    it, a, c = it[keep], a[keep], c[keep]
    order = np.argsort(it, kind="stable")
    it, a, c = it[order], a[order], c[order]
    if anchor_zero and (len(it) == 0 or it[0] > 0):
        it, a, c = np.r_[0.0, it], np.r_[0.0, a], np.r_[0.0, c]
    hit = np.flatnonzero(a >= threshold)
    if len(hit) == 0:
        return math.nan, math.nan
    j = hit[0]
    if a[j] == threshold or j == 0:
        return float(it[j]), float(c[j])
    frac = (threshold - a[j - 1]) / (a[j] - a[j - 1])
    return float(it[j - 1] + frac * (it[j] - it[j - 1])), float(c[j - 1] + frac * (c[j] - c[j - 1]))


def compute_to_reach(tidy: pd.DataFrame, threshold: float,
                     by=("source", "task", "family", "attack", "model", "num_params", "seed", "round"),
                     flops: str = "cumulative", anchor_zero: bool = True) -> pd.DataFrame:
    """Per curve (group ``by``): iterations and attack FLOPs per example to reach
    ``threshold`` ASR (:func:`interpolate_crossing`; NaN if never reached within the
    curve's ``budget``), with the curve's ``defense_flops`` and ``pretrain_compute``.

    ``flops``: ``"cumulative"`` interpolates the curve's own cumulative attack FLOPs
    (right when the cost per iteration varies); ``"size_mean"`` multiplies the
    interpolated iterations by the mean per-iteration FLOPs of the model size over
    all its curves (seeds and rounds) in the table, which is what the paper's
    ``prepare_offense_defense_data`` does. In the released tables the cost per
    iteration is constant within a run, so ``"cumulative"`` equals interpolated
    iterations x that run's own per-iteration FLOPs; the two options differ by the
    run-to-run spread of that cost (under 2% for the adversarially trained models).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold!r} is invalid; accepted: a fraction in (0, 1]")
    if flops not in FLOPS_TO_REACH:
        raise ValueError(f"flops={flops!r} is invalid; accepted: {FLOPS_TO_REACH}")
    by = [c for c in by if c in tidy.columns]
    _check(tidy, {"iteration", "asr", "attack_flops", "flops_per_iteration", "model"})
    rows = []
    for key, g in tidy.groupby(by, sort=True, dropna=False):
        its, fl = interpolate_crossing(g["iteration"], g["asr"], threshold, g["attack_flops"], anchor_zero)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "threshold": threshold,
                     "budget": int(g["iteration"].max()), "iterations_to_reach": its, "attack_flops_to_reach": fl,
                     "defense_flops": g["defense_flops"].iloc[0] if "defense_flops" in g else math.nan,
                     "pretrain_compute": g["pretrain_compute"].iloc[0] if "pretrain_compute" in g else math.nan})
    out = pd.DataFrame(rows)
    if flops == "size_mean" and len(out):
        size = [c for c in ("source", "model") if c in by]
        active = tidy[tidy["iteration"] > 0]
        per_curve = active.groupby(by, dropna=False)["flops_per_iteration"].mean().reset_index()
        mean = per_curve.groupby(size, dropna=False)["flops_per_iteration"].mean().rename("_m").reset_index()
        out = out.merge(mean, on=size, how="left")
        out["attack_flops_to_reach"] = out["iterations_to_reach"] * out.pop("_m")
    return out


# ---------------------------------------------------------------------------- regressions


#: The columns of one fitted slope (after its labels): :func:`summarize_fit`.
FIT_COLUMNS = ["slope", "slope_low", "slope_high", "intercept", "r2", "n", "p_value"]


def _fits_frame(rows: list[dict], labels: list[str]) -> pd.DataFrame:
    """Fitted rows as a frame; with no rows, an empty frame that still has the columns."""
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*labels, *FIT_COLUMNS])


def _row(res, term: str, **labels) -> dict:
    lo, hi = res.conf_int(alpha=0.05).loc[term]
    return {**labels, "slope": float(res.params[term]), "slope_low": float(lo), "slope_high": float(hi),
            "intercept": float(res.params["Intercept"]), "r2": float(res.rsquared), "n": int(res.nobs),
            "p_value": float(res.pvalues[term])}


def summarize_fit(result, term: str, **labels) -> pd.DataFrame:
    """One-row frame of a statsmodels OLS fit: ``term``'s slope with its 95% CI
    (``slope_low``, ``slope_high``), the intercept, R^2, n and the slope's p-value,
    after any ``labels`` columns."""
    return pd.DataFrame([_row(result, term, **labels)])


def _fit(data: pd.DataFrame, formula: str, term: str, **labels) -> tuple[dict, object]:
    import statsmodels.formula.api as smf

    res = smf.ols(formula, data=data).fit()
    return _row(res, term, **labels), res


def _scaling_points(tidy, asr_range, n):
    _check(tidy, {"iteration", "asr", "n_attacked", "attack_flops", "model", "num_params"})
    data = tidy[(tidy["iteration"] > 0) & (tidy["attack_flops"] > 0)]
    if asr_range is not None:
        lo, hi = asr_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"asr_range={asr_range!r} is invalid; accepted: (low, high) with 0 <= low < high <= 1")
        data = data[data["asr"].between(lo, hi)]
    data = with_logit(data, n)
    data["log_flops"] = np.log10(data["attack_flops"])
    return data


def attack_scaling(tidy: pd.DataFrame, by=("source", "model", "num_params"), asr_range=None,
                   n: str = "n_attacked"):
    """Attack scaling (PAPER.md "Analyses"): per size, OLS of logit10(ASR) (Laplace-
    smoothed, :func:`with_logit`) on log10(attack FLOPs per example) over every seed's
    points with iteration >= 1; then those slopes regressed on log10(parameters).

    One source/task/attack/round at a time. ``asr_range``: keep only points with ASR in
    [low, high] (the paper's regression kept 0.01..0.99: saturated points carry no
    slope). Returns ``(slopes, size_fit)``: a frame with one row per size (slope with
    95% CI, intercept, R^2, n) and the statsmodels result of ``slope ~ log_params``
    (None with fewer than 3 sizes; :func:`summarize_fit` makes it a row). A size with
    fewer than 3 points or a single FLOP value is left out (a line through two points
    has no interval); when none is left the frame is empty, with the same columns.
    """
    _one_condition(tidy, ("source", "task", "attack", "round"), "attack_scaling")
    data = _scaling_points(tidy, asr_range, n)
    rows = []
    for key, g in data.groupby(list(by), sort=True):
        if g["log_flops"].nunique() < 2 or len(g) < 3:
            continue
        row, _ = _fit(g, "logit_asr ~ log_flops", "log_flops", **dict(zip(by, key)))
        rows.append(row)
    slopes = _fits_frame(rows, list(by))
    size_fit = None
    if len(slopes):
        slopes = slopes.sort_values("num_params").reset_index(drop=True)
        slopes["log_params"] = np.log10(slopes["num_params"].astype(float))
        if len(slopes) >= 3:
            import statsmodels.formula.api as smf

            size_fit = smf.ols("slope ~ log_params", data=slopes).fit()
    return slopes, size_fit


def attack_scaling_pooled(tidy: pd.DataFrame, asr_range=(0.01, 0.99), n: str = "n_attacked"):
    """The paper's pooled attack-scaling regression: logit10(ASR) on log10(attack FLOPs
    per example) with one intercept per size (``logit_asr ~ log_flops + C(model)``), on
    points with ASR in ``asr_range``. One common slope; returns ``(row, result)``."""
    _one_condition(tidy, ("source", "task", "attack", "round"), "attack_scaling_pooled")
    data = _scaling_points(tidy, asr_range, n)
    if len(data) < 3:
        raise ValueError(f"only {len(data)} points with ASR in {asr_range}; nothing to fit")
    formula = "logit_asr ~ log_flops + C(model)" if data["model"].nunique() > 1 else "logit_asr ~ log_flops"
    return _fit(data, formula, "log_flops", model="pooled")


def robustness_vs_size(tidy: pd.DataFrame, iteration: int, n: str = "n_attacked"):
    """OLS of logit10(ASR at ``iteration``) on log10(parameters), every seed a point.
    One source/task/attack/round at a time. Returns ``(row, result)``: slope with
    95% CI, intercept, R^2, n, and the fit."""
    _one_condition(tidy, ("source", "task", "attack", "round"), "robustness_vs_size")
    at = tidy[tidy["iteration"] == iteration]
    if at.empty:
        raise ValueError(f"no ASR recorded at iteration {iteration}")
    at = with_logit(at, n)
    at["log_params"] = np.log10(at["num_params"].astype(float))
    return _fit(at, "logit_asr ~ log_params", "log_params", iteration=iteration)


#: Which defense compute :func:`offense_defense` puts on the x axis.
DEFENSE = ("seed", "size_median")


def offense_defense(tidy: pd.DataFrame, threshold: float = 0.02, normalise: str | None = None,
                    pretrain_compute: dict | None = None, flops: str = "cumulative", defense: str = "seed"):
    """Offense vs defense (PAPER.md "Analyses"): log10(attack FLOPs per example to reach
    ``threshold`` ASR) on log10(defense FLOPs), per size and pooled with a size term
    (``log_attack ~ log_defense + log_params``). Every (size, seed, round) with defense
    compute is a point; rounds with none (round 0) and curves that never reach the
    threshold within their budget are left out. One source/task/attack at a time.

    ``flops``: see :func:`compute_to_reach`. ``defense``: ``"seed"`` takes each
    curve's own defense compute; ``"size_median"`` the median over the table's seeds
    of that size and round (robust to one seed's mis-recorded compute, and close to
    the paper's x axis, the mean over seeds; a seed whose own figure is missing then
    keeps its point). ``normalise="pretrain"`` divides both
    axes by the model's pretraining compute, the paper's "fraction of pretraining
    compute". The normaliser is the table's ``pretrain_compute`` (6ND: the released
    tables carry it; the lab's robustness table when 03 recorded it), overridden by
    ``pretrain_compute={model: FLOPs}``. For the lab's offline family that is the
    FLOPs of its own pretraining (6 N D with the D tokens of the zoo manifest); pass
    whatever figure the comparison calls for. Models with neither raise. Per-size
    slopes do not change under this normalisation (both axes shift by the same
    constant); the pooled slope does unless the normaliser is a power of N.

    Returns ``(points, per_size, pooled_row, pooled_result)``; ``points`` has
    ``log_attack``, ``log_defense``, ``log_params`` and ``scale`` (what the axes are).
    """
    if normalise not in (None, "pretrain"):
        raise ValueError(f"normalise={normalise!r} is invalid; accepted: None or 'pretrain'")
    if defense not in DEFENSE:
        raise ValueError(f"defense={defense!r} is invalid; accepted: {DEFENSE}")
    _check(tidy, {"defense_flops", "num_params"})
    _one_condition(tidy, ("source", "task", "attack", "position", "train_attack", "train_position"),
                   "offense_defense")
    points = compute_to_reach(tidy, threshold, flops=flops)
    if defense == "size_median":
        points["defense_flops"] = points.groupby(["model", "round"])["defense_flops"].transform("median")
    points = points[(points["defense_flops"] > 0) & points["attack_flops_to_reach"].notna()].copy()
    if points.empty:
        raise ValueError(f"no adversarially trained curve reaches ASR {threshold}; nothing to fit")
    points["scale"] = "FLOPs"
    if normalise == "pretrain":
        if pretrain_compute:
            points["pretrain_compute"] = points["model"].map(pretrain_compute).fillna(points["pretrain_compute"])
        missing = sorted(set(points.loc[points["pretrain_compute"].isna(), "model"]))
        if missing:
            raise ValueError(f"models {missing} have no pretraining compute; pass pretrain_compute={{model: FLOPs}}")
        points["attack_flops_to_reach"] /= points["pretrain_compute"]
        points["defense_flops"] /= points["pretrain_compute"]
        points["scale"] = "fraction of pretraining compute"
    points["log_attack"] = np.log10(points["attack_flops_to_reach"])
    points["log_defense"] = np.log10(points["defense_flops"])
    points["log_params"] = np.log10(points["num_params"].astype(float))
    rows = []
    for (model, n), g in points.groupby(["model", "num_params"], sort=False):
        if len(g) >= 3 and g["log_defense"].nunique() >= 2:
            row, _ = _fit(g, "log_attack ~ log_defense", "log_defense", model=model, num_params=n)
            rows.append(row)
    per_size = _fits_frame(rows, ["model", "num_params"]).sort_values("num_params").reset_index(drop=True)
    formula = "log_attack ~ log_defense + log_params" if points["num_params"].nunique() > 1 else \
        "log_attack ~ log_defense"
    pooled_row, pooled = _fit(points, formula, "log_defense", model="pooled")
    return points.reset_index(drop=True), per_size, pooled_row, pooled


# ---------------------------------------------------------------------------- the paper notebook's config


@dataclass
class PaperResultsConfig(StrictConfig):
    """Everything ``notebooks/05_paper_results.ipynb`` takes: names match its
    parameters cell. ``folder`` is resolved and checked on construction."""

    _unknown_label = "parameter(s)"

    results_dir: str = ""  # "" = paths.paper_results_dir()
    budget: int = 10
    robustness_budget: int = 128
    thresholds: list = field(default_factory=lambda: [0.02, 0.05])
    asr_range: list = field(default_factory=lambda: [0.01, 0.99])
    folder: Path = field(init=False, repr=True, default=None)

    def __post_init__(self):
        from . import paths

        for name in ("budget", "robustness_budget"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}={v!r} is invalid; accepted: a positive integer")
        if not isinstance(self.thresholds, (list, tuple)) or not self.thresholds or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 1 for t in self.thresholds):
            raise ValueError(f"thresholds={self.thresholds!r} is invalid; accepted: a list of fractions in (0, 1]")
        if not (isinstance(self.asr_range, (list, tuple)) and len(self.asr_range) == 2
                and 0 <= self.asr_range[0] < self.asr_range[1] <= 1):
            raise ValueError(f"asr_range={self.asr_range!r} is invalid; accepted: [low, high], 0 <= low < high <= 1")
        if self.results_dir:
            folder = Path(self.results_dir).expanduser()
        else:
            folder = paths.paper_results_dir()
            if folder is None:
                raise FileNotFoundError(
                    "results_dir='' and no released results found: set results_dir or ROBUSTLIB_PAPER_RESULTS to "
                    "a copy of the paper's cache_csvs tables")
        _csv_files(folder)  # missing: FileNotFoundError naming it; no CSVs: ValueError naming it
        self.folder = folder


__all__ = [
    "COLUMNS", "CONVENTIONS", "DEFENSE", "FIT_COLUMNS", "FLOPS_TO_REACH", "PYTHIA_PRETRAIN_TOKENS",
    "PaperResultsConfig", "TRAINING_COLUMNS",
    "asr_at_budget", "attack_scaling", "attack_scaling_pooled", "compute_to_reach", "describe_sources", "from_lab",
    "interpolate_crossing", "laplace_logit10", "load_paper_results", "load_paper_training", "offense_defense",
    "robustness_vs_size", "summarize_fit", "with_logit",
]
