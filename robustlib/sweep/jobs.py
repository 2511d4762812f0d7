"""Expanding a study file into jobs, in dependency order (see :mod:`.grid` for the rules).

:func:`expand` returns the jobs; :func:`validate` checks every one of them as
``python -m robustlib run`` would (the same one-line errors, naming the job), before
anything starts.
"""

from __future__ import annotations

from .grid import ANALYSE, ATTACK, CELL_STAGES, DEFEND, EXPLORE, FINETUNE, MODEL_STAGES, Cell, Job, StudyFile


def expand(sf: StudyFile) -> list[Job]:
    """Every job of the study file, each after the jobs it depends on."""
    if FINETUNE not in sf.sections:
        return _pipeline(sf)
    jobs: list[Job] = []
    order = list(sf.sections)
    for cell in sf.cells:
        jobs += _cell_jobs(sf, cell)
    from .. import runner
    from ..studies import config_class

    earlier = [j.key for j in jobs]
    for nb in order:
        if nb in MODEL_STAGES or nb in CELL_STAGES:
            continue
        runner.resolve_notebook(nb)
        # A lab notebook that reads no run (05, 07) depends on nothing; a user's own
        # notebook may read anything listed before it, so it waits for all of that.
        deps = () if config_class(nb) is not None else tuple(earlier)
        jobs.append(Job(nb, nb, "single", sf.study, dict(sf.sections[nb]), None, deps,
                        resources=sf.resources.get(nb, {})))
        earlier.append(nb)
    return jobs


def _pipeline(sf: StudyFile) -> list[Job]:
    """A file without fine-tuning: its notebooks once each, in order, as a pipeline."""
    jobs, before = [], ()
    for nb, section in sf.sections.items():
        jobs.append(Job(nb, nb, "single", sf.study, dict(section), None, before, resources=sf.resources.get(nb, {})))
        before = (nb,)
    return jobs


def _attack_labels(sf: StudyFile) -> list[tuple[str, dict, float]]:
    """02's (label, spec, position) axis: every attack spec x position."""
    from ..attacks.spec import AttackSpec
    from ..studies.attack import evaluation_owns
    from .grid import _as_list

    specs = sf.setting(ATTACK, "attack")
    specs = specs if isinstance(specs, list) else [specs]
    if not specs:
        raise ValueError(f"{sf.where}: grid.attacks is empty; accepted: a non-empty list of attack specs")
    positions = _as_list(sf.setting(ATTACK, "position"), "positions", sf.where)
    labels = []
    for spec in specs:
        try:
            labels.append(AttackSpec.parse({"name": spec} if isinstance(spec, str) else spec, "attack",
                                           evaluation_owns("position")).label)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{sf.where}: grid.attacks: {err}") from None
    out = []
    for i, (label, spec) in enumerate(zip(labels, specs)):
        if labels.count(label) > 1:
            label = f"{label}#{i}"
        out += [(f"{label}@{float(p):g}", spec, p) for p in positions]
    return out


