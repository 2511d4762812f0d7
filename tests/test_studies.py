"""robustlib.studies: each notebook's parameters cell and its study config are one
definition; every run records every resolved parameter and the runs it read, named the
same whoever starts it; and the README's chain 01 -> 02 -> 03 -> 04 runs through the
runner on each notebook's own defaults, and on a chunk task from local files, to a
report."""

import ast
import json
from pathlib import Path

import pytest

# Only runner/record/report at the top: the chain tests below run unchanged on a lab
# without robustlib.studies, where they fail for what they check (the regression).
from robustlib import record, report, runner

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ("01_finetune", "02_attack", "03_adversarial_training", "04_offense_defense")
NOTEBOOKS = (*CHAIN, "05_paper_results", "06_explore", "07_generative")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_parameters_cell_is_the_config(notebook):
    """Same names in the same order, same declared types, same defaults: a drift
    between the notebook and its config (02 once said 3 iterations where the config
    said 10) fails here."""
    from dataclasses import MISSING, fields

    from robustlib import studies

    assert sorted(studies.CONFIGS) == sorted(NOTEBOOKS)
    cls = studies.config_class(notebook)
    specs = runner.notebook_parameters(notebook)
    cell = {k: v for k, v in specs.items() if k not in runner.RUNNER_PARAMETERS}
    assert list(cell) == cls.field_names(), notebook
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()
        assert cell[f.name].default == default, (notebook, f.name)
        assert cell[f.name].type_name == str(f.type), (notebook, f.name)
        assert cell[f.name].help, (notebook, f.name)  # every parameter says what it is


def test_the_smoke_parameter_file_is_the_notebooks_defaults():
    smoke = runner.load_params("smoke")
    assert list(smoke["notebooks"]) == list(CHAIN) and not any(smoke["notebooks"].values())


def test_the_runner_and_a_notebook_name_the_run_alike(store, monkeypatch):
    """The runner resolves every parameter and the inputs the way the notebook does, so
    the run it creates is the one a notebook opened on the same settings reopens."""
    from robustlib import studies

    monkeypatch.setenv("ROBUSTLIB_RUNS", str(store.root))
    resolved = runner.validate_parameters("01_finetune", {"epochs": 2})  # an int for a float: the same setting
    cfg = studies.FinetuneStudyConfig.from_dict(resolved)
    assert resolved == studies.FinetuneStudyConfig(epochs=2.0).to_dict() and isinstance(resolved["epochs"], float)
    by_notebook = cfg.open_run("s")
    by_runner = store.create_run("s", cfg.record(cfg.resolve_inputs("s")), notebook="01_finetune")
    assert by_runner.path == by_notebook.path
    assert set(by_notebook.params) == set(cfg.field_names())


def test_inputs_are_the_latest_upstream_run(store):
    from robustlib import studies

    first = store.create_run("up", {"v": 1}, notebook="01_finetune")
    first._set_status(state="completed", completed="2026-01-01T00:00:00+00:00")
    second = store.create_run("up", {"v": 2}, notebook="01_finetune")
    second._set_status(state="completed", completed="2026-01-02T00:00:00+00:00")
    cfg = studies.AttackStudyConfig(finetune_study="up")
    assert cfg.resolve_inputs("here", store) == {"finetune_run": f"up/{second.name}"}
    assert cfg.open_run("here", store=store).input_run("finetune_run").path == second.path
    with pytest.raises(LookupError, match="no completed 01_finetune run in study 'here'"):
        studies.AttackStudyConfig().resolve_inputs("here", store)


def _check_chain(runs, cell_overrides=None):
    """Each run records every parameter of its notebook, and the runs it read."""
    store = record.RunStore()
    for nb, run in zip(CHAIN, runs):
        declared = [k for k in runner.notebook_parameters(nb) if k not in ("study", "run_dir")]
        assert run.completed, nb
        params = run.params
        assert set(declared) <= set(params), (nb, sorted(set(declared) - set(params)))
        for name, value in (cell_overrides or {}).get(nb, {}).items():
            assert params[name] == value, (nb, name)
        executed = json.loads((run.path / "notebook.ipynb").read_text())
        assert executed["cells"], nb
        assert run.path.parent.parent == store.root
    inputs = [r.params.get("inputs", {}) for r in runs]
    ft, attack, defense = (f"{r.study}/{r.name}" for r in runs[:3])
    assert inputs[1] == {"finetune_run": ft} and inputs[2] == {"finetune_run": ft}
    assert inputs[3] == {"attack_run": attack, "defense_run": defense}


