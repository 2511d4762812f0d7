"""One model on several processes: a study run under ``accelerate launch``.

::

    accelerate launch --config_file params/accelerate/ddp-gpus.yaml -m robustlib.distributed \\
        01_finetune -f params/paper-pythia.yaml --study paper-pythia -p sizes '["pythia-6.9b"]' -p seeds '[0]'

Every process runs the notebook's study (``01_finetune`` or ``03_adversarial_training``)
in step: fine-tuning splits each step's rows between them (data parallel, or FSDP with
``params/accelerate/fsdp-gpus.yaml``; :func:`robustlib.finetune.finetune`), attacks run
the same seeded computation on each. The main process records into the run the
notebook would (same parameters, inputs and name); the others record into a scratch
run of ``<study>.rank<k>`` that is removed when they finish, so the store holds one
record. Render the charts afterwards by running the notebook itself on the same
parameters: it finds every model recorded.
"""

from __future__ import annotations

import argparse
import shutil
import sys

#: Studies whose training splits across processes.
DISTRIBUTED = ("01_finetune", "03_adversarial_training")


def main(argv: list[str] | None = None) -> int:
    import torch
    from accelerate import PartialState

    from . import runner, studies
    from .record import RunStore

    p = argparse.ArgumentParser(prog="accelerate launch -m robustlib.distributed")
    p.add_argument("notebook", choices=DISTRIBUTED)
    p.add_argument("-f", "--params-file")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--study", default="default")
    args = p.parse_args(argv)
    params: dict = {}
    if args.params_file:
        data = runner.load_params(args.params_file)
        params = dict((data.get("notebooks") or {}).get(args.notebook) or {}) if "notebooks" in data else data
    for name, value in args.param:
        params[name] = runner.parse_yaml(value, f"-p {name}")
    state = PartialState(cpu=not torch.cuda.is_available())
    cfg = studies.config_class(args.notebook).from_dict(runner.validate_parameters(args.notebook, params))
    recorded = runner.recorded_parameters(args.notebook, cfg.to_dict(), args.study)  # inputs: the real study's
    study = args.study if state.is_main_process else f"{args.study}.rank{state.process_index}"
    run = RunStore().create_run(study, recorded, notebook=args.notebook)
    run.lock()
    try:
        studies.MODULES[args.notebook].run(cfg, run, progress=state.is_main_process)
    except BaseException as err:
        run.mark_failed(err)
        raise
    state.wait_for_everyone()
    if state.is_main_process:
        run.mark_completed()
        print(run.path)
    else:
        run.unlock()
        shutil.rmtree(run.path.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
