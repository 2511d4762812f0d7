"""Tests for robustlib.attacks: validation, vocabulary, re-encoding filter, prefix
cache equivalence (GPT-NeoX, Qwen2 and Llama), ASR bookkeeping, determinism, FLOP
accounting, string targets and attack positions. Tiny models and few iterations."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from robustlib import attacks, models, paths, tasks


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one torch thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def zoo():
    model, tok = models.load_classifier("zoo-0.3m", seed=0)
    return model, tok


@pytest.fixture(scope="module")
def examples():
    return tasks.load_examples("password_match", "validation", n=4, seed=0)


def small(cls=attacks.GCGConfig, **kw):
    defaults = dict(iterations=2, n_candidates=16, top_k=32, progress=False)
    if cls is not attacks.GCGConfig:
        defaults = dict(iterations=2, progress=False)
    defaults.update(kw)
    return cls(**defaults)


def direct_loss(model, tok, text: str, target: int) -> float:
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits.float()
    return torch.nn.functional.cross_entropy(logits, torch.tensor([target])).item()


CHUNK_TASK = tasks.Task(
    name="toy_chunk_attack_test",
    version="1",
    instructions="Read the note and say if it is kind.\n\n",
    content_template="Note: {text}\n",
    class_strings=(" NO", " YES"),
    attack_kind="chunk",
    source="local",
    chunk_field="text",
)


# ------------------------------------------------------------------ bad inputs


def test_unknown_attack_lists_accepted():
    with pytest.raises(ValueError, match="'beam_me_up'.*gcg.*random_token"):
        attacks.get_attack("beam_me_up")
    with pytest.raises(ValueError, match="beam_me_up"):
        attacks.run_attack("beam_me_up", None, None, [], None)


def _bad_run_attack_cases():
    """(description, call) pairs: each must fail before any compute, naming the value."""
    def examples():
        return tasks.load_examples("password_match", "validation", n=2, seed=1)

    return [
        ("unknown attack", lambda m, t: attacks.run_attack("pgd", m, t, examples()), ValueError, "'pgd'"),
        ("no examples", lambda m, t: attacks.run_attack("gcg", m, t, []), ValueError, "empty"),
        ("plain strings", lambda m, t: attacks.run_attack("gcg", m, t, ["a text"]), TypeError,
         "robustlib.tasks.Example.*example 0 is a str"),
        ("no model", lambda m, t: attacks.run_attack("gcg", None, t, examples()), TypeError,
         "model must be a transformers model.*NoneType"),
        ("no tokenizer", lambda m, t: attacks.run_attack("gcg", m, None, examples()), TypeError,
         "tokenizer must be a transformers tokenizer.*NoneType"),
        ("unknown option", lambda m, t: attacks.run_attack("gcg", m, t, examples(), {"topk": 3}), ValueError,
         "unknown GCGConfig key.*topk"),
        ("config of the wrong type", lambda m, t: attacks.run_attack("gcg", m, t, examples(), "fast"), TypeError,
         "config must be a GCGConfig, a dict or None; got str"),
        ("another attack's config", lambda m, t: attacks.run_attack("random_token", m, t, examples(),
                                                                    attacks.GCGConfig()), TypeError,
         "config must be a RandomTokenConfig.*got GCGConfig"),
        ("slot position", lambda m, t: attacks.run_attack("gcg", m, t, examples(), {"position": 0.5}), ValueError,
         "rejects position=0.5"),
        ("no budget", lambda m, t: attacks.run_attack("gcg", m, t, examples(), {"iterations": 0}), ValueError,
         "iterations=0"),
        ("empty target string", lambda m, t: attacks.run_attack("gcg", m, t, examples(), {
            "target": "string", "target_string": ""}), ValueError, "target_string=''"),
        ("bad seed", lambda m, t: attacks.run_attack("gcg", m, t, examples(), {"seed": "1"}), ValueError,
         "seed='1'"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_bad_run_attack_calls_fail_before_compute(case, tiny_classifier, monkeypatch):
    from robustlib.attacks import scorer

    what, call, error, match = _bad_run_attack_cases()[case]
    monkeypatch.setattr(scorer.Scorer, "evaluate", lambda *a, **k: (_ for _ in ()).throw(AssertionError(what)))
    model, tok = tiny_classifier
    with pytest.raises(error, match=match):
        call(model, tok)


def test_a_tokenizer_larger_than_the_models_embedding_is_refused(make_tiny_classifier, zoo_tokenizer):
    from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

    small = GPTNeoXForSequenceClassification(GPTNeoXConfig(
        vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=2, pad_token_id=0)).eval()
    ex = tasks.load_examples("password_match", "validation", n=2, seed=1)
    with pytest.raises(ValueError, match="the tokenizer has 4096 tokens but the model's input embedding has 1000"):
        attacks.run_attack("random_token", small, zoo_tokenizer, ex)


@pytest.mark.parametrize("position", [-0.1, 1.5, float("nan"), "end", True])
def test_bad_position_named(position):
    with pytest.raises(ValueError, match=r"position=.*" + (r"nan" if position != position else "")) as err:
        attacks.GCGConfig(position=position)
    assert repr(position) in str(err.value)
    assert "[0, 1]" in str(err.value)


def test_bad_config_values():
    with pytest.raises(ValueError, match="iterations=0.*budget of zero"):
        attacks.GCGConfig(iterations=0)
    with pytest.raises(ValueError, match="n_attack_tokens=0"):
        attacks.AttackConfig(n_attack_tokens=0)
    with pytest.raises(ValueError, match="target='logits'.*label.*string"):
        attacks.AttackConfig(target="logits")
    with pytest.raises(ValueError, match="top_k=-1"):
        attacks.GCGConfig(top_k=-1)
    with pytest.raises(ValueError, match=r"unknown GCGConfig key\(s\) \['topk'\]"):
        attacks.GCGConfig.from_dict({"topk": 3})
    cfg = attacks.GCG.config_class.coerce(attacks.AttackConfig(iterations=3))
    assert isinstance(cfg, attacks.GCGConfig) and cfg.iterations == 3 and cfg.top_k == 256


def test_bad_examples_fail_before_compute(examples):
    # model=None: any compute would fail with an AttributeError, not a ValueError.
    with pytest.raises(ValueError, match="empty"):
        attacks.run_attack("gcg", None, None, [], small())
    with pytest.raises(ValueError, match="example 0.*position=0.5"):
        attacks.run_attack("gcg", None, None, examples, small(position=0.5))
    with pytest.raises(ValueError, match="position=0.5"):
        attacks.GCG(None, None, examples, small(position=0.5))
    with pytest.raises(ValueError, match="score"):
        model = models.load_classifier("zoo-0.3m")[0].base_model  # no head
        attacks.GCG(model, models.load_tokenizer("zoo-0.3m"), examples, small())


# ----------------------------------------------------------- vocabulary, filter


def test_allowed_ids_exclude_special(zoo):
    _, tok = zoo
    allowed = attacks.allowed_token_ids(tok)
    assert len(allowed) > 1000
    assert not set(tok.all_special_ids) & set(allowed.tolist())
    for s in tok.batch_decode([[i] for i in allowed[:: max(1, len(allowed) // 200)].tolist()]):
        assert s and s.isascii() and s.isprintable()


def test_reencoding_filter(zoo, examples):
    _, tok = zoo
    ex = examples[0]
    before, after = ex.attack_split(None)
    allowed = attacks.allowed_token_ids(tok)
    init = attacks.initial_attack_ids(tok, before, after, 10, allowed)
    assert attacks.reencoding_filter(tok, before, after, [init]) == [True]
    assert tok(ex.attacked_text(tok.decode(init))).input_ids == (
        tok(before).input_ids + init + tok(after).input_ids
    )

    # Two adjacent attack tokens that merge into one ("a" + "b" -> "ab").
    singles = [t for t in allowed[:400].tolist() if len(tok.decode([t])) == 1]
    merged = None
    for a in singles:
        for b in singles:
            if len(tok(tok.decode([a, b]), add_special_tokens=False).input_ids) == 1:
                merged = init[:-2] + [a, b]
                break
        if merged:
            break
    assert merged is not None
    assert attacks.reencoding_filter(tok, before, after, [merged]) == [False]

    # A candidate that is stable on its own but merges with the context around it:
    # checking the attack string alone would wrongly accept it.
    cands = [[t] + init[1:] for t in allowed[:800].tolist()] + [init[:-1] + [t] for t in allowed[:800].tolist()]
    alone = [tok(s, add_special_tokens=False).input_ids == c for s, c in zip(tok.batch_decode(cands), cands)]
    in_context = attacks.reencoding_filter(tok, before, after, cands)
    context_merges = [c for c, a, k in zip(cands, alone, in_context) if a and not k]
    assert context_merges, "expected a token that merges with the text around the attack"


# ------------------------------------------------------------ cache equivalence


def _check_cache_equivalence(model, tok, examples, position=None):
    allowed = attacks.allowed_token_ids(tok)
    gen = torch.Generator().manual_seed(0)
    cached = attacks.GCG(model, tok, examples, small(use_prefix_cache=True, skip_incorrect=False, position=position))
    plain = attacks.GCG(model, tok, examples, small(use_prefix_cache=False, skip_incorrect=False, position=position))
    order, ids = [], []
    for _ in range(3):  # rows of several examples (different prefix lengths), interleaved
        for i in range(len(examples)):
            order.append(i)
            ids.append(allowed[torch.randint(len(allowed), (10,), generator=gen)].tolist())
    sites = [cached.sites[i] for i in order]
    assert len({s.prefix_len for s in sites}) >= 2
    cached.scorer.ensure_prefix(sites)
    a = cached.scorer.evaluate(sites, ids)
    b = plain.scorer.evaluate([plain.sites[i] for i in order], ids)
    for x, y in zip(a, b):
        assert x.loss == pytest.approx(y.loss, abs=1e-4)
        assert x.prediction == y.prediction
    # against the model's own forward on the attacked text (token-exact: the ids
    # above may not re-encode, so feed the ids directly)
    for s, x, attack in list(zip(sites, a, ids))[:3]:
        full = torch.tensor([s.before_ids + attack + s.after_ids])
        with torch.no_grad():
            logits = model(input_ids=full).logits.float()
        ref = torch.nn.functional.cross_entropy(logits, torch.tensor([s.target])).item()
        assert x.loss == pytest.approx(ref, abs=1e-4)
    # gradients with and without the cache
    ga = cached.scorer.gradient(cached.sites, [ids[0]] * len(cached.sites))
    gb = plain.scorer.gradient(plain.sites, [ids[0]] * len(plain.sites))
    for x, y in zip(ga, gb):
        assert x.loss == pytest.approx(y.loss, abs=1e-4)
        torch.testing.assert_close(x.grad, y.grad, atol=1e-4, rtol=1e-3)


def test_cache_equivalence_gpt_neox(zoo, examples):
    model, tok = zoo
    _check_cache_equivalence(model, tok, examples)


def _tiny(arch: str, tok):
    """A random-init 2-layer Qwen2 or Llama classifier with the zoo tokenizer."""
    import transformers

    config_class, model_class = {"qwen2": ("Qwen2Config", "Qwen2ForSequenceClassification"),
                                 "llama": ("LlamaConfig", "LlamaForSequenceClassification")}[arch]
    torch.manual_seed(0)
    cfg = getattr(transformers, config_class)(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, num_labels=2, pad_token_id=tok.pad_token_id)
    return getattr(transformers, model_class)(cfg).eval()


def test_cache_equivalence_qwen2(zoo, examples):
    _, tok = zoo
    _check_cache_equivalence(_tiny("qwen2", tok), tok, examples)


def test_cache_equivalence_llama(zoo, examples):
    _, tok = zoo
    _check_cache_equivalence(_tiny("llama", tok), tok, examples)


@pytest.mark.parametrize("arch", ["gpt_neox", "qwen2", "llama"])
def test_prefix_cache_uses_no_deprecated_argument(arch, make_tiny_classifier, zoo_tokenizer, examples):
    """The prefix cache is passed and read under the name the installed transformers
    expects (``cache`` from 5.24, ``past_key_values`` before): no deprecation warning."""
    tok = zoo_tokenizer
    model = {"gpt_neox": make_tiny_classifier, "qwen2": lambda: _tiny("qwen2", tok),
             "llama": lambda: _tiny("llama", tok)}[arch]()
    cfg = small(iterations=1, n_candidates=4, top_k=8, skip_incorrect=False, use_prefix_cache=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        result = attacks.run_attack("gcg", model, tok, examples[:2], cfg)
    assert all(len(r.losses) == 1 for r in result.records)


def test_cache_argument_follows_the_forward_signature():
    from robustlib.attacks.scorer import _cache_argument

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None):
            pass

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            pass

    assert _cache_argument(New()) == "cache"
    assert _cache_argument(Old()) == "past_key_values"


# ------------------------------------------------------------------------- ASR


def test_asr_curve_counts_only_correct_before():
    # 4 examples, 2 correct before; one of those broken at 2, an incorrect one "broken" at 1.
    asr = attacks.asr_curve([True, True, False, False], [2, None, 1, None], 3)
    assert asr == [0.0, 0.0, 0.5, 0.5]
    assert attacks.asr_curve([False], [1], 2)[0] == 0.0 and math.isnan(attacks.asr_curve([False], [1], 2)[1])


def test_asr_with_a_model_wrong_on_some(zoo):
    model, tok = zoo
    from robustlib.finetune import classify

    pool = tasks.load_examples("password_match", "validation", n=8, seed=0)
    _, _, preds = classify(model, tok, pool)
    right = [ex for ex, p in zip(pool, preds) if p == ex.label]
    wrong = [ex for ex, p in zip(pool, preds) if p != ex.label]
    assert right and wrong, "the untrained head should get some right and some wrong"
    chosen = right[:2] + wrong[:2]
    for skip in (True, False):
        result = attacks.run_attack("gcg", model, tok, chosen, small(skip_incorrect=skip))
        assert result.asr[0] == 0.0
        assert result.n_correct_before == 2 and result.clean_accuracy == 0.5
        assert [r.correct_before for r in result.records] == [True, True, False, False]
        assert [r.attacked for r in result.records] == [True, True, not skip, not skip]
        for i in range(1, 3):
            assert result.asr[i] == sum(r.broken_at(i) for r in result.records[:2]) / 2
        if not skip:  # misclassified before: the first attack already "succeeds", but does not count
            assert all(r.success for r in result.records[2:])
        frame = result.asr_frame()
        assert list(frame.iteration) == [0, 1, 2] and frame.flops_paper.iloc[0] == 0
        long = result.to_frame()
        assert len(long) == 2 * sum(r.attacked for r in result.records)


# ----------------------------------------------------------------- determinism


def test_same_seed_same_attack(zoo, examples):
    model, tok = zoo
    for name, cfg in (("gcg", small(skip_incorrect=False)),
                      ("random_token", small(attacks.RandomTokenConfig, skip_incorrect=False, iterations=3))):
        r1 = attacks.run_attack(name, model, tok, examples, cfg)
        r2 = attacks.run_attack(name, model, tok, examples, cfg)
        # batching does not change what each example gets (per-example generators)
        r3 = attacks.run_attack(name, model, tok, examples, type(cfg)(**{**cfg.to_dict(), "batch_examples": 3}))
        for a, b, c in zip(r1.records, r2.records, r3.records):
            assert a.attacks == b.attacks == c.attacks
            assert a.losses == b.losses
            assert a.losses == pytest.approx(c.losses, abs=1e-5)
        assert r1.asr == r2.asr and r1.flops_per_iteration_paper == r3.flops_per_iteration_paper
        other = attacks.run_attack(name, model, tok, examples, type(cfg)(**{**cfg.to_dict(), "seed": 1}))
        assert [r.attacks for r in other.records] != [r.attacks for r in r1.records]


# ------------------------------------------------------------------------ FLOPs


def test_gcg_step_flops_match_formula(zoo, examples):
    model, tok = zoo
    n = sum(p.numel() for p in model.parameters())
    attack = attacks.GCG(model, tok, examples, small(iterations=1, skip_incorrect=False))
    info = attack.step()
    result = attack.result()
    expected = 0
    for rec in result.records:
        length = rec.full_tokens
        assert length == len(tok(rec.attacked_text).input_ids)
        kept = rec.n_evaluated[0]
        assert 0 < kept <= 16
        per_example = 6 * n * length + 2 * n * length * kept
        assert rec.flops_paper == [per_example]
        expected += per_example
    assert result.flops_per_iteration_paper == [0, expected] == [0, info.flops_paper]
    real = result.flops_per_iteration_real[1]
    assert 0 < real < expected  # the prefix is run once, not once per candidate
    assert real == pytest.approx(sum(r.flops_real[0] for r in result.records), rel=1e-6)
    assert result.clean_flops_paper == sum(2 * n * len(tok(ex.text).input_ids) for ex in examples)


def test_real_flops_per_row_do_not_depend_on_the_row_count(zoo):
    """Real FLOPs are measured once per row shape and scaled by the row count; a fresh
    count on another number of rows must give the same per-row value."""
    from robustlib import flops as flops_module
    from robustlib.attacks.base import Scorer, Site

    model, tok = zoo
    before, after = tok("alpha beta gamma").input_ids, tok(" delta epsilon").input_ids

    def site(key):
        return Site(key, "", "", before, after, after, 1, 4)

    rows = lambda n: [[5 + i, 6, 7, 8] for i in range(n)]  # noqa: E731
    for method in ("evaluate", "gradient"):
        warm = Scorer(model, "label", use_cache=True, batch_size=64)
        getattr(warm, method)([site(0)] * 2, rows(2))  # measured on 2 rows
        scaled = getattr(warm, method)([site(0)] * 5, rows(5))  # reused for 5
        flops_module._MEASURED.clear()  # a fresh measurement, on 5 rows
        fresh = getattr(Scorer(model, "label", use_cache=True, batch_size=64), method)([site(0)] * 5, rows(5))
        assert [r.flops_real for r in scaled] == [r.flops_real for r in fresh], method
        assert fresh[0].flops_real > 0


def test_real_flops_are_measured_once_per_architecture_and_shape(zoo, monkeypatch):
    """A later scorer on the same architecture (another attack, round or study) reuses
    the measurement; another architecture measures its own."""
    import torch.utils.flop_counter as fc

    from robustlib import flops as flops_module
    from robustlib.attacks.base import Scorer, Site

    model, tok = zoo
    before, after = tok("alpha beta gamma").input_ids, tok(" delta epsilon").input_ids
    sites = [Site(0, "", "", before, after, after, 1, 4)] * 3
    rows = [[5, 6, 7, 8]] * 3
    flops_module._MEASURED.clear()
    first = Scorer(model, "label", use_cache=True, batch_size=64).evaluate(sites, rows)

    class Refuse(fc.FlopCounterMode):
        def __enter__(self):
            raise AssertionError("the FLOP counter ran again for a shape already measured")

    monkeypatch.setattr(fc, "FlopCounterMode", Refuse)
    again = Scorer(model, "label", use_cache=True, batch_size=64).evaluate(sites, rows)
    assert [r.flops_real for r in again] == [r.flops_real for r in first]
    other = copy.deepcopy(model)
    other.config.num_attention_heads = model.config.num_attention_heads  # same shape, new object: reused too
    Scorer(other, "label", use_cache=True, batch_size=64).evaluate(sites, rows)
    other.config.layer_norm_eps = 1e-3  # another configuration: measured afresh
    with pytest.raises(AssertionError, match="ran again"):
        Scorer(other, "label", use_cache=True, batch_size=64).evaluate(sites, rows)


# ---------------------------------------------------------------- string target


def test_string_target_lowers_loss(examples):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(paths.zoo_dir() / "zoo-0.3m").eval()
    tok = models.load_tokenizer("zoo-0.3m")
    cfg = small(target="string", target_string=" Sure, here", iterations=3, n_candidates=32, top_k=64,
                skip_incorrect=False)
    result = attacks.run_attack("gcg", model, tok, examples[:2], cfg)
    target = tok(" Sure, here", add_special_tokens=False).input_ids
    for rec in result.records:
        assert rec.prediction is None
        assert min(rec.losses) < rec.initial_loss
        # the recorded loss is the teacher-forced CE of the target after the attacked text
        ids = tok(rec.attacked_text, add_special_tokens=False).input_ids
        full = torch.tensor([ids + target])
        with torch.no_grad():
            logits = model(input_ids=full).logits[0, len(ids) - 1 : -1].float()
        ref = torch.nn.functional.cross_entropy(logits, torch.tensor(target)).item()
        assert rec.loss == pytest.approx(ref, abs=1e-4)
    with pytest.raises(ValueError, match="score"):
        attacks.GCG(model, tok, examples, small())  # a causal LM has no classifier head


# --------------------------------------------------------------- chunk positions


@pytest.mark.parametrize("position", [0.0, 0.5, 1.0])
def test_chunk_positions(zoo, position):
    model, tok = zoo
    ex = CHUNK_TASK.make_example(1, text="The cat sat on the warm mat all day long.")
    before, after = ex.attack_split(position)
    result = attacks.run_attack("gcg", model, tok, [ex], small(iterations=1, position=position, skip_incorrect=False))
    rec = result.records[0]
    assert (rec.before, rec.after) == (before, after)
    assert rec.attacked_text == ex.attacked_text(rec.attack, position)
    if position == 0.0:
        assert before == CHUNK_TASK.instructions + "Note: "
    elif position == 1.0:
        assert after == "\n" + ex.answer_prompt
    else:
        assert before.endswith("sat on the") and after.startswith(" warm")  # snapped to a word end
    assert rec.loss == pytest.approx(direct_loss(model, tok, rec.attacked_text, rec.target), abs=1e-4)


# --------------------------------------------------------- random token, stepping


def test_random_token_first_success_frozen(zoo):
    model, tok = zoo
    from robustlib.finetune import classify

    pool = tasks.load_examples("password_match", "validation", n=8, seed=0)
    _, _, preds = classify(model, tok, pool)
    wrong = [ex for ex, p in zip(pool, preds) if p != ex.label][:2]
    cfg = small(attacks.RandomTokenConfig, iterations=3, skip_incorrect=False, stop_on_success=True)
    result = attacks.run_attack("random_token", model, tok, wrong, cfg)
    for rec in result.records:
        assert rec.success and rec.first_success_iteration is not None
        k = rec.first_success_iteration
        assert rec.attacks[k - 1] == rec.attack  # the first success is the reported attack
        assert all(x == 0 for x in rec.n_evaluated[k:]) and all(f == 0 for f in rec.flops_paper[k:])
        assert rec.loss == pytest.approx(direct_loss(model, tok, rec.attacked_text, rec.target), abs=1e-4)


def test_step_api_and_oom_halving(zoo, examples):
    model, tok = zoo
    cfg = small(iterations=2, skip_incorrect=False, candidate_batch_size=8)
    ref = attacks.GCG(model, tok, examples[:2], cfg).run()

    attack = attacks.GCG(model, tok, examples[:2], cfg)
    assert attack.result().asr == [0.0] and not attack.done
    real_forward = attack.scorer._suffix_hidden

    def flaky(sites, embeds):  # pretend anything above 3 rows runs out of memory
        if embeds.shape[0] > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
        return real_forward(sites, embeds)

    attack.scorer._suffix_hidden = flaky
    info = attack.step()
    assert info.iteration == 1 and attack.scorer.batch_size <= 3  # halved below the pretend limit
    attack.step()
    assert attack.done
    with pytest.raises(RuntimeError, match="already ran"):
        attack.step()
    got = attack.result()
    for a, b in zip(got.records, ref.records):
        assert a.attacks == b.attacks
        assert a.losses == pytest.approx(b.losses, abs=1e-5)
        assert a.flops_paper == b.flops_paper


SHARED_BAD = [
    ({"iterations": 0}, "iterations=0"), ({"iterations": 2.5}, "iterations=2.5"), ({"iterations": "10"}, "'10'"),
    ({"n_attack_tokens": -1}, "n_attack_tokens=-1"), ({"batch_examples": 0}, "batch_examples=0"),
    ({"candidate_batch_size": True}, "candidate_batch_size=True"), ({"seed": None}, "seed=None"),
    ({"target": "logits"}, "target='logits'"), ({"stop_on_success": "yes"}, "stop_on_success='yes'"),
    ({"use_prefix_cache": 1}, "use_prefix_cache=1"), ({"position": 2}, "position=2"),
    ({"prefix_tiers": -1}, "prefix_tiers=-1"), ({"prefix_tiers": 2.5}, "prefix_tiers=2.5"),
]


@pytest.mark.parametrize("name", ["gcg", "random_token", "beast"])
@pytest.mark.parametrize("kwargs,match", SHARED_BAD + [({"nope": 1}, "unknown .*Config key")])
def test_every_attack_config_names_a_bad_value(name, kwargs, match):
    cls = attacks.get_config_class(name)
    with pytest.raises(ValueError, match=match):
        cls.from_dict(kwargs)


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("gcg", {"top_k": 0}, "top_k=0"), ("gcg", {"n_candidates": 1.5}, "n_candidates=1.5"),
        ("random_token", {"resample_tries": 0}, "resample_tries=0"),
        ("beast", {"beam_size": 0}, "beam_size=0"), ("beast", {"sampler_temperature": float("inf")}, "inf"),
        ("beast", {"iterations": 26}, "at most n_attack_tokens=25"),
    ],
)
def test_attack_specific_bad_values(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.get_config_class(name)(**kwargs)


def test_the_papers_initial_attack_on_request(zoo, examples):
    model, tok = zoo
    lab = attacks.GCG(model, tok, examples[:2], small(iterations=1, skip_incorrect=False))
    paper = attacks.GCG(model, tok, examples[:2], small(iterations=1, skip_incorrect=False, init="paper"))
    for i in paper.attacked:
        assert tok.decode(paper.current[i]).startswith("@&@&") and len(paper.current[i]) == 10
        assert tok.decode(lab.current[i]) != tok.decode(paper.current[i])
    with pytest.raises(ValueError, match="init='nanogcg'.*lab.*paper"):
        attacks.GCGConfig(init="nanogcg")
    result = attacks.run_attack("gcg", model, tok, examples[:2], small(iterations=2, init="paper"))
    assert result.iterations == 2


def _scoring_model(arch: str, mode: str, tok, make_tiny_lm):
    """A tiny random-init LM of ``arch`` (a classifier with its weights in ``label``
    mode) and the target tokens of ``string`` mode (none in ``label`` mode)."""
    from transformers import AutoModelForSequenceClassification

    lm = make_tiny_lm(arch, tok)
    if mode == "string":
        return lm, tok(" Sure", add_special_tokens=False).input_ids
    config = copy.deepcopy(lm.config)
    config.num_labels = 2
    model = AutoModelForSequenceClassification.from_config(config)
    model.load_state_dict(lm.state_dict(), strict=False)
    return model.eval(), []


@pytest.mark.parametrize("arch", ["gpt_neox", "qwen2", "llama"])
@pytest.mark.parametrize("mode", ["label", "string"])
def test_shared_prefix_attention_is_the_expanded_cache_and_no_cache(arch, mode, zoo_tokenizer, make_tiny_lm):
    """Rows of three sites (two sharing a prefix length, so batched together in runs of
    different sizes) score the same loss and one-hot gradient through shared-prefix
    attention, through an expanded KV cache and without any cache."""
    from robustlib.attacks.base import Scorer, Site

    tok = zoo_tokenizer
    model, target = _scoring_model(arch, mode, tok, make_tiny_lm)
    texts = [("alpha beta gamma delta", " epsilon"), ("one two three four", " five six"), ("x y", " z")]
    sites = []
    for key, (before, after) in enumerate(texts):
        b, a = tok(before).input_ids, tok(after).input_ids
        sites.append(Site(key, before, after, b, a, a + target, 1, 4, list(target)))
    order = [0, 0, 0, 1, 2, 2]
    rows = [[5 + i, 6 + i, 7, 8] for i in range(len(order))]
    scored = {}
    for name, cache, shared in (("shared", True, True), ("expanded", True, False), ("none", False, False)):
        scorer = Scorer(model, mode, use_cache=cache, batch_size=64, shared=shared)
        rows_sites = [sites[i] for i in order]
        scored[name] = (scorer.evaluate(rows_sites, rows), scorer.gradient(rows_sites, rows))
    for name in ("expanded", "none"):
        for a, b in zip(scored["shared"][0], scored[name][0]):
            assert a.loss == pytest.approx(b.loss, abs=1e-5), name
        for a, b in zip(scored["shared"][1], scored[name][1]):
            assert torch.allclose(a.grad, b.grad, atol=1e-5), name


def test_the_attack_scores_on_its_prefix_tiers(zoo, examples):
    """``prefix_tiers`` reaches the scorer; GCG with tiers and without runs the same
    attack (the same losses and successes) on fewer real FLOPs."""
    model, tok = zoo
    runs = {}
    for tiers in (0, 3):
        attack = attacks.GCG(model, tok, examples, small(n_candidates=32, iterations=3, prefix_tiers=tiers))
        assert attack.scorer.tiers == tiers
        runs[tiers] = attack.run()
    untiered, tiered = runs[0], runs[3]
    assert tiered.asr == untiered.asr
    for a, b in zip(tiered.records, untiered.records):
        assert a.attacked_text == b.attacked_text and a.success == b.success
    assert tiered.flops_per_iteration_paper == untiered.flops_per_iteration_paper
    assert sum(tiered.flops_per_iteration_real) < 0.95 * sum(untiered.flops_per_iteration_real)


@pytest.mark.parametrize("arch", ["gpt_neox", "qwen2", "llama"])
@pytest.mark.parametrize("mode", ["label", "string"])
def test_rows_re_cut_on_shared_attack_prefixes_score_as_whole_rows(arch, mode, zoo_tokenizer, make_tiny_lm):
    """GCG-like candidates (one token of the current attack changed each) scored on
    tiers of shared attack prefixes give the losses and successes of whole rows, on a
    cached prefix (shared-prefix attention and an expanded cache) and on none (the
    attack before the text); fewer real FLOPs, the same paper FLOPs, and no extended
    cache outlives the call. A site with few rows is scored whole."""
    from robustlib.attacks.base import Scorer, Site
    from robustlib.attacks.scorer import DERIVED, TIER_MIN_ROWS

    tok = zoo_tokenizer
    model, target = _scoring_model(arch, mode, tok, make_tiny_lm)
    n = 8
    texts = [("alpha beta gamma delta", " epsilon"), ("one two three four", " five six"), ("", " seven"),
             ("x y", " z")]
    gen = torch.Generator().manual_seed(0)
    sites, rows = [], []
    for key, (before, after) in enumerate(texts):
        b, a = (tok(before).input_ids if before else []), tok(after).input_ids
        site = Site(key, before, after, b, a, a + target, 1, n, list(target))
        current = torch.randint(5, 200, (n,), generator=gen)
        count = 3 if key == 3 else TIER_MIN_ROWS + 8
        cands = current.repeat(count, 1)
        cands[torch.arange(count), torch.randint(n, (count,), generator=gen)] = torch.randint(5, 200, (count,),
                                                                                             generator=gen)
        sites += [site] * count
        rows += cands.tolist()
    for shared in (True, False):
        whole = Scorer(model, mode, use_cache=True, batch_size=64, shared=shared, tiers=0).evaluate(sites, rows)
        uncached = Scorer(model, mode, use_cache=False, batch_size=64, tiers=4).evaluate(sites, rows)
        scorer = Scorer(model, mode, use_cache=True, batch_size=64, shared=shared, tiers=4)
        tiered = scorer.evaluate(sites, rows)
        for a, b, c in zip(tiered, whole, uncached):
            assert a.loss == pytest.approx(b.loss, abs=1e-5) == pytest.approx(c.loss, abs=1e-5)
            assert a.success == b.success == c.success and a.prediction == b.prediction
            assert a.flops_paper == b.flops_paper
        # (string mode saves less: the output head on the target tokens is run either way)
        assert sum(r.flops_real for r in tiered) < (0.9 if mode == "label" else 0.97) * sum(r.flops_real for r in whole)
        few = [i for i, s in enumerate(sites) if s.key == 3]
        assert [tiered[i].flops_real for i in few] == [whole[i].flops_real for i in few]  # scored whole
        assert not [k for k in scorer._kv if k >= DERIVED] and sorted(scorer._kv) == [0, 1, 3]
