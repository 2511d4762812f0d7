"""What every study shares: its config, the runs it reads, and the data it used.

A *study module* is what one notebook calls: its config class (the notebook's
``parameters`` cell, field for field, with the same defaults; a test holds the two
together) and the loop that does the work, resumable and recording into the run store.
Verb modules (:mod:`robustlib.finetune`, :mod:`robustlib.attacks`,
:mod:`robustlib.advtrain`) stay verbs: a config in, a result out, the caller owns the
model.

A study's run records every field of its config, plus ``inputs``: the earlier runs it
reads, found when the run is opened (the latest completed run of the upstream notebook
in the study named by a config field, or in the run's own study when that is empty) and
recorded as ``<study>/<run>``. The run is named from all of that, so the same settings
on the same inputs give the same run whether the runner, nbval or JupyterLab started
it. Downstream studies take what upstream runs recorded as outputs (:class:`DataSpec`,
model tables), never upstream's input parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from .. import record
from ..config import StrictConfig, is_int, is_number


@dataclass
class StudyConfig(StrictConfig):
    """Base of the notebooks' configs. Subclasses set :attr:`notebook` and :attr:`reads`."""

    _unknown_label = "parameter(s)"
    #: The notebook (stem) whose parameters cell this config mirrors.
    notebook: ClassVar[str] = ""
    #: Inputs read from earlier runs: ``name -> (field naming their study, notebook)``.
    reads: ClassVar[dict[str, tuple[str, str]]] = {}

    def resolve_inputs(self, study: str, store: record.RunStore | None = None) -> dict[str, str]:
        """The earlier runs this config reads, as ``{name: "<study>/<run>"}``."""
        store = store or record.RunStore()
        out = {}
        for name, (study_field, notebook) in self.reads.items():
            run = store.latest(getattr(self, study_field) or study, notebook)
            out[name] = f"{run.study}/{run.name}"
        return out

    def record(self, inputs: dict[str, str]) -> dict:
        """What a run of this config records as its parameters."""
        return {**self.to_dict(), **({"inputs": dict(inputs)} if inputs else {})}

    def open_run(self, study: str = "default", run_dir: str = "", store: record.RunStore | None = None
                 ) -> record.Run:
        """The run this config records into: the runner's (``run_dir``, whose recorded
        parameters must be these; the runner holds its lock) or the one named from them
        and their inputs in ``study`` of ``store`` (default:
        :func:`robustlib.paths.runs_dir`), whose lock this process then takes
        (:class:`robustlib.record.RunBusyError` when another process is executing it)."""
        if run_dir:
            return record.open_run(run_dir, notebook=self.notebook, params=self.to_dict())
        store = store or record.RunStore()
        run = store.create_run(study, self.record(self.resolve_inputs(study, store)), notebook=self.notebook)
        run.lock()  # held by this process until the run completes or fails
        return run

    # -- shared value checks
    def check_positive(self, *names: str, zero: bool = False) -> None:
        """Each field in ``names`` is a positive integer (or 0 when ``zero``)."""
        for name in names:
            value = getattr(self, name)
            if not is_int(value) or value < (0 if zero else 1):
                raise self.bad(name, value, "0 or a positive integer" if zero else "a positive integer")

    def check_fractions(self, name: str, zero: bool = True) -> None:
        """Field ``name`` is a non-empty list of numbers in [0, 1] (in (0, 1] when not ``zero``)."""
        values = getattr(self, name)
        if not values or not all(is_number(v) and (v >= 0 if zero else v > 0) and v <= 1 for v in values):
            raise self.bad(name, values, f"a non-empty list of numbers in {'[0' if zero else '(0'}, 1]")

    def check_fraction(self, name: str, low: float = 0.0, high: float = 1.0, open_high: bool = False) -> None:
        value = getattr(self, name)
        if not (low <= value < high if open_high else low <= value <= high):
            raise self.bad(name, value, f"a number in [{low:g}, {high:g}{')' if open_high else ']'}")


@dataclass(frozen=True)
class DataSpec:
    """The data a fine-tuning run used, as it recorded it (``artifacts/data.json``).

    ``source`` is a local file or folder, or None for the task's own source (the hub
    or the generator); ``seed`` drew the training and validation examples. Later studies
    load their examples through :meth:`examples`, so they read the same task, version
    and source the models were trained on.
    """

    task: str
    task_version: str
    source: str | None
    seed: int
    n_train: int
    n_val: int

    FILE: ClassVar[str] = "data.json"

    def examples(self, split: str, n: int | None = None, seed: int | None = None) -> list:
        """``n`` examples of ``split`` (default: as many as the fine-tuning used) drawn
        with ``seed`` (default: the fine-tuning's)."""
        from .. import tasks

        task = tasks.get_task(self.task)
        if task.version != self.task_version:
            raise ValueError(f"task {self.task!r} is version {task.version} now, but the fine-tuning run used "
                             f"version {self.task_version}; fine-tune again on this version")
        if n is None:
            n = self.n_train if split == "train" else self.n_val
        return tasks.load_examples(task, split, n=n, seed=self.seed if seed is None else seed, source=self.source)

    def save(self, run: record.Run) -> None:
        run.save_json(self.FILE, asdict(self))

    @classmethod
    def of_run(cls, run: record.Run) -> DataSpec:
        """The data spec a fine-tuning run recorded."""
        try:
            return cls(**run.load_json(cls.FILE))
        except FileNotFoundError:
            raise FileNotFoundError(f"run {run.study}/{run.name} recorded no {cls.FILE}: it is not a completed "
                                    "01_finetune run of this version of the lab; fine-tune again") from None
