"""Analysis: one tidy schema for attack results, curves, interpolation and regressions.

The lab's own run tables and the paper's released CSVs both become the same *tidy
attack table*: one row per (model, seed, adversarial-training round, attack,
iteration), with the columns of :data:`COLUMNS`:

=================== ================================================================
``source``          where the row came from (a CSV file name, or ``lab``)
``task``            e.g. ``password_match``, ``imdb``, ``spam``
``family``          ``pythia``, ``qwen2.5``, ``zoo``, ...
``model``           size name (``pythia-14m``, ``Qwen2.5-0.5B``, ``zoo-1m``)
``num_params``      parameters of the classifier as loaded (the paper's N)
``seed``            model seed
``round``           adversarial-training round (0: not adversarially trained)
``attack``          ``gcg``, ``beast``, ``random_token``
``position``        attack position (NaN when the task has a fixed slot / unknown)
``iteration``       attack iteration (0: before the attack)
``asr``             attack success rate among the examples correct before the attack
``n_attacked``      those examples (the ASR's denominator)
``n_examples``      examples evaluated
``flops_per_iteration``  attack FLOPs per attacked example for one iteration
``attack_flops``    cumulative attack FLOPs per example through ``iteration``
``defense_flops``   cumulative adversarial-training FLOPs at ``round`` (training plus
                    attack generation; 0 at round 0; NaN when unknown)
``pretrain_compute`` 6 N D, NaN when the model has no pretraining figure
=================== ================================================================

FLOPs are in the paper's convention unless ``convention="real"`` was asked of
:func:`from_lab`. Functions here return pandas frames and statsmodels results;
plotting lives in :mod:`robustlib.plots`.

**Per-example FLOPs in the released CSVs.** ``flops_per_iteration`` there is summed
over the ``dataset_n_val`` evaluated examples, so it is divided by ``dataset_n_val``
(the README's rule), and ``attack_flops = iteration x flops_per_iteration``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .evaluate import laplace_logit10

COLUMNS = ["source", "task", "family", "model", "num_params", "seed", "round", "attack", "position", "iteration",
           "asr", "n_attacked", "n_examples", "flops_per_iteration", "attack_flops", "defense_flops",
           "pretrain_compute"]
TRAINING_COLUMNS = ["source", "task", "family", "model", "num_params", "seed", "round", "defense_flops",
                    "pretrain_compute"]
CONVENTIONS = ("paper", "real")

_MODEL = re.compile(r"(pythia-[0-9.]+[mb]|Qwen2\.5-[0-9.]+B(?:-Instruct)?)", re.IGNORECASE)
_TASKS = (("strongreject", "strongreject"), ("harmless", "harmless"), ("imdb", "imdb"), ("spam", "spam"),
          ("_pm", "password_match"), ("password", "password_match"), ("wordlength", "word_length"),
          ("_wl", "word_length"))


# ---------------------------------------------------------------------------- import


def _csv_files(path) -> list[Path]:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"results path {str(path)!r} does not exist; accepted: a .csv file or a folder of them")
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    if path.is_file() and path.suffix.lower() != ".csv":
        raise ValueError(f"{str(path)!r} is not a .csv file; accepted: a .csv file or a folder of them")
    if not files:
        raise ValueError(f"folder {str(path)!r} holds no .csv files")
    return files


def _model_name(path: str) -> str:
    m = _MODEL.search(str(path))
    return m.group(1) if m else str(path).rsplit("/", 1)[-1]


def _task_of(name: str) -> str:
    low = name.lower()
    for key, task in _TASKS:
        if key in low:
            return task
    return "unknown"


def _tasks(raw: pd.DataFrame, stem: str) -> pd.Series:
    """Task per row: from the model's name (``..._clf_pm_...``), else from the file name."""
    fallback = _task_of(stem)
    return raw["model_name_or_path"].map(lambda p: (t if (t := _task_of(str(p))) != "unknown" else fallback))


