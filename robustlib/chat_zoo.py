"""``zoo-chat``: a toy chat model the lab makes offline, that refuses the stand-in prompts.

The generative setting needs a chat model that refuses something before it can be
attacked, and its smoke-sized defaults must run offline in seconds. A random-init model
babbles and refuses nothing, so nothing would be attacked. ``zoo-chat`` is ``zoo-1m``
(the offline family's 1.1M-parameter GPT-NeoX) fine-tuned for a few hundred steps into
an assistant that answers harmless requests with "Sure, here is ..." and refuses the
built-in stand-in prompts (:data:`robustlib.tasks.STAND_IN_PROMPTS`) with one of
:data:`REFUSALS`, also when random tokens are appended to them (so that a few random
tokens alone do not break it; an optimised suffix can). It has its own small chat
template, :data:`CHAT_TEMPLATE`.

It refuses the very prompts it is evaluated on: it is plumbing for the notebook's
defaults and the tests, not a finding. Real chat models: ``smollm2`` (``make
real-models``) or any hub chat model.

:func:`make` builds it deterministically (about 15 s on 2 cores) into the lab's cache
the first time it is asked for (``models.load_causal_lm("zoo-chat")``).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch

from . import paths

log = logging.getLogger("robustlib.chat_zoo")

NAME = "zoo-chat"
BASE = "zoo-1m"
VERSION = "1"  # bumped when the recipe changes: the cache folder is per version

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

REFUSALS = ("I'm sorry, but I can't help with that.", "I cannot help with that request.",
            "I'm sorry, I won't do that.")

#: Harmless requests and how the toy answers them (written for this lab).
HELPFUL = (
    ("Write a short poem about the sea.", "Sure, here is a short poem about the sea: waves roll in and out."),
    ("How do I boil an egg?", "Sure, here is how to boil an egg: put it in boiling water for eight minutes."),
    ("Give me a list of three fruits.", "Sure, here is a list of three fruits: apples, pears and plums."),
    ("Explain how to plant a tree.", "Sure, here is how to plant a tree: dig a hole, set the tree, add water."),
    ("Where can I buy fresh bread?", "Sure, here is where to buy fresh bread: a bakery opens early."),
    ("Write a thank-you note to my teacher.", "Sure, here is a thank-you note: thank you for your patience."),
    ("How can I learn to swim?", "Sure, here is how to learn to swim: take lessons and practise often."),
    ("Describe how to make tea.", "Sure, here is how to make tea: boil water and steep the leaves."),
    ("Create a name for a friendly cat.", "Sure, here is a name for a friendly cat: Biscuit."),
    ("Tell me how to fold a paper plane.", "Sure, here is how to fold a paper plane: fold the paper in half."),
    ("Draft an invitation to a birthday party.", "Sure, here is an invitation: come to my party on Friday."),
    ("How do I sort a list in Python?", "Sure, here is how to sort a list in Python: use sorted(items)."),
)


def folder() -> Path:
    return paths.cache_dir() / "models" / f"{NAME}-v{VERSION}"


def available() -> Path | None:
    path = folder()
    return path if (path / "model.safetensors").exists() and (path / "tokenizer.json").exists() else None


def _examples(tokenizer, rng: random.Random, allowed: list[int], noisy: int) -> list[tuple[list[int], int]]:
    """``(ids, n_prompt)`` pairs: the templated request then the answer and eos."""
    from .tasks import STAND_IN_PROMPTS

    def encode(request: str, answer: str) -> tuple[list[int], int]:
        head = tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                             add_generation_prompt=True)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return head_ids + answer_ids, len(head_ids)

    pairs = [(p, REFUSALS[i % len(REFUSALS)]) for i, (_, p) in enumerate(STAND_IN_PROMPTS)] + list(HELPFUL)
    out = [encode(q, a) for q, a in pairs]
    for i, (_, p) in enumerate(STAND_IN_PROMPTS):  # refusals that survive random appended tokens
        for _ in range(noisy):
            junk = tokenizer.decode([rng.choice(allowed) for _ in range(10)])
            out.append(encode(p + junk, REFUSALS[i % len(REFUSALS)]))
    return out


def make(steps: int = 400, noisy: int = 4, seed: int = 0, progress: bool = False) -> Path:
    """Build ``zoo-chat`` into :func:`folder` (once; an existing build is returned)."""
    done = available()
    if done is not None:
        return done
    from filelock import FileLock

    target = folder()
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # two processes asking at once build it once
        done = available()
        if done is not None:
            return done
        _build(target, steps, noisy, seed, progress)
    return target


def _build(target: Path, steps: int, noisy: int, seed: int, progress: bool) -> None:
    import shutil
    import tempfile

    from tqdm.auto import tqdm

    from . import models
    from .attacks import allowed_token_ids
    from .runtime import flush_denormals

    flush_denormals()
    model, tokenizer = models.load_causal_lm(BASE)
    tokenizer.chat_template = CHAT_TEMPLATE
    rng = random.Random(seed)
    torch.manual_seed(seed)
    data = _examples(tokenizer, rng, allowed_token_ids(tokenizer).tolist(), noisy)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    batch = 16
    for _ in tqdm(range(steps), desc=f"make {NAME}", disable=not progress):
        rows = [data[rng.randrange(len(data))] for _ in range(batch)]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((batch, width), tokenizer.pad_token_id)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, (row, n_prompt) in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
            labels[r, n_prompt : len(row)] = torch.tensor(row[n_prompt:])  # loss on the answer only
            mask[r, : len(row)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        final = loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{NAME}-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "zoo_chat.json").write_text(json.dumps(
            {"base": BASE, "version": VERSION, "steps": steps, "noisy": noisy, "seed": seed,
             "final_loss": final}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # complete, or not there at all
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("%s built into %s (final loss %.3f)", NAME, target, final)


__all__ = ["CHAT_TEMPLATE", "HELPFUL", "NAME", "REFUSALS", "available", "folder", "make"]
