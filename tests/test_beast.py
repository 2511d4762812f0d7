import pytest
import torch

from robustlib import attacks, flops, models, tasks
from robustlib.attacks.beast import BEASTConfig, load_sampler


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def setup():
    model, tok = models.load_classifier("zoo-0.3m", seed=0)
    examples = tasks.load_examples("password_match", "validation", n=3, seed=0)
    return model, tok, examples, load_sampler("zoo-0.3m", tok)


def test_registered():
    assert attacks.get_attack("beast") is attacks.BEAST
    assert attacks.get_config_class("beast") is BEASTConfig


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beam_size": 0}, "beam_size"),
        ({"samples_per_beam": -1}, "samples_per_beam"),
        ({"iterations": 30}, "iterations"),
        ({"sampler_temperature": 0}, "sampler_temperature"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BEASTConfig(**kwargs)


def test_unknown_sampler_named():
    with pytest.raises((ValueError, FileNotFoundError), match="BEAST's sampler 'no-such-lm' cannot be loaded"):
        load_sampler("no-such-lm")
    with pytest.raises(ValueError, match="sampler_model=''"):
        load_sampler("")


def test_the_default_sampler_is_the_model_the_classifier_was_made_from(tmp_path):
    """No sampler named: BEAST proposes tokens with the language model the classifier's
    body came from, also when the classifier was saved and loaded from a folder."""
    model, tok = models.load_classifier("zoo-1m", seed=0)
    folder = models.save_classifier(model, tok, tmp_path / "clf")
    reloaded, tok2 = models.load_classifier(str(folder))
    ex = tasks.load_examples("password_match", "validation", n=1, seed=0)
    cfg = BEASTConfig(iterations=1, n_attack_tokens=2, beam_size=2, samples_per_beam=2, progress=False)
    attack = attacks.BEAST(reloaded, tok2, ex, cfg)
    assert flops.count_params(attack.sampler) == models.num_params("zoo-1m", "causal_lm")


def test_a_classifier_without_a_recorded_base_needs_a_named_sampler(tiny_classifier):
    model, tok = tiny_classifier  # random init: made from no language model
    ex = tasks.load_examples("password_match", "validation", n=1, seed=0)
    with pytest.raises(ValueError, match="does not record the one it was made from.*set sampler_model"):
        attacks.BEAST(model, tok, ex, BEASTConfig(iterations=1, n_attack_tokens=2))
    attack = attacks.BEAST(model, tok, ex, BEASTConfig(iterations=1, n_attack_tokens=2, sampler_model="zoo-0.3m"))
    assert attack.sampler is not None


def test_a_sampler_with_another_vocabulary_is_refused(tmp_path, zoo_tokenizer):
    """Same size, other ids: two token strings swapped is enough to be refused."""
    import json

    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from robustlib import paths

    folder = tmp_path / "other-lm"
    folder.mkdir()
    spec = json.loads((paths.zoo_dir() / "tokenizer" / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = "Ġthe", "Ġand"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (paths.zoo_dir() / "tokenizer" / name).exists():
            (folder / name).write_text((paths.zoo_dir() / "tokenizer" / name).read_text())
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(zoo_tokenizer), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)).save_pretrained(folder)
    with pytest.raises(ValueError, match=r"maps 2 of the target tokenizer's 4096 tokens to other ids"):
        load_sampler(str(folder), zoo_tokenizer)


def _run(setup, **kw):
    model, tok, examples, sampler = setup
    cfg = BEASTConfig(iterations=3, n_attack_tokens=5, beam_size=3, samples_per_beam=3, skip_incorrect=False,
                      progress=False, **kw)
    attack = attacks.BEAST(model, tok, examples, cfg, sampler=sampler)
    return attack, attack.run()


def test_grows_one_token_per_iteration_and_survives_reencoding(setup):
    model, tok, examples, _ = setup
    attack, result = _run(setup)
    for i, rec in enumerate(result.records):
        lengths = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in rec.attacks]
        assert lengths == [1, 2, 3]
        before, after = examples[i].attack_split(None)
        assert attacks.reencoding_filter(tok, before, after, torch.tensor([attack.current[i]]))[0]
        assert rec.best_loss <= rec.losses[0]  # the beam never loses its best
        assert len(attack.beams[i]) == 3


def test_deterministic(setup):
    _, a = _run(setup, seed=4)
    _, b = _run(setup, seed=4)
    assert [r.attacks for r in a.records] == [r.attacks for r in b.records]
    assert a.asr == b.asr


def test_flops_of_the_first_step_follow_the_formula(setup):
    model, tok, examples, sampler = setup
    cfg = BEASTConfig(iterations=1, n_attack_tokens=2, beam_size=2, samples_per_beam=3, skip_incorrect=False,
                      progress=False)
    attack = attacks.BEAST(model, tok, examples[:1], cfg, sampler=sampler)
    attack.step()
    rec = attack.records[0]
    site = attack.sites[0]
    n, ns = flops.count_params(model), flops.count_params(sampler)
    sampler_paper = 2 * ns * site.prefix_len  # one beam (the empty attack) read by the sampler
    target_paper = rec.n_evaluated[0] * 2 * n * (site.prefix_len + 1 + len(site.tail_ids))
    assert rec.n_evaluated[0] <= 6 and rec.flops_paper[0] == sampler_paper + target_paper
    assert 0 < rec.flops_real[0]
