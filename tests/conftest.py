"""Shared fixtures. The run store and reports go to a temporary folder for the whole
session (set before any notebook kernel starts, so nbval's kernels inherit it)."""

from __future__ import annotations

import os
import tempfile

_tmp = tempfile.mkdtemp(prefix="robustlib-test-")
os.environ.setdefault("ROBUSTLIB_RUNS", os.path.join(_tmp, "runs"))
os.environ.setdefault("ROBUSTLIB_REPORTS", os.path.join(_tmp, "reports"))
os.environ.setdefault("TQDM_DISABLE", "1")

import functools  # noqa: E402
import http.client  # noqa: E402
import urllib.request  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


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


@pytest.fixture()
def tiny_classifier(make_tiny_classifier, zoo_tokenizer):
    """A random-init 2-layer GPT-NeoX classifier (~40k parameters) with the zoo tokenizer."""
    return make_tiny_classifier(), zoo_tokenizer