def _cell_jobs(sf: StudyFile, cell: Cell) -> list[Job]:
    jobs: list[Job] = []
    base = f"{cell.task}/{cell.family}"

    def section(nb: str, drop: tuple = ()) -> dict:
        return {k: v for k, v in sf.sections[nb].items() if k not in drop}

    ft = {**section(FINETUNE, ("task", "family", "sizes", "seeds", "seeds_by_size")),
          "task": cell.task, "family": cell.family}
    if not sf.runs_on(FINETUNE, cell):
        return []
    res = sf.resources
    model_ft = {}
    for size, seed in cell.models:
        key = f"{FINETUNE}:{base}/{size}/seed{seed}"
        model_ft[size, seed] = key
        jobs.append(Job(key, FINETUNE, "model", cell.models_study, {**ft, "sizes": [size], "seeds": [seed]},
                        cell=cell, size=size, seed=seed, resources=res.get(FINETUNE, {})))
    by_size = {s: list(seeds) for s, seeds in cell.seeds_by_size}
    merged_ft = f"{FINETUNE}:{base}/all"
    jobs.append(Job(merged_ft, FINETUNE, "merge", cell.study,
                    {**ft, "sizes": list(cell.sizes), "seeds": list(cell.seeds),
                     **({"seeds_by_size": by_size} if by_size else {})},
                    deps=tuple(model_ft.values()), merges=tuple(model_ft.values()), cell=cell))
    merged_attacks = {}
    if ATTACK in sf.sections and sf.runs_on(ATTACK, cell):
        settings = section(ATTACK, ("attack", "position"))
        for label, spec, position in _attack_labels(sf):
            params = {**settings, "attack": spec, "position": position}
            keys = []
            for size, seed in cell.models:
                key = f"{ATTACK}:{base}/{label}/{size}/seed{seed}"
                keys.append(key)
                jobs.append(Job(key, ATTACK, "model", cell.models_study, params,
                                {"finetune_run": model_ft[size, seed]}, (model_ft[size, seed],), cell=cell,
                                size=size, seed=seed, attack=label, resources=res.get(ATTACK, {})))
            merged = f"{ATTACK}:{base}/{label}/all"
            merged_attacks[label] = merged
            jobs.append(Job(merged, ATTACK, "merge", cell.study, params, {"finetune_run": merged_ft},
                            (*keys, merged_ft), tuple(keys), cell=cell, attack=label))
    merged_def = None
    if DEFEND in sf.sections and sf.runs_on(DEFEND, cell):
        params = section(DEFEND)
        selected = _defended(sf, cell, params)
        rounds = _rounds(sf, cell, params, selected)
        keys = []
        for size, seed in selected:
            key = f"{DEFEND}:{base}/{size}/seed{seed}"
            keys.append(key)
            own = {**params, "sizes": [size], "seeds": [seed], "seeds_by_size": {},
                   "rounds_by_size": {size: rounds[size]}}
            jobs.append(Job(key, DEFEND, "model", cell.models_study, own, {"finetune_run": model_ft[size, seed]},
                            (model_ft[size, seed],), cell=cell, size=size, seed=seed,
                            resources=res.get(DEFEND, {})))
        merged_def = f"{DEFEND}:{base}/all"
        jobs.append(Job(merged_def, DEFEND, "merge", cell.study, params, {"finetune_run": merged_ft},
                        (*keys, merged_ft), tuple(keys), cell=cell))
    if ANALYSE in sf.sections and sf.runs_on(ANALYSE, cell):
        if not merged_attacks or merged_def is None:
            raise ValueError(f"{sf.where}: {ANALYSE} on cell {cell.label} needs {ATTACK} and {DEFEND} on that "
                             "cell too (it analyses their runs)")
        for label, merged in merged_attacks.items():
            jobs.append(Job(f"{ANALYSE}:{base}/{label}", ANALYSE, "cell", cell.study, section(ANALYSE),
                            {"attack_run": merged, "defense_run": merged_def}, (merged, merged_def), cell=cell,
                            attack=label, resources=res.get(ANALYSE, {})))
    if EXPLORE in sf.sections and sf.runs_on(EXPLORE, cell):
        # It reads the cell study's latest runs itself: after everything of the cell.
        jobs.append(Job(f"{EXPLORE}:{base}", EXPLORE, "cell", cell.study, section(EXPLORE), None,
                        tuple(j.key for j in jobs), cell=cell, resources=res.get(EXPLORE, {})))
    return jobs


