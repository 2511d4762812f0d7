"""What an attack reports: per example (:class:`ExampleRecord`), per dataset
(:class:`AttackResult`, with tidy tables), and per step (:class:`StepOutcome`, what an
attack's ``_step`` returns for one example; :class:`StepReport`, what
:meth:`~robustlib.attacks.base.Attack.step` returns).

ASR follows the paper's definition (:func:`asr_curve`): among the examples the model
classifies correctly before the attack, the fraction broken by iteration ``i``, success
being sticky. FLOPs come in two conventions, both summed over examples: *paper*
(``2 N`` per token of every forward row, ``4 N`` more for a backward row, counting the
full sequence as if there were no KV cache) and *real* (what
``torch.utils.flop_counter`` counts for what was actually executed); see
:mod:`robustlib.attacks.scorer`. Clean evaluation is reported separately
(``clean_flops_*``), not in the per-iteration numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class ExampleRecord:
    """What happened to one example.

    The reported attack (``attack``, ``attack_ids``, ``loss``, ``prediction``) is the
    attack of the *first* iteration at which the example was broken, if it ever was
    (success is sticky and that string is known to work), and otherwise the attack
    with the lowest loss seen. Per-iteration lists have one entry per iteration done
    (iteration 1 first); they are empty for examples that were not attacked.
    """

    index: int  # position in the list of examples given to the attack
    label: int
    target: int  # the class aimed at (label mode); 1 - label
    correct_before: bool  # clean text classified correctly (string mode: target not produced)
    attacked: bool  # False when skipped (skip_incorrect and not correct_before)
    clean_loss: float  # loss toward the target on the clean text
    before: str  # attacked text = before + attack + after
    after: str
    full_tokens: int  # tokens of one attacked row (prefix + attack + tail), the paper's L
    attack: str = ""
    attack_ids: list[int] = field(default_factory=list)
    loss: float = math.nan  # loss of the reported attack
    best_loss: float = math.nan  # lowest loss seen over all iterations
    prediction: int | None = None  # class predicted with the reported attack (label mode)
    success: bool = False  # broken at some iteration
    first_success_iteration: int | None = None
    initial_loss: float = math.nan  # loss of the initial attack (GCG); NaN when not computed
    losses: list[float] = field(default_factory=list)  # loss of the attack held after iteration i
    successes: list[bool] = field(default_factory=list)  # that attack succeeds (not sticky)
    attacks: list[str] = field(default_factory=list)  # that attack's string
    n_evaluated: list[int] = field(default_factory=list)  # candidate rows evaluated (GCG: kept after filter)
    flops_paper: list[int] = field(default_factory=list)
    flops_real: list[float] = field(default_factory=list)

    @property
    def attacked_text(self) -> str:
        return self.before + self.attack + self.after

    def broken_at(self, iteration: int) -> bool:
        """Sticky success: broken by any attack of iterations 1..``iteration``."""
        return self.first_success_iteration is not None and self.first_success_iteration <= iteration


def asr_curve(correct_before: Sequence[bool], first_success: Sequence[int | None], iterations: int) -> list[float]:
    """ASR at iterations 0..``iterations`` (the paper's definition).

    Among examples classified correctly before the attack, the fraction broken by
    iteration ``i`` (sticky: broken if any attack up to ``i`` succeeded).
    ``asr[0] == 0`` by definition; if no example was correct before, every later
    entry is NaN (there is nothing to break).
    """
    counted = [s for c, s in zip(correct_before, first_success) if c]
    out = [0.0]
    for i in range(1, iterations + 1):
        out.append(sum(s is not None and s <= i for s in counted) / len(counted) if counted else math.nan)
    return out


@dataclass
class StepOutcome:
    """What one iteration did to one example (returned by an attack's ``_step``)."""

    ids: list[int] | None  # the attack held after this iteration; None if nothing was evaluated
    loss: float  # that attack's loss
    success: bool  # that attack succeeds
    prediction: int | None  # class predicted with it (label mode)
    n_evaluated: int = 0  # candidate rows evaluated
    flops_paper: int = 0
    flops_real: float = 0.0


@dataclass
class StepReport:
    """One iteration over all examples (returned by ``Attack.step``); FLOPs summed over examples."""

    iteration: int
    asr: float  # ASR after this iteration
    n_active: int  # examples attacked in this iteration (not frozen after success)
    flops_paper: int
    flops_real: int


@dataclass
class AttackResult:
    """An attack's outcome over a dataset.

    Per-iteration arrays have ``iterations + 1`` entries, index ``i`` for iteration
    ``i`` (index 0: before any attack, ASR 0 and no compute). FLOPs are summed over the
    examples; paper convention and real (see the module docstring).
    """

    attack: str
    config: dict
    records: list[ExampleRecord]
    asr: list[float]
    flops_per_iteration_paper: list[int]
    flops_per_iteration_real: list[int]
    wall_seconds: float
    n_examples: int
    n_correct_before: int
    clean_accuracy: float
    clean_flops_paper: int
    clean_flops_real: int
    num_params: int

    @property
    def iterations(self) -> int:
        return len(self.asr) - 1

    @property
    def cumulative_flops_paper(self) -> list[int]:
        return _cumsum(self.flops_per_iteration_paper)

    @property
    def cumulative_flops_real(self) -> list[int]:
        return _cumsum(self.flops_per_iteration_real)

    @property
    def final_asr(self) -> float:
        return self.asr[-1]

    def asr_frame(self):
        """One row per iteration 0..n: ``iteration, asr, flops_paper, flops_real``
        (cumulative, summed over examples) and the per-iteration FLOPs."""
        import pandas as pd

        return pd.DataFrame(
            {
                "iteration": range(self.iterations + 1),
                "asr": self.asr,
                "flops_paper": self.cumulative_flops_paper,
                "flops_real": self.cumulative_flops_real,
                "flops_per_iteration_paper": self.flops_per_iteration_paper,
                "flops_per_iteration_real": self.flops_per_iteration_real,
                "n_correct_before": self.n_correct_before,
            }
        )

    def to_frame(self):
        """A tidy long table: one row per (attacked example, iteration >= 1) with
        ``example, iteration, loss, success`` (that iteration's attack), ``broken``
        (sticky), ``correct_before``, ``n_evaluated``, ``flops_paper``, ``flops_real``
        (that example and iteration) and ``attack``."""
        import pandas as pd

        rows = []
        for r in self.records:
            for i, loss in enumerate(r.losses, start=1):
                rows.append(
                    {
                        "example": r.index,
                        "iteration": i,
                        "label": r.label,
                        "correct_before": r.correct_before,
                        "loss": loss,
                        "success": r.successes[i - 1],
                        "broken": r.broken_at(i),
                        "n_evaluated": r.n_evaluated[i - 1],
                        "flops_paper": r.flops_paper[i - 1],
                        "flops_real": r.flops_real[i - 1],
                        "attack": r.attacks[i - 1],
                    }
                )
        columns = ["example", "iteration", "label", "correct_before", "loss", "success", "broken",
                   "n_evaluated", "flops_paper", "flops_real", "attack"]
        return pd.DataFrame(rows, columns=columns)

    @classmethod
    def concat(cls, results: Sequence[AttackResult]) -> AttackResult:
        """Merge results of consecutive batches of one dataset (same attack, config and
        number of iterations); record indices are kept as they are."""
        if not results:
            raise ValueError("AttackResult.concat needs at least one result")
        first = results[0]
        if len(results) == 1:
            return first
        if any(r.iterations != first.iterations or r.attack != first.attack for r in results):
            raise ValueError("can only concatenate results of the same attack and number of iterations")
        records = [rec for r in results for rec in r.records]
        n = len(records)
        correct = [rec.correct_before for rec in records]
        return cls(
            attack=first.attack,
            config=first.config,
            records=records,
            asr=asr_curve(correct, [rec.first_success_iteration for rec in records], first.iterations),
            flops_per_iteration_paper=[sum(x) for x in zip(*(r.flops_per_iteration_paper for r in results))],
            flops_per_iteration_real=[sum(x) for x in zip(*(r.flops_per_iteration_real for r in results))],
            wall_seconds=sum(r.wall_seconds for r in results),
            n_examples=n,
            n_correct_before=sum(correct),
            clean_accuracy=sum(correct) / n,
            clean_flops_paper=sum(r.clean_flops_paper for r in results),
            clean_flops_real=sum(r.clean_flops_real for r in results),
            num_params=first.num_params,
        )


def _cumsum(xs: Sequence[int]) -> list[int]:
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out


__all__ = ["AttackResult", "ExampleRecord", "StepOutcome", "StepReport", "asr_curve"]
