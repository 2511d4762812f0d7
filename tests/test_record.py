import json

import pytest

from robustlib import record


@pytest.fixture()
def store(tmp_path):
    return record.RunStore(tmp_path)


def test_run_layout_provenance_and_reopen(store):
    run = store.create_run("s1", {"seeds": [0, 1], "lr": 0.1}, notebook="01_finetune")
    assert run.name.startswith("01_finetune-") and run.status["state"] == "running"
    prov = run.provenance
    assert prov["git_commit"] is None or len(prov["git_commit"]) == 40
    assert prov["packages"]["torch"] and prov["seeds"] == [0, 1] and prov["cpu_count"] >= 1
    run.log_metrics(a=1, b=float("nan"))
    run.save_table("rows", [{"x": 1}, {"x": 2}])
    again = store.create_run("s1", {"lr": 0.1, "seeds": [0, 1]}, notebook="01_finetune")  # same params
    assert again.path == run.path
    assert again.metrics == {"a": 1, "b": None}  # NaN stored as null; nothing lost on reopen
    assert list(again.load_table("rows")["x"]) == [1, 2]
    assert again.params == {"lr": 0.1, "seeds": [0, 1]}
    other = store.create_run("s1", {"lr": 0.2}, notebook="01_finetune")
    assert other.path != run.path


def test_writes_are_atomic_and_leave_no_temp_files(store, monkeypatch):
    run = store.create_run("s", {}, name="r")
    run.log_metrics(x=1)
    # A crash in the middle of writing keeps the old file and leaves no temp file.
    real_dumps = json.dumps

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(record, "dump_json", boom)
    with pytest.raises(KeyboardInterrupt):
        run.log_metrics(x=2)
    monkeypatch.setattr(record, "dump_json", lambda o: real_dumps(o))
    assert run.metrics == {"x": 1}
    assert not [p for p in run.path.rglob("*") if p.name.endswith(".tmp")]


def test_latest_picks_latest_completed_of_notebook(store):
    a = store.create_run("st", {"i": 1}, notebook="nb")
    b = store.create_run("st", {"i": 2}, notebook="nb")
    c = store.create_run("st", {"i": 3}, notebook="other")
    with pytest.raises(LookupError, match="no completed"):
        store.latest("st", "nb")
    a.mark_completed()
    b._set_status(state="completed", completed="9999-01-01T00:00:00+00:00")
    c.mark_completed()
    assert store.latest("st", "nb").path == b.path
    assert store.latest("st", "other").path == c.path
    b.mark_failed("x")  # a failed rerun of a completed run: it stays completed, with the error
    assert store.latest("st", "nb").path == b.path and b.status["last_error"] == "x"
    d = store.create_run("st", {"i": 4}, notebook="other")
    d.mark_failed("y")  # never completed: failed, never picked
    assert d.state == "failed" and d.status["error"] == "y" and store.latest("st", "other").path == c.path


@pytest.mark.parametrize("bad", ["", "..", "a/b", "a b", "../x", None])
def test_bad_names_rejected(store, bad):
    with pytest.raises(ValueError, match="invalid study name"):
        store.create_run(bad, {})


@pytest.mark.parametrize("parts", [("..", "escape"), ("a/../../../../escape.txt",), ("/etc/passwd",), ("",), ()])
def test_artifact_paths_stay_inside_the_run(store, parts):
    run = store.create_run("s", {}, name="r")
    with pytest.raises(ValueError, match="invalid"):
        run.artifact_path(*parts)
    assert not (store.root / "escape").exists() and not (store.root / "s" / "escape.txt").exists()


def test_tables_artifacts_and_relative_paths(store):
    run = store.create_run("s", {}, name="r")
    assert run.artifact_path("models", "m", "x.json").parent.is_dir()
    with pytest.raises(FileNotFoundError, match="no table"):
        run.load_table("missing")
    assert run.load_rows("missing") == []  # a study resuming from scratch
    with pytest.raises(ValueError, match="invalid table name"):
        run.load_rows("../../escape")
    with pytest.raises(ValueError, match="invalid"):
        run.load_json("../../params.yaml")
    folder = run.artifact_path("models", "m")
    folder.mkdir(exist_ok=True)
    assert run.relative(folder) == "artifacts/models/m" and run.resolve("artifacts/models/m") == folder
    with pytest.raises(ValueError, match="leaves"):
        run.resolve("../other-run/artifacts")


def test_inputs_name_earlier_runs_in_the_same_store(store, tmp_path):
    up = store.create_run("a", {"x": 1}, notebook="01")
    down = store.create_run("b", {"inputs": {"up": f"a/{up.name}"}}, notebook="02")
    assert down.inputs == {"up": f"a/{up.name}"} and down.input_run("up").path == up.path
    with pytest.raises(LookupError, match="recorded no input 'other'; it has: \\['up'\\]"):
        down.input_run("other")
    bad = store.create_run("b", {"inputs": {"up": "../../etc"}}, notebook="02")
    with pytest.raises(ValueError, match="leaves"):
        bad.input_run("up")


def test_writes_follow_the_process_umask_and_importing_changes_nothing(store):
    import importlib
    import os

    before = os.umask(0o022)
    try:
        importlib.reload(record)
        assert os.umask(0o022) == 0o022  # importing the module left the umask alone
        run = store.create_run("s", {"k": 1}, name="r")
        assert (run.path / "params.yaml").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(before)


def test_open_run_with_and_without_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLIB_RUNS", str(tmp_path))
    run = record.open_run("", study="s", notebook="nb", params={"k": 1, "v": [1, 2]})
    assert run.path.parent == tmp_path / "s" and run.notebook == "nb"
    assert record.open_run(str(run.path), notebook="nb").path == run.path
    # the runner's run: what the notebook resolved must be what was recorded
    assert record.open_run(str(run.path), params={"k": 1, "v": (1, 2)}).path == run.path
    with pytest.raises(ValueError, match=r"made for other parameters: \['k'\] differ"):
        record.open_run(str(run.path), params={"k": 2})
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        record.open_run(str(tmp_path / "nope"))


def test_the_lock_is_one_process_at_a_time_and_never_stale(store, tmp_path):
    import subprocess
    import sys

    run = store.create_run("s", {"k": 1}, name="r")
    assert run.status["state"] == "running" and run.state == "stale"  # recorded running, nobody executing
    run.lock()
    assert run.busy and run.state == "running" and run.status["holder"]["pid"] == __import__("os").getpid()
    run.lock()  # again in the same process: fine
    code = ("import sys; from robustlib import record; run = record.Run(sys.argv[1])\n"
            "try:\n    run.lock()\nexcept record.RunBusyError as err:\n    print('busy:', err)\n")
    out = subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.startswith("busy: run s/r is being executed by process")
    run.mark_completed()  # releases it
    assert not run.busy and run.status.get("holder") is None and run.state == "completed"
    out = subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout == ""  # the other process got it (and its end released it)
    assert not run.busy