def _defended(sf: StudyFile, cell: Cell, params: dict) -> list[tuple[str, int]]:
    """The (size, seed) models 03's ``sizes``/``seeds`` select in ``cell`` (empty: all)."""
    chosen = cell.models
    for name, idx in (("sizes", 0), ("seeds", 1)):
        wanted = params.get(name) or []
        if not isinstance(wanted, list):
            raise ValueError(f"{sf.where}: notebooks.{DEFEND}.{name} is {wanted!r}; accepted: a list")
        have = sorted({m[idx] for m in cell.models}, key=str)
        missing = [w for w in wanted if w not in have]
        if missing:
            raise ValueError(f"{sf.where}: notebooks.{DEFEND}.{name} names {missing}, not fine-tuned in cell "
                             f"{cell.label}; accepted: {have}")
        if wanted:
            chosen = [m for m in chosen if m[idx] in wanted]
    by_size = params.get("seeds_by_size") or {}
    for size, seeds in by_size.items() if isinstance(by_size, dict) else ():
        have = [s for z, s in chosen if z == size]
        missing = [s for s in seeds if s not in have] if isinstance(seeds, list) else seeds
        if not have or missing:
            raise ValueError(f"{sf.where}: notebooks.{DEFEND}.seeds_by_size {{{size!r}: {seeds!r}}}: cell "
                             f"{cell.label} defends seeds {have} of {size!r}")
        chosen = [m for m in chosen if m[0] != size or m[1] in seeds]
    return chosen


def _rounds(sf: StudyFile, cell: Cell, params: dict, selected: list) -> dict[str, int]:
    """Rounds per defended size, as the merged 03 run computes them (from the parameter
    counts of the sizes it defends), so a per-model job trains exactly as long."""
    from .. import runner
    from ..studies import AdvTrainStudyConfig

    try:
        cfg = AdvTrainStudyConfig.from_dict(runner.validate_parameters(DEFEND, params))
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{sf.where}: notebooks.{DEFEND}: {err}") from None
    sizes = sorted({s for s, _ in selected}, key=cell.sizes.index)
    unknown = sorted(set(cfg.rounds_by_size) - set(sizes))
    if unknown:
        raise ValueError(f"{sf.where}: notebooks.{DEFEND}.rounds_by_size names {unknown}, not among the models "
                         f"to defend in cell {cell.label}; accepted: {sizes}")
    counts = {s: model_params(s) for s in sizes}
    known = [n for n in counts.values() if n]
    out = {}
    for size in sizes:
        if size in cfg.rounds_by_size:
            out[size] = cfg.rounds_by_size[size]
        elif len(set(known)) <= 1 or cfg.min_rounds == 0:
            out[size] = cfg.rounds
        elif counts[size] is None:
            raise ValueError(f"{sf.where}: cannot count the parameters of {size!r} to size its rounds; name it "
                             f"in notebooks.{DEFEND}.rounds_by_size")
        else:
            out[size] = cfg.rounds_for(size, counts[size], min(known), max(known))
    return out


def model_params(name: str) -> int | None:
    """The classifier parameter count of a preset or a local model folder (no weights
    loaded), None when neither (a hub id: its config needs the hub)."""
    from pathlib import Path

    from .. import models

    if name in models.PRESETS:
        return models.num_params(name)
    folder = Path(name).expanduser()
    if (folder / "config.json").exists():
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(folder)
        config.num_labels = 2
        with torch.device("meta"):
            return sum(p.numel() for p in AutoModelForSequenceClassification.from_config(config).parameters())
    return None


def validate(jobs: list[Job], where: str) -> None:
    """Check every job's settings as ``run`` would, before anything starts: the first
    bad one raises its one-line error, prefixed by the job (``ValueError``,
    ``TypeError``, ``LookupError`` or ``FileNotFoundError`` as ``run`` raises them)."""
    from .. import runner

    seen: set[str] = set()
    for job in jobs:
        sig = f"{job.notebook}:{sorted(job.params.items(), key=str)!r}"
        if sig in seen:
            continue  # the models of one stage share their settings: checked once
        try:
            runner.validate_parameters(job.notebook, job.params)
        except (ValueError, TypeError, KeyError, LookupError, FileNotFoundError) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise type(err)(f"{where}: job {job.key}: {msg}") from None
        seen.add(sig)
