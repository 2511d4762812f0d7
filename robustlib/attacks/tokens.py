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
from collections.abc import Sequence
from typing import Any

import torch

#: Strings tried, in order, for the initial attack (the token repeated
#: ``n_attack_tokens`` times); the first one whose repetition survives the
#: re-encoding filter in an example's context is used for that example.
INITIAL_ATTACK_TOKENS = (" @", "@", " x", "x", "!", " the", " a")

_ALLOWED_CACHE: dict[int, tuple[Any, torch.Tensor]] = {}


def allowed_token_ids(tokenizer) -> torch.Tensor:
    """Token ids an attack may use, sorted (a 1-D LongTensor).

    Excluded: special tokens (``all_special_ids`` and added tokens marked special), and
    tokens whose decoded string is empty or not entirely ASCII-printable
    (``s.isascii() and s.isprintable()``, as in nanoGCG): this drops byte fragments of
    multi-byte characters (which decode to U+FFFD), control characters and newlines /
    tabs (which are not "printable"; a space is). The result is cached per tokenizer
    object.
    """
    hit = _ALLOWED_CACHE.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for idx, added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(added, "special", False):
            special.add(int(idx))
    vocab = len(tokenizer)
    strings = _decode_many(tokenizer, [[i] for i in range(vocab)])
    ids = [i for i, s in enumerate(strings) if i not in special and s and s.isascii() and s.isprintable()]
    out = torch.tensor(ids, dtype=torch.long)
    _ALLOWED_CACHE[id(tokenizer)] = (tokenizer, out)
    return out


def _decode_many(tokenizer, id_lists: Sequence[Sequence[int]]) -> list[str]:
    if not id_lists:
        return []
    return list(tokenizer.batch_decode([list(map(int, x)) for x in id_lists], clean_up_tokenization_spaces=False))


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def reencoding_filter(
    tokenizer,
    before: str,
    after: str,
    candidates: Sequence[Sequence[int]] | torch.Tensor,
    before_ids: Sequence[int] | None = None,
    after_ids: Sequence[int] | None = None,
) -> list[bool]:
    """For each candidate attack (a list of token ids), whether it survives decoding
    and re-encoding *in context*: ``tokenizer(before + decode(ids) + after)`` must be
    exactly ``before_ids + ids + after_ids`` (``before_ids``/``after_ids`` default to
    ``before``/``after`` tokenised on their own). Tokenising the attack string alone
    is not enough: its first or last token may merge with its neighbours.
    """
    if isinstance(candidates, torch.Tensor):
        candidates = candidates.tolist()
    candidates = [list(map(int, c)) for c in candidates]
    if not candidates:
        return []
    before_ids = list(before_ids) if before_ids is not None else _encode(tokenizer, before)
    after_ids = list(after_ids) if after_ids is not None else _encode(tokenizer, after)
    strings = _decode_many(tokenizer, candidates)
    encoded = tokenizer([before + s + after for s in strings], add_special_tokens=False)["input_ids"]
    return [list(enc) == before_ids + cand + after_ids for enc, cand in zip(encoded, candidates)]


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


__all__ = ["INITIAL_ATTACK_TOKENS", "allowed_token_ids", "example_seed", "initial_attack_ids", "reencoding_filter"]
