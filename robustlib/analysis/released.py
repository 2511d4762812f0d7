"""The paper's released results (the ``cache_csvs`` tables) as tidy tables.

``load_paper_results`` / ``load_paper_training`` read a file or a folder (searched
recursively), whatever the files are called. Evaluation files (columns ``asr`` and
``iteration``) and training files (``train_total_flops``) are told apart by their
columns; both header variants (``adversarial_eval/x`` and ``adversarial_eval_x``;
``model_size`` or ``num_params``; ``model_name`` or ``model_name_or_path``) are read.
Restarted runs are deduplicated on (model, seed, round, iteration), the latest
``run_created_at`` winning. ``flops_per_iteration`` there is summed over the
``dataset_n_val`` evaluated examples and constant within a run, so the per-example cost
is ``flops_per_iteration / dataset_n_val`` and ``attack_flops = iteration x`` that.

What a table holds is read from its content: task, family, size and seed from the model
name; the training attack of an evaluated model from it too (``..._adv_tr_gcg_t-0``;
``none`` for fine-tuned models) and any variant after it (``..._t-0_no_ramp``: the
ablation without the attack-strength ramp); the evaluation's attack and position from
the run name (``...-gcg-prefix-...``; none said: the suffix); the file name is the
fallback. The release trained every adversarially trained model at the suffix
(``train_position`` 1.0).

Training rows pair with evaluation rows on (family, task, training attack, variant,
parameters, seed, round): the evaluated checkpoint ``adv-training-round-r`` is the model
after ``r`` rounds, and the training row of round ``r`` holds the compute spent through
round ``r`` (0 at round 0 for Pythia, whose first round skipped training). Restarted
runs whose counter restarted are glitches (:mod:`robustlib.analysis.restarts`), dropped
unless ``drop_restart_glitches=False``: their evaluations get ``defense_flops`` NaN.
``defense_flops_seed_mean`` is the mean over the training seeds of that size and round
(glitches left out): the paper's own defense axis (its ``mean_train_total_flops``).

``pretrain_compute`` is the release's own column (6 N D, N the classifier backbone
without its head: 7,628,800 for Pythia-14m, D = 299.89B tokens). Where files disagree
for one size (the no-ramp table carries the 31m and 70m figures for 410m and 2.8b),
the value most files give wins and the disagreement is logged and counted.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .restarts import restart_glitches
from .tidy import COLUMNS, TRAINING_COLUMNS

log = logging.getLogger("robustlib.analysis")

_MODEL = re.compile(r"(pythia-[0-9.]+[mb]|Qwen2\.5-[0-9.]+B(?:-Instruct)?)", re.IGNORECASE)
_TASKS = (("strongreject", "strongreject"), ("harmless", "harmless"), ("helpful", "helpful"), ("imdb", "imdb"),
          ("spam", "spam"), ("_pm_", "password_match"), ("_pm", "password_match"), ("password", "password_match"),
          ("wordlength", "word_length"), ("_wl_", "word_length"))
_ATTACKS = {"gcg": "gcg", "beast": "beast", "rt": "random_token", "random_token": "random_token",
            "randomtoken": "random_token"}
_TRAIN_ATTACK = re.compile(r"adv_tr_([a-z]+)", re.IGNORECASE)
_VARIANT = re.compile(r"adv_tr_[a-z]+_t-\d+_(\w+)$", re.IGNORECASE)
#: Columns :func:`load_paper_results` adds after :data:`COLUMNS` (see the module docstring).
RELEASED_EXTRAS = ("train_variant", "train_position", "defense_flops_seed_mean")
#: Columns :func:`load_paper_training` adds after :data:`TRAINING_COLUMNS`.
TRAINING_EXTRAS = ("train_variant",)
# Released column -> alternatives, first present wins (after '/' -> '_').
_ALIASES = {
    "model_path": ("model_name_or_path", "model_name"),
    "num_params": ("num_params", "model_size"),
    "seed": ("seed_idx", "training_seed"),
    "round": ("adv_training_round",),
    "n_attacked": ("adversarial_eval_n_correct_pre_attack",),
    "n_examples": ("dataset_n_val", "adversarial_eval_n_examples"),
}


def csv_files(path) -> list[Path]:
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
    for alt in _ALIASES.get(name, (name,)):
        if alt in raw.columns:
            return raw[alt]
    raise ValueError(f"{file.name} lacks a {name} column; looked for {list(_ALIASES.get(name, (name,)))}")


def _num(raw: pd.DataFrame, name: str, file: Path, dtype=float) -> pd.Series:
    """Column ``name`` (or its aliases) as numbers; a value that is not one is an error
    naming the file, the column and the value."""
    col = _col(raw, name, file)
    values = pd.to_numeric(col, errors="coerce")
    bad = col[values.isna() & col.notna()]
    if len(bad):
        raise ValueError(f"{file.name}: column {col.name!r} holds values that are not numbers: "
                         f"{list(bad.astype(str).unique()[:3])}")
    if dtype is not float and values.isna().any():
        raise ValueError(f"{file.name}: column {col.name!r} has {int(values.isna().sum())} empty cells")
    return values.astype(dtype)


def _model_name(path) -> str:
    m = _MODEL.search(str(path))
    return m.group(1) if m else str(path).rsplit("/", 1)[-1]


def _task_of(name: str) -> str:
    low = name.lower()
    for key, task in _TASKS:
        if key in low:
            return task
    return "unknown"


#: StrongREJECT's prompts: the size of the set a generative evaluation attacked.
STRONGREJECT_PROMPTS = 313


def _is_strongreject(raw: pd.DataFrame, paths: pd.Series) -> bool:
    """An evaluation of off-the-shelf chat models (``-Instruct``) on 313 examples: the
    generative StrongREJECT evaluation, for a table whose names do not say so."""
    if "dataset_n_val" not in raw.columns or not len(raw):
        return False
    chat = paths.str.lower().str.endswith("-instruct").all()
    return bool(chat and (pd.to_numeric(raw["dataset_n_val"], errors="coerce") == STRONGREJECT_PROMPTS).all())


def _family_of(model: str) -> str:
    low = model.lower()
    if low.startswith("pythia"):
        return "pythia"
    if low.startswith("qwen2.5"):
        return "qwen2.5-chat" if low.endswith("-instruct") else "qwen2.5"
    return low.split("-")[0]


def _attack_of(stem: str) -> str:
    for token in stem.lower().replace("-", "_").split("_"):
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
    if fallback == "unknown" and _is_strongreject(raw, paths):
        fallback = "strongreject"
    family = raw["model_family"].astype(str) if "model_family" in raw.columns else models.map(_family_of)
    return pd.DataFrame({
        "source": file.name,
        "task": paths.map(lambda p: t if (t := _task_of(p)) != "unknown" else fallback),
        "family": family, "model": models,
        "num_params": _num(raw, "num_params", file, "int64"),
        "seed": _num(raw, "seed", file, int),
        "round": _num(raw, "round", file, int) if "adv_training_round" in raw.columns else 0,
        "run_created_at": raw["run_created_at"] if "run_created_at" in raw.columns else None,
    })


def _train_attack(names: pd.Series, fallback: str) -> pd.Series:
    return names.astype(str).map(lambda s: (m.group(1).lower() if (m := _TRAIN_ATTACK.search(s)) else fallback))


def _variant(names: pd.Series) -> pd.Series:
    """What follows the training attack in a model name (``no_ramp``), '' for none."""
    return names.astype(str).map(lambda s: m.group(1).lower() if (m := _VARIANT.search(s.strip())) else "")


def _training_frame(raw: pd.DataFrame, file: Path, drop_restart_glitches: bool, counts: dict) -> pd.DataFrame:
    out = _identity(raw, file)
    key = raw["model_key"] if "model_key" in raw.columns else pd.Series(file.stem, index=raw.index)
    file_attack = m.group(1).lower() if (m := _TRAIN_ATTACK.search(file.stem)) else "unknown"
    out["train_attack"] = _train_attack(key, file_attack).map(lambda a: _ATTACKS.get(a, a))
    out["train_variant"] = _variant(key)
    out["defense_flops"] = _num(raw, "train_total_flops", file)
    out["pretrain_compute"] = _num(raw, "pretrain_compute", file) if "pretrain_compute" in raw.columns else math.nan
    out, dups = _dedup(out, ["source", "train_variant", "num_params", "seed", "round"])
    out = out.sort_values(["num_params", "seed", "round"], kind="stable")
    glitch = restart_glitches(out, run=("num_params", "train_variant", "seed"))
    counts.setdefault("duplicates_dropped", {})[file.name] = dups
    counts.setdefault("restart_glitches", {})[file.name] = int(glitch.sum())
    if glitch.any():
        log.info("%s: %d training rows from restarted counters%s", file.name, int(glitch.sum()),
                 ", dropped" if drop_restart_glitches else "")
    if drop_restart_glitches:
        out = out[~glitch]
    return out[TRAINING_COLUMNS + list(TRAINING_EXTRAS)].reset_index(drop=True)


def _evaluation_frame(raw: pd.DataFrame, file: Path, counts: dict) -> pd.DataFrame:
    out = _identity(raw, file)
    n_val = _num(raw, "n_examples", file)
    per_iteration = _num(raw, "flops_per_iteration", file) / n_val
    iteration = _num(raw, "iteration", file, int)
    paths = _col(raw, "model_path", file).astype(str)
    # The run name says the evaluation's attack and position (``tom-016-eval-niki-170-
    # gcg-prefix-0010``: the first attack word is the evaluation's); the file name is
    # the fallback for tables without one.
    runs = raw["run_name"].astype(str) if "run_name" in raw.columns else pd.Series(file.stem, index=raw.index)
    attack = runs.map(_attack_of).where(lambda a: a != "unknown", _attack_of(file.stem))
    position = runs.map(_position_of).fillna(_position_of(file.stem))
    out = out.assign(
        attack=attack, position=position, iteration=iteration,
        asr=_num(raw, "asr", file), n_attacked=_num(raw, "n_attacked", file), n_examples=n_val,
        flops_per_iteration=per_iteration, attack_flops=iteration * per_iteration,
        defense_flops=np.where(out["round"] == 0, 0.0, math.nan), pretrain_compute=math.nan,
        _train_attack=_train_attack(paths, "none").map(lambda a: _ATTACKS.get(a, a)),
        train_variant=_variant(paths),
    )
    # The release trained at the suffix; a model name saying otherwise wins.
    trained_at = paths.map(_position_of).fillna(1.0)
    out["train_position"] = trained_at.where(out["_train_attack"] != "none", math.nan)
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
    """``"training"``, ``"evaluation"`` or None (another table), from the header;
    ``ValueError`` naming the file when it is empty or not a CSV at all."""
    try:
        header = {c.replace("/", "_") for c in pd.read_csv(file, nrows=0).columns}
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{file.name} cannot be read as a CSV table ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:120]})") from None
    if "train_total_flops" in header:
        return "training"
    if {"asr", "iteration"} <= header:
        return "evaluation"
    return None


def _load(path, drop_restart_glitches: bool = True, kinds=("evaluation", "training")):
    """Read the CSVs under ``path`` of the wanted kinds: (evaluation frames, training
    frames, counts)."""
    evaluations, trainings, counts = [], [], {}
    files = csv_files(path)
    for file in files:
        try:
            kind = _kind(file)
        except ValueError as err:
            if len(files) == 1 and Path(path).is_file():
                raise
            log.warning("%s; skipped", err)
            continue
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


def _pretrain_by_size(train: pd.DataFrame, counts: dict) -> pd.Series:
    """The release's ``pretrain_compute`` per (family, parameters): the value most files
    give; files that disagree are logged and counted (``pretrain_disagreements``)."""
    rows = train.dropna(subset=["pretrain_compute"]).drop_duplicates(["source", "family", "num_params",
                                                                      "pretrain_compute"])
    out = {}
    for (family, n), g in rows.groupby(["family", "num_params"]):
        votes = g["pretrain_compute"].value_counts(sort=False)
        best = votes.index[votes.argmax()]
        out[(family, n)] = best
        for source in g.loc[g["pretrain_compute"] != best, "source"]:
            counts.setdefault("pretrain_disagreements", {}).setdefault(source, 0)
            counts["pretrain_disagreements"][source] += 1
            log.warning("%s gives %s parameters a pretraining compute of %.4g, where %d other file(s) give %.4g; "
                        "using %.4g", source, n, float(g.loc[g["source"] == source, "pretrain_compute"].iloc[0]),
                        int(votes.max()), best, best)
    index = pd.MultiIndex.from_tuples(list(out), names=["family", "num_params"]) if out else pd.MultiIndex.from_tuples(
        [], names=["family", "num_params"])
    return pd.Series(list(out.values()), index=index, dtype=float)


def _pythia_pretrain(num_params: int) -> float:
    """The release's convention for a Pythia size with no training table: 6 N D with N
    the classifier backbone (:func:`robustlib.models.pretrain_compute`); NaN for a
    parameter count that is no Pythia preset's classifier."""
    from .. import models

    name = models.preset_by_params("pythia", int(num_params))
    return float(models.pretrain_compute(name)) if name else math.nan


