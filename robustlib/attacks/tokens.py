"""Token utilities for attacks: the vocabulary an attack may use, the re-encoding
filter, the initial attack and per-example seeds.

An attack is a list of ``n_attack_tokens`` token ids placed between the token ids of the
text before it and after it (``before_ids + attack_ids + after_ids``). A candidate
attack is only used if the full attacked text re-tokenises to exactly those ids
(:func:`reencoding_filter`), so that the model is scored on the very tokens the attack
optimised, and the attack string found is the one the model would see if it were typed
in.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Strings tried, in order, for the initial attack (the token repeated
#: ``n_attack_tokens`` times); the first one whose repetition survives the
#: re-encoding filter in an example's context is used for that example.
INITIAL_ATTACK_TOKENS = (" @", "@", " x", "x", "!", " the", " a")

# What is worked out once per tokenizer object (it reads the whole vocabulary), kept only
# as long as the tokenizer lives.
_ALLOWED_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WINDOW_SAFE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _per_tokenizer(cache: weakref.WeakKeyDictionary, tokenizer, compute):
    """``compute(tokenizer)``, once per tokenizer object (every time for an object that
    cannot be weakly referenced or hashed)."""
    try:
        hit = cache.get(tokenizer)
    except TypeError:
        return compute(tokenizer)
    if hit is None:
        hit = cache[tokenizer] = compute(tokenizer)
    return hit


def allowed_token_ids(tokenizer) -> torch.Tensor:
    """Token ids an attack may use, sorted (a 1-D LongTensor).

    Excluded: special tokens (``all_special_ids`` and added tokens marked special), and
    tokens whose decoded string is empty or not entirely ASCII-printable
    (``s.isascii() and s.isprintable()``, as in nanoGCG): this drops byte fragments of
    multi-byte characters (which decode to U+FFFD), control characters and newlines /
    tabs (which are not "printable"; a space is). The result is cached per tokenizer
    object.
    """
    return _per_tokenizer(_ALLOWED_CACHE, tokenizer, _allowed_ids)


def _allowed_ids(tokenizer) -> torch.Tensor:
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for idx, added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(added, "special", False):
            special.add(int(idx))
    vocab = len(tokenizer)
    strings = _decode_many(tokenizer, [[i] for i in range(vocab)])
    ids = [i for i, s in enumerate(strings) if i not in special and s and s.isascii() and s.isprintable()]
    return torch.tensor(ids, dtype=torch.long)


def _decode_many(tokenizer, id_lists: Sequence[Sequence[int]]) -> list[str]:
    if not id_lists:
        return []
    return list(tokenizer.batch_decode([list(map(int, x)) for x in id_lists], clean_up_tokenization_spaces=False))


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


#: Pre-tokenisation regexes after which a space between two non-space characters always
#: starts a new pre-token, whatever surrounds it (no pattern crosses such a space or
#: looks behind it): Qwen2's and Llama-3's (they differ in how digits group). GPT-2's,
#: used by a ``ByteLevel`` pre-tokenizer with ``use_regex``, has the same property.
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
WINDOW_SAFE_SPLITS = (_WORDS + r"\p{N}" + _REST, _WORDS + r"\p{N}{1,3}" + _REST)
_SAFE_NORMALIZERS = ("NFC", "NFKC", "NFD", "NFKD")  # none composes anything with a space


def window_safe(tokenizer) -> bool:
    """Whether ``tokenizer`` splits a text's tokens wherever the text has a space between
    two non-space characters, so that the filter may re-encode only a window around the
    attack (:func:`filter_context`): a fast tokenizer with a BPE model, no normaliser or a
    Unicode-normal-form one, a pre-tokenizer that is ``ByteLevel`` with GPT-2's regex or
    one of :data:`WINDOW_SAFE_SPLITS` followed by a regex-free ``ByteLevel``, and no added
    token that strips the whitespace around it or contains any. Anything else (a
    SentencePiece ``Metaspace`` tokenizer, a slow tokenizer) re-encodes the full text."""
    return _per_tokenizer(_WINDOW_SAFE, tokenizer, _inspect_window_safe)


def _inspect_window_safe(tokenizer) -> bool:
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    if (spec.get("model") or {}).get("type") != "BPE":
        return False
    norm = spec.get("normalizer")
    norms = [] if norm is None else norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    if any(n.get("type") not in _SAFE_NORMALIZERS for n in norms):
        return False
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    byte_level = lambda p, regex: (p.get("type") == "ByteLevel" and bool(p.get("use_regex", True)) == regex  # noqa: E731
                                   and not p.get("add_prefix_space", False))
    if len(steps) == 1:
        ok = byte_level(steps[0], True)
    elif len(steps) == 2:
        split = steps[0]
        ok = (split.get("type") == "Split" and (split.get("pattern") or {}).get("Regex") in WINDOW_SAFE_SPLITS
              and split.get("behavior") == "Isolated" and not split.get("invert", False)
              and byte_level(steps[1], False))
    else:
        ok = False
    added = spec.get("added_tokens") or []
    return ok and not any(a.get("lstrip") or a.get("rstrip") or any(ch.isspace() for ch in a.get("content", ""))
                          for a in added)


@dataclass(frozen=True)
class FilterContext:
    """What the filter re-encodes around one example's attack: ``left + attack + right``
    must tokenise to ``left_ids + attack_ids + right_ids``. ``left`` is the end of the
    text before the attack from its last safe split point (or all of it), ``right`` the
    start of the text after it up to its first (or all of it)."""

    left: str
    right: str
    left_ids: tuple[int, ...]
    right_ids: tuple[int, ...]


def _split_points(text: str) -> list[int]:
    """Positions of spaces between two non-space characters of ``text``."""
    return [i for i in range(1, len(text) - 1)
            if text[i] == " " and not text[i - 1].isspace() and not text[i + 1].isspace()]


def _full_context(tokenizer, before: str, after: str, before_ids: Sequence[int] | None,
                  after_ids: Sequence[int] | None) -> FilterContext:
    """The whole text as the window (ids default to each side tokenised on its own)."""
    return FilterContext(before, after,
                         tuple(before_ids) if before_ids is not None else tuple(_encode(tokenizer, before)),
                         tuple(after_ids) if after_ids is not None else tuple(_encode(tokenizer, after)))


def filter_context(tokenizer, before: str, after: str, before_ids: Sequence[int] | None = None,
                   after_ids: Sequence[int] | None = None) -> FilterContext:
    """The window the filter needs for one context (:class:`FilterContext`). With a
    :func:`window_safe` tokenizer the window is cut at the split points nearest the
    attack, once it is checked here that the ids outside the window are what the text
    outside it encodes to; otherwise (or if that check fails) it is the whole text."""
    full = _full_context(tokenizer, before, after, before_ids, after_ids)
    if not window_safe(tokenizer):
        return full
    before_ids, after_ids = list(full.left_ids), list(full.right_ids)
    left, left_ids = before, before_ids
    points = _split_points(before)
    if points:
        outside = _encode(tokenizer, before[: points[-1]])
        if before_ids[: len(outside)] == outside:
            left, left_ids = before[points[-1]:], before_ids[len(outside):]
    right, right_ids = after, after_ids
    points = _split_points(after)
    if points:
        outside = _encode(tokenizer, after[points[0]:])
        if outside and after_ids[-len(outside):] == outside:
            right, right_ids = after[: points[0]], after_ids[: -len(outside)]
    return FilterContext(left, right, tuple(left_ids), tuple(right_ids))


def filter_many(tokenizer, contexts: Sequence[FilterContext], candidates: Sequence[Sequence[int]]) -> list[bool]:
    """For each candidate attack ``candidates[r]`` (token ids) in its context
    ``contexts[r]``, whether it survives decoding and re-encoding there; every row of
    every example in one decode and one encode call."""
    candidates = [list(map(int, c)) for c in candidates]
    if not candidates:
        return []
    strings = _decode_many(tokenizer, candidates)
    encoded = tokenizer([c.left + s + c.right for c, s in zip(contexts, strings)], add_special_tokens=False)
    return [list(enc) == [*c.left_ids, *cand, *c.right_ids]
            for enc, c, cand in zip(encoded["input_ids"], contexts, candidates)]


def reencoding_filter(
    tokenizer,
    before: str,
    after: str,
    candidates: Sequence[Sequence[int]] | torch.Tensor,
    before_ids: Sequence[int] | None = None,
    after_ids: Sequence[int] | None = None,
    window: bool = True,
) -> list[bool]:
    """For each candidate attack (a list of token ids), whether it survives decoding
    and re-encoding *in context*: ``tokenizer(before + decode(ids) + after)`` must be
    exactly ``before_ids + ids + after_ids`` (``before_ids``/``after_ids`` default to
    ``before``/``after`` tokenised on their own). Tokenising the attack string alone
    is not enough: its first or last token may merge with its neighbours. With
    ``window`` (the default) only the window of :func:`filter_context` is re-encoded,
    which gives the same answers where the tokenizer allows it and is the full check
    where it does not; ``window=False`` always encodes the full text.
    """
    if isinstance(candidates, torch.Tensor):
        candidates = candidates.tolist()
    if not len(candidates):
        return []
    ctx = (filter_context if window else _full_context)(tokenizer, before, after, before_ids, after_ids)
    return filter_many(tokenizer, [ctx] * len(candidates), candidates)


def initial_attack_ids(tokenizer, before: str, after: str, n_tokens: int, allowed: torch.Tensor,
                       before_ids=None, after_ids=None) -> list[int]:
    """A stable initial attack for one context: a single allowed token repeated
    ``n_tokens`` times, the first of :data:`INITIAL_ATTACK_TOKENS` (then the first 512
    allowed ids) whose repetition survives :func:`reencoding_filter` here."""
    allowed_set = set(allowed.tolist())
    tried: list[int] = []
    for s in INITIAL_ATTACK_TOKENS:
        ids = _encode(tokenizer, s)
        if len(ids) == 1 and ids[0] in allowed_set and ids[0] not in tried:
            tried.append(ids[0])
    tried += [i for i in allowed.tolist()[:512] if i not in tried]
    for start in range(0, len(tried), 64):
        block = tried[start : start + 64]
        ok = reencoding_filter(tokenizer, before, after, [[t] * n_tokens for t in block], before_ids, after_ids)
        for t, good in zip(block, ok):
            if good:
                return [t] * n_tokens
    raise ValueError(
        f"no repeated single token makes a stable {n_tokens}-token attack between {before[-30:]!r} and "
        f"{after[:30]!r}; tried {len(tried)} tokens"
    )


#: The paper's initial GCG attack: this string repeated, chosen because it tokenises stably.
PAPER_INITIAL_ATTACK = "@&"


def paper_initial_attack_ids(tokenizer, before: str, after: str, n_tokens: int, allowed: torch.Tensor,
                             before_ids=None, after_ids=None) -> list[int]:
    """The paper's initial attack for one context: ``"@&"`` repeated and cut to
    ``n_tokens`` tokens, as the tokenizer splits it (tried from both starting characters);
    ``ValueError`` naming the context when neither survives :func:`reencoding_filter`
    here or uses a token an attack may not."""
    allowed_set = set(allowed.tolist())
    tried = []
    for text in (PAPER_INITIAL_ATTACK * n_tokens, PAPER_INITIAL_ATTACK[::-1] * n_tokens):
        ids = _encode(tokenizer, text)[:n_tokens]
        if len(ids) == n_tokens and set(ids) <= allowed_set:
            tried.append(ids)
    ok = reencoding_filter(tokenizer, before, after, tried, before_ids, after_ids) if tried else []
    for ids, good in zip(tried, ok):
        if good:
            return ids
    raise ValueError(f"the paper's initial attack ({PAPER_INITIAL_ATTACK!r} repeated, {n_tokens} tokens) does not "
                     f"tokenise stably between {before[-30:]!r} and {after[:30]!r}; use init='lab'")


def example_seed(seed: int, index: int) -> int:
    """A per-example seed: attacks are reproducible whatever the batching."""
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


__all__ = ["INITIAL_ATTACK_TOKENS", "FilterContext", "allowed_token_ids", "example_seed", "filter_context",
           "filter_many", "initial_attack_ids", "reencoding_filter", "window_safe"]
