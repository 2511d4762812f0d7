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


# ---------------------------------------------------------------------------- charts on tidy tables


def _tidy(rounds=(0,)):
    """A tiny tidy attack table: 2 sizes x 2 seeds x rounds x iterations 0..3."""
    rows = []
    for model, n in (("zoo-a", 100), ("zoo-b", 1000)):
        for seed in (0, 1):
            for rnd in rounds:
                for it in range(4):
                    rows.append({"source": "lab", "task": "password_match", "family": "zoo", "model": model,
                                 "num_params": n, "seed": seed, "round": rnd, "attack": "gcg", "position": 1.0,
                                 "train_attack": "gcg" if max(rounds) > 0 else "none",
                                 "iteration": it, "asr": min(1.0, 0.2 * it / (1 + rnd) + 0.05 * seed),
                                 "n_attacked": 10.0, "n_examples": 12.0, "flops_per_iteration": 10.0 * n,
                                 "attack_flops": 10.0 * n * it, "defense_flops": 1e3 * n * rnd,
                                 "pretrain_compute": 1e6 * n})
    return pd.DataFrame(rows)


def _marks(spec):
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]


def _rows(spec, field):
    return next(v for v in spec["datasets"].values() if v and field in v[0])


def test_asr_vs_params_spec_and_colour():
    summary = pd.DataFrame({"model": ["a", "b", "a", "b"], "num_params": [10, 100, 10, 100], "task": list("xxyy"),
                            "median": [0.5, 0.4, 0.9, 0.8], "min": [0.4, 0.3, 0.8, 0.7], "max": [0.6, 0.5, 1, 0.9]})
    spec = plots.asr_vs_params(summary, 10, color="task").to_dict()
    assert _marks(spec) == ["area", "line"]
    band, line = spec["layer"]
    assert line["encoding"]["x"]["scale"]["type"] == "log" and line["encoding"]["y"]["field"] == "median"
    assert band["encoding"]["y"]["field"] == "min" and band["encoding"]["y2"]["field"] == "max"
    assert line["encoding"]["color"]["field"] == "task" and "10 iterations" in line["encoding"]["y"]["title"]
    with pytest.raises(ValueError, match="task"):
        plots.asr_vs_params(summary.drop(columns="task"), 10, color="task")
    with pytest.raises(ValueError, match=r"\['max', 'min'\]"):
        plots.asr_vs_params(summary.drop(columns=["min", "max"]), 10)


def test_asr_curves_against_compute():
    spec = plots.asr_curves(_tidy(), x="attack_flops").to_dict()
    assert _marks(spec) == ["area", "line"]
    area, line = spec["layer"]
    assert line["encoding"]["x"]["field"] == "attack_flops" and line["encoding"]["x"]["scale"]["type"] == "log"
    assert "logit10" in line["encoding"]["y"]["title"] and area["encoding"]["y2"]["field"] == "max"
    # one colour per model, named, smallest first, from a categorical palette
    assert line["encoding"]["color"]["field"] == "model" and line["encoding"]["color"]["sort"] == ["zoo-a", "zoo-b"]
    assert line["encoding"]["color"]["scale"]["scheme"] == "category10"
    assert line["encoding"]["x"]["axis"]["labelOverlap"] == "greedy"
    rows = _rows(spec, "median")
    assert len(rows) == 2 * 3 and min(r["attack_flops"] for r in rows) > 0  # iteration 0 off the log axis
    frac = plots.asr_curves(_tidy(), x="attack_flops", normalise="pretrain").to_dict()
    assert "pretraining" in frac["layer"][1]["encoding"]["x"]["title"]
    assert max(r["attack_flops"] for r in _rows(frac, "median")) == pytest.approx(3e-5)
    with pytest.raises(ValueError, match="attack_flops"):
        plots.asr_curves(_tidy().drop(columns="attack_flops"))
    with pytest.raises(ValueError, match="normalise='x'"):
        plots.asr_curves(_tidy(), normalise="x")
    with pytest.raises(ValueError, match="accepted"):
        plots.asr_curves(_tidy(), x="tokens")


