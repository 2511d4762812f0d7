"""Studies: one module per notebook, the work its notebook calls.

=========================  ================================  ===========================
notebook                   config                            module
=========================  ================================  ===========================
``01_finetune``            :class:`FinetuneStudyConfig`      :mod:`.finetune`
``02_attack``              :class:`AttackStudyConfig`        :mod:`.attack`
``03_adversarial_training`` :class:`AdvTrainStudyConfig`     :mod:`.advtrain`
``04_offense_defense``     :class:`OffenseDefenseConfig`     :mod:`.offense_defense`
``05_paper_results``       :class:`PaperResultsConfig`       :mod:`.paper_results`
=========================  ================================  ===========================

Each config mirrors its notebook's ``parameters`` cell (same names, types and
defaults); :func:`config_class` finds it by notebook name, which is how the runner
validates a whole config before a kernel starts. See :mod:`.base` for what every
study records.
"""

from __future__ import annotations

from .advtrain import AdvTrainStudyConfig
from .attack import AttackStudyConfig
from .base import DataSpec, StudyConfig
from .finetune import FinetuneStudyConfig
from .offense_defense import OffenseDefenseConfig
from .paper_results import PaperResultsConfig

#: Study configs by notebook name.
CONFIGS: dict[str, type[StudyConfig]] = {
    cls.notebook: cls for cls in (FinetuneStudyConfig, AttackStudyConfig, AdvTrainStudyConfig,
                                  OffenseDefenseConfig, PaperResultsConfig)
}


def config_class(notebook: str) -> type[StudyConfig] | None:
    """The config of the lab notebook called ``notebook`` (a stem), or None for another
    notebook (a user's own, or a test fixture), whose parameters the runner checks by
    the types its ``parameters`` cell declares."""
    return CONFIGS.get(notebook)


__all__ = ["CONFIGS", "AdvTrainStudyConfig", "AttackStudyConfig", "DataSpec", "FinetuneStudyConfig",
           "OffenseDefenseConfig", "PaperResultsConfig", "StudyConfig", "config_class"]
