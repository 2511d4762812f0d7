"""The tidy attack table: one schema for the lab's tables and the paper's released ones.

The lab's evaluation tables (:func:`from_lab`) and the paper's released CSVs
(:func:`robustlib.analysis.load_paper_results`) both become the same *tidy attack
table*: one row per (model, seed, adversarial-training round, attack, iteration), with
the columns of :data:`COLUMNS`:

====================== ==============================================================
``source``             where the row came from (a CSV file name, or ``lab``)
``task``               ``password_match``, ``imdb``, ``spam``, ``harmless``, ...
``family``             ``pythia``, ``qwen2.5``, ``qwen2.5-chat``, ``zoo``, ...
``model``              size name (``pythia-14m``, ``Qwen2.5-0.5B``, ``zoo-1m``)
``num_params``         parameters of the classifier as loaded (the paper's N)
``seed``               model seed
``round``              adversarial-training round (0: before adversarial training)
``train_attack``       the attack the model was adversarially trained with (``none``:
                       fine-tuned only; ``unknown``: the source does not say)
``attack``             the evaluation attack: ``gcg``, ``beast``, ``random_token``
``position``           attack position (NaN when the task has a fixed slot or the
                       source does not say)
``iteration``          attack iteration (0: before the attack, ASR 0)
``asr``                attack success rate among the examples correct before the attack
``n_attacked``         those examples (the ASR's denominator)
``n_examples``         examples evaluated
``flops_per_iteration`` attack FLOPs per attacked example for that iteration
``attack_flops``       cumulative attack FLOPs per attacked example through ``iteration``
``defense_flops``      cumulative adversarial-training FLOPs of that model at ``round``
                       (training plus attack generation; 0 at round 0; NaN unknown)
``pretrain_compute``   6 N D of the model, NaN when there is no such figure
====================== ==============================================================

The lab's own tables use these names already, with each FLOP column in both
conventions (``attack_flops_paper`` / ``attack_flops_real``, ...); :func:`from_lab`
picks one. Functions here return pandas frames; fits are in
:mod:`robustlib.analysis.fits`, charts in :mod:`robustlib.plots`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: The tidy attack table, in this order.
COLUMNS = ["source", "task", "family", "model", "num_params", "seed", "round", "train_attack", "attack", "position",
           "iteration", "asr", "n_attacked", "n_examples", "flops_per_iteration", "attack_flops", "defense_flops",
           "pretrain_compute"]
#: The tidy adversarial-training table (one row per model x seed x round).
TRAINING_COLUMNS = ["source", "task", "family", "model", "num_params", "seed", "round", "train_attack",
                    "defense_flops", "pretrain_compute"]
#: FLOP conventions of the lab's tables.
CONVENTIONS = ("paper", "real")
#: How :func:`compute_to_reach` turns a crossing into attack FLOPs.
FLOPS_TO_REACH = ("cumulative", "size_mean")
#: Columns of the lab's tables kept by :func:`from_lab` after :data:`COLUMNS`.
LAB_EXTRAS = ("train_position",)


def laplace_logit10(asr, n):
    """The paper's plotting transform: log10(p / (1 - p)) with p = (asr*n + 1) / (n + 2).

    Laplace smoothing keeps ASR = 0 and 1 finite; ``n`` is the number of examples the
    ASR is a fraction of (those classified correctly before the attack).
    """
    p = (np.asarray(asr, dtype=float) * n + 1) / (np.asarray(n, dtype=float) + 2)
    out = np.log10(p / (1 - p))
    return float(out) if out.ndim == 0 else out


def from_lab(table: pd.DataFrame, convention: str = "paper", family: str | None = None) -> pd.DataFrame:
    """A lab evaluation table (``attack`` of ``02_attack``; ``robustness`` or
    ``transfer`` of ``03_adversarial_training``) as a tidy attack table: :data:`COLUMNS`,
    then ``train_position`` when the table has it.

    The lab's tables already use the tidy names, FLOPs per attacked example in both
    conventions; this picks ``convention`` (``"paper"``: 2N/4N per token, no KV cache;
    ``"real"``: as executed) and fills what a table may lack: ``round`` 0 with
    ``defense_flops`` 0, ``train_attack`` ``none``, ``pretrain_compute`` NaN.
    ``family``: overrides the table's family column (default: that column, else the
    model name's prefix).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r} is invalid; accepted: {CONVENTIONS}")
    need = {"model", "num_params", "seed", "attack", "iteration", "asr", "n_attacked", "n_examples",
            f"attack_flops_{convention}", f"flops_per_iteration_{convention}"}
    require_columns(table, need, "table")

    def column(name, default):
        return table[name] if name in table.columns else pd.Series(default, index=table.index)

    rnd = column("round", 0).astype(int)
    dcol = f"defense_flops_{convention}"
    defense = table[dcol].astype(float) if dcol in table.columns else pd.Series(
        np.where(rnd == 0, 0.0, np.nan), index=table.index)
    if family is not None:
        families = pd.Series(family, index=table.index)
    elif "family" in table.columns:
        families = table["family"]
    else:
        families = table["model"].map(lambda m: str(m).lower().split("-")[0])
    out = pd.DataFrame({
        "source": "lab", "task": column("task", "unknown"), "family": families, "model": table["model"],
        "num_params": table["num_params"].astype("int64"), "seed": table["seed"].astype(int), "round": rnd,
        "train_attack": column("train_attack", "none"), "attack": table["attack"],
        "position": column("position", math.nan).astype(float), "iteration": table["iteration"].astype(int),
        "asr": table["asr"].astype(float), "n_attacked": table["n_attacked"].astype(float),
        "n_examples": table["n_examples"].astype(float),
        "flops_per_iteration": table[f"flops_per_iteration_{convention}"].astype(float),
        "attack_flops": table[f"attack_flops_{convention}"].astype(float), "defense_flops": defense,
        "pretrain_compute": column("pretrain_compute", math.nan).astype(float),
    })
    for extra in LAB_EXTRAS:
        if extra in table.columns:
            out[extra] = table[extra]
    return out.reset_index(drop=True)


