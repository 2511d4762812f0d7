"""Shared fixtures. The session's environment (a temporary run store, the paper's
released tables where they sit beside the checkout) is set first: :mod:`labenv`."""

from __future__ import annotations

import labenv

labenv.configure()

import functools  # noqa: E402
import http.client  # noqa: E402
import os  # noqa: E402
import urllib.request  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("OMP_NUM_THREADS", "").isdigit():
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # this worker's share (labenv)


# Both conftests: `pytest notebooks` alone loads only the notebooks' one.
def pytest_collection_modifyitems(items):
    labenv.order_for_workers(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return labenv.make_scheduler(config, log)


@functools.lru_cache(maxsize=1)
def hub_unreachable_reason() -> str | None:
    """Why the Hugging Face hub cannot be used here (None when it can)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{var} is set"
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/EleutherAI/pythia-14m", timeout=5).close()
    except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, HTTP errors
        return f"Hugging Face hub unreachable ({type(err).__name__})"
    return None


@pytest.fixture()
def hub():
    """Skip (never fake) a test that needs the hub when it is unreachable."""
    reason = hub_unreachable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module, restored afterwards. Tiny models on a shared
    2-core machine run an order of magnitude faster without OpenMP contention."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def zoo_tokenizer():
    from robustlib import models

    return models.load_tokenizer("zoo-0.3m")


@pytest.fixture(scope="session")
def make_tiny_classifier(zoo_tokenizer):
    """``make(hidden=16, layers=2)``: a random-init GPT-NeoX classifier with the zoo
    tokenizer, drawn from seed 0 (the same weights on every call with the same shape)."""
    from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

    def make(hidden: int = 16, layers: int = 2):
        torch.manual_seed(0)
        cfg = GPTNeoXConfig(
            vocab_size=len(zoo_tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
            intermediate_size=2 * hidden, max_position_embeddings=512, num_labels=2,
            pad_token_id=zoo_tokenizer.pad_token_id, tie_word_embeddings=False,
        )
        return GPTNeoXForSequenceClassification(cfg).eval()

    return make


@pytest.fixture(scope="session")
def make_tiny_lm():
    """``make(arch, tokenizer)``: a random-init 2-layer causal LM (``gpt_neox``, ``qwen2``
    or ``llama``, hidden 32) sized to the tokenizer, in eval mode; seed 0."""
    from transformers import (
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    def make(arch: str, tok):
        torch.manual_seed(0)
        common = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
        if arch == "gpt_neox":
            return GPTNeoXForCausalLM(GPTNeoXConfig(**common, max_position_embeddings=1024)).eval()
        cls, cfg = {"qwen2": (Qwen2ForCausalLM, Qwen2Config), "llama": (LlamaForCausalLM, LlamaConfig)}[arch]
        return cls(cfg(**common, num_key_value_heads=2)).eval()

    return make


@pytest.fixture()
def tiny_classifier(make_tiny_classifier, zoo_tokenizer):
    """A random-init 2-layer GPT-NeoX classifier (~40k parameters) with the zoo tokenizer."""
    return make_tiny_classifier(), zoo_tokenizer


@pytest.fixture()
def store(tmp_path):
    """An empty run store in a temporary folder."""
    from robustlib import record

    return record.RunStore(tmp_path / "runs")


@pytest.fixture()
def make_finetune_run(zoo_tokenizer):
    """``make(store, study, {name: model}, data)``: a completed ``01_finetune`` run in
    ``store`` holding those (already trained or random) classifiers as checkpoints, seed
    0 each, and ``data`` (a :class:`robustlib.studies.DataSpec`) as the data it used:
    what the later studies read, without fine-tuning anything."""
    from robustlib import flops, models

    def make(store, study, named_models, data):
        run = store.create_run(study, {"made_by": "test"}, notebook="01_finetune")
        rows = []
        for name, model in named_models.items():
            folder = models.save_classifier(model, zoo_tokenizer, run.artifact_path("models", f"{name}__seed0"))
            rows.append({"model_key": f"{name}__seed0", "model": name, "family": "custom", "seed": 0,
                         "num_params": flops.count_params(model), "checkpoint": run.relative(folder),
                         "pretrain_compute": None, "val_accuracy": 0.5})
        run.save_table("finetune", rows)
        data.save(run)
        run.mark_completed()
        return run

    return make


@pytest.fixture(scope="session")
def smollm2():
    """The folder of SmolLM2-135M-Instruct converted by `make real-models`; skips (never
    fakes) a test when it has not been fetched."""
    from robustlib import fetch

    path = fetch.available("smollm2")
    if path is None:
        pytest.skip("SmolLM2-135M-Instruct is not fetched "
                    f"(run `make real-models`; it goes to {fetch.folder('smollm2')})")
    return str(path)


@pytest.fixture(scope="session")
def batched_and_single():
    """``logits(model, tokenizer, texts)``: ``(batched, single)``, the classifier's logits
    for ``texts`` padded into one batch and one text at a time (a head reading the last
    non-pad token gives the same for both)."""

    def logits(model, tokenizer, texts):
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            batched = model(**batch).logits
            single = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in texts])
        return batched, single

    return logits