def _notebook_sections(page):
    return {nb for nb in CHAIN if f'id="{nb}"' in page}


@pytest.mark.slow
def test_the_chain_on_every_notebooks_own_defaults():
    """The README's chain through the runner with no parameter file: each notebook on
    its defaults, reading what the previous one recorded, ends with a report. (nbval
    then opens these same runs: same settings, same names.)"""
    runs = [runner.run_notebook(nb, {}, study="smoke", progress=False) for nb in CHAIN]
    _check_chain(runs)
    assert runs[0].params["task"] == "password_match"  # a default the old runner did not record
    page = report.export_study("smoke").read_text()
    assert _notebook_sections(page) == set(CHAIN)


@pytest.mark.slow
def test_the_chain_on_a_chunk_task_from_local_files(tmp_path):
    """Spam from local files: 02 and 03 read the examples from the files 01 trained on
    (the hub is never asked), at the suffix, to a report."""
    folder = tmp_path / "spam"
    folder.mkdir()
    for split, n in (("train", 200), ("test", 80)):
        rows = [{"text": f"Subject: {'win cash now' if i % 2 else 'team meeting'} {i}\n"
                         f"{'Claim your prize today.' if i % 2 else 'Agenda attached.'}", "label": i % 2}
                for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = {"01_finetune": {"task": "spam", "data_source": str(folder), "sizes": ["zoo-0.3m"]}}
    # The hub is unreachable here and in CI: a notebook that asked it would fail.
    runs = [runner.run_notebook(nb, overrides.get(nb, {}), study="chunk", progress=False) for nb in CHAIN]
    _check_chain(runs, overrides)
    attack = runs[1].load_table("attack")
    assert set(attack["task"]) == {"spam"}
    robustness = runs[2].load_table("robustness")
    assert set(robustness["task"]) == {"spam"} and set(robustness["position"]) == {1.0}
    page = report.export_study("chunk").read_text()
    assert _notebook_sections(page) == set(CHAIN)


def test_notebooks_call_their_study_and_name_no_source_file():
    """The notebook is the story: it builds its config from its parameters and opens its
    run through it; 05 names no released file or experiment prefix."""
    from robustlib import studies

    for nb in NOTEBOOKS:
        cells = json.loads((ROOT / "notebooks" / f"{nb}.ipynb").read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        assert f"studies.{studies.config_class(nb).__name__}.from_namespace(globals())" in code[2], nb
        assert "cfg.open_run(study, run_dir)" in code[2], nb
        parameters = set(runner.notebook_parameters(nb))
        for source in code[2:]:  # no cell after the parameters overwrites one (a derived value gets its own name)
            assigned = {node.id for node in ast.walk(ast.parse(source))
                        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
            assert not assigned & parameters, (nb, assigned & parameters)
    paper = "".join("".join(c["source"]) for c in json.loads(
        (ROOT / "notebooks" / "05_paper_results.ipynb").read_text())["cells"])
    for fragment in (".csv", "tom_", "oskar_", "ian_", "niki_", "pythia_pm"):
        assert fragment not in paper


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "params").glob("*.yaml")))
def test_every_parameter_file_validates(name, monkeypatch):
    """The shipped pipeline files are valid against today's study configs (checked as
    the runner checks them, before any kernel). The hub is not reachable here: the
    models a file would fetch are collected instead, and must be real hub ids."""
    from robustlib import models

    fetched = []
    monkeypatch.setattr(models, "check_hub_model", lambda repo, revision=None: fetched.append(repo))
    from robustlib import sweep

    data = runner.load_params(name)
    assert set(data) <= {"study", "grid", "notebooks"} and data["notebooks"]
    planned = sweep.plan(name)  # every job of the grid checked, as `sweep` checks them before it starts
    assert planned.jobs
    assert all(models.is_hub_id(repo) for repo in fetched)
    if name in ("paper", "paper-pythia"):
        assert "EleutherAI/pythia-12b" in fetched and len(set(fetched)) == 10
    if name == "paper-qwen":
        assert "Qwen/Qwen2.5-14B" in fetched
