"""Shared-prefix attention: many candidate rows of one example attend to one copy of its
prefix's keys and values.

A KV cache expanded over ``R`` candidate rows makes the model concatenate the prefix's
keys and values onto every row (``R`` copies per layer, once when the cache is built and
again inside its ``update``), then attend over the copies. Here the model runs on the
suffix tokens only, with no cache, and its attention (a transformers attention function
registered as :data:`NAME`) adds the prefix itself: for each run of rows that share a
site, the suffix queries of all its rows are folded into one sequence and multiplied by
the prefix keys once (one large matrix product, no copy), the suffix keys are attended
causally per row, and one softmax spans both. The result equals the cached and the
uncached forward (tested on GPT-NeoX, Qwen2 and Llama, grouped-query attention
included).

:func:`shared_prefix` is the context manager the scorer runs a forward in; outside it
the registered function is never selected.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Sequence

import torch

NAME = "robustlib_shared_prefix"

# (prefix[layer][run] = (keys, values) of shape (1, kv_heads, P, head_dim), rows per run)
_STATE: contextvars.ContextVar = contextvars.ContextVar("robustlib_shared_prefix", default=None)


def supports(model) -> bool:
    """The model's attention goes through transformers' attention interface (every
    architecture the lab uses does; remote-code models may not)."""
    return bool(getattr(model, "_supports_attention_backend", False)) and hasattr(model.config, "_attn_implementation")


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``query`` (rows, heads, S, d) and the suffix's ``key``/``value`` (rows, kv_heads,
    S, d); returns ``(rows, S, heads, d)`` as transformers' attention functions do."""
    prefix, runs = _STATE.get()
    rows, heads, s, d = query.shape
    rep = heads // key.shape[1]
    scale = scaling if scaling is not None else d ** -0.5
    causal = torch.ones(s, s, dtype=torch.bool, device=query.device).tril()
    outs, start = [], 0
    for (pk, pv), count in zip(prefix[module.layer_idx], runs):
        q = query[start : start + count]
        ks, vs = key[start : start + count], value[start : start + count]
        pk, pv = pk[0], pv[0]  # (kv_heads, P, d)
        if rep > 1:  # grouped-query attention: each kv head serves `rep` query heads
            pk, pv = pk.repeat_interleave(rep, 0), pv.repeat_interleave(rep, 0)
            ks, vs = ks.repeat_interleave(rep, 1), vs.repeat_interleave(rep, 1)
        p = pk.shape[1]
        folded = q.transpose(0, 1).reshape(heads, count * s, d)  # every row's queries, one sequence per head
        on_prefix = torch.matmul(folded, pk.transpose(1, 2)).view(heads, count, s, p).transpose(0, 1)
        on_suffix = torch.matmul(q, ks.transpose(-1, -2)).masked_fill(~causal, float("-inf"))
        weights = torch.softmax(torch.cat([on_prefix, on_suffix], -1).float() * scale, -1).to(q.dtype)
        w_prefix = weights[..., :p].transpose(0, 1).reshape(heads, count * s, p)
        out = torch.matmul(w_prefix, pv).view(heads, count, s, d).transpose(0, 1)
        outs.append(out + torch.matmul(weights[..., p:], vs))
        start += count
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, lambda *args, **kwargs: None)  # the function builds its own mask


_register()


@contextlib.contextmanager
def shared_prefix(model, prefix: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]], runs: Sequence[int]):
    """Within the block, ``model``'s forward on suffix tokens (no cache, position ids
    continuing after the prefix) attends to the prefixes too. ``prefix[layer][run]``:
    the batch-1 keys and values of run ``run``'s prefix; ``runs``: how many consecutive
    rows each run has."""
    config = model.config
    before = config._attn_implementation
    token = _STATE.set((prefix, list(runs)))
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
        _STATE.reset(token)


__all__ = ["NAME", "shared_prefix", "supports"]
