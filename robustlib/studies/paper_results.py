"""Study of ``notebooks/05_paper_results.ipynb``: the paper's figures from its released
result tables, with the lab's own analysis functions.

Nothing here names a released file: what a table holds is read from its content (the
tidy columns :func:`robustlib.analysis.load_paper_results` derives from model and run
names), and each figure is drawn for whatever the folder holds. Fine-tuned-model
evaluations are the sources recorded at round 0 only, from iteration 0; evaluations of
adversarially trained models are the sources with later rounds, one group each,
labelled by family, task, training attack and evaluation attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import analysis, paths
from .base import StudyConfig


@dataclass
class PaperResultsConfig(StudyConfig):
    """The parameters of ``05_paper_results``. ``results_dir`` empty: the folder
    ``$ROBUSTLIB_PAPER_RESULTS`` names."""

    notebook = "05_paper_results"

    results_dir: str = ""
    budget: int = 10
    robustness_budget: int = 128
    thresholds: list = field(default_factory=lambda: [0.02, 0.05])
    asr_range: list = field(default_factory=lambda: [0.01, 0.99])

    def validate(self) -> None:
        self.check_positive("budget", "robustness_budget")
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


def condition(frame: pd.DataFrame, *, with_training: bool = False) -> str:
    """A label for the rows of one family/task/attack: ``"pythia password_match, gcg"``;
    ``with_training`` adds the training attack (``"..., gcg-trained, gcg"``) and a
    position other than the suffix."""
    first = frame.iloc[0]
    text = f"{first['family']} {first['task']}"
    if with_training:
        text += f", {first['train_attack']}-trained"
    text += f", {first['attack']}"
    position = first.get("position", math.nan)
    if isinstance(position, float) and not math.isnan(position) and position != 1.0:
        text += f"@{position:g}"
    return text


def finetuned(tidy: pd.DataFrame) -> pd.DataFrame:
    """Rows of the sources that evaluate fine-tuned models (round 0 only, from iteration 0)."""
    keep = [s for s, g in tidy.groupby("source") if g["round"].max() == 0 and g["iteration"].min() == 0]
    return tidy[tidy["source"].isin(keep)]


def adversarial(tidy: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The sources that evaluate adversarially trained models (rounds after 0), by label
    (:func:`condition` with the training attack; the source name is added only where
    two sources would share a label)."""
    groups = {s: g for s, g in tidy.groupby("source", sort=True) if g["round"].max() > 0}
    labels = {s: condition(g, with_training=True) for s, g in groups.items()}
    repeated = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    return {(f"{labels[s]} ({s})" if labels[s] in repeated else labels[s]): g for s, g in groups.items()}


def asr_at_budget(finetuned_rows: pd.DataFrame, budget: int) -> pd.DataFrame:
    """ASR at ``budget`` per source and size, medians over seeds, sources that never
    recorded the budget left out (RandomToken and BEAST evaluations stop earlier)."""
    return analysis.asr_at_budget(finetuned_rows, budget, by=("source", "task", "family", "attack", "model",
                                                               "num_params"), missing="skip")


def attack_scaling(finetuned_rows: pd.DataFrame, asr_range) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per source: per-size attack-scaling slopes, the slopes regressed on size (3 sizes
    or more), and the pooled fit (one slope, an intercept per size). Returns the three
    frames, each labelled with ``condition``; sources with too few points are left out."""
    slopes, size_fits, pooled = [], [], []
    for _, g in finetuned_rows.groupby("source", sort=True):
        label = condition(g)
        s, fit = analysis.attack_scaling(g, asr_range=asr_range)
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


def widest(finetuned_rows: pd.DataFrame, attack: str = "gcg") -> pd.DataFrame:
    """The rows of the ``attack`` source with the most sizes (the attack-scaling figure)."""
    rows = finetuned_rows[finetuned_rows["attack"] == attack]
    if rows.empty:
        return rows
    sizes = rows.groupby("source")["model"].nunique()
    return rows[rows["source"] == sizes.idxmax()]


def offense_defense(groups: dict[str, pd.DataFrame], thresholds, **options):
    """Offense/defense fits of every group at every threshold. Returns ``(fits, charts,
    skipped)``: per-size and pooled rows labelled ``pair`` and ``threshold``; ``[(pair,
    threshold, points, per_size)]``; and why a group or threshold was left out (no
    defense compute in the folder, or no curve reaching the threshold)."""
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
        columns=["pair", "threshold", "model", *analysis.FIT_COLUMNS])
    return fits, charts, skipped


#: The axes of the sensitivity table: label -> options of :func:`robustlib.analysis.offense_defense`.
SENSITIVITY = {"FLOPs, per seed": {}, "fraction of pretraining": {"normalise": "pretrain"},
               "FLOPs, size median": {"defense": "size_median"}}


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
    return table.pivot_table(index=["pair", "threshold"], columns="axes", values="slope") if len(table) else table


def metrics(tidy: pd.DataFrame, at_budget: pd.DataFrame, slopes: pd.DataFrame, fits: pd.DataFrame) -> dict:
    """What the notebook records: the number of sources, ASR at the budget per condition
    and size, the attack-scaling slope per condition and size, and the pooled
    offense/defense slope per pair and threshold."""
    by_condition = {}
    for _, g in at_budget.groupby("source", sort=True):
        by_condition[condition(g)] = dict(zip(g["model"], g["median"].round(6)))
    scaling = {c: dict(zip(g["model"], g["slope"].round(6))) for c, g in slopes.groupby("condition", sort=True)}
    pooled = fits[fits["model"] == "pooled"]
    return {
        "sources": int(tidy["source"].nunique()),
        "asr_at_budget_median": by_condition,
        "attack_scaling_slopes": scaling,
        "offense_defense_pooled_slopes": {f"{r['pair']} @ {r['threshold']}": round(r["slope"], 6)
                                          for r in pooled.to_dict("records")},
    }


def summary(metrics: dict) -> str:
    """The run's findings in words (the report's opening lines)."""
    slopes = metrics.get("offense_defense_pooled_slopes") or {}
    said = "; ".join(f"{k}: {v:.2f}" for k, v in list(slopes.items())[:4])
    return (f"{metrics['sources']} released tables; pooled offense/defense slopes {said or 'none fitted'}"
            + (" (below 1: doubling both budgets favours the attacker)." if slopes else "."))
