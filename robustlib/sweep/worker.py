"""What runs one job, in whatever process a backend gives it (a pool worker, a Ray task).

:func:`execute` takes a plain, picklable description of the job (:func:`payload`) and
returns a plain result: it talks to the run store on disk only, never to the process
that scheduled it, so results flow back through the store whatever the backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

#: Environment variables a job's process gets from the sweep (the run store's place).
STORE_ENV = "ROBUSTLIB_RUNS"


def payload(job, run, inputs: dict | None, sources: list, root) -> dict:
    """The job as :func:`execute` takes it: notebook, settings, study, the input runs
    (``{name: "<study>/<run>"}``), the runs to merge first, and the store's root."""
    return {"key": job.key, "kind": job.kind, "notebook": job.notebook, "params": job.params, "study": job.study,
            "inputs": inputs, "merge": [f"{r.study}/{r.name}" for r in sources], "root": str(root),
            "run": f"{run.study}/{run.name}" if run is not None else None}


def execute(job: dict) -> dict:
    """Run one job; return ``{"key", "state": "done"|"failed"|"busy", "run", "seconds",
    "error", "cell"}``. ``busy``: another process is executing this run (a sweep killed
    earlier whose job is still running, or a second sweep): nothing was done."""
    os.environ[STORE_ENV] = job["root"]
    from .. import runner
    from ..record import RunBusyError, RunStore

    store = RunStore(job["root"])
    start = time.perf_counter()
    out = {"key": job["key"], "run": job["run"], "error": None, "cell": None}
    log = logging.getLogger("robustlib.sweep")
    try:
        if job["merge"]:
            from .merge import merge_runs

            recorded = runner.recorded_parameters(job["notebook"], job["params"], job["study"], job["inputs"])
            run = store.create_run(job["study"], recorded, notebook=job["notebook"])
            run.lock()
            try:
                merge_runs(run, [_run(store, s) for s in job["merge"]])
            except Exception as err:
                run.mark_failed(err)
                raise
        if job["kind"] == "model":
            run = _run_model(job, store)
        else:
            run = runner.run_notebook(job["notebook"], job["params"], study=job["study"], inputs=job["inputs"],
                                      progress=False)
        out.update(state="done", run=f"{run.study}/{run.name}")
    except RunBusyError as err:
        out.update(state="busy", error=str(err))
    except Exception as err:  # noqa: BLE001 - any failure of one job is reported, never raised to the sweep
        cause = err.__cause__ or err
        line = (f"{cause.ename}: {cause.evalue}" if getattr(cause, "ename", None)
                else f"{type(err).__name__}: {err}".strip().splitlines()[0])
        out.update(state="failed", error=line[:500], cell=getattr(cause, "exec_count", None))
        log.warning("job %s failed: %s", job["key"], line)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def _run_model(job: dict, store):
    """One model of a stage: the notebook's study called in this (warm) process, into
    the run the notebook would record (same parameters, same inputs, same name), with
    no kernel to start: the merged run's notebook shows the results. Its log (and a
    failure's traceback) goes to ``job.log`` in the run."""
    import traceback

    from .. import runner, studies

    cls = studies.config_class(job["notebook"])
    cfg = cls.from_dict(runner.validate_parameters(job["notebook"], job["params"]))
    run = store.create_run(job["study"], cfg.record(job["inputs"] or {}), notebook=job["notebook"])
    run.lock()
    handler = logging.FileHandler(run.path / "job.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger = logging.getLogger("robustlib")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # What the study prints (its training's progress bars) goes to the job's log too, not
    # into the sweep's own progress display.
    with open(run.path / "job.log", "a", encoding="utf-8") as stream, \
            contextlib.redirect_stderr(stream), contextlib.redirect_stdout(stream):
        try:
            studies.MODULES[job["notebook"]].run(cfg, run, progress=False)
        except BaseException as err:
            stream.write(traceback.format_exc())
            run.mark_failed(err)
            raise
        finally:
            logger.removeHandler(handler)
            handler.close()
    run.mark_completed()
    return run


def _run(store, ref: str):
    from ..record import Run

    study, name = ref.split("/", 1)
    return Run(store.root / study / name)
