"""Command line: ``python -m robustlib {run,pipeline,sweep,report,params} ...``.

User errors (unknown notebook or parameter, wrong type or value, missing file, bad
YAML) print one line to stderr and exit with status 2, before any compute.
:func:`main` takes the arguments as a list, so it can be called in-process.
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m robustlib", description="robustlib lab")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="validate parameters and execute one notebook into the run store")
    run.add_argument("notebook", help="notebook path or name in notebooks/ (e.g. 01_finetune)")
    run.add_argument("-f", "--params-file", help="YAML file of parameters (flat, or a pipeline file)")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override one parameter; VALUE is parsed as YAML (e.g. -p seeds '[0, 1]')")
    run.add_argument("--study", default=None, help="study name (default: the params file's, else 'default')")
    run.add_argument("--name", default=None, help="run name (default: notebook + hash of parameters)")

    pipe = sub.add_parser("pipeline", help="run a pipeline params file's notebooks in order, then the report")
    pipe.add_argument("params_file")
    pipe.add_argument("--no-report", action="store_true")

    sw = sub.add_parser("sweep", help="run a study file's grid: every job validated first, what is missing run "
                                      "in dependency order, failures isolated; then the report")
    sw.add_argument("study_file", help="a study file (params/*.yaml; a pipeline file is a one-cell grid)")
    what = sw.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="print the jobs per stage, their FLOPs, GPU-hours "
                      "and checkpoint disk; run nothing")
    what.add_argument("--status", action="store_true", help="print done / running / failed / interrupted / "
                      "pending per stage, and every failure; run nothing")
    what.add_argument("--retry-failed", action="store_true", help="rerun only the failed jobs (and what waits on them)")
    sw.add_argument("--backend", default="local", help="local (a process pool) or ray")
    sw.add_argument("--workers", type=int, default=None, help="local: worker processes (default: one per GPU, "
                    "else 1); ray without --address: CPUs of the local instance")
    sw.add_argument("--address", default=None, help="ray: 'auto' (this node's cluster) or 'ray://host:10001'; "
                    "empty: start a local instance")
    sw.add_argument("--cpus", type=float, default=1, help="ray: CPUs per job (a notebook's 'resources' wins)")
    sw.add_argument("--gpus", type=float, default=0, help="ray: GPUs per job (a notebook's 'resources' wins)")
    sw.add_argument("--gpu", default="h100", help="--dry-run: the GPU to price the compute on")
    sw.add_argument("--utilization", type=float, default=None,
                    help="--dry-run: share of that GPU's bf16 peak sustained (default 0.3)")
    sw.add_argument("--no-report", action="store_true")

    rep = sub.add_parser("report", help="export a study's executed notebooks to reports/<study>/report.html")
    rep.add_argument("study")

    par = sub.add_parser("params", help="list a notebook's parameters")
    par.add_argument("notebook")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from . import report, runner

    try:
        if args.command == "params":
            for spec in runner.notebook_parameters(args.notebook).values():
                print(f"{spec.name:20} {spec.type_name:6} {spec.default!r:32} {spec.help}")
        elif args.command == "run":
            params: dict = {}
            study = args.study
            if args.params_file:
                data = runner.load_params(args.params_file)
                if "notebooks" in data:  # a pipeline file: take this notebook's section
                    stem = runner.resolve_notebook(args.notebook).stem
                    params = dict(data["notebooks"].get(stem) or {})
                    study = data.get("study") if study is None else study
                else:
                    params = data
            for name, value in args.param:
                params[name] = runner.parse_yaml(value, f"-p {name}")
            run = runner.run_notebook(args.notebook, params, study="default" if study is None else study,
                                      name=args.name)
            print(run.path)
        elif args.command == "pipeline":
            runs = runner.run_pipeline(args.params_file, report=False)
            for run in runs:
                print(run.path)
            if not args.no_report:
                print(report.export_study(runner.load_params(args.params_file).get("study", "default")))
        elif args.command == "sweep":
            return _sweep(args)
        elif args.command == "report":
            print(report.export_study(args.study))
    except yaml.YAMLError as err:
        print(f"error: invalid YAML: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, FileNotFoundError, LookupError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _sweep(args) -> int:
    from . import sweep
    from .sweep.schedule import failure_line

    if args.dry_run or args.status:
        from .models import without_hub_checks

        with without_hub_checks():  # a dry run prices a study for a machine with the hub, from any machine
            planned = sweep.plan(args.study_file)
    if args.status:
        print(planned.status().to_string(index=False))
        for f in planned.failures():
            print(failure_line(f["job"], f["cell"], f["error"], f["log"]))
        return 0
    if args.dry_run:
        from .sweep import estimate

        utilization = estimate.DEFAULT_UTILIZATION if args.utilization is None else args.utilization
        print(estimate.describe(planned, args.gpu, utilization))
        return 0
    outcome = sweep.run_sweep(args.study_file, backend=args.backend, workers=args.workers, address=args.address,
                              cpus=args.cpus, gpus=args.gpus, retry_failed=args.retry_failed,
                              report=not args.no_report)
    print(f"{len(outcome.done)} run, {len(outcome.skipped)} already done, {len(outcome.failed)} failed, "
          f"{len(outcome.blocked)} not run (they need a failed job) in {outcome.seconds:.0f} s")
    for key, result in outcome.failed:
        print(failure_line(key, result.get("cell"), result.get("error"), None))
    if outcome.report:
        print(outcome.report)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
