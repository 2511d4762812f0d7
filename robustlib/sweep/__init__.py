"""Sweeps: a study file expanded into notebook runs over a grid, run in dependency order
on a local process pool or a Ray cluster, resumable, failures isolated.

============================  ===================================================
module                        concept
============================  ===================================================
:mod:`.grid`                  the study file: axes, per-notebook settings, cells
:mod:`.jobs`                  the jobs a study file expands to, and their checks
:mod:`.schedule`              job states from the run store; the run loop; progress
:mod:`.backends`              local process pool, Ray tasks
:mod:`.worker`                what runs one job in a backend's process
:mod:`.merge`                 per-model runs gathered into the cell's run
:mod:`.estimate`              FLOPs, GPU-hours and disk, before anything runs
============================  ===================================================

``python -m robustlib sweep STUDY.yaml`` is :func:`run_sweep`; ``--status``,
``--retry-failed`` and ``--dry-run`` are :meth:`Sweep.status`, ``run_sweep(retry_failed=True)``
and :func:`.estimate.table`.
"""

from __future__ import annotations

from pathlib import Path

from ..record import RunStore
from .grid import Cell, Job, StudyFile
from .jobs import expand, validate
from .schedule import Outcome, Sweep


def plan(study_file: str | Path | dict, store: RunStore | None = None, check: bool = True) -> Sweep:
    """The study file's sweep: every job expanded and (``check``) validated, nothing run."""
    from .. import runner

    if isinstance(study_file, dict):
        sf = StudyFile(study_file)
    else:
        sf = StudyFile(runner.load_params(study_file), where=str(study_file))
    jobs = expand(sf)
    if check:
        validate(jobs, sf.where)
    sweep = Sweep(jobs, store)
    sweep.study_file = sf
    return sweep


def estimates(sweep: Sweep) -> dict[str, float]:
    """Estimated paper-convention FLOPs per job key (for the progress bars' ETA)."""
    from .estimate import per_job

    return {key: est.flops for key, est in per_job(sweep.jobs).items()}


def run_sweep(study_file, backend: str = "local", workers: int | None = None, address: str | None = None,
          cpus: float = 1, gpus: float = 0, retry_failed: bool = False, progress: bool = True,
          report: bool = True, store: RunStore | None = None) -> Outcome:
    """Validate every job of ``study_file``, run what is missing on ``backend``, then
    (``report``, when every job is done) export the study's report."""
    from .backends import make_backend

    planned = plan(study_file, store)
    planned.estimates = estimates(planned)
    engine = make_backend(backend, workers=workers, address=address, cpus=cpus, gpus=gpus)
    try:
        outcome = planned.run(engine, retry_failed=retry_failed, progress=progress)
    finally:
        engine.close()
    if report and outcome.ok and all(s == "done" for s in planned.states().values()):
        from ..report import export_sweep

        outcome.report = export_sweep(planned)
    return outcome


__all__ = ["Cell", "Job", "Outcome", "StudyFile", "Sweep", "estimates", "expand", "plan", "run_sweep", "validate"]
