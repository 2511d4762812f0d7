"""The run store: every run's parameters, provenance, metrics, tables and artifacts.

Layout (``runs_dir()`` is ``<project>/runs`` or ``$ROBUSTLIB_RUNS``)::

    runs/<study>/<run>/params.yaml       every parameter the run resolved, and its
                                         ``inputs`` (earlier runs it read, as
                                         ``<study>/<run>``)
                       provenance.json   git commit, package versions, machine, time
                       status.json       running / completed / failed, with times
                       metrics.json      scalar results (merged on each log)
                       tables/<name>.jsonl  row tables (one JSON object per line)
                       artifacts/...     checkpoints (safetensors), executed notebook, ...

A run is identified by its study and its parameters: without an explicit name it is
``<notebook>-<hash of params>``, so re-running the same thing finds (and resumes)
the same run, from any process or machine sharing the folder. Paths a run records
(checkpoints, inputs) are relative to the run or to the store, so a study folder can
be moved or shared. Every write is atomic (temp file + ``os.replace``): a killed
process never leaves a half-written file.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from . import paths

log = logging.getLogger("robustlib.record")

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PACKAGES = ("robustlib", "torch", "transformers", "datasets", "accelerate", "tokenizers", "papermill", "altair")


def check_name(kind: str, value: str) -> str:
    """Study and run names become folder names: letters, digits, ``_ . -`` only."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"invalid {kind} name {value!r}; accepted: letters, digits, '_', '.', '-'")
    return value


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _clean(obj.item())
    return obj


