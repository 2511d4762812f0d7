"""Analysis: one tidy schema for attack results, curves, interpolation and regressions.

Five modules, one concept each:

* :mod:`~robustlib.analysis.tidy`: the tidy attack table (:data:`COLUMNS`), the lab's
  tables in it (:func:`from_lab`), ASR at a budget, before/after adversarial training,
  interpolated compute to reach an ASR;
* :mod:`~robustlib.analysis.released`: the paper's released CSVs in the same schema
  (:func:`load_paper_results`, :func:`load_paper_training`);
* :mod:`~robustlib.analysis.restarts`: which training rows of restarted runs are
  glitches (:func:`restart_glitches`);
* :mod:`~robustlib.analysis.fits`: attack scaling, robustness vs size and offense vs
  defense regressions;
* :mod:`~robustlib.analysis.generative`: judged ASR and refusal rates with Wilson
  intervals (the generative setting).

Everything is importable from here (``analysis.offense_defense(...)``).
"""

from .fits import (
    DEFENSE,
    FIT_COLUMNS,
    NotEnoughSignal,
    attack_scaling,
    attack_scaling_pooled,
    offense_defense,
    robustness_vs_size,
    summarize_fit,
)
from .generative import judged_at_budget, wilson, with_intervals
from .released import load_paper_results, load_paper_training
from .restarts import restart_glitches
from .tidy import (
    COLUMNS,
    CONVENTIONS,
    FLOPS_TO_REACH,
    TRAINING_COLUMNS,
    asr_at_budget,
    before_after,
    compute_to_reach,
    describe_sources,
    from_lab,
    interpolate_crossing,
    laplace_logit10,
    require_columns,
    with_logit,
)

__all__ = [
    "COLUMNS", "CONVENTIONS", "DEFENSE", "FIT_COLUMNS", "FLOPS_TO_REACH", "TRAINING_COLUMNS", "NotEnoughSignal",
    "asr_at_budget", "attack_scaling", "attack_scaling_pooled", "before_after", "compute_to_reach",
    "describe_sources", "from_lab", "interpolate_crossing", "laplace_logit10", "load_paper_results",
    "load_paper_training", "offense_defense", "require_columns", "restart_glitches", "robustness_vs_size",
    "judged_at_budget", "summarize_fit", "wilson", "with_intervals", "with_logit",
]
