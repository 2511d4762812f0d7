"""Running notebooks: validate parameters, execute with Papermill, store the result.

The notebook contract: exactly one cell tagged ``parameters``, made of flat annotated
assignments ``name: type = literal  # help``, after the imports. This module reads
that cell with :mod:`ast` (not by regular expression), so the declared type, default
and help of every parameter are known before any kernel starts.

For the lab's own notebooks the parameters are then built into the notebook's study
config (:mod:`robustlib.studies`), which checks every value, and the run records that
whole config and the earlier runs it reads, named from them: exactly what the notebook
records when nbval or JupyterLab runs it on the same settings. Other notebooks (your
own) are checked against the types their cell declares. Either way a bad name, type
or value is refused before any kernel starts, and the kernel is given every resolved
parameter, not only the overrides.

Params files (YAML, ``yaml.safe_load``) come in two shapes:

* flat: ``{name: value, ...}`` for one notebook;
* a pipeline: ``{"study": "demo", "notebooks": {"01_finetune": {...}, ...}}``, run in
  order into one study, then exported as one report (``run_pipeline``).
"""

from __future__ import annotations

import ast
import io
import logging
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml

from . import paths
from .config import UnknownNameError
from .record import Run, RunStore, check_name

log = logging.getLogger("robustlib.runner")

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type_name: str
    default: Any
    help: str

    def check(self, value: Any) -> Any:
        """Return ``value`` (tuples become lists, ints given for floats floats) or raise
        naming the parameter."""
        accepted = _TYPES.get(self.type_name)
        if accepted is None:
            return value  # an annotation we do not police (e.g. Optional[...])
        ok = isinstance(value, accepted)
        if self.type_name in ("int", "float") and isinstance(value, bool):
            ok = False  # True is an int to Python, not to a researcher
        if not ok:
            raise TypeError(
                f"parameter {self.name!r} expects {self.type_name}, got {type(value).__name__} {value!r}"
            )
        if self.type_name == "float":
            return float(value)  # 3 and 3.0 are one setting: the same recorded value, the same run
        return list(value) if isinstance(value, tuple) else value


def resolve_notebook(notebook: str | Path) -> Path:
    """A notebook by path, or by stem in ``notebooks/`` (``01_finetune``)."""
    path = Path(notebook)
    if path.suffix == ".ipynb" and path.exists():
        return path.resolve()
    candidate = paths.notebooks_dir() / f"{Path(notebook).stem}.ipynb"
    if candidate.exists():
        return candidate
    available = sorted(p.stem for p in paths.notebooks_dir().glob("*.ipynb"))
    raise UnknownNameError(f"unknown notebook {str(notebook)!r}; available: {available}")


def _comments(source: str) -> dict[int, str]:
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def notebook_parameters(notebook: str | Path) -> dict[str, ParamSpec]:
    """The parameters a notebook declares, in order."""
    path = resolve_notebook(notebook)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook  # noqa: BLE001
        raise ValueError(f"{path.name} is not a readable notebook: {' '.join(str(err).split())[:200]}") from None
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name} has {len(cells)} cells tagged 'parameters'; the contract wants exactly 1")
    source = cells[0].source
    comments = _comments(source)
    specs: dict[str, ParamSpec] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None):
            raise ValueError(
                f"{path.name}: parameters cell line {node.lineno} is not 'name: type = literal'"
            )
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{path.name}: parameters cell line {node.lineno}: the default of "
                             f"{node.target.id!r} must be a literal (a number, string, list, ...)") from None
        specs[node.target.id] = ParamSpec(
            name=node.target.id, type_name=ast.unparse(node.annotation), default=default,
            help=comments.get(node.lineno, ""),
        )
    return specs


#: Parameters the runner sets itself (every lab notebook declares them).
RUNNER_PARAMETERS = ("study", "run_dir")


