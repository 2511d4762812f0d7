"""robustlib.explore: attack stepping and highlighting spans, the results browser's
filters, options and views, the what-if read-offs (against numpy on the fitted points),
and the three explorers driven headless (widgets built without a front end)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from paper_direct import RESULTS, needs_results

from robustlib import tasks
from robustlib.explore import browse, whatif, widgets
from robustlib.explore.session import AttackSession

GCG = {"name": "gcg", "n_attack_tokens": 4, "n_candidates": 8, "top_k": 16}


@pytest.fixture(scope="module")
def pm_examples():
    return tasks.load_examples("password_match", "validation", 6, seed=0)


@pytest.fixture(scope="module")
def spam_examples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spam")
    rows = [{"text": f"Subject: {'win cash now' if i % 2 else 'team meeting'} {i}\nSee you there.", "label": i % 2}
            for i in range(12)]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tasks.load_examples("spam", "validation", 4, seed=0, source=folder)


# ------------------------------------------------------------------------------------ session


def test_stepping_records_the_loss_and_what_changed(tiny_classifier, pm_examples):
    model, tok = tiny_classifier
    s = AttackSession(model, tok, pm_examples[1], GCG, iterations=5)
    state = s.state()
    assert state["iteration"] == 0 and state["losses"] == [] and state["changed"] == []
    assert sum(state["probabilities_before"]) == pytest.approx(1.0)
    first = s.step()
    second = s.step()
    assert (first["iteration"], second["iteration"]) == (1, 2) and len(second["losses"]) == 2
    # GCG swaps one token per step: at most one position changes, and it is the one that differs
    assert len(second["changed"]) <= 1
    assert second["changed"] == [i for i, (a, b) in enumerate(zip(s.previous_ids, s.ids)) if a != b]
    # the same seed, reset: the same losses again
    s.reset()
    assert s.iteration == 0 and s.losses == []
    again = [s.step()["loss"], s.step()["loss"]]
    assert again == second["losses"]


def test_spans_put_the_attack_where_it_sits(tiny_classifier, pm_examples, spam_examples):
    model, tok = tiny_classifier
    slot = AttackSession(model, tok, pm_examples[1], GCG, iterations=3)
    slot.step()
    spans = slot.spans()
    kinds = [sp.kind for sp in spans]
    assert kinds[0] == "text" and kinds[-1] == "text" and kinds[1:-1].count("text") == 0 and len(kinds) == 6
    before, after = pm_examples[1].attack_split(None)
    assert spans[0].text == before and spans[-1].text == after  # PasswordMatch: the empty slot after the passwords
    assert {i for i, k in enumerate(kinds[1:-1]) if k == "changed"} == set(slot.changed())
    # a chunk task: the attack goes where the position says within the email
    placed = {}
    for position in (0.0, 1.0):
        s = AttackSession(model, tok, spam_examples[0], GCG, position=position, iterations=2)
        s.step()
        spans = s.spans()
        before, after = spam_examples[0].attack_split(position)
        assert spans[0].text == before and spans[-1].text == after
        assert [sp.kind for sp in spans[1:-1]] and all(sp.kind != "text" for sp in spans[1:-1])
        assert "".join(sp.text for sp in spans) == before + "".join(tok.decode([t]) for t in s.ids) + after
        placed[position] = len(before)
    content = spam_examples[0].content
    assert placed[1.0] - placed[0.0] == len(content)  # prefix: before the email; suffix: after it


def test_run_stops_when_asked_and_at_the_budget(tiny_classifier, pm_examples):
    model, tok = tiny_classifier
    s = AttackSession(model, tok, pm_examples[1], {"name": "random_token", "n_attack_tokens": 3}, iterations=4)
    seen = []
    s.run(10, on_step=lambda st: seen.append(st["iteration"]))
    assert seen == [1, 2, 3, 4] and s.done
    s.reset()
    s.run(10, should_stop=lambda: s.iteration >= 2)
    assert s.iteration == 2


def test_beast_is_capped_at_its_tokens_and_bad_input_is_refused(tiny_classifier, pm_examples):
    model, tok = tiny_classifier
    s = AttackSession(model, tok, pm_examples[1], {"name": "beast", "n_attack_tokens": 2, "beam_size": 2,
                                                   "sampler_model": "zoo-0.3m"}, iterations=50)
    assert s.config.iterations == 2
    s.step()
    assert len(s.ids) == 1 and s.changed() == [0]
    with pytest.raises(ValueError, match="iterations=0"):
        AttackSession(model, tok, pm_examples[1], GCG, iterations=0)
    with pytest.raises(ValueError, match="unknown attack 'pgd'"):
        AttackSession(model, tok, pm_examples[1], "pgd")
    with pytest.raises(ValueError, match="n=0"):
        AttackSession(model, tok, pm_examples[1], GCG).run(0)


# ------------------------------------------------------------------------------------ browse


@pytest.fixture()
def table():
    """A tidy table: two sizes x two seeds, rounds 0 and 2, GCG and RandomToken."""
    rows = []
    for model, n in (("a", 100), ("b", 1000)):
        for seed in (0, 1):
            for rnd, trained in ((0, "none"), (2, "gcg")):
                for attack in ("gcg", "random_token"):
                    for it in range(4):
                        rows.append({"source": "lab", "task": "password_match", "family": "zoo", "model": model,
                                     "num_params": n, "seed": seed, "round": rnd, "train_attack": trained,
                                     "attack": attack, "position": math.nan, "iteration": it,
                                     "asr": it / (4 + rnd + n / 100), "n_attacked": 20, "n_examples": 20,
                                     "flops_per_iteration": 10.0 * n, "attack_flops": 10.0 * n * it,
                                     "defense_flops": 5e6 * rnd * n, "pretrain_compute": 1e9})
    return pd.DataFrame(rows)


def test_filters_and_linked_options(table):
    assert len(browse.apply(table, {"model": "a", "seed": 0})) == len(table) // 4
    assert len(browse.apply(table, {"position": math.nan})) == len(table)
    opts = browse.options(table, {"round": 2})
    assert opts["train_attack"] == ["gcg"]  # linked: round 2 only has GCG-trained models
    assert opts["round"] == [0, 2]  # a column's own filter does not narrow its choices
    assert opts["model"] == ["a", "b"]
    with pytest.raises(ValueError, match="cannot filter on \\['nosuch'\\]"):
        browse.apply(table, {"nosuch": 1})


def test_views_draw_the_filtered_rows(table):
    one = browse.apply(table, {"attack": "gcg"})
    chart, data = browse.view(one, "ASR vs iterations")
    assert set(data["round"]) == {0} and len(data) == 16
    _, at = browse.view(one, "ASR vs size at a budget")
    assert list(at["model"]) == ["a", "b"] and at["iteration"].tolist() == [3, 3]
    assert at["median"].tolist() == pytest.approx([3 / 5, 3 / 14])
    _, rounds = browse.view(one, "ASR vs round", budget=2)
    assert set(rounds["iteration"]) == {2}
    _, matrix = browse.view(table, "transfer matrix")
    # the undefended models (round 0) are the matrix's baseline row
    assert set(matrix["train"]) == {"none", "gcg"} and set(matrix["eval"]) == {"gcg", "random_token"}
    cell = matrix[(matrix["model"] == "b") & (matrix["train"] == "gcg") & (matrix["eval"] == "gcg")]
    assert cell["asr_median"].item() == pytest.approx(3 / 16)
    with pytest.raises(ValueError, match="one attack at a time"):
        browse.view(table, "ASR vs iterations")
    with pytest.raises(ValueError, match="one round"):
        browse.view(browse.apply(one, {"round": 0}), "ASR vs round")
    with pytest.raises(ValueError, match="no rows match"):
        browse.view(one.iloc[:0], "ASR vs iterations")
    assert browse.budgets(one) == [1, 2, 3]


def test_export_writes_the_chart_and_the_rows(table, tmp_path):
    chart, data = browse.view(browse.apply(table, {"attack": "gcg"}), "ASR vs size at a budget")
    out = browse.export(chart, data, tmp_path / "x")
    from pathlib import Path

    assert Path(out["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in Path(out["svg"]).read_text()
    assert pd.read_csv(out["csv"])["median"].tolist() == pytest.approx(data["median"].tolist())


# ------------------------------------------------------------------------------------ what-if


@needs_results
def test_read_offs_follow_the_fitted_line_both_ways():
    from robustlib import analysis

    tidy = analysis.load_paper_results(RESULTS)
    pm = tidy[tidy["source"] == "tom_013_eval_niki_171_gcg.csv"]
    w = whatif.fit(pm, 0.05)
    model = "pythia-410m"
    pts = w.points[w.points["model"] == model]
    slope, intercept = np.polyfit(np.log10(pts["defense_flops"]), np.log10(pts["attack_flops_to_reach"]), 1)
    r = w.attack_needed(model, 1e17)
    assert math.log10(r["attack"]) == pytest.approx(intercept + slope * 17, abs=1e-9)
    assert r["low"] < r["attack"] < r["high"] and r["inside"] == (pts["defense_flops"].min() <= 1e17
                                                                  <= pts["defense_flops"].max())
    back = w.defense_needed(model, r["attack"])
    assert back["defense"] == pytest.approx(1e17, rel=1e-9)
    lines = w.lines()
    assert set(lines["model"]) == set(w.models) and (lines["low"] <= lines["fit"]).all()
    frac = whatif.fit(pm, 0.05, normalise="pretrain")
    assert frac.scale == "fraction of pretraining compute"
    with pytest.raises(ValueError, match="no fit for 'pythia-99m'"):
        w.attack_needed("pythia-99m", 1e17)
    with pytest.raises(ValueError, match="models \\['nope'\\] have no fit"):
        whatif.fit(pm, 0.05, models=["nope"])


def test_a_falling_line_has_no_defense_answer():
    points = pd.DataFrame({"model": "m", "num_params": 10, "defense_flops": [1e3, 1e4, 1e5],
                           "attack_flops_to_reach": [1e6, 1e5, 1e4], "scale": "FLOPs"})
    import statsmodels.formula.api as smf

    data = points.assign(log_defense=np.log10(points["defense_flops"]),
                         log_attack=np.log10(points["attack_flops_to_reach"]))
    per_size = pd.DataFrame([{"model": "m", "num_params": 10, "slope": -1.0, "intercept": 9.0}])
    w = whatif.WhatIf(0.05, points, per_size, {"m": smf.ols("log_attack ~ log_defense", data=data).fit()}, "FLOPs")
    assert w.defense_needed("m", 1e5)["defense"] is None
    assert w.attack_needed("m", 1e4)["attack"] == pytest.approx(1e5)


# ------------------------------------------------------------------------------------ widgets, headless


def test_the_attack_explorer_steps_and_highlights(tiny_classifier, pm_examples):
    model, tok = tiny_classifier
    ex = widgets.AttackExplorer({"tiny": lambda: (model, tok)}, pm_examples, iterations=6)
    right = ex.correct()  # the model's own verdicts, marked in the list; the first it gets right is picked
    assert len(right) == len(pm_examples) and ex.example.value == next((i for i, r in enumerate(right) if r), 0)
    assert all(("\u2713" in label) != ("\u2717" in label) for label, _ in ex.example.options)
    ex.options.value = json.dumps({"n_candidates": 8, "top_k": 16})
    ex.tokens.value = 4
    assert "iteration 0" in ex.status.value
    ex.step()
    ex.step()
    assert "iteration 2" in ex.status.value
    assert ex.prompt.value.count('class="rl-attack"') + ex.prompt.value.count('class="rl-changed"') == 4
    assert len(ex.loss_chart.data) == 2  # the loss chart, one point per iteration
    ex.search.value = "no such text anywhere"
    assert ex.example.value == -1 and ex.step_button.disabled is False or ex.session is None
    ex.search.value = ""
    thread = ex.run_in_background(3)
    thread.join(timeout=60)
    assert ex.session.iteration == 3 and ex.progress.value == 3 and not ex.step_button.disabled
    ex.iterations.value = 10_000  # a long run, stopped from the Stop button while it goes
    thread = ex.run_in_background(10_000)
    assert ex.step_button.disabled and not ex.stop_button.disabled  # controls off, Stop live
    while ex.session.iteration < 1:
        thread.join(timeout=0.05)
    ex.stop_button.click()
    thread.join(timeout=60)
    assert not thread.is_alive() and 1 <= ex.session.iteration < 10_000 and ex.stop_button.disabled
    ex.options.value = "{bad"
    assert "is not JSON" in ex.status.value and ex.step_button.disabled


def test_the_browser_and_what_if_update_on_their_controls(table):
    b = widgets.ResultsBrowser(table)
    assert "draws one attack at a time" in b.caption.value  # two attacks: the view says what to pick
    b.filters["attack"].value = "gcg"
    assert "32 rows match" in b.caption.value  # 2 sizes x 2 seeds x 2 rounds x 4 iterations
    before = b.caption.value
    b.filters["model"].value = "a"
    assert b.caption.value != before and "16 rows match" in b.caption.value
    assert [o[1] for o in b.filters["model"].options] == ["(any)", "a", "b"]
    wi = widgets.WhatIfExplorer({"zoo": defended()})
    first = wi.readout.value
    assert "takes <b class='rl-attack'>" in first and list(wi.sizes.value) == ["a", "b"]
    wi.threshold.value = 0.3
    assert "takes <b class='rl-attack'>" in wi.readout.value and wi.readout.value != first
    wi.sizes.value = ("a",)
    assert "<b>b</b>" not in wi.readout.value
    wi.attack.value = 1e5
    assert "needs <b>" in wi.readout.value


def defended():
    """Adversarially trained curves: 2 sizes x 2 seeds x rounds 0-4; ASR falls with the
    round, and defense compute grows with it."""
    rows = []
    for model, n in (("a", 100), ("b", 1000)):
        for seed in (0, 1):
            for rnd in range(5):
                for it in range(0, 9):
                    rows.append({"source": "lab", "task": "t", "family": "zoo", "model": model, "num_params": n,
                                 "seed": seed, "round": rnd, "train_attack": "gcg", "attack": "gcg",
                                 "position": math.nan, "iteration": it,
                                 "asr": min(1.0, it / (2 + 2 * rnd + seed + n / 500)), "n_attacked": 20,
                                 "n_examples": 20, "flops_per_iteration": 10.0 * n, "attack_flops": 10.0 * n * it,
                                 "defense_flops": 1e6 * n * rnd * (1 + 0.1 * seed), "pretrain_compute": 1e9 * n})
    return pd.DataFrame(rows)


def test_a_causal_lm_toward_a_target_string_shows_its_continuation(zoo_tokenizer, pm_examples):
    """The generative setting: GCG toward " Sure, here" on a causal LM; the session
    reports the greedy continuation (before and now), not class probabilities."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    lm = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(zoo_tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=512, pad_token_id=zoo_tokenizer.pad_token_id,
        tie_word_embeddings=False)).eval()
    s = AttackSession(lm, zoo_tokenizer, pm_examples[0], {**GCG, "target": "string"}, iterations=3)
    state = s.step()
    assert state["probabilities"] is None and state["probabilities_before"] is None
    assert isinstance(state["continuation"], str) and isinstance(state["continuation_before"], str)
    n = len(zoo_tokenizer(" Sure, here", add_special_tokens=False)["input_ids"]) + 8
    ids = zoo_tokenizer(s.attacked_text(), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        greedy = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=zoo_tokenizer.pad_token_id)
    assert state["continuation"] == zoo_tokenizer.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True)
    ex = widgets.AttackExplorer({"lm": lambda: (lm, zoo_tokenizer)}, pm_examples, iterations=3)
    ex.options.value = json.dumps({"target": "string", "n_candidates": 8, "top_k": 16})
    ex.step()
    assert "continuation now:" in ex.status.value and "clean continuation:" in ex.prediction.value


def test_any_classifier_the_lab_loads(tiny_classifier, tmp_path, pm_examples):
    """A local folder saved by the lab, opened by path: the explorer loads it on first use."""
    from robustlib import models

    model, tok = tiny_classifier
    folder = models.save_classifier(model, tok, tmp_path / "mine")
    ex = widgets.AttackExplorer.from_models([str(folder)], examples=pm_examples[:2], iterations=2)
    ex.options.value = json.dumps({"n_candidates": 4, "top_k": 8})
    assert ex.step()["iteration"] == 1 and list(ex.model.options) == [str(folder)]
    with pytest.raises(ValueError, match="no models"):
        widgets.AttackExplorer({}, pm_examples)
