import math

import pandas as pd
import pytest
import torch

from robustlib import evaluate, finetune, plots, record


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"attack": "pgd"}, "pgd"),
        ({"position": 1.5}, "position"),
        ({"position": float("nan")}, "position"),
        ({"iterations": 0}, "iterations"),
        ({"n_examples": 0}, "n_examples"),
        ({"n_attack_tokens": 0}, "n_attack_tokens"),
        ({"threads": -1}, "threads"),
    ],
)
def test_bad_attack_study_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate.AttackStudyConfig(**kwargs)


def test_unknown_parameter_named():
    with pytest.raises(ValueError, match="unknown parameter.*budget"):
        evaluate.AttackStudyConfig.from_dict({"budget": 3})


def test_laplace_logit10_matches_the_formula():
    assert evaluate.laplace_logit10(0.0, 0) == 0.0  # (0+1)/(0+2) = 1/2
    assert evaluate.laplace_logit10(1.0, 2) == pytest.approx(math.log10(3))  # p = 3/4
    out = evaluate.laplace_logit10(pd.Series([0.0, 0.5]), pd.Series([8, 8]))
    assert out[0] == pytest.approx(math.log10((1 / 10) / (9 / 10)))
    assert out[1] == pytest.approx(0.0)


def _long_table():
    rows = []
    for model, n in (("a", 100), ("b", 1000)):
        for seed in (0, 1):
            for it in range(3):
                rows.append({"model": model, "num_params": n, "seed": seed, "iteration": it,
                             "asr": 0.0 if it == 0 else it * 0.2 + 0.1 * seed, "n_correct_before": 10,
                             "flops_paper": it * n * 4, "n_examples": 4})
    return pd.DataFrame(rows)


def test_asr_at_budget_summarises_over_seeds():
    at = evaluate.asr_at(_long_table(), 2)
    assert list(at["model"]) == ["a", "b"]
    assert at["median"].iloc[0] == pytest.approx(0.45)
    assert (at["min"].iloc[0], at["max"].iloc[0], at["seeds"].iloc[0]) == (pytest.approx(0.4), 0.5, 2)
    with pytest.raises(ValueError, match="iteration 7"):
        evaluate.asr_at(_long_table(), 7)


def test_asr_chart_specs():
    spec = plots.asr_curves(_long_table(), x="flops_per_example").to_dict()
    area, line = spec["layer"]
    assert line["encoding"]["x"]["field"] == "flops_per_example"
    assert line["encoding"]["x"]["scale"]["type"] == "log"
    assert "logit10" in line["encoding"]["y"]["title"]
    rows = next(v for v in spec["datasets"].values() if v)
    assert min(r["flops_per_example"] for r in rows) > 0  # iteration 0 dropped on a log axis
    spec = plots.asr_curves(_long_table(), x="iteration").to_dict()
    assert spec["layer"][1]["encoding"]["x"]["field"] == "iteration"
    with pytest.raises(ValueError, match="accepted"):
        plots.asr_curves(_long_table(), x="tokens")
    at = plots.asr_vs_params(evaluate.asr_at(_long_table(), 2), 2).to_dict()
    assert at["layer"][1]["encoding"]["x"]["scale"]["type"] == "log"


def test_attack_study_records_and_resumes(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    store = record.RunStore(tmp_path)
    ft_cfg = finetune.FinetuneStudyConfig(sizes=["zoo-0.3m"], seeds=[0], n_train=16, n_val=8, batch_size=8)
    models_table = finetune.run_study(ft_cfg, store.create_run("s", {}, notebook="01_finetune"), progress=False)
    cfg = evaluate.AttackStudyConfig(iterations=2, n_examples=4, top_k=16, n_candidates=8)
    run = store.create_run("s", {"a": 1}, notebook="02_attack")
    table = evaluate.run_attack_study(cfg, run, models_table, "password_match", progress=False)
    assert list(table["iteration"]) == [0, 1, 2] and table["asr"].iloc[0] == 0
    assert table["flops_paper"].is_monotonic_increasing and table["flops_real"].iloc[-1] > 0
    assert (table["flops_real"] <= table["flops_paper"]).all()  # the prefix cache saves work
    per_example = pd.DataFrame(run.load_json("attack_examples/zoo-0.3m__seed0.json"))
    assert set(per_example["iteration"]) <= {1, 2} and per_example["attack"].map(type).eq(str).all()

    from robustlib import attacks

    monkeypatch.setattr(attacks, "run_attack", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-ran")))
    again = evaluate.run_attack_study(cfg, run, models_table, "password_match", progress=False)
    pd.testing.assert_frame_equal(again, table)
    with pytest.raises(ValueError, match="no models"):
        evaluate.run_attack_study(cfg, run, models_table.iloc[:0], "password_match")
    with pytest.raises(ValueError, match="position"):
        evaluate.run_attack_study(evaluate.AttackStudyConfig(position=0.5), run, models_table, "password_match")


def test_flops_chart_aggregates_seeds_per_iteration():
    table = _long_table()
    table.loc[table["seed"] == 1, "flops_paper"] *= 3  # seeds spend different compute
    spec = plots.asr_curves(table, x="flops_per_example").to_dict()
    rows = next(v for v in spec["datasets"].values() if v)
    assert len(rows) == 2 * 2  # one point per model x iteration (1, 2), not per seed
    a1 = next(r for r in rows if r["model"] == "a" and r["iteration"] == 1)
    assert a1["flops_per_example"] == pytest.approx((400 + 1200) / 2 / 10)  # median over seeds, per attacked example
    assert a1["min"] < a1["median"] < a1["max"]