def validate_parameters(notebook: str | Path, params: dict | None) -> dict:
    """Check ``params`` against the notebook's declaration; return every resolved
    parameter (its defaults with ``params`` on top), without ``study`` and ``run_dir``.

    Raises ``ValueError`` for unknown names (listing the accepted ones) or for setting
    ``study``/``run_dir`` (the runner's), ``TypeError`` for a value of the wrong type;
    for a lab notebook, whatever its study config raises for a bad value.
    """
    from .studies import config_class

    path = resolve_notebook(notebook)
    specs = notebook_parameters(path)
    params = dict(params or {})
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {path.stem}; accepted: {list(specs)}")
    reserved = sorted(set(params) & set(RUNNER_PARAMETERS))
    if reserved:
        raise ValueError(f"{reserved} are set by the runner (use --study); not a parameter of {path.stem}")
    values = {k: spec.default for k, spec in specs.items() if k not in RUNNER_PARAMETERS}
    cls = config_class(path.stem)
    if cls is None:
        values.update({k: specs[k].check(v) for k, v in params.items()})
        return values
    # A lab notebook's config checks types and values itself (it also takes a bare
    # attack name where its cell declares a mapping).
    return cls.from_dict({**values, **params}).to_dict()


#: The most values a parameter file (or one ``-p`` value) may expand to, aliases
#: expanded: YAML aliases let a few hundred bytes stand for gigabytes.
MAX_YAML_VALUES = 100_000
#: The largest parameter file read, in bytes.
MAX_YAML_BYTES = 1_000_000


def parse_yaml(text: str, where: str):
    """``yaml.safe_load`` of ``text`` (no Python tags), refused when it would expand to
    more than :data:`MAX_YAML_VALUES` values or refers to itself. ``where`` names the
    source in errors; YAML syntax errors propagate as ``yaml.YAMLError``."""
    value = yaml.safe_load(text)
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def count(obj) -> int:  # values as if every alias were written out, shared ones counted once each use
        if not isinstance(obj, (dict, list)):
            return 1
        key = id(obj)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise ValueError(f"{where}: a YAML alias refers to itself; accepted: plain values, lists and mappings")
        visiting.add(key)
        children = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
        total = 1
        for child in children:
            total += count(child)
            if total > MAX_YAML_VALUES:
                raise ValueError(f"{where} expands to more than {MAX_YAML_VALUES:,} values (YAML aliases); "
                                 "accepted: a parameter set written out")
        visiting.discard(key)
        sizes[key] = total
        return total

    count(value)
    return value


def load_params(path_or_name: str | Path) -> dict:
    """Load a params YAML (``params/<name>.yaml`` when given a bare name)."""
    path = Path(path_or_name)
    if not path.exists() and path.suffix == "" and (paths.params_dir() / f"{path}.yaml").exists():
        path = paths.params_dir() / f"{path}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in paths.params_dir().glob("*.yaml"))
        raise FileNotFoundError(f"no params file {str(path_or_name)!r}; built-in sets: {available}")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes; a params file may hold {MAX_YAML_BYTES:,}")
    data = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a params file must be a mapping, got {type(data).__name__}")
    return data


def recorded_parameters(notebook: str | Path, params: dict | None, study: str,
                        inputs: dict[str, str] | None = None) -> dict:
    """What a run of ``notebook`` with ``params`` in ``study`` records (and is named
    from): every resolved parameter and, for a lab notebook, the earlier runs it reads:
    ``inputs`` (``{name: "<study>/<run>"}``, as a sweep passes them) or, when None, the
    latest completed ones its config finds (``LookupError`` when there are none)."""
    return _resolve(resolve_notebook(notebook), params, study, inputs)[1]


def _resolve(path: Path, params: dict | None, study: str, inputs: dict[str, str] | None) -> tuple[dict, dict]:
    """``(resolved, recorded)`` parameters of a run of the notebook at ``path``."""
    from .studies import config_class

    resolved = validate_parameters(path, params)
    cls = config_class(path.stem)
    if cls is None:
        if inputs:
            raise ValueError(f"{path.stem} is not a lab notebook: it reads no earlier runs, so it takes no inputs")
        return resolved, resolved
    cfg = cls.from_dict(resolved)
    if inputs is not None and set(inputs) != set(cls.reads):
        raise ValueError(f"{path.stem} reads inputs {sorted(cls.reads)}; given {sorted(inputs)}")
    return resolved, cfg.record(cfg.resolve_inputs(study) if inputs is None else inputs)