def test_asr_curves_against_iterations_aggregate_seeds():
    t = _tidy()
    t.loc[t["seed"] == 1, "attack_flops"] *= 3  # seeds spend different compute
    spec = plots.asr_curves(t, x="iteration").to_dict()
    assert spec["layer"][1]["encoding"]["x"]["field"] == "iteration"
    rows = _rows(spec, "median")
    assert len(rows) == 2 * 4  # one point per model x iteration (0..3), not per seed
    flops = _rows(plots.asr_curves(t, x="attack_flops").to_dict(), "median")
    a1 = next(r for r in flops if r["model"] == "zoo-a" and r["iteration"] == 1)
    assert a1["attack_flops"] == pytest.approx((1000 + 3000) / 2)  # the median over seeds
    assert a1["min"] < a1["median"] < a1["max"]


def test_slopes_vs_params_spec():
    slopes = pd.DataFrame({"model": ["a", "b", "c"], "num_params": [10, 100, 1000], "slope": [1.0, 1.5, 2.0],
                           "slope_low": [0.5, 1.0, 1.5], "slope_high": [1.5, 2.0, 2.5], "r2": [0.9] * 3})
    spec = plots.slopes_vs_params(slopes, size_fit={"intercept": 0.5, "slope": 0.5}).to_dict()
    assert _marks(spec) == ["rule", "point", "line"]
    rule, point, fit = spec["layer"]
    assert rule["encoding"]["y"]["field"] == "slope_low" and rule["encoding"]["y2"]["field"] == "slope_high"
    assert all(layer["encoding"]["x"]["scale"]["type"] == "log" for layer in spec["layer"])
    line = next(v for v in spec["datasets"].values() if v and "model" not in v[0])
    assert [r["slope"] for r in line] == pytest.approx([1.0, 2.0])  # 0.5 + 0.5 log10(10), ... log10(1000)
    assert _marks(plots.slopes_vs_params(slopes).to_dict()) == ["rule", "point"]
    with pytest.raises(ValueError, match="slope_high"):
        plots.slopes_vs_params(slopes.drop(columns="slope_high"))


def test_robustness_charts_take_tidy_tables():
    t = _tidy(rounds=(0, 1, 2))
    spec = plots.asr_vs_round(t, 3).to_dict()
    assert _marks(spec) == ["area", "line"]
    assert spec["layer"][1]["encoding"]["x"]["field"] == "round"
    assert "logit10" in spec["layer"][1]["encoding"]["y"]["title"]
    assert len(_rows(spec, "median")) == 2 * 3  # one point per size x round, seeds aggregated
    spec = plots.asr_vs_defense_flops(t, 3).to_dict()
    assert spec["layer"][1]["encoding"]["x"]["scale"]["type"] == "log"
    assert min(r["defense_flops"] for r in _rows(spec, "median")) > 0  # round 0 off the log axis
    with pytest.raises(ValueError, match="round"):
        plots.asr_vs_round(t.drop(columns="round"), 3)


def test_transfer_heatmap_from_seed_rows_with_budget():
    rows = [{"model": m, "num_params": n, "train": tr, "eval": ev, "budget": b, "seed": s,
             "asr": 0.1 * s + (0.8 if tr == "none" else 0.1)}
            for m, n in (("zoo-b", 1000), ("zoo-a", 100)) for tr in ("none", "gcg@1") for ev in ("gcg@1", "beast@1")
            for b in (10, 128) for s in (0, 1, 2)]
    spec = plots.transfer_heatmap(pd.DataFrame(rows)).to_dict()
    assert spec["facet"]["column"]["field"] == "model" and spec["facet"]["column"]["sort"] == ["zoo-a", "zoo-b"]
    assert spec["facet"]["row"]["field"] == "budget"
    cells, text = spec["spec"]["layer"]
    assert cells["mark"]["type"] == "rect" and text["mark"]["type"] == "text"
    assert cells["encoding"]["color"]["field"] == "asr_median"
    assert cells["encoding"]["x"]["field"] == "eval" and cells["encoding"]["y"]["field"] == "train"
    data = spec["data"]["values"] if "values" in spec.get("data", {}) else _rows(spec, "asr_median")
    assert len(data) == 2 * 2 * 2 * 2 and {r["seeds"] for r in data} == {3}
    assert {round(r["asr_median"], 6) for r in data} == {0.9, 0.2}  # median over the 3 seeds
    # no model column: a single heatmap
    single = plots.transfer_heatmap(pd.DataFrame({"train": ["none", "gcg"], "eval": ["gcg", "gcg"],
                                                  "asr": [0.9, 0.1]})).to_dict()
    assert "facet" not in single and _marks(single) == ["rect", "text"]
    with pytest.raises(ValueError, match=r"\['asr', 'train'\]"):
        plots.transfer_heatmap(pd.DataFrame({"eval": ["gcg"], "value": [0.1]}))