def atomic_write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    # os.open with 0o666 lets the process umask decide the mode, as for any other file
    # (mkstemp would make it private); O_EXCL: the unique name is never shared.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def new_file_mode(folder: Path) -> int:
    """The mode a file created in ``folder`` gets (0o666 less the process umask), read
    off a probe file, so nothing changes the umask (not thread-safe) to learn it."""
    probe = Path(folder) / f".mode-probe-{uuid.uuid4().hex}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def share_files(path: Path) -> None:
    """Give ``path`` (a file, or every file under a folder) the store's one file mode.
    Libraries that write through private temporary files (safetensors' weights) leave
    them 0600 where everything else is readable by whoever shares the store."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if files:
        mode = new_file_mode(files[0].parent)
        for f in files:
            os.chmod(f, mode)


def dump_json(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2, sort_keys=True, allow_nan=False)


def params_hash(params: dict) -> str:
    canonical = json.dumps(_clean(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def provenance(seeds: Any = None) -> dict:
    """Where and with what a run was made."""
    root = paths.project_root() or paths.PACKAGE_DIR

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "user": getpass.getuser(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "seeds": seeds,
        "argv": sys.argv,
        "created": now(),
    }


#: The run locks this process has made, by lock file (see :meth:`Run.lock`).
_LOCKS: dict = {}


class RunBusyError(RuntimeError):
    """Another process is executing this run (it holds the run's lock)."""


class Run:
    """One run's folder. Create or reopen runs through :class:`RunStore`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.study = self.path.parent.name
        self.name = self.path.name

    def __repr__(self) -> str:
        return f"Run({self.study}/{self.name}, {self.state})"

    # -- files
    def _read_json(self, name: str, default: Any = None) -> Any:
        path = self.path / name
        return json.loads(path.read_text()) if path.exists() else default

    @property
    def params(self) -> dict:
        """Every parameter the run resolved (and ``inputs``: the runs it read)."""
        path = self.path / "params.yaml"
        return yaml.safe_load(path.read_text()) or {} if path.exists() else {}

    @property
    def inputs(self) -> dict[str, str]:
        """The earlier runs this run read, by name: ``{"finetune_run": "<study>/<run>"}``."""
        return dict(self.params.get("inputs") or {})

    def input_run(self, name: str) -> Run:
        """The earlier run recorded as input ``name`` (found in this run's store)."""
        inputs = self.inputs
        if name not in inputs:
            raise LookupError(f"run {self.study}/{self.name} recorded no input {name!r}; it has: {sorted(inputs)}")
        return Run(self._inside(self.path.parent.parent, inputs[name]))

    @property
    def provenance(self) -> dict:
        return self._read_json("provenance.json", {})

    @property
    def status(self) -> dict:
        return self._read_json("status.json", {})

    @property
    def notebook(self) -> str | None:
        return self.status.get("notebook")

    @property
    def metrics(self) -> dict:
        return self._read_json("metrics.json", {})

    def log_metrics(self, values: dict | None = None, **kv: Any) -> dict:
        """Merge scalars into ``metrics.json`` (later values win)."""
        merged = {**self.metrics, **(values or {}), **kv}
        atomic_write(self.path / "metrics.json", dump_json(merged))
        return merged

    def save_json(self, name: str, obj: Any) -> Path:
        return atomic_write(self.artifact_path(name), dump_json(obj))

    def load_json(self, name: str) -> Any:
        path = self._inside(self.path / "artifacts", name)
        if not path.exists():
            raise FileNotFoundError(f"run {self.study}/{self.name} has no artifact {name!r}")
        return json.loads(path.read_text())

    def save_table(self, name: str, rows) -> Path:
        """Save rows (a list of dicts or a DataFrame) as JSON lines, replacing the table."""
        if hasattr(rows, "to_dict"):
            rows = rows.to_dict("records")
        text = "".join(json.dumps(_clean(r), sort_keys=True, allow_nan=False) + "\n" for r in rows)
        return atomic_write(self._table_path(name), text)

    def load_rows(self, name: str) -> list[dict]:
        """The rows of table ``name`` as dicts; an empty list when the run has none yet
        (what a study resuming from scratch starts from)."""
        path = self._table_path(name)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def load_table(self, name: str):
        """Table ``name`` as a pandas DataFrame (``FileNotFoundError`` when absent)."""
        import pandas as pd

        if not self._table_path(name).exists():
            raise FileNotFoundError(f"run {self.study}/{self.name} has no table {name!r}")
        return pd.DataFrame(self.load_rows(name))

    def _table_path(self, name: str) -> Path:
        return self.path / "tables" / f"{check_name('table', name)}.jsonl"

    def artifact_path(self, *parts: str) -> Path:
        """``<run>/artifacts/<parts...>``, its parent folder created; a path that
        would leave the run's artifacts is refused."""
        if not parts or any(not isinstance(p, str) or not p for p in parts):
            raise ValueError(f"invalid artifact path {parts!r}; accepted: non-empty relative names")
        path = self._inside(self.path / "artifacts", *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: str | Path) -> str:
        """``path`` (inside this run) relative to the run folder, for tables to record."""
        return Path(path).resolve().relative_to(self.path.resolve()).as_posix()

    def resolve(self, relative: str) -> Path:
        """A path recorded by :meth:`relative`, back inside this run's folder."""
        return self._inside(self.path, relative)

    @staticmethod
    def _inside(root: Path, *parts: str) -> Path:
        for p in parts:
            if Path(p).is_absolute():
                raise ValueError(f"invalid path part {p!r}: must be relative")
        path = root.joinpath(*parts)
        if not path.resolve().is_relative_to(root.resolve()):
            raise ValueError(f"invalid path {'/'.join(parts)!r}: it leaves {root}")
        return path

    # -- state
    def _set_status(self, **kv: Any) -> None:
        atomic_write(self.path / "status.json", dump_json({**self.status, **kv}))

    def mark_running(self) -> None:
        self._set_status(state="running", started=now(), error=None)

    def mark_completed(self) -> None:
        self._set_status(state="completed", completed=now(), error=None)
        self.unlock()

    def mark_failed(self, error: Any, cell: int | None = None) -> None:
        """A run that never completed becomes ``failed``; a completed one stays
        completed (its results are those it completed with) and keeps the error of the
        attempt that failed as ``last_error``. ``cell``: the execution count of the
        notebook cell that raised, when known; ``error_line`` keeps the error's last
        line (``ValueError: ...``) for listings."""
        ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
        last = (str(error).strip().splitlines() or [""])[-1]
        if ename:
            line = f"{ename}: {evalue}"
        else:
            line = last if isinstance(error, str) else f"{type(error).__name__}: {last}"
        where = {"failed_cell": cell, "error_line": line[:500]}
        if self.completed:
            self._set_status(last_error=str(error), last_failed=now(), **where)
        else:
            self._set_status(state="failed", failed=now(), error=str(error), **where)
        self.unlock()

    @property
    def completed(self) -> bool:
        return self.status.get("state") == "completed"

    @property
    def state(self) -> str:
        """``running``, ``completed``, ``failed``, or ``stale``: recorded as running but
        nobody holds the run's lock (the process that ran it is gone)."""
        state = self.status.get("state", "unknown")
        if state == "running" and not self.busy:
            return "stale"
        return state

    # -- the lock: one process at a time executes a run
    def _file_lock(self):
        import filelock

        # One lock object per run and process (a second one in the same process would
        # wait for the first), usable from any thread (a kernel runs cells in several),
        # kept alive here: a lock object that is garbage-collected lets go of its lock.
        key = str(self.path.resolve() / ".lock")
        if key not in _LOCKS:
            _LOCKS[key] = filelock.FileLock(key, is_singleton=True, thread_local=False)
        return _LOCKS[key]

    @property
    def busy(self) -> bool:
        """Whether a process (this one or another) holds the run's lock."""
        import filelock

        lock = self._file_lock()
        if lock.is_locked:
            return True
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return True
        lock.release()
        return False

    def lock(self) -> None:
        """Take the run's lock for this process (until :meth:`unlock`, completion,
        failure or the process's end: the operating system drops a dead process's
        lock, so it never goes stale). ``RunBusyError`` naming the holder when another
        process has it; taking it again in the same process is a no-op."""
        import filelock

        lock = self._file_lock()
        if lock.is_locked:
            return
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            holder = self.status.get("holder") or {}
            who = (f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
                   if holder else "another process")
            raise RunBusyError(f"run {self.study}/{self.name} is being executed by {who}; wait for it to end, "
                               "or use other parameters or another study") from None
        self._set_status(holder={"pid": os.getpid(), "host": socket.gethostname(), "since": now()})

    def unlock(self) -> None:
        lock = self._file_lock()
        if lock.is_locked:
            self._set_status(holder=None)
            lock.release(force=True)


class RunStore:
    """The folder of studies and runs (default: :func:`robustlib.paths.runs_dir`)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else paths.runs_dir()

    def run_name(self, params: dict, notebook: str | None = None) -> str:
        """The name a run of ``notebook`` with ``params`` gets: ``<notebook>-<hash>``."""
        return f"{notebook or 'run'}-{params_hash(params)}"

    def create_run(self, study: str, params: dict, name: str | None = None, notebook: str | None = None) -> Run:
        """A run for ``params`` in ``study``; reopened (nothing lost) if it exists."""
        check_name("study", study)
        name = check_name("run", name or self.run_name(params, notebook))
        run = Run(self.root / study / name)
        fresh = not (run.path / "params.yaml").exists()
        run.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            atomic_write(run.path / "params.yaml", yaml.safe_dump(_clean(params), sort_keys=True))
            seeds = params.get("seeds", params.get("seed")) if isinstance(params, dict) else None
            atomic_write(run.path / "provenance.json", dump_json(provenance(seeds)))
        if notebook and run.status.get("notebook") != notebook:
            run._set_status(notebook=notebook)
        if not run.completed:
            run.mark_running()
        return run

    def studies(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.exists() else []

    def runs(self, study: str) -> list[Run]:
        folder = self.root / check_name("study", study)
        return [Run(p) for p in sorted(folder.iterdir()) if p.is_dir()] if folder.exists() else []

    def latest(self, study: str, notebook: str | None = None) -> Run:
        """The most recently completed run of ``notebook`` (any, if None) in ``study``."""
        mine = [r for r in self.runs(study) if notebook is None or r.notebook == notebook]
        done = [r for r in mine if r.completed]
        if not done:
            have = sorted({r.notebook or "?" for r in self.runs(study) if r.completed})
            other = sorted({f"{r.name} ({r.state})" for r in mine})
            raise LookupError(
                f"no completed {notebook or ''} run in study {study!r} (completed notebooks there: {have}; "
                + (f"its other runs: {other}; " if other else "") + f"studies in {self.root}: {self.studies()})"
            )
        return max(done, key=lambda r: r.status.get("completed", ""))


def open_run(run_dir: str = "", study: str = "default", notebook: str | None = None, params: dict | None = None) -> Run:
    """What a notebook calls first: the run the runner made (``run_dir``), or its own.

    Outside the runner (nbval, JupyterLab) ``run_dir`` is empty and the run named after
    the notebook and ``params`` is created (or reopened) in ``study``: the same
    parameters give the same run whoever starts it, and this process takes its lock
    (:class:`RunBusyError` when another process is executing it). Under the runner the
    run already holds the parameters it resolved and the runner holds its lock;
    ``params`` given here must agree with them (a mismatch means the notebook computed
    other settings than the runner recorded).
    """
    if not run_dir:
        run = RunStore().create_run(study, params or {}, notebook=notebook)
        run.lock()  # held by this kernel until the run completes or fails
        return run
    path = Path(run_dir)
    if not (path / "params.yaml").exists():
        raise FileNotFoundError(f"run_dir {run_dir!r} is not a run folder (no params.yaml)")
    run = Run(path)
    recorded = run.params
    differ = sorted(k for k, v in _clean(params or {}).items() if recorded.get(k) != v)
    if differ:
        raise ValueError(f"run_dir {run_dir!r} was made for other parameters: {differ} differ "
                         f"(recorded {[recorded.get(k) for k in differ]}, notebook {[params[k] for k in differ]})")
    if notebook and run.notebook != notebook:
        run._set_status(notebook=notebook)
    return run
