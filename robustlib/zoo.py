"""The offline model family: a small Pythia-style suite the lab pretrains itself.

Weights and data cannot come from the hub on an offline machine, and a GPT-NeoX
classifier trained from random initialisation does not learn PasswordMatch (tried:
89k-5.3M parameters plateau at 0.73-0.77 validation accuracy). So the lab ships its
own tiny pretrained family, built the way Pythia was built, at toy scale:

* **Corpus.** Text every CPython installation carries: the reference-manual topics
  of ``pydoc_data`` (English prose), the docstrings of the standard library (more
  prose) and the standard library's source code (code, like the Pile's GitHub part,
  is full of repeated identifiers, which is what teaches a model to notice that a
  string appeared before: the skill PasswordMatch needs). Files are read in sorted
  order, so the corpus is a pure function of the Python version; its SHA-256 is
  recorded with every model.
* **Tokenizer.** Byte-level BPE trained offline on that corpus with ``tokenizers``
  (GPT-NeoX style: no normaliser, ``<|endoftext|>`` as bos/eos/pad).
* **Models.** GPT-NeoX (Pythia's architecture: rotary on 25% of head dims, parallel
  residual, untied embeddings) at :data:`ZOO_SIZES`, every size trained on the same
  number of tokens, in the same order (Pythia's recipe), with AdamW and a cosine
  schedule. Pretraining tokens and FLOPs (6 N D, N counted as a causal LM) are
  recorded in ``manifest.json`` so that "fraction of pretraining compute" means
  something for this family too.

``make zoo`` (``python -m robustlib.zoo``) regenerates everything into
``robustlib/zoo/``; the files committed there are this module's output.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import os
import platform
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import paths
from .flops import pretrain_flops
from .runtime import flush_denormals

log = logging.getLogger("robustlib.zoo")

EOS = "<|endoftext|>"
VOCAB_SIZE = 4096


@dataclass(frozen=True)
class ZooSize:
    """Shape of one member of the offline family (GPT-NeoX hyper-parameters)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int

    def config_kwargs(self) -> dict:
        return dict(
            vocab_size=VOCAB_SIZE,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=4 * self.hidden_size,
            max_position_embeddings=1024,
            rotary_pct=0.25,
            rotary_emb_base=10000,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            attention_dropout=0.0,
            hidden_dropout=0.0,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        )


#: The family, smallest first. Names follow Pythia's (rounded parameter count of the
#: causal LM); classifier parameter counts are in ``manifest.json`` and
#: :func:`robustlib.models.num_params`.
ZOO_SIZES: dict[str, ZooSize] = {
    "zoo-0.3m": ZooSize(hidden_size=32, num_hidden_layers=2, num_attention_heads=4),
    "zoo-1m": ZooSize(hidden_size=96, num_hidden_layers=3, num_attention_heads=4),
    "zoo-3m": ZooSize(hidden_size=192, num_hidden_layers=4, num_attention_heads=8),
    "zoo-8m": ZooSize(hidden_size=288, num_hidden_layers=6, num_attention_heads=8),
}


@dataclass(frozen=True)
class PretrainConfig:
    """How every member of the family is pretrained (the same for all sizes)."""

    tokens: int = 2_000_000  # D: tokens seen by each model (same order for all)
    seq_len: int = 256
    batch_size: int = 8  # sequences per step
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 1234


# --------------------------------------------------------------------------- corpus


def _stdlib_files() -> list[Path]:
    std = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3"}
    return sorted(p for p in std.rglob("*.py") if not skip.intersection(p.relative_to(std).parts))


