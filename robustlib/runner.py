"""Running notebooks: validate parameters, execute with Papermill, store the result.

The notebook contract (DESIGN.md): exactly one cell tagged ``parameters``, made of
flat annotated assignments ``name: type = literal  # help``. This module reads that
cell with :mod:`ast` (not by regular expression), so the declared type, default and
help of every parameter are known before any kernel starts; unknown names and wrong
types are rejected there, before any compute.

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
from .record import Run, RunStore, atomic_write, check_name

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
        """Return ``value`` (tuples become lists) or raise naming the parameter."""
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
    raise FileNotFoundError(f"unknown notebook {str(notebook)!r}; available: {available}")


def _comments(source: str) -> dict[int, str]:
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def notebook_parameters(notebook: str | Path) -> dict[str, ParamSpec]:
    """The parameters a notebook declares, in order."""
    path = resolve_notebook(notebook)
    nb = nbformat.read(path, as_version=4)
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
        specs[node.target.id] = ParamSpec(
            name=node.target.id,
            type_name=ast.unparse(node.annotation),
            default=ast.literal_eval(node.value),
            help=comments.get(node.lineno, ""),
        )
    return specs


def validate_parameters(notebook: str | Path, params: dict | None) -> dict:
    """Check ``params`` against the notebook's declaration; return them normalised.

    Raises ``ValueError`` for unknown names (listing the accepted ones) and
    ``TypeError`` for a value of the wrong type.
    """
    specs = notebook_parameters(notebook)
    params = dict(params or {})
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for {resolve_notebook(notebook).stem}; accepted: {list(specs)}"
        )
    return {k: specs[k].check(v) for k, v in params.items()}


def load_params(path_or_name: str | Path) -> dict:
    """Load a params YAML (``params/<name>.yaml`` when given a bare name)."""
    path = Path(path_or_name)
    if not path.exists() and path.suffix == "" and (paths.params_dir() / f"{path}.yaml").exists():
        path = paths.params_dir() / f"{path}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in paths.params_dir().glob("*.yaml"))
        raise FileNotFoundError(f"no params file {str(path_or_name)!r}; built-in sets: {available}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a params file must be a mapping, got {type(data).__name__}")
    return data


def run_notebook(
    notebook: str | Path,
    params: dict | None = None,
    study: str = "default",
    name: str | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
) -> Run:
    """Validate, execute with Papermill into a run of ``study``, and store the result.

    The run's folder gets the executed notebook (``notebook.ipynb``). Notebooks that
    declare ``study`` / ``run_dir`` parameters receive the study and the run folder,
    so they record into the run made here. A failing notebook marks the run failed,
    keeps the partly executed notebook, and raises ``RuntimeError``.
    """
    import papermill

    path = resolve_notebook(notebook)
    check_name("study", study)
    params = validate_parameters(path, params)  # before any kernel starts
    specs = notebook_parameters(path)
    run = RunStore().create_run(study, params, name=name, notebook=path.stem)
    if "study" in specs:
        params["study"] = study
    if "run_dir" in specs:
        params["run_dir"] = str(run.path)
    out = run.path / "notebook.ipynb"
    run.mark_running()
    log.info("running %s into %s", path.name, run.path)
    try:
        papermill.execute_notebook(
            str(path), str(out), parameters=params, kernel_name=kernel_name, cwd=str(run.path),
            progress_bar=progress, report_mode=False,
        )
    except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
        run.mark_failed(err)
        raise RuntimeError(f"{path.name} failed in run {run.path}: {err}") from err
    if not run.completed:  # notebooks normally mark themselves; make sure
        run.mark_completed()
    return run


def run_pipeline(params_file: str | Path, progress: bool = True, report: bool = True) -> list[Run]:
    """Run every notebook of a pipeline params file in order, then export the report."""
    data = load_params(params_file)
    if "notebooks" not in data or not isinstance(data["notebooks"], dict):
        raise ValueError(f"{params_file}: a pipeline file needs a 'notebooks' mapping (notebook -> params)")
    extra = sorted(set(data) - {"study", "notebooks"})
    if extra:
        raise ValueError(f"{params_file}: unknown top-level key(s) {extra}; accepted: ['study', 'notebooks']")
    study = check_name("study", data.get("study", "default"))
    # Validate everything first: a typo in the last notebook must not cost the first's compute.
    for nb, params in data["notebooks"].items():
        validate_parameters(nb, params or {})
    runs = [run_notebook(nb, params or {}, study=study, progress=progress) for nb, params in data["notebooks"].items()]
    if report:
        from .report import export_study

        export_study(study)
    return runs


def write_params(path: str | Path, params: dict) -> Path:
    return atomic_write(Path(path), yaml.safe_dump(params, sort_keys=False))