def load_paper_training(path, drop_restart_glitches: bool = True) -> pd.DataFrame:
    """The released adversarial-training tables (files with ``train_total_flops``) in a
    file or folder (searched recursively), as one frame with :data:`TRAINING_COLUMNS`
    then :data:`TRAINING_EXTRAS`: one row per (model, variant, seed, round).
    ``defense_flops`` is ``train_total_flops`` (training plus attack generation through
    that round), ``pretrain_compute`` the file's 6ND, ``train_attack`` the training
    attack and ``train_variant`` what follows it in the model key (``no_ramp``).

    ``drop_restart_glitches``: drop the rows :func:`~robustlib.analysis.restarts.
    restart_glitches` marks (restarted counters; tiny decreases are kept).
    ``frame.attrs`` records ``duplicates_dropped`` and ``restart_glitches`` per file.
    """
    _, trainings, counts = _load(path, drop_restart_glitches, kinds=("training",))
    if not trainings:
        raise ValueError(f"no training results (files with train_total_flops) under {str(path)!r}")
    out = pd.concat(trainings, ignore_index=True)
    out.attrs.update(counts)
    return out


def load_paper_results(path, training="auto", drop_restart_glitches: bool = True) -> pd.DataFrame:
    """The paper's released evaluation CSVs (a file, or a folder searched recursively)
    as one tidy attack table, deduplicated (latest run wins): :data:`COLUMNS`, then
    :data:`RELEASED_EXTRAS`.

    ``training``: where the adversarial-training tables come from, for
    ``defense_flops`` and ``pretrain_compute``: ``"auto"`` uses the training CSVs among
    those of ``path`` (a folder) or, for a single file, in its folder and in a sibling
    ``training/`` folder (the released layout); a path reads that; None skips them.
    Evaluation rows of round 0 get ``defense_flops = 0``; later rounds with no
    training row stay NaN. ``defense_flops_seed_mean``: the mean over the training
    table's seeds of that size and round (the paper's axis). ``pretrain_compute``: the
    training tables' column by (family, parameters), the majority where files
    disagree; Pythia sizes with none get the release's convention, 6 N D with N the
    classifier backbone (:func:`robustlib.models.pretrain_compute`). Other families
    without a training table stay NaN: the release's Qwen2.5 figures do not follow one
    token count (see :func:`robustlib.models.pretrain_compute`).

    ``frame.attrs`` records ``duplicates_dropped``, ``restart_glitches`` and
    ``pretrain_disagreements`` per file.
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
    columns = TRAINING_COLUMNS + list(TRAINING_EXTRAS)
    train = pd.concat(trainings, ignore_index=True) if trainings else pd.DataFrame(columns=columns)
    tidy["defense_flops_seed_mean"] = tidy["defense_flops"]
    if len(train):
        keys = ["family", "task", "_train_attack", "train_variant", "num_params", "round"]
        t = train.rename(columns={"train_attack": "_train_attack"})
        t = t[keys + ["seed", "defense_flops"]].drop_duplicates(keys + ["seed"], keep="last")
        mean = t.groupby(keys, dropna=False)["defense_flops"].mean().rename("_m").reset_index()
        tidy = tidy.merge(t.rename(columns={"defense_flops": "_d"}), on=keys + ["seed"], how="left",
                          validate="many_to_one").merge(mean, on=keys, how="left", validate="many_to_one")
        tidy["defense_flops"] = tidy["_d"].where(tidy["_d"].notna(), tidy["defense_flops"])
        tidy["defense_flops_seed_mean"] = tidy["_m"].where(tidy["_m"].notna(), tidy["defense_flops_seed_mean"])
        pre = _pretrain_by_size(train, counts)
        idx = pd.MultiIndex.from_frame(tidy[["family", "num_params"]])
        tidy["pretrain_compute"] = pre.reindex(idx).to_numpy()
    pythia = tidy["pretrain_compute"].isna() & (tidy["family"] == "pythia")
    sizes = tidy.loc[pythia, "num_params"]
    tidy.loc[pythia, "pretrain_compute"] = sizes.map({n: _pythia_pretrain(n) for n in sizes.unique()})  # once a size
    tidy["train_attack"] = tidy["_train_attack"]
    tidy = tidy[COLUMNS + list(RELEASED_EXTRAS)].sort_values(
        ["source", "num_params", "seed", "round", "iteration"]).reset_index(drop=True)
    tidy.attrs.update(counts)
    return tidy
