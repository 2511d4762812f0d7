"""Study of ``notebooks/05_paper_results.ipynb``: the paper's figures from its released
result tables, with the lab's own analysis functions.

Nothing here names a released file or an experiment: what a table holds is read from
its content (the tidy columns :func:`robustlib.analysis.load_paper_results` derives
from model and run names), rows are grouped by *condition* (family, task, training
attack and variant, evaluation attack and position), and each figure is drawn for
whatever the folder holds. The kinds of evaluation:

* **fine-tuned** (:func:`finetuned`): classifiers never adversarially trained, curves
  recorded from iteration 0;
* **generative** (:func:`generative`): chat models on StrongREJECT;
* **adversarially trained** (:func:`adversarial`): conditions with rounds after 0,
  split into ``same`` (evaluated with the attack and position they were trained with)
  and ``transfer`` (another attack or position).

Every attack is read at its own budget (:func:`budget_for`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import analysis, paths
from ..config import is_int
from .base import StudyConfig

#: The columns that make one condition of evaluated models.
CONDITION = ("family", "task", "train_attack", "train_variant", "train_position", "attack", "position")
#: The paper's budgets: on fine-tuned models (GCG 10 iterations, BEAST its 25 tokens,
#: RandomToken 1280) and on adversarially trained ones (GCG 128).
BUDGETS = {"gcg": 10, "beast": 25, "random_token": 1280}
ROBUSTNESS_BUDGETS = {"gcg": 128, "beast": 25, "random_token": 1280}


@dataclass
class PaperResultsConfig(StudyConfig):
    """The parameters of ``05_paper_results``. ``results_dir`` empty: the folder
    ``$ROBUSTLIB_PAPER_RESULTS`` names."""

    notebook = "05_paper_results"

    results_dir: str = ""
    budgets: dict = field(default_factory=lambda: dict(BUDGETS))
    robustness_budgets: dict = field(default_factory=lambda: dict(ROBUSTNESS_BUDGETS))
    thresholds: list = field(default_factory=lambda: [0.02, 0.05])
    asr_range: list = field(default_factory=lambda: [0.01, 0.99])

    def validate(self) -> None:
        for name in ("budgets", "robustness_budgets"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and k and is_int(v) and v > 0 for k, v in value.items()):
                raise self.bad(name, value, "a mapping of attack names to positive integers (iterations), "
                                            "e.g. {'gcg': 10, 'beast': 25}")
        self.check_fractions("thresholds", zero=False)
        if not (len(self.asr_range) == 2 and all(isinstance(v, (int, float)) for v in self.asr_range)
                and 0 <= self.asr_range[0] < self.asr_range[1] <= 1):
            raise self.bad("asr_range", self.asr_range, "[low, high] with 0 <= low < high <= 1")
        analysis.released.csv_files(self.folder())  # missing: FileNotFoundError; no CSVs: ValueError

    def folder(self) -> Path:
        """The folder (or file) of released tables this config reads."""
        if self.results_dir:
            return Path(self.results_dir).expanduser().resolve()
        folder = paths.paper_results_dir()
        if folder is None:
            raise FileNotFoundError("results_dir='' and ROBUSTLIB_PAPER_RESULTS is not set: point either at a copy "
                                    "of the paper's released cache_csvs tables")
        return folder

    def resolve_inputs(self, study: str, store=None) -> dict[str, str]:
        return {"results": str(self.folder())}


@dataclass
class Release:
    """What a folder of released tables holds: ``evaluations`` (a tidy attack table,
    possibly empty), ``training`` (the training tables, possibly empty) and ``notes``
    (what is missing, in words)."""

    evaluations: pd.DataFrame
    training: pd.DataFrame
    notes: list


def load(folder) -> Release:
    """Every table under ``folder``: evaluations and training tables, either may be
    absent (each figure then says what it lacks)."""
    notes = []

    def read(loader, missing: str, columns: list, note: str) -> pd.DataFrame:
        try:
            return loader(folder)
        except ValueError as err:
            if missing not in str(err):
                raise
            notes.append(note)
            return pd.DataFrame(columns=columns)

    evaluations = read(analysis.load_paper_results, "no evaluation results",
                       analysis.COLUMNS + list(analysis.released.RELEASED_EXTRAS),
                       "no evaluation tables (files with asr and iteration): only the training figures are drawn")
    training = read(analysis.load_paper_training, "no training results",
                    analysis.TRAINING_COLUMNS + list(analysis.released.TRAINING_EXTRAS),
                    "no training tables (files with train_total_flops): evaluations of adversarially trained "
                    "models have no defense compute, so the offense/defense figures are skipped")
    return Release(evaluations, training, notes)


def _present(frame: pd.DataFrame) -> list[str]:
    return [c for c in CONDITION if c in frame.columns]


def condition(frame: pd.DataFrame, *, with_training: bool = False) -> str:
    """A label for the rows of one condition: ``"pythia password_match, gcg"``;
    ``with_training`` adds the training attack and variant (``"..., gcg-trained
    (no_ramp), gcg"``); a position other than the suffix is added as ``@0`` (prefix)
    or ``@0.9``."""
    first = frame.iloc[0]
    text = f"{first['family']} {first['task']}"
    if with_training:
        variant = first.get("train_variant", "")
        text += f", {first['train_attack']}-trained" + (f" ({variant})" if isinstance(variant, str) and variant
                                                         else "")
    text += f", {first['attack']}"
    position = first.get("position", math.nan)
    if isinstance(position, float) and not math.isnan(position) and position != 1.0:
        text += f"@{position:g}"
    return text


def _by_condition(rows: pd.DataFrame, with_training: bool) -> dict[str, pd.DataFrame]:
    """Rows grouped by condition (not by file: a condition split over files is one
    group, and a file holding two conditions gives two), each deduplicated on (size,
    seed, round, iteration), labelled by :func:`condition`."""
    out = {}
    keys = _present(rows)
    for _, g in rows.groupby(keys, sort=True, dropna=False):
        g = g.drop_duplicates(["num_params", "seed", "round", "iteration"], keep="last")
        if g["source"].nunique() > 1:  # one condition, one source name for the fits
            g = g.assign(source=" + ".join(sorted(set(g["source"]))))
        out[condition(g, with_training=with_training)] = g
    return dict(sorted(out.items()))


def is_generative(tidy: pd.DataFrame) -> pd.Series:
    """Rows of generative evaluations: StrongREJECT, or a chat family."""
    return (tidy["task"] == "strongreject") | tidy["family"].astype(str).str.endswith("-chat")


def finetuned(tidy: pd.DataFrame) -> pd.DataFrame:
    """Classification rows of models never adversarially trained, from conditions
    recorded at round 0 only and from iteration 0 (whole curves)."""
    rows = tidy[~is_generative(tidy) & (tidy["train_attack"] == "none")]
    by = rows.groupby(_present(rows) + ["source"], dropna=False)
    return rows[(by["round"].transform("max") == 0) & (by["iteration"].transform("min") == 0)]


def generative(tidy: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Generative evaluations by condition."""
    return _by_condition(tidy[is_generative(tidy)], with_training=False)


def is_transfer(group: pd.DataFrame) -> bool:
    """An adversarially trained condition evaluated with another attack than it was
    trained with, or at another position."""
    first = group.iloc[0]
    position, trained_at = first.get("position", math.nan), first.get("train_position", math.nan)
    moved = not (pd.isna(position) or pd.isna(trained_at)) and float(position) != float(trained_at)
    return first["attack"] != first["train_attack"] or moved


def adversarial(tidy: pd.DataFrame, kind: str = "all") -> dict[str, pd.DataFrame]:
    """Evaluations of adversarially trained models (conditions with rounds after 0) by
    label (:func:`condition` with the training attack). ``kind``: ``"all"``,
    ``"same"`` (evaluated as trained) or ``"transfer"`` (:func:`is_transfer`)."""
    if kind not in ("all", "same", "transfer"):
        raise ValueError(f"kind={kind!r} is invalid; accepted: 'all', 'same', 'transfer'")
    rows = tidy[~is_generative(tidy) & (tidy["train_attack"] != "none")]
    groups = {k: g for k, g in _by_condition(rows, with_training=True).items() if g["round"].max() > 0}
    if kind == "all":
        return groups
    return {k: g for k, g in groups.items() if is_transfer(g) == (kind == "transfer")}


def budget_for(rows: pd.DataFrame, budgets: dict) -> tuple[int, str]:
    """The attack budget to read one condition at: ``budgets[attack]`` when every
    curve recorded it; else the largest iteration every curve recorded (the attack's
    own budget in this folder). Returns ``(iteration, note)``; the note is '' when the
    asked budget was used."""
    attack = rows["attack"].iloc[0]
    curves = rows.groupby(["num_params", "seed", "round"])["iteration"].agg(set)
    common = set.intersection(*curves) - {0} if len(curves) else set()
    wanted = budgets.get(attack)
    if wanted is not None and wanted in common:
        return int(wanted), ""
    if not common:
        common = {int(rows["iteration"].max())}
    got = int(max(common))
    why = (f"{attack} has no budget in the parameters" if wanted is None
           else f"not every curve recorded iteration {wanted}")
    return got, f"{condition(rows)}: read at iteration {got}, the last every curve recorded ({why})"


def asr_at_budgets(groups: dict[str, pd.DataFrame], budgets: dict, by=("model", "num_params")) -> tuple[
        pd.DataFrame, list[str]]:
    """ASR at each condition's budget (:func:`budget_for`), medians over seeds, per
    ``by``; returns the frame (``condition``, the condition's columns, ``by``,
    ``iteration``, ``median``, ``min``, ``max``, ``seeds``) and the notes."""
    parts, notes = [], []
    for label, g in groups.items():
        iteration, note = budget_for(g, budgets)
        if note:
            notes.append(note)
        at = analysis.asr_at_budget(g, iteration, by=[*_present(g), *by])
        parts.append(at.assign(condition=label))
    columns = ["condition", *CONDITION, *by, "iteration", "median", "min", "max", "seeds"]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return frame[[c for c in columns if c in frame.columns]], notes


def asr_at_budget(finetuned_rows: pd.DataFrame, budgets: dict) -> tuple[pd.DataFrame, list[str]]:
    """ASR at each attack's budget vs size for the fine-tuned conditions."""
    return asr_at_budgets(_by_condition(finetuned_rows, with_training=False), budgets)


def attack_scaling(finetuned_rows: pd.DataFrame, asr_range) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per fine-tuned condition: per-size attack-scaling slopes, the slopes regressed on
    size (3 sizes or more), and the pooled fit (one slope, an intercept per size).
    Returns the three frames, each labelled ``condition``; conditions with too few
    points are left out."""
    slopes, size_fits, pooled = [], [], []
    for label, g in _by_condition(finetuned_rows, with_training=False).items():
        s, fit = analysis.attack_scaling(g, by=("model", "num_params"), asr_range=asr_range)
        if s.empty:
            continue
        slopes.append(s.assign(condition=label))
        if fit is not None:
            size_fits.append(analysis.summarize_fit(fit, "log_params", condition=label))
        try:
            row, _ = analysis.attack_scaling_pooled(g, asr_range=asr_range)
        except ValueError:  # too few points inside asr_range
            continue
        pooled.append({**row, "condition": label})
    frame = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(  # noqa: E731
        columns=["condition", *analysis.FIT_COLUMNS])
    return frame(slopes), frame(size_fits), pd.DataFrame(pooled, columns=["condition", "model",
                                                                          *analysis.FIT_COLUMNS])


def widest(finetuned_rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per attack, the fine-tuned condition with the most sizes (the attack-scaling
    figure), by label."""
    out = {}
    for attack, rows in finetuned_rows.groupby("attack", sort=True):
        groups = _by_condition(rows, with_training=False)
        label = max(groups, key=lambda k: (groups[k]["model"].nunique(), k))
        out[label] = groups[label]
    return out


def rounds_table(groups: dict[str, pd.DataFrame], budgets: dict) -> tuple[pd.DataFrame, list[str]]:
    """Per adversarially trained condition and size: ASR at the condition's budget
    (:func:`budget_for`) at the first and the last evaluated round, medians over seeds,
    the rounds, and the median defense compute at the last round
    (:func:`robustlib.analysis.before_after`, one condition at a time)."""
    parts, notes = [], []
    for label, g in groups.items():
        iteration, note = budget_for(g, budgets)
        if note:
            notes.append(note)
        first = g.groupby("model")["round"].min()  # before_after's "before" is the first round evaluated
        summary = analysis.before_after(g, iteration)
        parts.append(summary.assign(condition=label, first_round=summary["model"].map(first).astype(int)))
    columns = ["condition", "model", "num_params", "iteration", "first_round", "asr_first", "last_round", "asr_last",
               "seeds", "defense_flops_last"]
    if not parts:
        return pd.DataFrame(columns=columns), notes
    table = pd.concat(parts, ignore_index=True).rename(columns={
        "asr_before": "asr_first", "asr_after": "asr_last", "rounds": "last_round",
        "defense_flops": "defense_flops_last"})
    return table[columns].sort_values(["condition", "num_params"]).reset_index(drop=True), notes


def offense_defense(groups: dict[str, pd.DataFrame], thresholds, **options):
    """Offense/defense fits of every group at every threshold. Returns ``(fits, charts,
    skipped)``: per-size and pooled rows labelled ``pair`` and ``threshold`` (with
    ``anchored``, the share of points whose crossing is a line from (0, 0), and
    ``note`` saying so where every point is); ``[(pair, threshold, points,
    per_size)]``; and why a group or threshold was left out (no defense compute in the
    folder, or no curve reaching the threshold)."""
    fits, charts, skipped = [], [], []
    for name, g in groups.items():
        for threshold in thresholds:
            try:
                points, per_size, pooled_row, _ = analysis.offense_defense(g, threshold, **options)
            except ValueError as err:
                skipped.append(f"{name} at {threshold:.0%}: {err}")
                continue
            fits.append(per_size.assign(pair=name, threshold=threshold))
            fits.append(pd.DataFrame([{**pooled_row, "pair": name, "threshold": threshold}]))
            charts.append((name, threshold, points, per_size))
    fits = pd.concat(fits, ignore_index=True) if fits else pd.DataFrame(
        columns=["pair", "threshold", "model", *analysis.FIT_COLUMNS, "anchored"])
    fits["note"] = [("every crossing is a line from (0, 0): the first recorded iteration already passed the "
                     "threshold; not a measured slope") if a == 1 else "" for a in fits["anchored"]]
    return fits, charts, skipped


#: The axes of the sensitivity table: label -> options of :func:`robustlib.analysis.offense_defense`.
SENSITIVITY = {
    "FLOPs, per seed": {},
    "fraction of pretraining": {"normalise": "pretrain"},
    "FLOPs, size median": {"defense": "size_median"},
    "paper: mean over training seeds, size-mean attack cost": {"defense": "seed_mean", "flops": "size_mean"},
}


def sensitivity(groups: dict[str, pd.DataFrame], thresholds) -> pd.DataFrame:
    """The pooled offense/defense slope of every group and threshold under each choice of
    axes in :data:`SENSITIVITY` (a column each; missing where a fit is impossible)."""
    rows = []
    for label, options in SENSITIVITY.items():
        fits, _, _ = offense_defense(groups, thresholds, **options)
        pooled = fits[fits["model"] == "pooled"]
        rows += [{"pair": r["pair"], "threshold": r["threshold"], "axes": label, "slope": r["slope"]}
                 for r in pooled.to_dict("records")]
    table = pd.DataFrame(rows, columns=["pair", "threshold", "axes", "slope"])
    if not len(table):
        return table
    return table.pivot_table(index=["pair", "threshold"], columns="axes", values="slope")[
        [c for c in SENSITIVITY if c in set(table["axes"])]]


def training_compute(training: pd.DataFrame) -> pd.DataFrame:
    """Defense compute per training condition, size and round: median, min and max over
    seeds (``condition``, ``model``, ``num_params``, ``round``, ``median``, ``min``,
    ``max``, ``seeds``), and the fraction of pretraining compute the median is."""
    if training.empty:
        return pd.DataFrame(columns=["condition", "model", "num_params", "round", "median", "min", "max", "seeds",
                                     "fraction_of_pretraining"])
    t = training.assign(condition=[f"{f} {task}, {a}-trained" + (f" ({v})" if v else "") for f, task, a, v in zip(
        training["family"], training["task"], training["train_attack"], training["train_variant"])])
    out = t.groupby(["condition", "model", "num_params", "round"], as_index=False).agg(
        median=("defense_flops", "median"), min=("defense_flops", "min"), max=("defense_flops", "max"),
        seeds=("defense_flops", "count"), pretrain_compute=("pretrain_compute", "first"))
    out["fraction_of_pretraining"] = out["median"] / out["pretrain_compute"]
    return out.drop(columns="pretrain_compute").sort_values(["condition", "num_params", "round"]).reset_index(
        drop=True)


def metrics(tidy: pd.DataFrame, at_budget: pd.DataFrame, slopes: pd.DataFrame, fits: pd.DataFrame,
            transfer: pd.DataFrame | None = None, generative_at: pd.DataFrame | None = None) -> dict:
    """What the notebook records: the number of sources, ASR at the budget per
    condition and size, the attack-scaling slope per condition and size, the pooled
    offense/defense slope per pair and threshold (measured fits only), the transfer ASR
    at the last round per condition and size, and the generative ASR per size."""
    by_condition = {c: dict(zip(g["model"], g["median"].round(6))) for c, g in at_budget.groupby("condition")}
    scaling = {c: dict(zip(g["model"], g["slope"].round(6))) for c, g in slopes.groupby("condition", sort=True)}
    pooled = fits[(fits["model"] == "pooled") & (fits["anchored"] < 1)] if len(fits) else fits
    out = {
        "sources": int(tidy["source"].nunique()),
        "asr_at_budget_median": by_condition,
        "attack_scaling_slopes": scaling,
        "offense_defense_pooled_slopes": {f"{r['pair']} @ {r['threshold']}": round(r["slope"], 6)
                                          for r in pooled.to_dict("records")},
    }
    if transfer is not None and len(transfer):
        out["transfer_asr_last_round"] = {c: dict(zip(g["model"], g["asr_last"].round(6)))
                                          for c, g in transfer.groupby("condition")}
    if generative_at is not None and len(generative_at):
        out["generative_asr"] = {c: dict(zip(g["model"], g["median"].round(6)))
                                 for c, g in generative_at.groupby("condition")}
    return out


def summary(metrics: dict) -> str:
    """The run's findings in words (the report's opening lines)."""
    slopes = metrics.get("offense_defense_pooled_slopes") or {}
    said = "; ".join(f"{k}: {v:.2f}" for k, v in list(slopes.items())[:4])
    return (f"{metrics['sources']} released tables; pooled offense/defense slopes {said or 'none fitted'}"
            + (" (below 1: doubling both budgets favours the attacker)." if slopes else "."))