def planned_run(notebook: str | Path, params: dict | None, study: str = "default",
                inputs: dict[str, str] | None = None, store: RunStore | None = None) -> Run:
    """The run :func:`run_notebook` would record into (it may not exist yet)."""
    check_name("study", study)
    store = store or RunStore()
    recorded = recorded_parameters(notebook, params, study, inputs)
    return Run(store.root / study / store.run_name(recorded, resolve_notebook(notebook).stem))


def run_notebook(
    notebook: str | Path,
    params: dict | None = None,
    study: str = "default",
    name: str | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
    inputs: dict[str, str] | None = None,
) -> Run:
    """Validate, execute with Papermill into a run of ``study``, and store the result.

    The run records every resolved parameter and, for a lab notebook, the earlier runs
    its study reads (``inputs``), and is named from them; the kernel gets the same
    parameters plus ``study`` and ``run_dir``, so the notebook records into this run.
    The run's folder gets the executed notebook (``notebook.ipynb``). A failing notebook
    marks a run that never completed failed and keeps its partly executed notebook; a
    completed run that is run again and fails stays completed with its notebook, the
    failed attempt kept as ``notebook.failed.ipynb``. Raises ``RuntimeError`` either
    way, and :class:`robustlib.record.RunBusyError` when another process is executing
    the run. ``inputs`` names the earlier runs a lab notebook reads (``{name:
    "<study>/<run>"}``); None finds the latest completed ones.
    """
    import papermill

    path = resolve_notebook(notebook)
    check_name("study", study)
    resolved, recorded = _resolve(path, params, study, inputs)  # before any kernel starts
    run = RunStore().create_run(study, recorded, name=name, notebook=path.stem)
    run.lock()  # one process executes a run at a time; RunBusyError names the holder
    # Executed into a temporary file, put in place once it ran through: a rerun that is
    # killed or fails leaves the run's last good notebook (and a completed run completed).
    out, partial = run.path / "notebook.ipynb", run.path / ".notebook.running.ipynb"
    log.info("running %s into %s", path.name, run.path)
    try:
        papermill.execute_notebook(
            str(path), str(partial), parameters={**resolved, "study": study, "run_dir": str(run.path)},
            kernel_name=kernel_name, cwd=str(run.path), progress_bar=progress, report_mode=False,
        )
    except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
        if partial.exists():
            partial.replace(run.path / "notebook.failed.ipynb" if run.completed else out)
        run.mark_failed(err, cell=getattr(err, "exec_count", None))
        raise RuntimeError(f"{path.name} failed in run {run.path}: {err}") from err
    except BaseException:
        run.unlock()
        raise
    partial.replace(out)
    run.mark_completed()  # notebooks normally mark themselves; this also drops the lock
    return run


def run_pipeline(params_file: str | Path, progress: bool = True, report: bool = True) -> list[Run]:
    """Run every notebook of a pipeline params file in order, then export the report."""
    data = load_params(params_file)
    if "notebooks" not in data or not isinstance(data["notebooks"], dict):
        raise ValueError(f"{params_file}: a pipeline file needs a 'notebooks' mapping (notebook -> params)")
    extra = sorted(set(data) - {"study", "notebooks"})
    if extra:
        raise ValueError(f"{params_file}: unknown top-level key(s) {extra}; accepted: ['study', 'notebooks'] "
                         "(a study file with a 'grid' runs with `python -m robustlib sweep`)")
    study = check_name("study", data.get("study", "default"))
    # Validate everything first: a typo in the last notebook must not cost the first's compute.
    for nb, params in data["notebooks"].items():
        validate_parameters(nb, params or {})
    runs = [run_notebook(nb, params or {}, study=study, progress=progress) for nb, params in data["notebooks"].items()]
    if report:
        from .report import export_study

        export_study(study)
    return runs
