"""robustlib.studies.offense_defense: 04's config, its inputs, and the fits and metrics
it records (on small synthetic tidy tables)."""

import math

import pandas as pd
import pytest

from robustlib import studies
from robustlib.studies import offense_defense as study


def _robustness(sizes=(("zoo-a", 100), ("zoo-b", 1000))):
    """A robustness table as 03 records it: ASR curves at rounds 0..6, defense compute growing."""
    rows = []
    for model, n in sizes:
        for seed in (0, 1):
            for rnd, defense in ((0, 0), (2, 5000), (4, 12000), (6, 30000)):
                for it in range(4):
                    rows.append({"model": model, "family": "zoo", "num_params": n, "seed": seed, "round": rnd,
                                 "train_attack": "gcg", "train_position": 1.0, "attack": "gcg", "position": 1.0,
                                 "task": "password_match", "iteration": it,
                                 "asr": min(1.0, it * 0.3 / (1 + seed) * (100 / n) ** 0.25 / (1 + rnd)),
                                 "n_attacked": 10, "n_examples": 12, "attack_flops_paper": it * n * 2.0,
                                 "attack_flops_real": it * n * 1.5, "flops_per_iteration_paper": n * 2.0 * (it > 0),
                                 "flops_per_iteration_real": n * 1.5 * (it > 0),
                                 "defense_flops_paper": defense * n / 100.0, "defense_flops_real": defense * n / 200.0,
                                 "pretrain_compute": 1e9 * n})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"thresholds": []}, "thresholds=\\[\\]"),
        ({"thresholds": [0.0]}, "thresholds=\\[0.0\\]"),
        ({"thresholds": [True]}, "thresholds=\\[True\\]"),
        ({"budget": -1}, "budget=-1"),
        ({"convention": "fast"}, "convention='fast'.*paper"),
        ({"attack_study": 3}, "attack_study=3"),
        ({"defense_study": None}, "defense_study=None"),
        ({"budget": 1.5}, "budget=1.5"),
        ({"budget": "3"}, "budget='3'"),
        ({"thresholds": "0.5"}, "thresholds='0.5'"),
        ({"thresholds": [0.5, 1.5]}, "thresholds=\\[0.5, 1.5\\]"),
        ({"thresholds": [float("nan")]}, "thresholds=\\[nan\\]"),
        ({"convention": None}, "convention=None"),
    ],
)
def test_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        study.OffenseDefenseConfig(**kwargs)


def test_fits_per_threshold_and_scale_and_what_is_recorded():
    from robustlib import analysis

    defense = analysis.from_lab(_robustness())
    fits, points, skipped = study.fit_offense_defense(defense, [0.05, 0.99])
    assert set(fits["threshold"]) == {0.05} and set(fits["scale"]) == {"FLOPs", "fraction of pretraining"}
    assert len(points) == 1 and points[0][0] == 0.05 and (points[0][1]["defense_flops"] > 0).all()
    assert len(skipped) == 1 and skipped[0].startswith("ASR 99%")
    pooled = fits[(fits["model"] == "pooled") & (fits["scale"] == "FLOPs")]
    direct = analysis.offense_defense(defense, 0.05)[2]
    assert pooled["slope"].item() == pytest.approx(direct["slope"])
    attacks = analysis.from_lab(_robustness()[lambda t: t["round"] == 0])
    slopes, _ = analysis.attack_scaling(attacks)
    row, _ = analysis.robustness_vs_size(attacks, 3)
    m = study.metrics(3, row, slopes, fits)
    assert m["budget"] == 3 and m["robustness_vs_size_slope"] == row["slope"]
    assert set(m["offense_defense_pooled_slopes"]) == {"0.05 FLOPs", "0.05 fraction of pretraining"}
    assert set(m["attack_scaling_slopes"]) == {"zoo-a", "zoo-b"}


def test_nothing_to_fit_is_an_empty_typed_frame():
    from robustlib import analysis

    defense = analysis.from_lab(_robustness().assign(asr=0.0))
    fits, points, skipped = study.fit_offense_defense(defense, [0.25, 0.5])
    assert fits.empty and list(fits.columns)[:4] == ["threshold", "scale", "model", "slope"]
    assert points == [] and len(skipped) == 2
    assert study.metrics(3, {"slope": math.nan}, pd.DataFrame({"model": [], "slope": []}), fits)[
        "offense_defense_pooled_slopes"] == {}


def test_reads_the_latest_attack_and_defense_runs(store):
    attack = store.create_run("s", {"k": 1}, notebook="02_attack")
    attack.save_table("attack", _robustness()[lambda t: t["round"] == 0].drop(
        columns=["round", "train_attack", "train_position", "defense_flops_paper", "defense_flops_real"]))
    attack.mark_completed()
    defense = store.create_run("d", {"k": 2}, notebook="03_adversarial_training")
    defense.save_table("robustness", _robustness())
    defense.mark_completed()
    cfg = study.OffenseDefenseConfig(defense_study="d", convention="real")
    run = cfg.open_run("s", store=store)
    assert run.inputs == {"attack_run": f"s/{attack.name}", "defense_run": f"d/{defense.name}"}
    attacks, defended, budget = study.load(cfg, run)
    assert budget == 3 and set(attacks["train_attack"]) == {"none"} and set(defended["round"]) == {0, 2, 4, 6}
    assert defended["defense_flops"].max() == pytest.approx(30000 * 1000 / 200)  # the real convention
    fixed = study.OffenseDefenseConfig(defense_study="d", budget=2)
    assert study.load(fixed, fixed.open_run("s", store=store))[2] == 2


def test_registered_as_the_notebooks_config():
    assert studies.config_class("04_offense_defense") is study.OffenseDefenseConfig
