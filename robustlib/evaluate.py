"""Robustness evaluation: attack one model, record its ASR curve as tidy rows; the
transfer matrix.

:func:`attack` runs an attack spec (:class:`robustlib.attacks.spec.AttackSpec`) on a
model the caller owns and returns the result with its rows in the lab's table format:
the tidy names of :mod:`robustlib.analysis.tidy`, one row per iteration 0..n, FLOPs per
attacked example in both conventions (``flops_per_iteration_paper`` /
``_real`` for that iteration, ``attack_flops_paper`` / ``_real`` cumulative), plus
whatever labels the study adds (model, seed, round, ...). The study notebooks record
those rows as their ``attack``, ``robustness`` and ``transfer`` tables.
"""

from __future__ import annotations

import math

#: FLOP columns of the lab's evaluation rows, each per attacked example.
FLOP_COLUMNS = ("flops_per_iteration_paper", "flops_per_iteration_real", "attack_flops_paper", "attack_flops_real")


def attack_rows(result, **labels) -> list[dict]:
    """The rows of an :class:`robustlib.attacks.AttackResult`: ``iteration``, ``asr``,
    ``n_attacked`` (examples correct before the attack: the ASR's denominator),
    ``n_examples``, the FLOP columns per attacked example, ``wall_seconds`` (the whole
    attack's) and ``labels``. FLOPs are summed over the attacked examples in the result
    and divided by their number (by 1 when none was attacked: then they are 0)."""
    n = max(1, result.n_correct_before)
    cumulative = {"paper": 0, "real": 0}
    rows = []
    for it, asr in enumerate(result.asr):
        row = {**labels, "iteration": it, "asr": asr, "n_attacked": result.n_correct_before,
               "n_examples": result.n_examples, "wall_seconds": result.wall_seconds}
        for conv in ("paper", "real"):
            spent = getattr(result, f"flops_per_iteration_{conv}")[it]
            cumulative[conv] += spent
            row[f"flops_per_iteration_{conv}"] = spent / n
            row[f"attack_flops_{conv}"] = cumulative[conv] / n
        rows.append(row)
    return rows


def attack(model, tokenizer, examples, spec, /, *, position, attack_seed: int, iterations: int | None = None,
           **labels):
    """Attack ``model`` on ``examples`` with ``spec`` at ``position``, the attack's own
    randomness seeded with ``attack_seed``, for ``iterations`` (None: the spec's own
    budget, else its attack's default); every example spends the full budget and ASR counts the examples
    classified correctly before the attack. Returns ``(result, rows)``
    (:func:`attack_rows`, each row labelled with ``labels``, ``attack`` = the spec's
    label and ``position``)."""
    from . import attacks

    budget = {} if iterations is None else {"iterations": iterations}
    config = spec.config(position=position, seed=attack_seed, progress=False, **budget)
    result = attacks.run_attack(spec.name, model, tokenizer, examples, config)
    return result, attack_rows(result, attack=spec.label, position=position, **labels)


def transfer_matrix(transfer, value: str = "asr"):
    """The transfer table as a matrix: rows ``train`` (training attack@position, or
    ``none`` for the undefended models), columns ``eval`` (evaluation attack@position
    with its budget), cells the median of ``value`` over seeds at each curve's last
    iteration, per model size.

    ``transfer``: rows of :func:`attack_rows` with ``train_attack``, ``train_position``
    and ``defended_key`` (the ``transfer`` table of ``03_adversarial_training``).
    Returns a long frame with columns ``model, num_params, train, eval, asr_median,
    asr_min, asr_max, seeds`` (ready for :func:`robustlib.plots.transfer_heatmap`);
    pivot it with ``.pivot_table(index=["model", "train"], columns="eval",
    values="asr_median")``.
    """
    if transfer is None or len(transfer) == 0:
        raise ValueError("the transfer table is empty")
    from .analysis import require_columns

    require_columns(transfer, {"model", "num_params", "defended_key", "train_attack", "train_position", "attack",
                               "position", "iteration", value}, "transfer table")
    curve = ["defended_key", "attack", "position"]
    t = transfer[transfer["iteration"] == transfer.groupby(curve)["iteration"].transform("max")].copy()
    t["train"] = ["none" if a == "none" or (isinstance(p, float) and math.isnan(p)) else f"{a}@{float(p):g}"
                  for a, p in zip(t["train_attack"], t["train_position"])]
    t["eval"] = [f"{a}@{float(p):g} ({int(i)} it)" for a, p, i in zip(t["attack"], t["position"], t["iteration"])]
    out = t.groupby(["model", "num_params", "train", "eval"], as_index=False)[value].agg(
        asr_median="median", asr_min="min", asr_max="max", seeds="count")
    return out.sort_values(["num_params", "train", "eval"]).reset_index(drop=True)


__all__ = ["FLOP_COLUMNS", "attack", "attack_rows", "transfer_matrix"]