def test_offense_defense_spec():
    points = pd.DataFrame({"model": ["a"] * 6 + ["b"] * 6, "num_params": [10] * 6 + [100] * 6,
                           "seed": [0, 1] * 6, "round": [1, 1, 2, 2, 3, 3] * 2,
                           "attack_flops_to_reach": [10.0, 12, 20, 22, 40, 44, 100, 110, 150, 160, 300, 320],
                           "defense_flops": [100.0, 100, 200, 200, 400, 400, 1e3, 1e3, 2e3, 2e3, 4e3, 4e3],
                           "scale": "FLOPs"})
    per = pd.DataFrame({"model": ["a", "b"], "num_params": [10, 100], "slope": [0.8, 0.7],
                        "intercept": [-0.6, 0.0]})
    spec = plots.offense_defense(points, per).to_dict()
    assert _marks(spec) == ["area", "line", "circle", "line", "line"]  # band, medians, seeds, parity, fits
    for layer in spec["layer"]:
        assert layer["encoding"]["x"]["scale"]["type"] == "log" and layer["encoding"]["x"]["field"] == "defense_flops"
        assert layer["encoding"]["y"]["scale"]["type"] == "log"
    band, median, _, parity, fits = spec["layer"]
    assert band["encoding"]["y"]["field"] == "min" and band["encoding"]["y2"]["field"] == "max"
    assert median["encoding"]["y"]["field"] == "median" and parity["mark"]["strokeDash"]
    med = [r for r in _rows(spec, "seeds")]
    assert len(med) == 6 and {r["median"] for r in med if r["model"] == "a"} == {11.0, 21.0, 42.0}
    parity_rows = next(v for v in spec["datasets"].values() if len(v) == 2 and "model" not in v[0])
    assert [r["defense_flops"] for r in parity_rows] == [r["median"] for r in parity_rows]  # y = x
    assert _marks(plots.offense_defense(points, show_points=False).to_dict()) == ["area", "line", "line"]
    frac = plots.offense_defense(points.assign(scale="fraction of pretraining compute")).to_dict()
    assert "pretraining" in frac["layer"][0]["encoding"]["x"]["title"]
    with pytest.raises(ValueError, match="defense_flops"):
        plots.offense_defense(points.drop(columns="defense_flops"))
    with pytest.raises(ValueError, match="intercept"):
        plots.offense_defense(points, per.drop(columns="intercept"))


def test_legend_symbols_are_as_strong_as_the_lines():
    """A legend shared by a faint band and its line draws its symbols at full opacity
    (the band's 0.15 made every model's colour hard to match), in the rendered SVG."""
    import re

    import vl_convert as vlc

    svg = vlc.vegalite_to_svg(plots.asr_curves(_tidy(), x="attack_flops").to_dict())
    symbols = re.findall(r'role-legend-symbol"[^>]*><path ([^>]*)/>', svg)
    assert len(symbols) == 2  # one per model
    for attrs in symbols:
        assert [float(v) for v in re.findall(r'opacity="([0-9.]+)"', attrs)] == [1.0], attrs