def build_corpus() -> str:
    """The pretraining text: pydoc topics, stdlib docstrings, then stdlib source.

    Documents are joined with the end-of-text token, like Pythia's packed sequences.
    Deterministic for a given Python version (files are read in sorted order).
    """
    import pydoc_data.topics

    docs: list[str] = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    sources: list[str] = []
    for path in _stdlib_files():
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        sources.append(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 80:
                    docs.append(doc)
    return EOS.join(docs + sources)


def corpus_documents(corpus: str) -> list[str]:
    return [d for d in corpus.split(EOS) if d]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------ tokenizer


def train_tokenizer(corpus: str, vocab_size: int = VOCAB_SIZE):
    """Byte-level BPE trained on ``corpus``, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_documents(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        padding_side="right",
        model_max_length=1024,
    )


# ------------------------------------------------------------------------- training


def token_stream(corpus: str, tokenizer) -> torch.Tensor:
    """All documents tokenised and packed into one 1-D stream, eos between them."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    docs = corpus_documents(corpus)
    for start in range(0, len(docs), 256):
        for enc in tokenizer(docs[start : start + 256], add_special_tokens=False)["input_ids"]:
            ids.extend(enc)
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def pretrain_batches(stream: torch.Tensor, cfg: PretrainConfig):
    """Yield ``(batch_size, seq_len)`` windows in a seeded order, the same for every size."""
    n_windows = (len(stream) - 1) // cfg.seq_len
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(n_windows, generator=gen)
    steps = math.ceil(cfg.tokens / (cfg.seq_len * cfg.batch_size))
    for step in range(steps):
        idx = torch.arange(step * cfg.batch_size, (step + 1) * cfg.batch_size) % n_windows
        starts = order[idx] * cfg.seq_len
        yield torch.stack([stream[s : s + cfg.seq_len] for s in starts.tolist()])


def pretrain(name: str, stream: torch.Tensor, cfg: PretrainConfig = PretrainConfig(), progress: bool = True):
    """Pretrain one family member from scratch; returns ``(model, record)``. Flushes
    denormal floats for the process (:func:`robustlib.runtime.flush_denormals`)."""
    from tqdm.auto import tqdm
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    size = ZOO_SIZES[name]
    flush_denormals()
    torch.manual_seed(cfg.seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**size.config_kwargs()))
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    steps = math.ceil(cfg.tokens / (cfg.seq_len * cfg.batch_size))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0 = time.time()
    losses: list[float] = []
    bar = tqdm(pretrain_batches(stream, cfg), total=steps, desc=f"pretrain {name}", disable=not progress)
    for batch in bar:
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    tokens_seen = steps * cfg.seq_len * cfg.batch_size
    record = {
        "name": name,
        "lm_num_params": n_params,
        "pretrain_tokens": tokens_seen,
        # Paper convention: 6 N D with N the parameter count of the model trained.
        "pretrain_flops": pretrain_flops(n_params, tokens_seen),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "wall_seconds": time.time() - t0,
        "config": asdict(size),
    }
    model.eval()
    return model, record


def make_zoo(out: Path | None = None, cfg: PretrainConfig = PretrainConfig(), sizes: list[str] | None = None) -> Path:
    """Build the whole family into ``out`` (default: the package's ``zoo/`` folder).

    Writes ``tokenizer/``, one folder per size (``config.json`` + ``model.safetensors``
    of the causal LM) and ``manifest.json`` (corpus hash, pretraining tokens and FLOPs
    per size). Existing sizes not listed in ``sizes`` are kept in the manifest.
    """
    import transformers

    out = Path(out) if out else paths.zoo_dir()
    out.mkdir(parents=True, exist_ok=True)
    sizes = sizes or list(ZOO_SIZES)
    unknown = [s for s in sizes if s not in ZOO_SIZES]
    if unknown:
        raise ValueError(f"unknown zoo size(s) {unknown}; accepted: {list(ZOO_SIZES)}")
    log.info("building corpus")
    corpus = build_corpus()
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(corpus)
        tokenizer.save_pretrained(tok_dir)
    stream = token_stream(corpus, tokenizer)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": {}}
    manifest.update(
        corpus_sha256=sha256(corpus),
        corpus_chars=len(corpus),
        corpus_tokens=int(len(stream)),
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        pretrain=asdict(cfg),
    )
    for name in sizes:
        model, record = pretrain(name, stream, cfg)
        model.save_pretrained(out / name, safe_serialization=True)
        manifest["models"][name] = record
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, manifest_path)
        log.info("%s: loss %.3f in %.0fs", name, record["final_loss"], record["wall_seconds"])
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Pretrain the offline model family (make zoo).")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: robustlib/zoo)")
    parser.add_argument("--sizes", nargs="*", default=None, help=f"subset of {list(ZOO_SIZES)}")
    parser.add_argument("--tokens", type=int, default=PretrainConfig.tokens, help="pretraining tokens per model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_zoo(args.out, PretrainConfig(tokens=args.tokens), args.sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
