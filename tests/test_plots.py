import pandas as pd
import pytest

from robustlib import plots


def test_accuracy_vs_params_spec():
    table = pd.DataFrame({
        "model": ["a", "a", "b", "b"], "num_params": [100, 100, 1000, 1000], "seed": [0, 1, 0, 1],
        "val_accuracy": [0.5, 0.7, 0.8, 0.9],
    })
    spec = plots.accuracy_vs_params(table).to_dict()
    band, line, points = spec["layer"]
    assert band["mark"]["type"] == "area" and line["mark"]["type"] == "line"
    for layer in (band, line, points):
        assert layer["encoding"]["x"]["field"] == "num_params"
        assert layer["encoding"]["x"]["scale"]["type"] == "log"
    assert line["encoding"]["y"]["field"] == "median" and band["encoding"]["y2"]["field"] == "max"
    rows = next(v for v in spec["datasets"].values() if v and "median" in v[0])
    assert {r["model"]: r["median"] for r in rows} == pytest.approx({"a": 0.6, "b": 0.85})
    assert {r["model"]: (r["min"], r["max"]) for r in rows} == {"a": (0.5, 0.7), "b": (0.8, 0.9)}


def test_missing_columns_named():
    with pytest.raises(ValueError, match="val_accuracy"):
        plots.accuracy_vs_params(pd.DataFrame({"model": [], "num_params": [], "seed": []}))