def _dedup(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Restarted runs appear more than once: keep the latest ``run_created_at``."""
    if "run_created_at" in frame.columns:
        frame = frame.sort_values("run_created_at", kind="stable")
    return frame.drop_duplicates(keys, keep="last")


def _read(file: Path) -> pd.DataFrame:
    raw = pd.read_csv(file)
    raw.columns = [c.replace("adversarial_eval/", "adversarial_eval_") for c in raw.columns]
    return raw


def _family(raw: pd.DataFrame, models: pd.Series) -> pd.Series:
    if "model_family" in raw.columns:
        return raw["model_family"].astype(str)
    return models.map(lambda m: "pythia" if m.lower().startswith("pythia") else "qwen2.5")


def load_paper_training(path) -> pd.DataFrame:
    """The released adversarial-training tables (files with ``train_total_flops``) in
    a file or folder, as one tidy frame with :data:`TRAINING_COLUMNS`: one row per
    (model, seed, round); ``defense_flops`` is ``train_total_flops`` (training plus
    attack generation so far), ``pretrain_compute`` the file's 6ND."""
    frames = []
    for file in _csv_files(path):
        raw = _read(file)
        if "train_total_flops" not in raw.columns:
            continue
        models = raw["model_name_or_path"].map(_model_name)
        out = pd.DataFrame({
            "source": file.name, "task": _tasks(raw, file.stem), "family": _family(raw, models), "model": models,
            "num_params": raw["num_params"].astype("int64"), "seed": raw["seed_idx"].astype(int),
            "round": raw["adv_training_round"].astype(int), "defense_flops": raw["train_total_flops"].astype(float),
            "pretrain_compute": raw["pretrain_compute"].astype(float),
            "run_created_at": raw.get("run_created_at"),
        })
        frames.append(_dedup(out, ["source", "model", "seed", "round"]))
    if not frames:
        raise ValueError(f"no training results (files with train_total_flops) under {str(path)!r}")
    return pd.concat(frames, ignore_index=True)[TRAINING_COLUMNS]


def load_paper_results(path, training: str | Path | None = "auto") -> pd.DataFrame:
    """The paper's released evaluation CSVs (a file or a folder, searched recursively)
    as one tidy attack table (:data:`COLUMNS`), deduplicated (latest run wins).

    ``defense_flops``: joined from the released training tables on (family, task,
    parameters, seed, round). ``training="auto"`` looks for them among the CSVs of
    ``path`` (a folder) or beside it (a file: its grandparent folder, the released
    layout ``evaluation/`` + ``training/``); a path uses that; None skips the join.
    Rows of round 0 get ``defense_flops = 0``; rounds never trained stay NaN.
    """
    frames = []
    for file in _csv_files(path):
        raw = _read(file)
        if "asr" not in raw.columns or "iteration" not in raw.columns:
            continue
        models = raw["model_name_or_path"].map(_model_name)
        n_val = raw["dataset_n_val"].astype(float)
        per_iteration = raw["flops_per_iteration"].astype(float) / n_val
        stem = file.stem.lower()
        out = pd.DataFrame({
            "source": file.name, "task": _tasks(raw, stem), "family": _family(raw, models), "model": models,
            "num_params": raw["num_params"].astype("int64"), "seed": raw["seed_idx"].astype(int),
            "round": raw["adv_training_round"].astype(int), "attack": "beast" if "beast" in stem else "gcg",
            "position": math.nan, "iteration": raw["iteration"].astype(int), "asr": raw["asr"].astype(float),
            "n_attacked": raw["adversarial_eval_n_correct_pre_attack"].astype(float),
            "n_examples": n_val, "flops_per_iteration": per_iteration,
            "attack_flops": raw["iteration"].astype(float) * per_iteration, "defense_flops": math.nan,
            "pretrain_compute": math.nan, "run_created_at": raw.get("run_created_at"),
        })
        frames.append(_dedup(out, ["source", "model", "seed", "round", "iteration"]))
    if not frames:
        raise ValueError(f"no evaluation results (files with asr and iteration) under {str(path)!r}")
    tidy = pd.concat(frames, ignore_index=True)
    tidy.loc[tidy["round"] == 0, "defense_flops"] = 0.0
    train = _find_training(path, training)
    if train is not None and len(train):
        keys = ["family", "task", "num_params", "seed", "round"]
        t = train[keys + ["defense_flops", "pretrain_compute"]].drop_duplicates(keys, keep="last")
        tidy = tidy.drop(columns=["pretrain_compute"]).merge(
            t.rename(columns={"defense_flops": "_d"}), on=keys, how="left")
        tidy["defense_flops"] = tidy["_d"].where(tidy["_d"].notna(), tidy["defense_flops"])
        tidy = tidy.drop(columns="_d")
        # The pretraining figure depends on the model only: share it across rounds and tasks.
        pre = train.drop_duplicates("num_params").set_index("num_params")["pretrain_compute"]
        tidy["pretrain_compute"] = tidy["pretrain_compute"].fillna(tidy["num_params"].map(pre))
    return tidy[COLUMNS].sort_values(["source", "num_params", "seed", "round", "iteration"]).reset_index(drop=True)


def _find_training(path, training):
    if training is None:
        return None
    if training != "auto":
        return load_paper_training(training)
    path = Path(path)
    root = path if path.is_dir() else path.parent.parent
    files = [f for f in root.rglob("*.csv") if "train_total_flops" in f.open().readline()]
    return pd.concat([load_paper_training(f) for f in files], ignore_index=True) if files else None


def from_lab(table: pd.DataFrame, convention: str = "paper", family: str | None = None) -> pd.DataFrame:
    """The lab's ``attack`` table (``02_attack``) or ``robustness`` table
    (``03_adversarial_training``) as a tidy attack table. FLOPs in the lab's tables are
    summed over the attacked examples; here they are per attacked example.
    ``family``: fill the family column (default: from the model name)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r} is invalid; accepted: {CONVENTIONS}")
    need = {"model", "num_params", "seed", "attack", "iteration", "asr", "n_correct_before", "n_examples",
            f"flops_{convention}", f"flops_per_iteration_{convention}"}
    missing = need - set(table.columns)
    if missing:
        raise ValueError(f"table lacks column(s) {sorted(missing)}")
    n = table["n_correct_before"].clip(lower=1).astype(float)
    rnd = table["round"] if "round" in table.columns else 0
    defense = table[f"defense_flops_{convention}"] if f"defense_flops_{convention}" in table.columns else (
        np.where(pd.Series(rnd, index=table.index) == 0, 0.0, np.nan))
    out = pd.DataFrame({
        "source": "lab", "task": table.get("task", "unknown"),
        "family": family or table["model"].map(lambda m: str(m).split("-")[0]),
        "model": table["model"], "num_params": table["num_params"].astype("int64"), "seed": table["seed"],
        "round": rnd, "attack": table["attack"], "position": table.get("position", math.nan),
        "iteration": table["iteration"].astype(int), "asr": table["asr"].astype(float),
        "n_attacked": table["n_correct_before"], "n_examples": table["n_examples"],
        "flops_per_iteration": table[f"flops_per_iteration_{convention}"] / n,
        "attack_flops": table[f"flops_{convention}"] / n, "defense_flops": defense,
        "pretrain_compute": table["pretrain_compute"] if "pretrain_compute" in table.columns else math.nan,
    })
    if "train_attack" in table.columns:
        out["train_attack"] = table["train_attack"]
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------- summaries


def _check(tidy: pd.DataFrame, need) -> None:
    missing = set(need) - set(tidy.columns)
    if missing:
        raise ValueError(f"tidy table lacks column(s) {sorted(missing)}")


def with_logit(tidy: pd.DataFrame) -> pd.DataFrame:
    """Add ``logit_asr``: logit10 of the Laplace-smoothed ASR (the paper's axis)."""
    out = tidy.copy()
    out["logit_asr"] = laplace_logit10(out["asr"], out["n_attacked"].fillna(0))
    return out


def asr_at_budget(tidy: pd.DataFrame, iteration: int, by=("source", "model", "num_params", "round")) -> pd.DataFrame:
    """ASR at a fixed attack budget: median, min and max over seeds, per group ``by``."""
    _check(tidy, {"iteration", "asr", "seed", *by})
    at = tidy[tidy["iteration"] == iteration]
    if at.empty:
        raise ValueError(f"no ASR recorded at iteration {iteration}; recorded: 0..{int(tidy['iteration'].max())}")
    out = at.groupby(list(by), as_index=False)["asr"].agg(median="median", min="min", max="max", seeds="count")
    return out.sort_values([c for c in ("source", "num_params", "round") if c in by]).reset_index(drop=True)


def interpolate_crossing(iterations, asr, threshold: float, cumulative=None) -> tuple[float, float]:
    """Where an ASR curve first reaches ``threshold``: ``(iterations, cumulative
    value)`` by linear interpolation between the two iterations that straddle it (an
    exact hit returns that iteration; ``(nan, nan)`` if never reached). ``cumulative``
    (e.g. cumulative attack FLOPs per example, same length) is interpolated the same way."""
    it = np.asarray(iterations, dtype=float)
    a = np.asarray(asr, dtype=float)
    order = np.argsort(it, kind="stable")
    it, a = it[order], a[order]
    c = np.asarray(cumulative, dtype=float)[order] if cumulative is not None else it
    hit = np.flatnonzero(a >= threshold)
    if len(hit) == 0:
        return math.nan, math.nan
    j = hit[0]
    if a[j] == threshold or j == 0:
        return float(it[j]), float(c[j])
    frac = (threshold - a[j - 1]) / (a[j] - a[j - 1])
    return float(it[j - 1] + frac * (it[j] - it[j - 1])), float(c[j - 1] + frac * (c[j] - c[j - 1]))


def compute_to_reach(tidy: pd.DataFrame, threshold: float,
                     by=("source", "task", "family", "model", "num_params", "seed", "round")) -> pd.DataFrame:
    """Per curve (group ``by``): iterations and attack FLOPs per example to reach
    ``threshold`` ASR (:func:`interpolate_crossing`; NaN if never reached), with the
    curve's ``defense_flops`` and ``pretrain_compute``."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold!r} is invalid; accepted: a fraction in (0, 1]")
    by = [c for c in by if c in tidy.columns]
    _check(tidy, {"iteration", "asr", "attack_flops"})
    rows = []
    for key, g in tidy.groupby(by, sort=True, dropna=False):
        its, flops = interpolate_crossing(g["iteration"], g["asr"], threshold, g["attack_flops"])
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "threshold": threshold,
                     "iterations_to_reach": its, "attack_flops_to_reach": flops,
                     "defense_flops": g["defense_flops"].iloc[0] if "defense_flops" in g else math.nan,
                     "pretrain_compute": g["pretrain_compute"].iloc[0] if "pretrain_compute" in g else math.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- regressions


def _fit(data: pd.DataFrame, formula: str, term: str, **extra) -> tuple[dict, object]:
    import statsmodels.formula.api as smf

    res = smf.ols(formula, data=data).fit()
    lo, hi = res.conf_int(alpha=0.05).loc[term]
    return ({**extra, "slope": float(res.params[term]), "slope_low": float(lo), "slope_high": float(hi),
             "intercept": float(res.params["Intercept"]), "r2": float(res.rsquared), "n": int(res.nobs),
             "p_value": float(res.pvalues[term])}, res)


def attack_scaling(tidy: pd.DataFrame, by=("source", "model", "num_params")):
    """Attack scaling (PAPER.md "Analyses"): per size, OLS of logit10(ASR) on
    log10(attack FLOPs per example) over every seed's points with iteration >= 1; then
    those slopes regressed on log10(parameters).

    Returns ``(slopes, size_fit)``: a frame with one row per size (slope with 95% CI,
    intercept, R^2, n) and the statsmodels result of ``slope ~ log10(num_params)``
    (None with fewer than 3 sizes).
    """
    _check(tidy, {"iteration", "asr", "n_attacked", "attack_flops", *by})
    data = with_logit(tidy[(tidy["iteration"] > 0) & (tidy["attack_flops"] > 0)])
    data["log_flops"] = np.log10(data["attack_flops"])
    rows = []
    for key, g in data.groupby(list(by), sort=True):
        if g["log_flops"].nunique() < 2:
            continue
        row, _ = _fit(g, "logit_asr ~ log_flops", "log_flops", **dict(zip(by, key)))
        rows.append(row)
    slopes = pd.DataFrame(rows)
    size_fit = None
    if len(slopes) >= 3:
        import statsmodels.formula.api as smf

        slopes["log_params"] = np.log10(slopes["num_params"].astype(float))
        size_fit = smf.ols("slope ~ log_params", data=slopes).fit()
    return slopes, size_fit


def robustness_vs_size(tidy: pd.DataFrame, iteration: int):
    """OLS of logit10(ASR at ``iteration``) on log10(parameters), every seed a point.
    Returns ``(summary_row, result)``: slope with 95% CI, R^2, n, and the fit."""
    at = with_logit(tidy[tidy["iteration"] == iteration])
    if at.empty:
        raise ValueError(f"no ASR recorded at iteration {iteration}")
    at["log_params"] = np.log10(at["num_params"].astype(float))
    return _fit(at, "logit_asr ~ log_params", "log_params", iteration=iteration)


def offense_defense(tidy: pd.DataFrame, threshold: float = 0.02, normalise: str | None = None,
                    pretrain_compute: dict | None = None):
    """Offense vs defense (PAPER.md "Analyses"): log10(attack FLOPs to reach
    ``threshold`` ASR) on log10(defense FLOPs), per size and pooled with a size term
    (``y ~ log_defense + log_params``). Rounds with no defense compute (round 0) and
    curves that never reach the threshold are left out.

    ``normalise="pretrain"`` divides both axes by the model's pretraining compute
    (6ND), the paper's "fraction of pretraining compute"; models without that figure
    (the lab's offline family records the FLOPs of its own 2M-token pretraining in
    the zoo manifest, hub models 6ND) take it from ``pretrain_compute`` ({model:
    FLOPs}) or raise. Returns ``(points, per_size, pooled_row, pooled_result)``.
    """
    if normalise not in (None, "pretrain"):
        raise ValueError(f"normalise={normalise!r} is invalid; accepted: None or 'pretrain'")
    points = compute_to_reach(tidy, threshold)
    points = points[(points["defense_flops"] > 0) & points["attack_flops_to_reach"].notna()].copy()
    if points.empty:
        raise ValueError(f"no adversarially trained curve reaches ASR {threshold}; nothing to fit")
    if normalise == "pretrain":
        if pretrain_compute:
            points["pretrain_compute"] = points["model"].map(pretrain_compute).fillna(points["pretrain_compute"])
        missing = sorted(set(points.loc[points["pretrain_compute"].isna(), "model"]))
        if missing:
            raise ValueError(f"models {missing} have no pretraining compute; pass pretrain_compute={{model: FLOPs}}")
        points["attack_flops_to_reach"] /= points["pretrain_compute"]
        points["defense_flops"] /= points["pretrain_compute"]
    points["log_attack"] = np.log10(points["attack_flops_to_reach"])
    points["log_defense"] = np.log10(points["defense_flops"])
    points["log_params"] = np.log10(points["num_params"].astype(float))
    rows = []
    for (model, n), g in points.groupby(["model", "num_params"], sort=False):
        if len(g) >= 3 and g["log_defense"].nunique() >= 2:
            row, _ = _fit(g, "log_attack ~ log_defense", "log_defense", model=model, num_params=n)
            rows.append(row)
    per_size = pd.DataFrame(rows).sort_values("num_params").reset_index(drop=True) if rows else pd.DataFrame()
    formula = "log_attack ~ log_defense + log_params" if points["num_params"].nunique() > 1 else \
        "log_attack ~ log_defense"
    pooled_row, pooled = _fit(points, formula, "log_defense", model="pooled")
    return points.reset_index(drop=True), per_size, pooled_row, pooled


__all__ = [
    "COLUMNS", "CONVENTIONS", "TRAINING_COLUMNS", "asr_at_budget", "attack_scaling", "compute_to_reach",
    "from_lab", "interpolate_crossing", "load_paper_results", "load_paper_training", "offense_defense",
    "robustness_vs_size", "with_logit",
]
