"""robustlib.studies.explore: 06_explore's settings refused before a kernel starts, and
the runs it records as read."""

import pytest

from robustlib import runner, studies
from robustlib.studies import DataSpec
from robustlib.studies.explore import ExploreConfig


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"n_examples": 0}, ValueError, "n_examples=0"), ({"n_examples": -3}, ValueError, "n_examples=-3"),
        ({"iterations": 0}, ValueError, "iterations=0"),
        ({"n_examples": "16"}, ValueError, "n_examples=.16. is invalid"),
        ({"iterations": 2.5}, ValueError, "iterations=2.5 is invalid"),
        ({"results_dir": "/no/such/folder"}, FileNotFoundError, "/no/such/folder"),
    ],
)
def test_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        ExploreConfig(**kwargs)


def test_unknown_parameters_and_an_empty_results_folder(tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['budget'\]"):
        ExploreConfig.from_dict({"budget": 3})
    with pytest.raises(ValueError, match="holds no .csv"):
        ExploreConfig(results_dir=str(tmp_path))


def test_inputs_are_the_studys_latest_runs(store, make_finetune_run, tiny_classifier, monkeypatch, tmp_path):
    monkeypatch.delenv("ROBUSTLIB_PAPER_RESULTS", raising=False)
    monkeypatch.setattr(studies.explore.paths, "paper_results_dir", lambda: None)
    cfg = ExploreConfig()
    with pytest.raises(LookupError, match="no completed 01_finetune run in study 'nothing-here'"):
        cfg.resolve_inputs("nothing-here", store)
    ft = make_finetune_run(store, "mine", {"zoo-tiny": tiny_classifier[0]}, DataSpec("password_match", "1", None, 0,
                                                                                      16, 8))
    assert cfg.resolve_inputs("mine", store) == {"01_finetune": f"mine/{ft.name}"}  # no 02/03 yet: not required
    (tmp_path / "t.csv").write_text("asr,iteration\n0,0\n")
    with_release = ExploreConfig(results_dir=str(tmp_path / "t.csv"))
    assert with_release.resolve_inputs("mine", store)["results"] == str(tmp_path / "t.csv")


def test_the_runner_refuses_a_bad_value_before_a_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLIB_RUNS", str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="iterations=0"):
        runner.run_notebook("06_explore", {"iterations": 0}, study="x", progress=False)
    assert not (tmp_path / "runs").exists()
