"""Studies: one module per notebook, the work its notebook calls.

=========================  ================================  ===========================
notebook                   config                            module
=========================  ================================  ===========================
``01_finetune``            :class:`FinetuneStudyConfig`      :mod:`.finetune`
``02_attack``              :class:`AttackStudyConfig`        :mod:`.attack`
``03_adversarial_training`` :class:`AdvTrainStudyConfig`     :mod:`.advtrain`
``04_offense_defense``     :class:`OffenseDefenseConfig`     :mod:`.offense_defense`
``05_paper_results``       :class:`PaperResultsConfig`       :mod:`.paper_results`
``06_explore``             :class:`ExploreConfig`            :mod:`.explore`
``07_generative``          :class:`GenerativeConfig`         :mod:`.generative`
=========================  ================================  ===========================

Each config mirrors its notebook's ``parameters`` cell (same names, types and
defaults); :func:`config_class` finds it by notebook name, which is how the runner
validates a whole config before a kernel starts. See :mod:`.base` for what every
study records.
"""

from __future__ import annotations

import logging

from . import advtrain, attack, finetune, generative, offense_defense, paper_results
from .advtrain import AdvTrainStudyConfig
from .attack import AttackStudyConfig
from .base import DataSpec, StudyConfig
from .explore import ExploreConfig
from .finetune import FinetuneStudyConfig
from .generative import GenerativeConfig
from .offense_defense import OffenseDefenseConfig
from .paper_results import PaperResultsConfig

log = logging.getLogger("robustlib.studies")

#: Study configs by notebook name.
CONFIGS: dict[str, type[StudyConfig]] = {
    cls.notebook: cls for cls in (FinetuneStudyConfig, AttackStudyConfig, AdvTrainStudyConfig,
                                  OffenseDefenseConfig, PaperResultsConfig, ExploreConfig, GenerativeConfig)
}


#: Study modules by notebook name (each has ``summary(metrics) -> str``).
MODULES = {cls.notebook: module for cls, module in (
    (FinetuneStudyConfig, finetune), (AttackStudyConfig, attack), (AdvTrainStudyConfig, advtrain),
    (OffenseDefenseConfig, offense_defense), (PaperResultsConfig, paper_results),
    (GenerativeConfig, generative))}


def summarize(notebook: str, metrics: dict) -> str:
    """A completed run's findings in words, from the metrics it recorded ('' for a
    notebook without a study, or metrics of an older version of the lab)."""
    module = MODULES.get(notebook)
    if module is None or not metrics:
        return ""
    try:
        return module.summary(metrics)
    except (KeyError, TypeError, ValueError) as err:
        log.warning("cannot summarize the %s run's metrics: %s", notebook, err)
        return ""


def config_class(notebook: str) -> type[StudyConfig] | None:
    """The config of the lab notebook called ``notebook`` (a stem), or None for another
    notebook (a user's own, or a test fixture), whose parameters the runner checks by
    the types its ``parameters`` cell declares."""
    return CONFIGS.get(notebook)


__all__ = ["CONFIGS", "MODULES", "AdvTrainStudyConfig", "AttackStudyConfig", "DataSpec", "ExploreConfig",
           "FinetuneStudyConfig", "GenerativeConfig", "OffenseDefenseConfig", "PaperResultsConfig", "StudyConfig",
           "config_class", "summarize"]
