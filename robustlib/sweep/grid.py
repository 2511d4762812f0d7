"""Study files as grids: the axes, the per-notebook settings, and the jobs they expand to.

A study file is a pipeline file (``study``, ``notebooks``) with an optional ``grid``::

    study: scaling
    grid:                      # every key optional; a pipeline file is a one-cell grid
      task: [password_match, spam]           # cells: task x family
      family: pythia                         # or a list; sizes may then map family -> sizes
      sizes: [pythia-14m, pythia-31m]
      seeds: [0, 1, 2]
      seeds_by_size: {pythia-31m: [0]}       # fewer seeds for the sizes named
      attacks: [{name: gcg, iterations: 10}, {name: random_token, iterations: 1280}]
      positions: [1.0, 0.0]                  # where 02_attack puts them
    notebooks:
      01_finetune: {n_train: 20000}          # settings every cell shares
      02_attack: {n_examples: 200}
      03_adversarial_training: {sizes: [pythia-14m], cells: {task: [spam]}}
      04_offense_defense: {}

Without a ``grid`` key an axis comes from the notebook setting of the same meaning
(01's ``task``, ``family``, ``sizes``, ``seeds``, ``seeds_by_size``; 02's ``attack``
and ``position``); with it, that setting belongs to the grid alone (one place for each
setting). A notebook section may hold two keys the sweep reads itself: ``cells``
(``{task: [...], family: [...]}``: the cells it runs on) and ``resources`` (``{cpus:
n, gpus: n}`` per job, for the backends).

The jobs (:class:`Job`): per cell, one ``01_finetune`` per (size, seed), one
``02_attack`` per (size, seed, attack, position), one ``03_adversarial_training`` per
selected (size, seed); after the models of a stage, a *merge* job gathers their runs
into the run the one-cell pipeline would have made (all sizes and seeds; its notebook
then renders the grid's charts without recomputing a model); ``04_offense_defense``
per (cell, attack, position) on the merged runs; ``06_explore`` per cell; every other
notebook once (a user's own notebook after everything listed before it). A file
without ``01_finetune`` runs its notebooks once each, in order, as a pipeline.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from ..config import is_int, is_number
from ..record import check_name

FINETUNE, ATTACK, DEFEND, ANALYSE, EXPLORE = (
    "01_finetune", "02_attack", "03_adversarial_training", "04_offense_defense", "06_explore")
#: Notebooks run once per model (per size x seed of a cell), then merged per cell.
MODEL_STAGES = (FINETUNE, ATTACK, DEFEND)
#: Notebooks run once per cell, on its merged runs.
CELL_STAGES = (ANALYSE, EXPLORE)
#: Grid keys and the notebook setting each one replaces.
GRID_KEYS = {"task": (FINETUNE, "task"), "family": (FINETUNE, "family"), "sizes": (FINETUNE, "sizes"),
             "seeds": (FINETUNE, "seeds"), "seeds_by_size": (FINETUNE, "seeds_by_size"),
             "attacks": (ATTACK, "attack"), "positions": (ATTACK, "position")}
#: Keys of a notebook section that the sweep reads itself (not notebook parameters).
SWEEP_KEYS = ("cells", "resources")
#: Settings a sweep sets itself (the runs each job reads), by notebook.
SWEEP_OWNS = {ATTACK: ("finetune_study",), DEFEND: ("finetune_study",), ANALYSE: ("attack_study", "defense_study")}
RESOURCE_KEYS = ("cpus", "gpus")


@dataclass(frozen=True)
class Cell:
    """One (task, family) of a grid and the models it fine-tunes."""

    task: str
    family: str
    sizes: tuple
    seeds: tuple
    seeds_by_size: tuple  # ((size, (seeds...)), ...): hashable
    study: str  # where its merged runs go; its per-model runs go to ``<study>.models``

    @property
    def label(self) -> str:
        return f"{self.task}/{self.family}"

    def seeds_of(self, size: str) -> tuple:
        return dict(self.seeds_by_size).get(size, self.seeds)

    @property
    def models(self) -> list[tuple[str, int]]:
        return [(size, seed) for size in self.sizes for seed in self.seeds_of(size)]

    @property
    def models_study(self) -> str:
        return f"{self.study}.models"


@dataclass
class Job:
    """One notebook run of a sweep.

    ``inputs`` maps the notebook's input names to the keys of the jobs whose runs it
    reads (None: the notebook finds them itself, the latest in its study); ``deps`` are
    the keys it waits for (its inputs, and for a merge the model jobs it gathers,
    ``merges``). ``size``/``seed`` label a per-model job, ``attack`` a 02/04 job's
    attack label and position.
    """

    key: str
    notebook: str
    kind: str  # "model", "merge", "cell" or "single"
    study: str
    params: dict
    inputs: dict | None = None
    deps: tuple = ()
    merges: tuple = ()
    cell: Cell | None = None
    size: str | None = None
    seed: int | None = None
    attack: str | None = None
    resources: dict = field(default_factory=dict)


def _as_list(value, name: str, where: str) -> list:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list) and value:
        return list(value)
    raise ValueError(f"{where}: grid key {name!r} is {value!r}; accepted: a value or a non-empty list")


def _distinct(values: list, name: str, where: str) -> list:
    if len({repr(v) for v in values}) != len(values):
        raise ValueError(f"{where}: grid key {name!r} lists {values!r} with duplicates; accepted: distinct values")
    return values


class StudyFile:
    """A parsed study file: its study name, grid axes and notebook sections.

    Raises ``ValueError`` naming the key and what is accepted for a bad grid (unknown
    key, an axis that is not a list, a setting given both in the grid and in its
    notebook's section, a ``cells`` restriction naming no cell, ...)."""

    def __init__(self, data: dict, where: str = "study file"):
        from .. import runner

        self.where = where
        extra = sorted(set(data) - {"study", "notebooks", "grid"})
        if extra:
            raise ValueError(f"{where}: unknown top-level key(s) {extra}; accepted: ['grid', 'notebooks', 'study']")
        self.study = check_name("study", data.get("study", "default"))
        notebooks = data.get("notebooks")
        if not isinstance(notebooks, dict) or not notebooks:
            raise ValueError(f"{where}: a study file needs a non-empty 'notebooks' mapping (notebook -> settings)")
        self.sections: dict[str, dict] = {}
        self.cells_filter: dict[str, dict] = {}
        self.resources: dict[str, dict] = {}
        for nb, section in notebooks.items():
            stem = runner.resolve_notebook(nb).stem  # unknown notebook: names the available ones
            section = dict(section or {})
            if not isinstance(section, dict):
                raise ValueError(f"{where}: notebooks.{nb} must be a mapping of settings")
            self.cells_filter[stem] = self._cells(stem, section.pop("cells", None))
            self.resources[stem] = self._resources(stem, section.pop("resources", None))
            owned = sorted(set(section) & set(SWEEP_OWNS.get(stem, ())))
            if owned and FINETUNE in [runner.resolve_notebook(n).stem for n in notebooks]:
                raise ValueError(f"{where}: notebooks.{stem} sets {owned}, which the sweep sets itself (each job "
                                 "reads the runs of this study file's own jobs); remove them")
            self.sections[stem] = section
        grid = data.get("grid") or {}
        if not isinstance(grid, dict):
            raise ValueError(f"{where}: 'grid' must be a mapping of axes; accepted keys: {sorted(GRID_KEYS)}")
        unknown = sorted(set(grid) - set(GRID_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown grid key(s) {unknown}; accepted: {sorted(GRID_KEYS)}")
        for key in grid:
            nb, setting = GRID_KEYS[key]
            if setting in self.sections.get(nb, {}):
                raise ValueError(f"{where}: {setting!r} is set both in grid.{key} and in notebooks.{nb}; "
                                 "set it in one place (the grid)")
        self.grid = grid
        self.cells = self._expand_cells()
        for stem, wanted in self.cells_filter.items():
            if wanted and not any(self.runs_on(stem, c) for c in self.cells):
                raise ValueError(f"{where}: notebooks.{stem}.cells {wanted} matches no cell of the grid; "
                                 f"cells: {[c.label for c in self.cells]}")

    # -- sections
    def _cells(self, stem: str, value) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not set(value) <= {"task", "family"} or not value:
            raise ValueError(f"{self.where}: notebooks.{stem}.cells is {value!r}; accepted: a mapping with "
                             "'task' and/or 'family' lists")
        return {k: _as_list(v, f"cells.{k}", self.where) for k, v in value.items()}

    def _resources(self, stem: str, value) -> dict:
        if value is None:
            return {}
        ok = isinstance(value, dict) and set(value) <= set(RESOURCE_KEYS) and all(
            is_number(v) and v >= 0 for v in value.values())
        if not ok:
            raise ValueError(f"{self.where}: notebooks.{stem}.resources is {value!r}; accepted: a mapping of "
                             f"{list(RESOURCE_KEYS)} to numbers >= 0")
        return dict(value)

    def runs_on(self, stem: str, cell: Cell) -> bool:
        wanted = self.cells_filter.get(stem) or {}
        return all(getattr(cell, k) in v for k, v in wanted.items())

    def setting(self, nb: str, name: str):
        """A setting of notebook ``nb``: its grid key's value, else its section's, else
        the notebook's default."""
        from .. import runner

        for key, (grid_nb, setting) in GRID_KEYS.items():
            if grid_nb == nb and setting == name and key in self.grid:
                return self.grid[key]
        if name in self.sections.get(nb, {}):
            return self.sections[nb][name]
        return runner.notebook_parameters(nb)[name].default

    # -- cells
    def _expand_cells(self) -> list[Cell]:
        where = self.where
        if FINETUNE not in self.sections:
            return []
        tasks = _distinct(_as_list(self.setting(FINETUNE, "task"), "task", where), "task", where)
        families = _distinct(_as_list(self.setting(FINETUNE, "family"), "family", where), "family", where)
        sizes = self.setting(FINETUNE, "sizes")
        if isinstance(sizes, dict):
            if sorted(sizes) != sorted(families):
                raise ValueError(f"{where}: grid.sizes maps families {sorted(sizes)}; the grid's families are "
                                 f"{sorted(families)}: accepted, one entry per family")
            by_family = {f: _distinct(_as_list(s, "sizes", where), "sizes", where) for f, s in sizes.items()}
        else:
            if len(families) > 1:
                raise ValueError(f"{where}: grid.sizes is a list but the grid has families {families}; accepted: "
                                 "a mapping of each family to its sizes")
            by_family = {families[0]: _distinct(_as_list(sizes, "sizes", where), "sizes", where)}
        seeds = self.setting(FINETUNE, "seeds")
        if not isinstance(seeds, list) or not seeds or not all(is_int(s) for s in seeds):
            raise ValueError(f"{where}: seeds is {seeds!r}; accepted: a non-empty list of integers")
        seeds = _distinct(seeds, "seeds", where)
        by_size = self.setting(FINETUNE, "seeds_by_size") or {}
        if not isinstance(by_size, dict):
            raise ValueError(f"{where}: seeds_by_size is {by_size!r}; accepted: a mapping of sizes to seed lists")
        every = {s for sz in by_family.values() for s in sz}
        stray = sorted(set(by_size) - every)
        if stray:
            raise ValueError(f"{where}: seeds_by_size names {stray}, which are not among the sizes; accepted: "
                             f"{sorted(every)}")
        cells = []
        one = len(tasks) * len(families) == 1
        for task, family in itertools.product(tasks, families):
            fam_sizes = tuple(by_family[family])
            own = tuple((s, tuple(by_size[s])) for s in fam_sizes if s in by_size)
            study = self.study if one else check_name("study", _safe(f"{self.study}-{task}-{family}"))
            cells.append(Cell(str(task), str(family), fam_sizes, tuple(seeds), own, study))
        return cells


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def load(path: str | Path) -> StudyFile:
    """A study file by path, or by name in ``params/``."""
    from .. import runner

    return StudyFile(runner.load_params(path), where=str(path))
