"""The results browser's logic: a tidy table filtered by linked controls, and the chart
each view draws. Works the same on a lab study (:func:`study_table`) and on the paper's
released tables (:func:`robustlib.analysis.load_paper_results`).

Filters are ``{column: value}`` with value ``None`` for "any". Options are linked: the
choices offered for one column are those left by the other filters
(:func:`options`), so a control never offers a value that would empty the table.
"""

from __future__ import annotations

import math

import pandas as pd

#: The columns a browser filters on, in the order its controls appear.
FILTERS = ("source", "task", "model", "seed", "round", "train_attack", "attack", "position")
#: What a browser can draw: label -> what it needs.
VIEWS = {
    "ASR vs iterations": "curves",
    "ASR vs attack compute": "curves",
    "ASR vs size at a budget": "budget",
    "ASR vs round": "rounds",
    "ASR vs defense compute": "rounds",
    "transfer matrix": "transfer",
}


def study_table(study: str, store=None) -> pd.DataFrame:
    """Every evaluation a lab study recorded, as one tidy table: the ``attack`` table of
    its latest ``02_attack`` run and the ``robustness`` and ``transfer`` tables of its
    latest ``03_adversarial_training`` run (``source`` says which), paper-convention FLOPs."""
    from .. import analysis, record

    store = store or record.RunStore()
    parts = []
    for notebook, tables in (("02_attack", ("attack",)), ("03_adversarial_training", ("robustness", "transfer"))):
        try:
            run = store.latest(study, notebook)
        except (FileNotFoundError, LookupError, ValueError):
            continue
        for name in tables:
            rows = run.load_rows(name)
            if rows:
                parts.append(analysis.from_lab(pd.DataFrame(rows)).assign(source=name))
    if not parts:
        raise ValueError(f"study {study!r} has no completed 02_attack or 03_adversarial_training run with "
                         "evaluations; run them first (the README's pipeline)")
    return pd.concat(parts, ignore_index=True)


def _matches(table: pd.DataFrame, column: str, value) -> pd.Series:
    if value is None:
        return pd.Series(True, index=table.index)
    if isinstance(value, float) and math.isnan(value):
        return table[column].isna()
    return table[column] == value


def apply(table: pd.DataFrame, filters: dict) -> pd.DataFrame:
    """The rows matching every filter (``None``: any value). An unknown column is an
    error naming the columns a browser filters on."""
    unknown = sorted(set(filters) - set(table.columns))
    if unknown:
        raise ValueError(f"cannot filter on {unknown}: not columns of this table; accepted: "
                         f"{[c for c in FILTERS if c in table.columns]}")
    keep = pd.Series(True, index=table.index)
    for column, value in filters.items():
        keep &= _matches(table, column, value)
    return table[keep]


def _sorted(values) -> list:
    present = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    out = sorted(set(present), key=lambda v: (str(type(v)), v))
    return out + ([math.nan] if len(present) < len(values) else [])


def options(table: pd.DataFrame, filters: dict) -> dict[str, list]:
    """For each filter column the table has, the values left once the *other* filters
    are applied (models by size)."""
    out = {}
    for column in (c for c in FILTERS if c in table.columns):
        others = {k: v for k, v in filters.items() if k != column and k in table.columns}
        rows = apply(table, others)
        if column == "model":
            out[column] = rows.sort_values("num_params")["model"].drop_duplicates().tolist()
        else:
            out[column] = _sorted(list(rows[column].drop_duplicates()))
    return out


def budgets(table: pd.DataFrame) -> list[int]:
    """Attack iterations every curve in ``table`` recorded (the budgets a view can be read at)."""
    if table.empty:
        return []
    curves = table.groupby(["source", "model", "seed", "round", "attack"], dropna=False)["iteration"].agg(set)
    return sorted(set.intersection(*curves) - {0})


def view(table: pd.DataFrame, kind: str, budget: int | None = None):
    """The chart of view ``kind`` (:data:`VIEWS`) on ``table`` and the frame it draws:
    ``(chart, data)``. ``budget``: the iteration the budget and round views read
    (default: the largest every curve recorded). Raises ``ValueError`` saying what the
    view needs when the rows cannot give it."""
    from .. import analysis, plots

    if kind not in VIEWS:
        raise ValueError(f"view {kind!r} is unknown; accepted: {list(VIEWS)}")
    if table.empty:
        raise ValueError("no rows match the filters")
    need = VIEWS[kind]
    one_attack = table["attack"].nunique() == 1
    if need in ("curves", "budget", "rounds") and not one_attack:
        raise ValueError(f"{kind} draws one attack at a time; pick one of {sorted(table['attack'].unique())}")
    common = budgets(table)
    if budget is None and need in ("budget", "rounds"):
        if not common:
            raise ValueError("the curves share no recorded iteration to read a budget at")
        budget = common[-1]
    if need == "curves":
        rows = table[table["round"] == table["round"].min()]  # the earliest round the rows hold: one curve per seed
        x = "iteration" if kind == "ASR vs iterations" else "attack_flops"
        return plots.asr_curves(rows, x=x, title=kind), rows
    if need == "budget":
        at = analysis.asr_at_budget(table[table["round"] == table["round"].min()], budget,
                                    by=("model", "num_params"))
        return plots.asr_vs_params(at, budget, title=f"ASR at {budget} iterations vs size"), at
    if need == "rounds":
        if table["round"].nunique() < 2:
            raise ValueError("ASR vs round needs adversarially trained models: the rows hold one round")
        if kind == "ASR vs round":
            return plots.asr_vs_round(table, budget), table[table["iteration"] == budget]
        return plots.asr_vs_defense_flops(table, budget), table[table["iteration"] == budget]
    # transfer: each curve at its last iteration, the model's last round, by training x evaluation attack
    last_round = table[table["round"] == table.groupby(["model", "train_attack"])["round"].transform("max")]
    curve = ["model", "seed", "train_attack", "attack", "position"]
    last = last_round[last_round["iteration"] == last_round.groupby(curve, dropna=False)["iteration"].transform(
        "max")]
    matrix = last.assign(
        train=last["train_attack"],
        eval=[f"{a}@{p:g}" if isinstance(p, float) and not math.isnan(p) else str(a)
              for a, p in zip(last["attack"], last["position"])],
    ).groupby(["model", "num_params", "train", "eval"], as_index=False)["asr"].agg(
        asr_median="median", asr_min="min", asr_max="max", seeds="count")
    return plots.transfer_heatmap(matrix), matrix


def export(chart, data: pd.DataFrame, folder, stem: str = "view") -> dict[str, str]:
    """Write the chart (PNG and SVG, through vl-convert) and the rows (CSV) under
    ``folder``; returns ``{format: path}``."""
    from pathlib import Path

    import vl_convert as vlc

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = chart.to_json()
    paths = {"png": folder / f"{stem}.png", "svg": folder / f"{stem}.svg", "csv": folder / f"{stem}.csv"}
    paths["png"].write_bytes(vlc.vegalite_to_png(spec, scale=2))
    paths["svg"].write_text(vlc.vegalite_to_svg(spec))
    data.to_csv(paths["csv"], index=False)
    return {k: str(v) for k, v in paths.items()}
