import json
from pathlib import Path

import pytest

from robustlib import record, runner
from robustlib.__main__ import main

FIXTURE = Path(__file__).parent / "notebooks" / "fixture.ipynb"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUSTLIB_REPORTS", str(tmp_path / "reports"))


def test_parameter_table_is_parsed():
    specs = runner.notebook_parameters(FIXTURE)
    assert list(specs) == ["study", "run_dir", "scale", "repeats", "label", "items", "fail", "pause"]
    assert specs["scale"].type_name == "float" and specs["scale"].default == 1.5
    assert specs["items"].default == [1, 2] and specs["repeats"].help == "a count"


def test_every_lab_notebook_declares_study_and_run_dir():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        specs = runner.notebook_parameters(nb)
        assert {"study", "run_dir"} <= set(specs), nb.name


@pytest.mark.parametrize(
    "params,error,match",
    [
        ({"scal": 2.0}, ValueError, "unknown parameter.*scal.*accepted"),
        ({"repeats": "3"}, TypeError, "repeats.*int.*'3'"),
        ({"repeats": True}, TypeError, "repeats"),
        ({"scale": "big"}, TypeError, "scale.*float"),
        ({"items": 3}, TypeError, "items.*list"),
    ],
)
def test_bad_parameters_rejected_before_any_kernel(params, error, match, monkeypatch, tmp_path):
    import papermill

    def forbidden(*a, **k):
        raise AssertionError("papermill must not start")

    monkeypatch.setattr(papermill, "execute_notebook", forbidden)
    with pytest.raises(error, match=match):
        runner.run_notebook(FIXTURE, params, study="t")
    assert not (tmp_path / "runs").exists()  # no run folder either


def test_int_accepted_for_float_and_tuple_for_list():
    resolved = runner.validate_parameters(FIXTURE, {"scale": 2, "items": (1,)})
    assert resolved == {"scale": 2.0, "repeats": 2, "label": "hello", "items": [1], "fail": False, "pause": 0.0}
    assert isinstance(resolved["scale"], float)


@pytest.mark.parametrize(
    "notebook,params,error,match",
    [
        ("01_finetune", {"n_train": -5}, ValueError, "n_train=-5"),
        ("01_finetune", {"sizes": []}, ValueError, "sizes=\\[\\]"),
        ("01_finetune", {"task": "nosuch"}, ValueError, "unknown task 'nosuch'"),
        ("01_finetune", {"seeds": [0, 0]}, ValueError, "duplicates"),
        ("01_finetune", {"lr": 5}, ValueError, "lr=5.0"),
        ("02_attack", {"position": 1.5}, ValueError, "position=1.5"),
        ("02_attack", {"attack": "pgd"}, ValueError, "unknown attack 'pgd'"),
        ("03_adversarial_training", {"train_attacks": ["beast"], "attack_iterations_end": 40}, ValueError,
         "at most n_attack_tokens=25"),
        ("04_offense_defense", {"thresholds": []}, ValueError, "thresholds=\\[\\]"),
        ("01_finetune", {"study": "foo"}, ValueError, "set by the runner"),
    ],
)
def test_bad_values_of_lab_notebooks_rejected_before_any_kernel(notebook, params, error, match, monkeypatch,
                                                                 tmp_path):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    with pytest.raises(error, match=match):
        runner.run_notebook(notebook, params, study="t")
    assert not (tmp_path / "runs").exists()  # no run folder either


def test_lab_notebooks_resolve_their_whole_config():
    from robustlib import studies

    resolved = runner.validate_parameters("02_attack", {"attack": "beast"})
    assert resolved == studies.AttackStudyConfig(attack={"name": "beast"}).to_dict()
    assert resolved["attack"] == {"name": "beast"} and resolved["n_examples"] == 4