def describe_sources(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per source: task, family, attack, sizes, seeds, rounds, iterations, rows,
    and (for :func:`load_paper_results` output) duplicates dropped."""
    require_columns(tidy, {"source", "task", "family", "train_attack", "attack", "model", "seed", "round",
                           "iteration", "asr"})
    out = tidy.groupby("source", sort=True).agg(
        task=("task", "first"), family=("family", "first"), train_attack=("train_attack", "first"),
        attack=("attack", "first"), sizes=("model", "nunique"),
        seeds=("seed", "nunique"), rounds=("round", "nunique"), first_iteration=("iteration", "min"),
        last_iteration=("iteration", "max"), rows=("asr", "size")).reset_index()
    dropped = tidy.attrs.get("duplicates_dropped", {})
    out["duplicates_dropped"] = out["source"].map(lambda s: dropped.get(s, 0))
    return out




def require_columns(tidy: pd.DataFrame, need, what: str = "tidy table") -> None:
    missing = set(need) - set(tidy.columns)
    if missing:
        raise ValueError(f"{what} lacks column(s) {sorted(missing)}")


def require_one_condition(tidy: pd.DataFrame, keys=("source", "task", "attack"), what: str = "this analysis") -> None:
    """Raise unless ``tidy`` holds one combination of ``keys`` (those it has)."""
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
    require_columns(tidy, {"asr", n})
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
    require_columns(tidy, {"iteration", "asr", "seed", *by})
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


def before_after(tidy: pd.DataFrame, iteration: int | None = None) -> pd.DataFrame:
    """ASR at a budget before (first round recorded, 0) and after (last round) adversarial
    training, per size x training attack (x training position, x evaluation attack):
    medians over seeds (:func:`asr_at_budget`), ``after_over_before``, the rounds and
    the median defense compute at the last round.

    ``tidy``: a tidy table of adversarially trained models (:func:`from_lab` of a
    ``robustness`` table, or released evaluations). ``iteration``: the budget (None:
    the largest iteration recorded).
    """
    if tidy is None or len(tidy) == 0:
        raise ValueError("the robustness table is empty")
    require_columns(tidy, {"model", "num_params", "seed", "round", "iteration", "asr", "train_attack", "attack",
                  "defense_flops"})
    it = int(tidy["iteration"].max()) if iteration is None else iteration
    keys = ["model", "num_params", "train_attack"] + [c for c in ("train_position",) if c in tidy.columns] + [
        "attack"]
    at = asr_at_budget(tidy, it, by=[*keys, "round"])
    defense = tidy[tidy["iteration"] == it].groupby([*keys, "round"], dropna=False, as_index=False)[
        "defense_flops"].median()
    at = at.merge(defense, on=[*keys, "round"], how="left")
    rows = []
    for key, g in at.groupby(keys, dropna=False, sort=False):
        first, last = g.loc[g["round"].idxmin()], g.loc[g["round"].idxmax()]
        rows.append({**dict(zip(keys, key)), "rounds": int(last["round"]), "asr_before": float(first["median"]),
                     "asr_after": float(last["median"]), "defense_flops": float(last["defense_flops"]),
                     "seeds": int(last["seeds"])})
    out = pd.DataFrame(rows)
    out["after_over_before"] = out["asr_after"] / out["asr_before"].where(out["asr_before"] > 0)
    out["iteration"] = it
    return out.sort_values(["num_params", "train_attack"]).reset_index(drop=True)


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
    :func:`crossing_from_anchor` says whether a curve's crossing came from that anchor.
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


def crossing_from_anchor(iterations, asr, threshold: float) -> bool:
    """True when a curve's first recorded attack iteration (> 0) already reaches
    ``threshold``: its crossing is then a straight line from ASR 0 at iteration 0 (the
    anchor, recorded or not), which says only that the first iteration overshot, not
    where the curve crossed."""
    it = np.asarray(iterations, dtype=float)
    a = np.asarray(asr, dtype=float)
    keep = ~np.isnan(a) & (it > 0)
    if not keep.any():
        return False
    return bool(a[keep][np.argmin(it[keep])] >= threshold)


def compute_to_reach(tidy: pd.DataFrame, threshold: float,
                     by=("source", "task", "family", "train_attack", "attack", "model", "num_params", "seed", "round"),
                     flops: str = "cumulative", anchor_zero: bool = True) -> pd.DataFrame:
    """Per curve (group ``by``): iterations and attack FLOPs per example to reach
    ``threshold`` ASR (:func:`interpolate_crossing`; NaN if never reached within the
    curve's ``budget``), with the curve's ``defense_flops``, ``pretrain_compute``,
    ``defense_flops_seed_mean`` where the table has it, and ``from_anchor``
    (:func:`crossing_from_anchor`: the crossing is a line from (0, 0), not measured).

    ``flops``: ``"cumulative"`` (the default) interpolates the curve's own cumulative
    attack FLOPs (right when the cost per iteration varies); ``"size_mean"`` multiplies
    the interpolated iterations by the mean per-iteration FLOPs of the model size over
    all its curves (seeds and rounds) in the table: the paper's choice (its
    ``prepare_offense_defense_data``). In the released tables the cost per iteration is
    constant within a run, so ``"cumulative"`` is interpolated iterations x that run's
    own cost, and the two differ by how far a run's cost sits from its size's mean.
    That is not small everywhere: up to 5% for the adversarially trained models (Pythia
    Spam at the prefix), 7% on Pythia IMDB and 12% on Pythia Harmless (fine-tuned), with
    medians under 1% in all but the Harmless table (2.7%).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold!r} is invalid; accepted: a fraction in (0, 1]")
    if flops not in FLOPS_TO_REACH:
        raise ValueError(f"flops={flops!r} is invalid; accepted: {FLOPS_TO_REACH}")
    by = [c for c in by if c in tidy.columns]
    require_columns(tidy, {"iteration", "asr", "attack_flops", "flops_per_iteration", "model"})
    rows = []
    for key, g in tidy.groupby(by, sort=True, dropna=False):
        its, fl = interpolate_crossing(g["iteration"], g["asr"], threshold, g["attack_flops"], anchor_zero)
        first = lambda col: g[col].iloc[0] if col in g else math.nan  # noqa: E731
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "threshold": threshold,
                     "budget": int(g["iteration"].max()), "iterations_to_reach": its, "attack_flops_to_reach": fl,
                     "from_anchor": bool(not math.isnan(its) and anchor_zero and crossing_from_anchor(
                         g["iteration"], g["asr"], threshold)),
                     "defense_flops": first("defense_flops"), "pretrain_compute": first("pretrain_compute"),
                     "defense_flops_seed_mean": first("defense_flops_seed_mean")})
    out = pd.DataFrame(rows)
    if flops == "size_mean" and len(out):
        size = [c for c in ("source", "model") if c in by]
        active = tidy[tidy["iteration"] > 0]
        per_curve = active.groupby(by, dropna=False)["flops_per_iteration"].mean().reset_index()
        mean = per_curve.groupby(size, dropna=False)["flops_per_iteration"].mean().rename("_m").reset_index()
        out = out.merge(mean, on=size, how="left")
        out["attack_flops_to_reach"] = out["iterations_to_reach"] * out.pop("_m")
    return out
