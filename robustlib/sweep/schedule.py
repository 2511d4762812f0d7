"""Running a sweep: each job's state from the run store, the jobs run in dependency
order on a backend, failures isolated, progress per stage.

A job's state is its run's (:class:`robustlib.record.Run`): ``done`` (completed),
``failed``, ``running`` (another process holds its lock), ``interrupted`` (recorded as
running by a process that is gone: it resumes), ``pending`` (no run yet, or its inputs
do not exist yet). The store is the only truth, so a sweep killed at any point and run
again finds what is complete, resumes what was interrupted, and runs nothing twice:
two processes never execute one run (the run's lock), and each study skips the models
its run already recorded.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field

from ..record import Run, RunStore
from .grid import Job
from .worker import payload

log = logging.getLogger("robustlib.sweep")

STATES = ("done", "running", "failed", "interrupted", "pending")
#: Seconds between looks at runs another process is executing.
POLL_SECONDS = 2.0


@dataclass
class Outcome:
    """What one call of :meth:`Sweep.run` did."""

    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (key, result dict)
    blocked: list = field(default_factory=list)  # keys not run because a job they need failed
    skipped: list = field(default_factory=list)  # keys complete before the call
    seconds: float = 0.0
    report: str | None = None  # the report's path, when the sweep exported one

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


class Sweep:
    """The jobs of one study file against one run store."""

    def __init__(self, jobs: list[Job], store: RunStore | None = None, estimates: dict | None = None):
        self.jobs = jobs
        self.by_key = {j.key: j for j in jobs}
        self.store = store or RunStore()
        self.estimates = estimates or {}
        self._runs: dict[str, Run | None] = {}
        self._dependents: dict[str, list[str]] = {k: [] for k in self.by_key}
        for job in jobs:
            for dep in job.deps:
                self._dependents[dep].append(job.key)

    # -- identity and state
    def run_of(self, key: str) -> Run | None:
        """The run job ``key`` records into, None while its inputs cannot be named yet."""
        if self._runs.get(key) is not None:
            return self._runs[key]
        from .. import runner

        job = self.by_key[key]
        inputs = self.input_refs(job)
        if inputs is None and job.inputs is not None:
            return None
        try:
            run = runner.planned_run(job.notebook, job.params, job.study, inputs, store=self.store)
        except LookupError:  # a notebook that finds its inputs itself, before they exist
            return None
        self._runs[key] = run
        return run

    def input_refs(self, job: Job) -> dict | None:
        if job.inputs is None:
            return None
        refs = {}
        for name, dep in job.inputs.items():
            run = self.run_of(dep)
            if run is None:
                return None
            refs[name] = f"{run.study}/{run.name}"
        return refs

    def state(self, key: str) -> str:
        run = self.run_of(key)
        if run is None or not (run.path / "params.yaml").exists():
            return "pending"
        state = run.state
        if state == "completed":
            return "done"
        if state == "stale":
            return "interrupted"
        return state if state in STATES else "pending"

    def states(self) -> dict[str, str]:
        return {k: self.state(k) for k in self.by_key}

    def status(self):
        """Jobs per stage (notebook) and state, in the order the stages run (pandas)."""
        import pandas as pd

        states = self.states()
        rows = []
        for nb in dict.fromkeys(j.notebook for j in self.jobs):
            mine = [states[j.key] for j in self.jobs if j.notebook == nb]
            rows.append({"stage": nb, "jobs": len(mine), **{s: mine.count(s) for s in STATES}})
        return pd.DataFrame(rows, columns=["stage", "jobs", *STATES])

    def failures(self) -> list[dict]:
        """Every failed job: its key, run folder, the cell that raised and the error."""
        out = []
        for key, state in self.states().items():
            if state == "failed":
                run = self.run_of(key)
                status = run.status
                out.append({"job": key, "notebook": self.by_key[key].notebook, "cell": status.get("failed_cell"),
                            "error": status.get("error_line") or status.get("error"),
                            "log": str(log_file(self.by_key[key], run))})
        return out

    # -- running
    def _closure(self, keys: set[str]) -> set[str]:
        out, stack = set(), list(keys)
        while stack:
            k = stack.pop()
            for d in self._dependents[k]:
                if d not in out:
                    out.add(d)
                    stack.append(d)
        return out

    def run(self, backend, retry_failed: bool = False, progress: bool = True) -> Outcome:
        """Run every job not done (with ``retry_failed``: only the failed ones and what
        waits on them) on ``backend``; a failure blocks only the jobs that need it."""
        start = time.perf_counter()
        states = self.states()
        outcome = Outcome(skipped=[k for k, s in states.items() if s == "done"])
        failed = {k for k, s in states.items() if s == "failed"}
        if retry_failed:
            todo = {k for k in failed | self._closure(failed) if states[k] != "done"}
        else:
            todo = {k for k, s in states.items() if s not in ("done", "failed")}
            blocked = self._closure(failed) & todo
            todo -= blocked
            outcome.blocked += sorted(blocked, key=list(self.by_key).index)
        done = {k for k, s in states.items() if s == "done"}
        bars = _Bars(self, done, todo, progress)
        running: dict = {}  # future -> key
        elsewhere: set[str] = set()  # executed by another process: watched, not run
        try:
            while todo or running or elsewhere:
                for key in sorted(elsewhere):
                    state = self.state(key)
                    if state == "done":
                        elsewhere.discard(key)
                        done.add(key)
                        bars.finished(key)
                    elif state != "running":  # its process died or failed: ours to run again
                        elsewhere.discard(key)
                        todo.add(key)
                ready = [k for k in self.by_key if k in todo and all(d in done for d in self.by_key[k].deps)]
                # The costliest first (by the lab's FLOP estimate): the long jobs set the
                # sweep's length, so they should not wait behind short ones for a slot.
                ready.sort(key=lambda k: -self.estimates.get(k, 0.0))
                for key in ready:
                    if len(running) >= backend.slots:
                        break
                    todo.discard(key)
                    running[self._submit(backend, key)] = key
                if not running:
                    if elsewhere:
                        time.sleep(POLL_SECONDS)
                        continue
                    break  # what is left waits on something that will not complete
                finished, _ = wait(list(running), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in finished:
                    key = running.pop(future)
                    result = _result(future, key)
                    if result["state"] == "done":
                        done.add(key)
                        outcome.done.append(key)
                        bars.finished(key)
                    elif result["state"] == "busy":
                        elsewhere.add(key)
                    else:
                        outcome.failed.append((key, result))
                        lost = self._closure({key}) & todo
                        todo -= lost
                        outcome.blocked += sorted(lost, key=list(self.by_key).index)
                        bars.failed(key, result, self.run_of(key))
        except BaseException:
            backend.close(cancel=True)
            raise
        finally:
            bars.close()
        outcome.blocked += sorted(todo, key=list(self.by_key).index)  # their inputs never completed
        outcome.seconds = round(time.perf_counter() - start, 1)
        return outcome

    def _submit(self, backend, key: str):
        job = self.by_key[key]
        run = self.run_of(key)
        sources = [self.run_of(k) for k in job.merges]
        return backend.submit(payload(job, run, self.input_refs(job), sources, self.store.root), job.resources)


def failure_line(key: str, cell, error, log) -> str:
    """How a failed job is reported everywhere: ``failed <job>: cell N: <error>; log: <path>``."""
    return f"failed {key}: " + (f"cell {cell}: " if cell else "") + f"{error}" + (f"; log: {log}" if log else "")


def log_file(job: Job, run: Run):
    """Where a job's run keeps what went wrong: a model job's ``job.log`` (its study ran
    without a kernel), else the executed notebook (the failing cell has the traceback)."""
    return run.path / ("job.log" if job.kind == "model" else "notebook.ipynb")


def _result(future, key: str) -> dict:
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - the worker process itself died (killed, out of memory)
        return {"key": key, "state": "failed", "error": f"{type(err).__name__}: {err}", "cell": None, "run": None}


class _Bars:
    """One progress bar per stage: jobs done of all, and an ETA from the lab's compute
    accounting (the estimated FLOPs left, at the FLOP rate the sweep has reached)."""

    def __init__(self, sweep: Sweep, done: set, todo: set, enabled: bool):
        from tqdm.auto import tqdm

        self.sweep, self.enabled, self.start = sweep, enabled, time.perf_counter()
        self.flops_done = 0.0
        self.left = {k: sweep.estimates.get(k, 0.0) for k in todo}
        self.bars = {}
        stages = list(dict.fromkeys(j.notebook for j in sweep.jobs))
        for i, nb in enumerate(stages):
            keys = [j.key for j in sweep.jobs if j.notebook == nb]
            self.bars[nb] = tqdm(total=len(keys), initial=sum(k in done for k in keys), desc=nb, position=i,
                                 unit="job", disable=not enabled, leave=True, dynamic_ncols=True)

    def finished(self, key: str) -> None:
        self.flops_done += self.left.pop(key, 0.0)
        self.bars[self.sweep.by_key[key].notebook].update(1)
        self._eta()

    def failed(self, key: str, result: dict, run) -> None:
        self.left.pop(key, None)
        log_path = log_file(self.sweep.by_key[key], run) if run is not None else "(no run)"
        line = failure_line(key, result.get("cell"), result.get("error"), log_path)
        if self.enabled:
            self.bars[self.sweep.by_key[key].notebook].write(line)
        log.error(line)

    def _eta(self) -> None:
        from ..flops import readable

        elapsed = time.perf_counter() - self.start
        if not self.flops_done or not elapsed:
            return
        rate = self.flops_done / elapsed
        remaining = 0.0
        for nb, bar in self.bars.items():  # stages in order: each finishes after those before it
            remaining += sum(v for k, v in self.left.items() if self.sweep.by_key[k].notebook == nb)
            bar.set_postfix_str(f"eta {_duration(remaining / rate)} at {readable(rate)}FLOP/s", refresh=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