def test_run_executes_and_records(tmp_path):
    run = runner.run_notebook(FIXTURE, {"scale": 2.0, "items": [1, 2, 3]}, study="t", progress=False)
    assert run.completed and run.metrics == {"value": 12.0, "label": "hello"}
    # every resolved parameter is recorded, not only the overrides
    assert run.params == {"scale": 2.0, "repeats": 2, "label": "hello", "items": [1, 2, 3], "fail": False,
                          "pause": 0.0}
    assert (run.path / "notebook.ipynb").exists()
    assert run.path.parent == tmp_path / "runs" / "t"
    assert record.RunStore().latest("t", "fixture").path == run.path


def test_failing_notebook_marks_run_failed_and_keeps_notebook():
    with pytest.raises(RuntimeError, match="failed"):
        runner.run_notebook(FIXTURE, {"fail": True}, study="t", progress=False)
    (run,) = record.RunStore().runs("t")
    assert run.status["state"] == "failed" and "failing on purpose" in run.status["error"]
    assert (run.path / "notebook.ipynb").exists()


def test_unknown_notebook_and_params_file():
    with pytest.raises(KeyError, match="available"):
        runner.resolve_notebook("99_nothing")
    with pytest.raises(FileNotFoundError, match="built-in sets"):
        runner.load_params("no_such_params")
    assert runner.load_params("smoke")["study"] == "smoke"


def test_pipeline_validates_every_notebook_first(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    bad = tmp_path / "p.yaml"
    bad.write_text(f"study: x\nnotebooks:\n  {FIXTURE}: {{scale: 1.0}}\n  01_finetune: {{sizes: 3}}\n")
    with pytest.raises(ValueError, match="sizes=3"):
        runner.run_pipeline(bad)
    bad.write_text("study: x\nnotebook: {}\n")
    with pytest.raises(ValueError, match="notebooks"):
        runner.run_pipeline(bad)


def _cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_reports_bad_parameters_with_exit_code_2(tmp_path, capsys):
    code, _, err = _cli(capsys, "run", "01_finetune", "-p", "sizes", "[zoo-9m]", "-p", "lrr", "1")
    assert code == 2 and "unknown parameter" in err and "lrr" in err
    code, _, err = _cli(capsys, "run", "01_finetune", "-p", "n_train", "many")
    assert code == 2 and "n_train" in err and "Traceback" not in err
    code, _, err = _cli(capsys, "run", "01_finetune", "-p", "n_train", "-5")
    assert code == 2 and "n_train=-5" in err
    code, _, err = _cli(capsys, "run", "01_finetune", "-p", "sizes", "[zoo-1m")
    assert code == 2 and err.startswith("error: invalid YAML") and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "run", "01_finetune", "--study", "")
    assert code == 2 and "invalid study name ''" in err
    code, _, err = _cli(capsys, "run", "01_finetune", "-p", "study", "foo")
    assert code == 2 and "set by the runner" in err
    code, out, _ = _cli(capsys, "params", "02_attack")
    assert code == 0 and "n_examples" in out and "attack" in out
    assert not (tmp_path / "runs").exists()


# Six lines that stand for a million values once the aliases are written out.
BOMB = """a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
notebooks: {01_finetune: {sizes: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]}}
"""


