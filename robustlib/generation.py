"""Responses of a causal LM to token sequences: greedy, batched, on the model's device.

The generative setting scores what a chat model *says* after an attack, so the lab
generates from exactly the tokens the attack optimised (``before_ids + attack_ids +
after_ids``: no re-tokenisation), left-padded into batches with an attention mask (the
model's own ``generate`` derives the positions from it). Decoding is greedy (the
model's sampling settings are overridden: the same inputs give the same response), stops
at the model's end-of-turn tokens and ``max_new_tokens``, and a batch that runs out of
memory is retried at half the size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .runtime import halving_chunks

log = logging.getLogger("robustlib.generation")


def stop_ids(model, tokenizer) -> list[int]:
    """The tokens that end a response: the model's generation config's eos (chat models
    list their end-of-turn token there) plus the tokenizer's eos."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, (list, tuple)) else [configured]
    ids = [int(i) for i in ids if i is not None]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def generate(model, tokenizer, inputs: Sequence[Sequence[int]], max_new_tokens: int = 64,
             batch_size: int = 16) -> list[str]:
    """The greedy response to each token sequence in ``inputs``, decoded without special
    tokens (one string per input, in order). Inputs are batched by length (less
    padding), ``batch_size`` at a time."""
    from transformers import GenerationConfig

    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is invalid; accepted: a positive integer")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; accepted: a positive integer")
    inputs = [list(map(int, ids)) for ids in inputs]
    if any(not ids for ids in inputs):
        raise ValueError("an input is empty: there is nothing to respond to")
    device = model.get_input_embeddings().weight.device
    stops = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    # Greedy, whatever the checkpoint's sampling defaults (Qwen's instruct models ship
    # temperature 0.7, top_p 0.8, top_k 20): each is set to transformers' own default,
    # the only values greedy decoding does not warn about (it ignores them).
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=stops,
                              pad_token_id=pad, temperature=1.0, top_p=1.0, top_k=50)
    order = sorted(range(len(inputs)), key=lambda i: (len(inputs[i]), i))
    out: list[str | None] = [None] * len(inputs)

    def run_chunk(start: int, stop: int) -> None:
        chunk = order[start:stop]
        for i, text in zip(chunk, _generate_batch(model, tokenizer, [inputs[i] for i in chunk], config, pad, device)):
            out[i] = text

    was_training = model.training
    model.eval()
    try:
        halving_chunks(len(order), batch_size, run_chunk, "responses generated at once", log)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def _generate_batch(model, tokenizer, rows: list[list[int]], config, pad: int, device) -> list[str]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):  # left padding: every row's next token is at the end
        ids[r, width - len(row):] = torch.tensor(row)
        mask[r, width - len(row):] = 1
    with torch.no_grad():
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
    return tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)


__all__ = ["generate", "stop_ids"]
