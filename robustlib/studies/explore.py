"""Study of ``notebooks/06_explore.ipynb``: the explorers' settings, checked before a
kernel starts, and the runs they read.

The explorers (:mod:`robustlib.explore.widgets`) read a study's latest completed
``01_finetune`` run (required: its models and examples) and, where there are some, its
``02_attack`` and ``03_adversarial_training`` runs; the paper's released tables feed the
browser and the what-if when ``results_dir`` (or ``ROBUSTLIB_PAPER_RESULTS``) names them.
A run of 06 records these settings and those runs; it computes nothing of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import paths, record
from .base import StudyConfig

#: What the explorers read from the study, by notebook; the first is required.
READS = ("01_finetune", "02_attack", "03_adversarial_training")


@dataclass
class ExploreConfig(StudyConfig):
    """The parameters of ``06_explore``."""

    notebook = "06_explore"

    results_dir: str = ""
    n_examples: int = 16
    iterations: int = 20

    def validate(self) -> None:
        self.check_positive("n_examples", "iterations")
        if self.results_dir:
            from ..analysis.released import csv_files

            csv_files(self.results_dir)  # missing: FileNotFoundError; no CSVs: ValueError

    def release(self) -> str:
        """The folder of the paper's released tables, '' when there is none."""
        if self.results_dir:
            return str(Path(self.results_dir).expanduser().resolve())
        found = paths.paper_results_dir()
        return str(found) if found else ""

    def resolve_inputs(self, study: str, store: record.RunStore | None = None) -> dict[str, str]:
        """The study's latest completed runs the explorers read (``01_finetune`` must
        exist: ``LookupError`` naming the study otherwise), and the released tables."""
        store = store or record.RunStore()
        out = {}
        for i, notebook in enumerate(READS):
            try:
                run = store.latest(study, notebook)
            except LookupError:
                if i == 0:
                    raise
                continue
            out[notebook] = f"{run.study}/{run.name}"
        if self.release():
            out["results"] = self.release()
        return out