def _notebook(*parameter_cells):
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {"tags": ["parameters"]},
              "outputs": [], "source": src} for i, src in enumerate(parameter_cells)]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _files(tmp_path):
    files = {
        "bomb.yaml": BOMB,
        "syntax.yaml": "study: x\nnotebooks: {01_finetune: {sizes: [zoo-1m}\n",
        "tagged.yaml": "study: !!python/object/apply:os.getcwd []\nnotebooks: {}\n",
        "list.yaml": "- a\n- b\n",
        "self.yaml": "study: x\nnotebooks: &n {01_finetune: {sizes: *n}}\n",
        "nonotebooks.yaml": "study: x\n",
        "extra.yaml": "study: x\nnotebooks: {}\nstudies: []\n",
        "badparam.yaml": "study: x\nnotebooks: {01_finetune: {n_train: 0}}\n",
        "badstudy.yaml": "study: ../x\nnotebooks: {01_finetune: {}}\n",
        "nblist.yaml": "study: x\nnotebooks: [01_finetune]\n",
        "unknownnb.yaml": "study: x\nnotebooks: {99_nothing: {}}\n",
        "badtype.yaml": "study: x\nnotebooks: {02_attack: {n_examples: many}}\n",
        "notebook.ipynb": "{not json",
        "noparams.ipynb": json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
        "untyped.ipynb": _notebook("x = 3"),
        "twice.ipynb": _notebook("x: int = 3  # a", "y: int = 4  # b"),
        "call.ipynb": _notebook("x: int = int(3)  # a"),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "99_nothing"], "unknown notebook '99_nothing'"),
        (["run", "01_finetune", "-p", "n_trian", "3"], "unknown parameter(s) ['n_trian']"),
        (["run", "01_finetune", "-p", "seeds", "[0, 0]"], "duplicates"),
        (["run", "01_finetune", "-p", "task", "nosuch"], "unknown task 'nosuch'"),
        (["run", "02_attack", "-p", "attack", "{name: gcg, topk: 3}"], "unknown gcg option(s) ['topk']"),
        (["run", "01_finetune", "-p", "sizes", "!!python/object/apply:os.getcwd []"], "invalid YAML"),
        (["run", "01_finetune", "-f", "{d}/bomb.yaml"], "expands to more than 100,000 values"),
        (["run", "01_finetune", "-f", "{d}/self.yaml"], "refers to itself"),
        (["run", "01_finetune", "-f", "{d}/syntax.yaml"], "invalid YAML"),
        (["run", "01_finetune", "-f", "{d}/list.yaml"], "a params file must be a mapping, got list"),
        (["run", "01_finetune", "-f", "{d}/missing.yaml"], "no params file"),
        (["run", "01_finetune", "--study", "a/b"], "invalid study name 'a/b'"),
        (["run", "01_finetune", "-p", "run_dir", "/tmp"], "set by the runner"),
        (["pipeline", "{d}/tagged.yaml"], "invalid YAML"),
        (["pipeline", "{d}/nonotebooks.yaml"], "needs a 'notebooks' mapping"),
        (["pipeline", "{d}/extra.yaml"], "unknown top-level key(s) ['studies']"),
        (["pipeline", "{d}/badparam.yaml"], "n_train=0"),
        (["pipeline", "{d}/badstudy.yaml"], "invalid study name '../x'"),
        (["pipeline", "{d}/bomb.yaml"], "expands to more than"),
        (["pipeline", "{d}/missing.yaml"], "no params file"),
        (["pipeline", "{d}/nblist.yaml"], "needs a 'notebooks' mapping"),
        (["pipeline", "{d}/unknownnb.yaml"], "unknown notebook '99_nothing'"),
        (["pipeline", "{d}/badtype.yaml"], "n_examples='many'"),
        (["report", "nothing-here"], "no completed notebook runs"),
        (["report", ".."], "invalid study name '..'"),
        (["report", "."], "invalid study name '.'"),
        (["report", ""], "invalid study name ''"),
        (["report", "a/b"], "invalid study name 'a/b'"),
        (["report", "a b"], "invalid study name 'a b'"),
        (["report", "/etc"], "invalid study name '/etc'"),
        (["report", "ünï"], "invalid study name 'ünï'"),
        (["report", "../runs"], "invalid study name '../runs'"),
        (["report", "x" * 3 + "\n"], "invalid study name"),
        (["params", "99_nothing"], "unknown notebook '99_nothing'"),
        (["params", "{d}/nothing.ipynb"], "unknown notebook"),
        (["params", "{d}/notebook.ipynb"], "notebook.ipynb"),
        (["params", "{d}/noparams.ipynb"], "has 0 cells tagged 'parameters'"),
        (["params", "{d}/twice.ipynb"], "has 2 cells tagged 'parameters'"),
        (["params", "{d}/untyped.ipynb"], "is not 'name: type = literal'"),
        (["params", "{d}/call.ipynb"], "call.ipynb"),
        (["params", "{d}/badtype.yaml"], "unknown notebook"),
        (["params", ""], "unknown notebook"),
        (["params", "../README"], "unknown notebook"),
    ],
)
def test_every_cli_verb_refuses_bad_input_in_one_line(argv, message, tmp_path, capsys, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    folder = _files(tmp_path / "files" if (tmp_path / "files").mkdir() is None else tmp_path)
    code, out, err = _cli(capsys, *[a.replace("{d}", str(folder)) for a in argv])
    assert code == 2 and message in err, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing recorded


# ---------------------------------------------------------------------------- kills, races, reruns


def _start_runner(tmp_path, *params):
    """The CLI running the fixture notebook in a process group of its own (runner + kernel)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ROBUSTLIB_RUNS": str(tmp_path / "runs")}
    argv = [sys.executable, "-m", "robustlib", "run", str(FIXTURE), "--study", "t", *params]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(predicate, seconds=120):
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    raise AssertionError("timed out")


def _holder(tmp_path):
    runs = list((tmp_path / "runs" / "t").glob("fixture-*")) if (tmp_path / "runs" / "t").exists() else []
    return runs and record.Run(runs[0]).status.get("holder")


def test_a_killed_run_is_reported_stale_and_completes_when_run_again(tmp_path):
    import os
    import signal

    proc = _start_runner(tmp_path, "-p", "pause", "3")
    _wait_for(lambda: _holder(tmp_path))
    (run,) = record.RunStore().runs("t")
    assert run.state == "running" and run.busy
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, mid-notebook
    proc.wait()
    assert run.status["state"] == "running" and run.state == "stale" and not run.busy
    with pytest.raises(LookupError, match=r"\(stale\)"):
        record.RunStore().latest("t", "fixture")
    again = runner.run_notebook(FIXTURE, {"pause": 3.0}, study="t", progress=False)
    assert again.path == run.path and again.state == "completed" and again.metrics["value"] == 6.0
    # Killed again, now while re-running the completed run: it stays completed, its notebook intact.
    executed = (run.path / "notebook.ipynb").read_text()
    proc = _start_runner(tmp_path, "-p", "pause", "3")
    _wait_for(lambda: _holder(tmp_path))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run.state == "completed" and (run.path / "notebook.ipynb").read_text() == executed
    assert record.RunStore().latest("t", "fixture").path == run.path


def test_two_identical_runs_at_once_compute_once(tmp_path):
    proc = _start_runner(tmp_path, "-p", "pause", "4")
    _wait_for(lambda: _holder(tmp_path))
    holder = _holder(tmp_path)
    with pytest.raises(record.RunBusyError, match=f"being executed by process {holder['pid']}"):
        runner.run_notebook(FIXTURE, {"pause": 4.0}, study="t", progress=False)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    (run,) = record.RunStore().runs("t")
    assert run.state == "completed" and run.metrics == {"value": 6.0, "label": "hello"}
    assert "holder" not in run.status or run.status["holder"] is None


def test_a_rerun_that_fails_keeps_a_completed_run_completed(tmp_path, monkeypatch):
    import papermill

    run = runner.run_notebook(FIXTURE, {}, study="t", progress=False)
    good = (run.path / "notebook.ipynb").read_text()
    completed = run.status["completed"]

    def killed(source, out, **kw):
        Path(out).write_text("{half a notebook")  # papermill had started writing
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run_notebook(FIXTURE, {}, study="t", progress=False)
    assert run.state == "completed" and run.status["completed"] == completed and not run.busy
    assert (run.path / "notebook.ipynb").read_text() == good
    assert record.RunStore().latest("t", "fixture").path == run.path

    def fails(source, out, **kw):
        Path(out).write_text("{}")
        raise RuntimeError("a cell failed")

    monkeypatch.setattr(papermill, "execute_notebook", fails)
    with pytest.raises(RuntimeError, match="failed in run"):
        runner.run_notebook(FIXTURE, {}, study="t", progress=False)
    assert run.state == "completed" and "a cell failed" in run.status["last_error"]
    assert (run.path / "notebook.ipynb").read_text() == good and (run.path / "notebook.failed.ipynb").exists()
