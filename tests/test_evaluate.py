"""robustlib.evaluate: an attack's ASR curve as the lab's tidy rows, and the transfer matrix."""

import math

import pandas as pd
import pytest

from robustlib import analysis, evaluate, tasks
from robustlib.attacks.spec import AttackSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rows_are_tidy_and_per_attacked_example(tiny_classifier):
    model, tok = tiny_classifier
    examples = tasks.load_examples("password_match", "validation", n=6, seed=1)
    spec = AttackSpec.parse({"name": "gcg", "top_k": 8, "n_candidates": 4}, "spec")
    result, rows = evaluate.attack(model, tok, examples, spec, position=1.0, attack_seed=0, iterations=2,
                                   model="m", seed=3)
    assert [r["iteration"] for r in rows] == [0, 1, 2] and [r["asr"] for r in rows] == result.asr
    n = max(1, result.n_correct_before)
    assert all(r["n_attacked"] == result.n_correct_before and r["n_examples"] == 6 for r in rows)
    assert rows[0]["attack_flops_paper"] == 0 and rows[0]["flops_per_iteration_real"] == 0
    for conv in ("paper", "real"):
        total = sum(getattr(result, f"flops_per_iteration_{conv}"))
        assert rows[-1][f"attack_flops_{conv}"] == pytest.approx(total / n)
        assert rows[1][f"flops_per_iteration_{conv}"] == pytest.approx(
            getattr(result, f"flops_per_iteration_{conv}")[1] / n)
    # labels reach every row, the model's seed beside the attack's
    assert {(r["model"], r["seed"], r["attack"], r["position"]) for r in rows} == {("m", 3, "gcg", 1.0)}
    tidy = analysis.from_lab(pd.DataFrame(rows).assign(num_params=1))
    assert tidy["attack_flops"].tolist() == [r["attack_flops_paper"] for r in rows]


def test_the_spec_budget_is_used_unless_the_study_sets_one(tiny_classifier):
    model, tok = tiny_classifier
    examples = tasks.load_examples("password_match", "validation", n=2, seed=1)
    spec = AttackSpec.parse({"name": "random_token", "iterations": 3}, "spec")
    assert len(evaluate.attack(model, tok, examples, spec, position=1.0, attack_seed=0)[1]) == 4
    assert len(evaluate.attack(model, tok, examples, spec, position=1.0, attack_seed=0, iterations=1)[1]) == 2


def _transfer():
    rows = []
    for model, n in (("a", 10), ("b", 100)):
        for seed in (0, 1):
            for train, tpos in (("none", math.nan), ("gcg", 1.0)):
                for attack, budget in (("gcg", 2), ("random_token", 4)):
                    for it in range(budget + 1):
                        rows.append({"model": model, "num_params": n, "seed": seed,
                                     "defended_key": f"{model}{seed}{train}", "train_attack": train,
                                     "train_position": tpos, "attack": attack, "position": 1.0, "iteration": it,
                                     "asr": it / budget * (0.5 if train == "gcg" else 1.0) * (1 + seed) / 2})
    return pd.DataFrame(rows)


def test_transfer_matrix_takes_each_curves_budget():
    m = evaluate.transfer_matrix(_transfer())
    assert set(m["train"]) == {"none", "gcg@1"} and set(m["eval"]) == {"gcg@1 (2 it)", "random_token@1 (4 it)"}
    cell = m[(m["model"] == "a") & (m["train"] == "gcg@1") & (m["eval"] == "random_token@1 (4 it)")].iloc[0]
    assert (cell["asr_min"], cell["asr_max"], cell["seeds"]) == (0.25, 0.5, 2)
    assert cell["asr_median"] == pytest.approx(0.375)
    with pytest.raises(ValueError, match="empty"):
        evaluate.transfer_matrix(_transfer().iloc[:0])
    with pytest.raises(ValueError, match="lacks column.*defended_key"):
        evaluate.transfer_matrix(_transfer().drop(columns="defended_key"))
