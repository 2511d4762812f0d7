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
    b.mark_failed("x")
    assert store.latest("st", "nb").path == a.path


@pytest.mark.parametrize("bad", ["", "..", "a/b", "a b", "../x", None])
def test_bad_names_rejected(store, bad):
    with pytest.raises(ValueError, match="invalid study name"):
        store.create_run(bad, {})


def test_artifact_paths_stay_inside_the_run(store):
    run = store.create_run("s", {}, name="r")
    assert run.artifact_path("models", "m", "x.json").parent.is_dir()
    with pytest.raises(ValueError):
        run.artifact_path("..", "escape")
    with pytest.raises(FileNotFoundError, match="no table"):
        run.load_table("missing")


def test_open_run_with_and_without_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLIB_RUNS", str(tmp_path))
    run = record.open_run("", study="s", notebook="nb", params={"k": 1})
    assert run.path.parent == tmp_path / "s" and run.notebook == "nb"
    assert record.open_run(str(run.path), notebook="nb").path == run.path
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        record.open_run(str(tmp_path / "nope"))
