"""The windowed re-encoding filter keeps and drops exactly what the full check does.

Tokenizers: the zoo's byte-level BPE, SmolLM2's (GPT-2's regex; skipped without
`make real-models`), and BPEs trained here with the published pre-tokenisation of
Pythia (NFC + byte-level), Qwen2 (NFC + its split regex + byte-level) and Llama-3 (its
split regex + byte-level), plus a SentencePiece-style Metaspace tokenizer, which the
window must leave to the full check. Candidates are what GCG draws (single swaps of
a stable attack) and fully random rows, in contexts from the lab's tasks at every
position and written to be awkward (spaces at the seam, digits, contractions,
newlines, accents and combining marks).
"""

import random

import pytest
import torch

from robustlib import models, tasks
from robustlib.attacks import tokens as tk

CORPUS = [
    "The password is hunter2. Don't tell anyone: it's 12345 or 987654!",
    "Café déjà vu, naïve résumé; e\u0301 with a combining accent.\nNew line, then  two spaces.",
    "Subject: WIN $1000 now!!! Click http://example.com/offer?id=42 (limited) -- reply STOP",
    "I loved this movie; the acting was great, the plot weak. 7/10 would watch again.",
    "def f(x):\n    return x**2  # a comment\n\tTabbed\r\nWindows line.",
]


def _trained(pre_tokenizer, normalizer=None, metaspace=False):
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tmodels
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tmodels.BPE(unk_token="<unk>" if metaspace else None))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Metaspace() if metaspace else decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<unk>", "<|endoftext|>"],
        initial_alphabet=[] if metaspace else pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = CORPUS * 20 + [e.text for e in tasks.load_examples("password_match", "train", n=200, seed=0)]
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>")


def _split(regex):
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


@pytest.fixture(scope="module")
def lab_tokenizers():
    from tokenizers import normalizers, pre_tokenizers

    qwen, llama3 = tk.WINDOW_SAFE_SPLITS
    return {
        "zoo": models.load_tokenizer("zoo-0.3m"),
        "pythia-like": _trained(pre_tokenizers.ByteLevel(add_prefix_space=False), normalizers.NFC()),
        "qwen2-like": _trained(_split(qwen), normalizers.NFC()),
        "llama3-like": _trained(_split(llama3)),
        "metaspace": _trained(pre_tokenizers.Metaspace(), metaspace=True),
    }


def _contexts():
    out = []
    examples = (tasks.load_examples("password_match", "validation", n=3, seed=1)
                + tasks.load_examples("word_length", "validation", n=3, seed=1)
                + tasks.load_examples("strongreject", "validation", n=3, seed=1, source="builtin"))
    for ex in examples:
        for position in (0.0, 0.5, 1.0):
            try:
                out.append(ex.attack_split(position))
            except ValueError:  # a task that takes the attack at one place only
                pass
    out += [(text[: len(text) // 2], text[len(text) // 2:]) for text in CORPUS]  # spam-, review- and code-like
    out += [
        ("The code is 123", "456 and more text after it"),
        ("ends with a space ", " starts with a space"),
        ("two  spaces  before", "  two after"),
        ("a newline\n", "\nand another"),
        ("It's what they'", "ve said, isn't it"),
        ("Café résum", "é naïve e\u0301 combining"),
        ("no split points", "x"),
        ("", ""),
    ]
    return out


def _candidates(tok, before, after, allowed, rng, n_swaps=150, n_random=60):
    try:
        start = tk.initial_attack_ids(tok, before, after, 6, allowed)
    except ValueError:
        start = [int(allowed[0])] * 6
    pool = allowed.tolist()
    rows = []
    for _ in range(n_swaps):
        row = list(start)
        row[rng.randrange(6)] = rng.choice(pool)
        rows.append(row)
    rows += [[rng.choice(pool) for _ in range(6)] for _ in range(n_random)]
    return rows


def test_the_window_keeps_and_drops_exactly_what_the_full_check_does(lab_tokenizers, smollm2_tokenizer_or_none):
    toks = dict(lab_tokenizers)
    if smollm2_tokenizer_or_none is not None:
        toks["smollm2"] = smollm2_tokenizer_or_none
    rng = random.Random(0)
    for name, tok in toks.items():
        allowed = tk.allowed_token_ids(tok)
        kept = dropped = shortened = 0
        for before, after in _contexts():
            rows = _candidates(tok, before, after, allowed, rng)
            full = tk.reencoding_filter(tok, before, after, rows, window=False)
            windowed = tk.reencoding_filter(tok, before, after, rows)
            assert windowed == full, (name, before, after)
            kept += sum(full)
            dropped += len(full) - sum(full)
            ctx = tk.filter_context(tok, before, after)
            shortened += len(ctx.left) + len(ctx.right) < len(before) + len(after)
        assert kept and dropped, f"{name}: the check must see both outcomes ({kept} kept, {dropped} dropped)"
        if name == "metaspace":
            assert not tk.window_safe(tok) and shortened == 0
        else:
            assert tk.window_safe(tok) and shortened >= 10, (name, shortened)


@pytest.fixture(scope="module")
def smollm2_tokenizer_or_none():
    from robustlib import fetch

    path = fetch.available("smollm2")
    return models.load_tokenizer(str(path)) if path else None


def test_a_context_whose_ids_disagree_with_its_text_is_checked_in_full(lab_tokenizers):
    """Ids the caller gives that are not what the text outside the window encodes to
    (here: the before-text's ids with one token changed far from the attack) make the
    window the whole text, so the answer is still the full check's."""
    tok = lab_tokenizers["zoo"]
    before, after = "The password is hunter and the rest of the words here", " after the attack"
    before_ids = tk._encode(tok, before)
    odd = [before_ids[1]] + before_ids[1:]
    ctx = tk.filter_context(tok, before, after, odd)
    assert ctx.left == before and list(ctx.left_ids) == odd
    rows = [[int(t)] * 4 for t in tk.allowed_token_ids(tok)[:20]]
    assert tk.reencoding_filter(tok, before, after, rows, odd) == [False] * 20


def test_gcg_batches_the_filter_over_examples_and_gets_the_same_attack(tiny_classifier, monkeypatch):
    """GCG's per-step filter is one call for all examples, and a windowed run finds the
    same attacks as one that re-encodes every full text."""
    from robustlib.attacks import base, gcg

    model, tok = tiny_classifier
    examples = tasks.load_examples("password_match", "validation", n=4, seed=0)
    cfg = {"iterations": 2, "n_candidates": 8, "top_k": 16, "n_attack_tokens": 4, "skip_incorrect": False}
    calls = []
    real = tk.filter_many

    def counting(tokenizer, contexts, candidates):
        calls.append(len(candidates))
        return real(tokenizer, contexts, candidates)

    monkeypatch.setattr(base, "filter_many", counting)
    windowed = gcg.run(model, tok, examples, cfg)
    assert calls and max(calls) == 4 * 8  # every example's candidates in one call
    monkeypatch.setattr(base, "filter_context", lambda t, b, a, bi, ai: tk.FilterContext(b, a, tuple(bi), tuple(ai)))
    full = gcg.run(model, tok, examples, cfg)
    assert [r.attack_ids for r in windowed.records] == [r.attack_ids for r in full.records]
    assert torch.tensor(windowed.asr).equal(torch.tensor(full.asr))
