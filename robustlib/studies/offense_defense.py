"""Study of ``notebooks/04_offense_defense.ipynb``: the paper's analyses on the lab's
own attack (``02_attack``) and defense (``03_adversarial_training``) runs.

Attack scaling per size, robustness vs size at a budget, and offense vs defense (the
attack compute to reach each threshold ASR against the defense compute spent, per size
and pooled with a size term; on FLOPs and on fractions of pretraining compute). The
offline family is normalised by the FLOPs of its own pretraining (6 N D with the D
tokens of the zoo manifest), hub models by 6 N D of their release.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..analysis import CONVENTIONS, from_lab, offense_defense
from .base import StudyConfig


@dataclass
class OffenseDefenseConfig(StudyConfig):
    """The parameters of ``04_offense_defense``."""

    notebook = "04_offense_defense"
    reads = {"attack_run": ("attack_study", "02_attack"),
             "defense_run": ("defense_study", "03_adversarial_training")}

    attack_study: str = ""
    defense_study: str = ""
    budget: int = 0
    thresholds: list = field(default_factory=lambda: [0.25, 0.5])
    convention: str = "paper"

    def validate(self) -> None:
        self.check_positive("budget", zero=True)
        self.check_fractions("thresholds", zero=False)
        if self.convention not in CONVENTIONS:
            raise self.bad("convention", self.convention, str(CONVENTIONS))


def load(cfg: OffenseDefenseConfig, run):
    """``(attacks, defense, budget)``: the input runs' ``attack`` and ``robustness``
    tables as tidy tables in ``cfg.convention``, and the budget for ASR at a fixed
    budget (``cfg.budget``, or the largest iteration recorded when it is 0)."""
    attacks = from_lab(run.input_run("attack_run").load_table("attack"), convention=cfg.convention)
    defense = from_lab(run.input_run("defense_run").load_table("robustness"), convention=cfg.convention)
    return attacks, defense, cfg.budget or int(attacks["iteration"].max())


def fit_offense_defense(defense, thresholds):
    """Offense/defense fits for each threshold, on FLOPs and on fractions of
    pretraining compute. Returns ``(fits, points, skipped)``: the fitted rows (per size
    and pooled, with ``threshold`` and ``scale``), ``[(threshold, points, per_size)]``
    on FLOPs for the charts, and one line per threshold that could not be fitted."""
    import pandas as pd

    fits, points, skipped = [], [], []
    for threshold in thresholds:
        for normalise in (None, "pretrain"):
            try:
                pts, per_size, pooled_row, _ = offense_defense(defense, threshold, normalise=normalise)
            except ValueError as err:  # e.g. no defended model reaches this ASR within the budget
                skipped.append(f"ASR {threshold:.0%}: {err}")
                break
            scale = "fraction of pretraining" if normalise else "FLOPs"
            fits.append(per_size.assign(threshold=threshold, scale=scale))
            fits.append(pd.DataFrame([{**pooled_row, "threshold": threshold, "scale": scale}]))
            if normalise is None:
                points.append((threshold, pts, per_size))
    columns = ["threshold", "scale", "model", "slope", "slope_low", "slope_high", "r2", "n"]
    fits = pd.concat(fits, ignore_index=True) if fits else pd.DataFrame(columns=columns)
    return fits, points, skipped


def metrics(budget: int, robustness_row: dict | None, slopes, fits) -> dict:
    """What the notebook records: the budget, the robustness-vs-size slope (None: not
    enough signal to fit), the attack-scaling slope per size and the pooled
    offense/defense slopes."""
    pooled = fits[fits["model"] == "pooled"] if len(fits) else fits
    return {
        "budget": budget,
        "robustness_vs_size_slope": None if robustness_row is None else robustness_row["slope"],
        "attack_scaling_slopes": dict(zip(slopes["model"], slopes["slope"].round(4))),
        "offense_defense_pooled_slopes": {f"{r['threshold']} {r['scale']}": round(r["slope"], 4)
                                          for r in pooled.to_dict("records")},
    }


def summary(metrics: dict) -> str:
    """The run's findings in words (the report's opening lines)."""
    slopes = metrics.get("offense_defense_pooled_slopes") or {}
    flops = {k.split()[0]: v for k, v in slopes.items() if k.endswith(" FLOPs")}
    if not flops:
        return ("no adversarially trained model reached the thresholds within its attack budget, so there is no "
                "offense/defense fit (raise the budgets or lower the thresholds).")
    said = ", ".join(f"{float(t):.0%} ASR: {s:.2f}" for t, s in flops.items())
    return (f"pooled offense/defense slopes (log attack FLOPs to reach the ASR per log defense FLOPs) {said}; "
            "below 1, doubling both budgets favours the attacker.")
