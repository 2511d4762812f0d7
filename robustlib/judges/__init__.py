"""Judges: what scores a generated response in the generative setting (StrongREJECT).

* :mod:`~robustlib.judges.base`: :class:`Verdict`, :class:`Judge`, the registry
  (:data:`JUDGES`, :func:`register_judge`, :func:`get_judge`);
* :mod:`~robustlib.judges.refusal`: ``refusal``, an offline refusal-phrase detector;
* :mod:`~robustlib.judges.rubric`: the StrongREJECT rubric (prompt, parsing, score);
* :mod:`~robustlib.judges.endpoint`: ``strongreject``, the rubric asked of an
  OpenAI-compatible chat endpoint (retried, rate-limited, cached on disk);
* :mod:`~robustlib.judges.local`: ``local``, the rubric asked of a local causal LM.
"""

from . import endpoint, local, refusal  # noqa: F401  (registers the judges)
from .base import JUDGES, Judge, Verdict, get_judge, judge_class, register_judge

__all__ = ["JUDGES", "Judge", "Verdict", "get_judge", "judge_class", "register_judge"]
