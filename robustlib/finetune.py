"""Fine-tuning a sequence classifier: config in, result out.

``finetune(model, tokenizer, train, val, config)`` trains the model the caller owns
(in place) and returns a :class:`FinetuneResult` with the loss curve, validation
accuracy and compute in both conventions (:mod:`robustlib.flops`). Device placement
and mixed precision go through ``accelerate``, so the same code path serves the CPU,
one GPU or several.

Defaults are the paper's: Adafactor, learning rate 1e-5 decaying linearly to 0,
batch 8, 3 epochs. Small offline models want a larger learning rate (the demo
parameters use 1e-3).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from . import flops as _flops
from .config import StrictConfig
from .models import DEVICES, DTYPES, resolve_dtype
from .runtime import empty_device_cache, flush_denormals, is_out_of_memory

log = logging.getLogger("robustlib.finetune")

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class FinetuneConfig(StrictConfig):
    """Training settings. Unknown keys are rejected by :meth:`from_dict`."""

    epochs: float = 3.0  # passes over the training set (fractions allowed)
    batch_size: int = 8
    lr: float = 1e-5
    optimizer: str = "adafactor"  # one of OPTIMIZERS
    schedule: str = "linear"  # decay to 0 after warmup; one of SCHEDULES
    warmup_ratio: float = 0.0  # fraction of steps spent warming up linearly
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping
    max_length: int = 512  # tokens; a longer example is an error (never silently truncated)
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # one of DEVICES; "auto" lets accelerate choose
    dtype: str = "auto"  # mixed-precision compute dtype, one of DTYPES: auto = float32 on the CPU, bf16 on a GPU
    progress: bool = True

    def validate(self) -> None:
        """Value checks (types are checked first by :meth:`StrictConfig.check_types`)."""
        if self.epochs <= 0:
            raise self.bad("epochs", self.epochs, "a positive number")
        for name in ("batch_size", "eval_batch_size", "max_length"):
            if getattr(self, name) <= 0:
                raise self.bad(name, getattr(self, name), "a positive integer")
        if not 0 < self.lr < 1:
            raise self.bad("lr", self.lr, "a number in (0, 1)")
        for name, accepted in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("device", DEVICES),
                               ("dtype", DTYPES)):
            if getattr(self, name) not in accepted:
                raise self.bad(name, getattr(self, name), str(accepted))
        if not 0 <= self.warmup_ratio < 1:
            raise self.bad("warmup_ratio", self.warmup_ratio, "a number in [0, 1)")
        for name in ("weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise self.bad(name, getattr(self, name), "a number >= 0")


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced (the model itself is trained in place)."""

    val_accuracy: float
    val_loss: float
    train_losses: list[float]
    steps: int
    examples_seen: int
    flops: dict[str, int]  # train_flops_paper, train_flops_real, train_tokens, eval_...
    wall_seconds: float
    num_params: int
    config: dict = field(default_factory=dict)
    #: Per training example, its loss the last time it was in a batch (NaN: never drawn).
    example_losses: list[float] = field(default_factory=list)
    #: Examples left out for being longer than ``max_tokens`` (training, validation).
    n_dropped_train: int = 0
    n_dropped_val: int = 0
    max_tokens: int = 0  # the length limit applied (see :func:`length_limit`)
    dtype: str = "float32"  # the compute precision used ("auto" resolved)
    device: str = "cpu"  # the device type trained on
    #: With ``keep_optimizer_state``, the optimizer's per-parameter state at the end
    #: (``state_dict()["state"]``: moments and step counts, on the CPU), for a later run
    #: to continue from; else None. Not in the record.
    optimizer_state: dict | None = field(default=None, repr=False)

    def as_record(self) -> dict:
        """A flat dict for the run store (the loss curve left out)."""
        skip = ("train_losses", "config", "flops", "example_losses", "optimizer_state")
        rec = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}
        rec.update(self.flops)
        rec["final_train_loss"] = float(sum(self.train_losses[-10:]) / max(1, len(self.train_losses[-10:])))
        return rec


#: Tokens kept free below a model's context, for the attack tokens that will be added
#: to an example (the paper's pipeline dropped examples longer than the smallest
#: supported context minus 24 tokens).
CONTEXT_BUFFER = 24


def length_limit(model, max_length: int) -> int:
    """The longest example kept, in tokens: ``max_length``, and at most the model's
    context (``max_position_embeddings``) less :data:`CONTEXT_BUFFER`."""
    context = getattr(model.config, "max_position_embeddings", None)
    return min(max_length, context - CONTEXT_BUFFER) if isinstance(context, int) and context > 0 else max_length


def _encode(tokenizer, examples, max_length: int) -> list[list[int]]:
    """Token ids of every example; ``ValueError`` when one is longer than ``max_length``."""
    ids = tokenizer([ex.text for ex in examples], add_special_tokens=False)["input_ids"]
    too_long = [i for i, x in enumerate(ids) if len(x) > max_length]
    if too_long:
        i = too_long[0]
        raise ValueError(
            f"{len(too_long)} example(s) exceed max_length={max_length} tokens "
            f"(first: index {i}, {len(ids[i])} tokens); raise max_length or shorten the data"
        )
    return ids


def _encode_fitting(tokenizer, examples, limit: int, what: str) -> tuple[list[list[int]], list[int]]:
    """Token ids of the examples of at most ``limit`` tokens and their positions; the
    longer ones are left out (logged and counted by the caller), all of them an error."""
    ids = tokenizer([ex.text for ex in examples], add_special_tokens=False)["input_ids"]
    kept = [i for i, x in enumerate(ids) if len(x) <= limit]
    if not kept:
        raise ValueError(f"all {len(ids)} {what} examples are longer than {limit} tokens (max_length, and the "
                         f"model's context less {CONTEXT_BUFFER}); raise max_length or shorten the data")
    if len(kept) < len(ids):
        log.warning("%d of %d %s examples are longer than %d tokens: left out", len(ids) - len(kept), len(ids),
                    what, limit)
    return [ids[i] for i in kept], kept


def _collate(ids: list[list[int]], labels: list[int], pad_id: int):
    """Right-pad to the longest sequence in the batch (padding counts as compute)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x)
        mask[row, : len(x)] = 1
    return input_ids, mask, torch.tensor(labels, dtype=torch.long)


def _optimizer(model, cfg: FinetuneConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # The paper's settings: a fixed external learning rate, no relative steps.
        return Adafactor(
            params, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False,
            weight_decay=cfg.weight_decay,
        )
    try:  # one fused kernel for the whole update (CPU and CUDA), as the Trainer's default
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _continue(opt, state: dict, cfg: FinetuneConfig) -> None:
    """Load a previous run's per-parameter ``state`` into ``opt``; its param groups
    (learning rate, weight decay) stay this config's."""
    groups = opt.state_dict()["param_groups"]
    params = [p for g in opt.param_groups for p in g["params"]]
    for k, entry in state.items():
        if not 0 <= int(k) < len(params):
            raise ValueError(f"optimizer_state holds parameter {k}; this model's {cfg.optimizer} has "
                             f"{len(params)} (accepted: the state of a run on the same model and optimizer)")
        shape = tuple(params[int(k)].shape)
        # a moment has the parameter's shape (Adafactor's factored ones drop its last or
        # second-to-last dimension); step counts and scalars have none
        fits = {(), (1,), shape, shape[:-1], shape[:-2] + shape[-1:]}
        for name, v in entry.items():
            if torch.is_tensor(v) and tuple(v.shape) not in fits:
                raise ValueError(f"optimizer_state[{k}][{name!r}] has shape {tuple(v.shape)}; parameter {k} of "
                                 f"this model has {shape} (accepted: the state of a run on the same model)")
    try:
        # copies: the optimizer updates its state in place, and the caller's must not change
        copied = {int(k): {name: v.clone() if torch.is_tensor(v) else v for name, v in entry.items()}
                  for k, entry in state.items()}
        opt.load_state_dict({"state": copied, "param_groups": groups})
    except (KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"optimizer_state does not fit this model's {cfg.optimizer}: {err}") from None


def _cpu_state(opt) -> dict:
    """``opt``'s per-parameter state, tensors copied to the CPU."""
    return {k: {name: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v for name, v in s.items()}
            for k, s in opt.state_dict()["state"].items()}


def _schedule(opt, cfg: FinetuneConfig, total_steps: int):
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        frac = (step - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _accelerator(cfg: FinetuneConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, DistributedType

    from .models import pick_device

    device = pick_device(cfg.device)  # 'cuda' without a GPU is an error, not a quiet run on the CPU
    mp = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[resolve_dtype(cfg.dtype, device)]
    # accelerate keeps one state per process and refuses an Accelerator with other
    # settings than the first. Fine-tuning in float32 and then in bf16 (or on the CPU
    # after the GPU) in one kernel is ordinary here, so a single-process state starts
    # afresh; a distributed launch (accelerate launch, torchrun) keeps the one it set up.
    state = AcceleratorState._shared_state
    if state.get("distributed_type", DistributedType.NO) == DistributedType.NO:
        AcceleratorState._reset_state()
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mp)


@torch.no_grad()
def classify(model, tokenizer, examples, batch_size: int = 64, max_length: int = 512, tally=None, device=None,
             progress: bool = False):
    """Classify ``examples`` (clean texts): accuracy, mean loss and predictions, with a
    progress bar when ``progress`` (a large model on many examples takes minutes).

    Returns ``(accuracy, loss, predictions)``; adds forward compute to ``tally`` if given.
    """
    from tqdm.auto import tqdm

    if not examples:
        raise ValueError("cannot evaluate on an empty list of examples")
    model.eval()
    device = device or next(model.parameters()).device
    n_params = _flops.count_params(model)
    measured = _flops.measured(model)  # real FLOPs per batch shape, shared with other runs on this architecture
    ids = _encode(tokenizer, examples, max_length)
    labels = [ex.label for ex in examples]
    preds: list[int] = []
    total_loss = 0.0
    starts = range(0, len(ids), batch_size)
    for start in tqdm(starts, desc="classify", disable=not progress or len(starts) < 2, leave=False):
        input_ids, mask, y = _collate(ids[start : start + batch_size], labels[start : start + batch_size],
                                      tokenizer.pad_token_id)
        input_ids, mask, y = input_ids.to(device), mask.to(device), y.to(device)

        def step():
            return model(input_ids=input_ids, attention_mask=mask).logits.float()

        if tally is None:
            logits = step()
        else:
            logits = _flops.counted(tally, ("eval",) + tuple(input_ids.shape), n_params, input_ids.numel(), False, step,
                                    cache=measured)
        total_loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        preds.extend(logits.argmax(-1).tolist())
    acc = sum(int(p == t) for p, t in zip(preds, labels)) / len(labels)
    return acc, total_loss / len(labels), preds


def _check_data(model, tokenizer, train_examples, val_examples) -> None:
    if not train_examples:
        raise ValueError("train_examples is empty: nothing to fine-tune on")
    if not val_examples:
        raise ValueError("val_examples is empty: validation accuracy needs at least one example")
    bad_labels = {ex.label for ex in train_examples} - set(range(model.config.num_labels))
    if bad_labels:
        raise ValueError(f"labels {sorted(bad_labels)} outside the model's {model.config.num_labels} classes")
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; load it with robustlib.models.load_tokenizer")


def _shuffled_order(n: int, count: int, seed: int) -> list[int]:
    """At least ``count`` example indices: seeded permutations of ``range(n)``, one
    epoch after another (a fractional last epoch is cut where the steps end)."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < count:
        order.extend(torch.randperm(n, generator=gen).tolist())
    return order


def finetune(model, tokenizer, train_examples, val_examples, config: FinetuneConfig | None = None, *,
             optimizer_state: dict | None = None, keep_optimizer_state: bool = False) -> FinetuneResult:
    """Fine-tune ``model`` (in place) on ``train_examples``; evaluate on ``val_examples``.

    Examples are :class:`robustlib.tasks.Example` (anything with ``.text`` and
    ``.label`` works). Training data are shuffled with ``config.seed``; the same seed
    on the same machine gives the same numbers. Flushes denormal floats for the process
    (:func:`robustlib.runtime.flush_denormals`).

    ``optimizer_state``: a previous run's :attr:`FinetuneResult.optimizer_state` (same
    model, same optimizer) to continue from: its moments and step counts are loaded,
    while the learning rate and schedule are this config's. ``keep_optimizer_state``:
    return the state at the end in the result (a CPU copy of twice the weights for
    AdamW, so only when asked).
    """
    cfg = FinetuneConfig.coerce(config)
    _check_data(model, tokenizer, train_examples, val_examples)
    flush_denormals()
    limit = length_limit(model, cfg.max_length)
    train_ids, train_kept = _encode_fitting(tokenizer, train_examples, limit, "training")
    val_kept = _encode_fitting(tokenizer, val_examples, limit, "validation")[1]  # before training, not after
    labels = [train_examples[i].label for i in train_kept]

    accelerator = _accelerator(cfg)
    torch.manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    if optimizer_state:
        _continue(opt, optimizer_state, cfg)
    steps_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    sched = _schedule(opt, cfg, total_steps)
    model, opt = accelerator.prepare(model, opt)
    device = accelerator.device
    # Data parallel (``accelerate launch`` with several processes): every process takes
    # its share of each step's rows, and weights its loss so that the averaged gradients
    # are exactly the single-process step's.
    world, rank = accelerator.num_processes, accelerator.process_index
    if world > cfg.batch_size:
        raise ValueError(f"batch_size={cfg.batch_size} is smaller than the {world} processes training together; "
                         f"accepted: a batch of at least {world} rows")
    n_params = _flops.count_params(model)
    measured = _flops.measured(model)  # real FLOPs per batch shape, shared with other runs on this architecture

    order = _shuffled_order(len(train_ids), total_steps * cfg.batch_size, cfg.seed)

    from tqdm.auto import tqdm

    tally = _flops.FlopTally()
    step_losses: list[torch.Tensor] = []  # one 0-d tensor per step
    step_rows: list[tuple[int, list[int], torch.Tensor]] = []  # (step, positions, per-example losses)
    example_losses = [math.nan] * len(train_examples)
    seen = 0
    t0 = time.time()
    model.train()
    bar = tqdm(range(total_steps), desc="fine-tune", disable=not cfg.progress, leave=False)
    micro = cfg.batch_size  # rows per forward pass; halves on out-of-memory for the rest of the run

    def backward(rows: list[int], share: float):
        """Forward and backward on ``rows`` (positions in the training ids), the loss
        weighted by ``share`` of the step; returns (loss, per-example losses)."""
        input_ids, mask, y = _collate([train_ids[i] for i in rows], [labels[i] for i in rows], tokenizer.pad_token_id)
        input_ids, mask, y = input_ids.to(device), mask.to(device), y.to(device)

        def train_step():
            with accelerator.autocast():
                logits = model(input_ids=input_ids, attention_mask=mask).logits
            per_example = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
            loss = per_example.mean()
            accelerator.backward(loss if share == 1 else loss * share)
            return loss, per_example.detach()

        return _flops.counted(tally, ("train",) + tuple(input_ids.shape), n_params, input_ids.numel(), True,
                              train_step, cache=measured)

    for step in bar:
        step_idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        idx = step_idx[rank::world]  # this process's rows (all of them without data parallelism)
        # The last step of a fractional epoch may be short; never wrap into a new one.
        while True:
            try:
                # The whole step in one pass, or (after an out-of-memory) in micro-batches
                # whose gradients add up to the same mean: the effective batch is kept.
                parts = [backward(idx[a : a + micro], len(idx[a : a + micro]) * world / len(step_idx))
                         for a in range(0, len(idx), micro)]
                break
            except RuntimeError as err:
                if not is_out_of_memory(err) or micro == 1:
                    raise
                opt.zero_grad(set_to_none=True)
                micro = max(1, micro // 2)
                log.warning("out of memory with %d examples per forward pass; accumulating gradients over "
                            "micro-batches of %d (the batch stays %d)", 2 * micro, micro, cfg.batch_size)
                empty_device_cache()
        per_example = torch.cat([p for _, p in parts])
        # Losses stay on the device until the bar is updated or the run ends: reading
        # them every step would wait for the GPU every step.
        step_losses.append(parts[0][0].detach() if len(parts) == 1 else per_example.mean())
        step_rows.append((step, idx, per_example))
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        seen += len(step_idx)
        if step % 10 == 0 and cfg.progress:
            bar.set_postfix(loss=f"{torch.stack(step_losses[-10:]).mean().item():.3f}")

    losses = torch.stack(step_losses).float() if step_losses else torch.zeros(0)
    seen_losses = [(step, i, v) for step, idx, per_example in step_rows for i, v in zip(idx, per_example.tolist())]
    if world > 1:  # every process ends with the same record: the step losses averaged, every example's loss
        from accelerate.utils import gather_object

        losses = accelerator.reduce(losses.to(device), reduction="mean").cpu()
        seen_losses = sorted(gather_object(seen_losses))
    losses = losses.tolist()
    for _, i, v in seen_losses:  # the last loss seen for each example
        example_losses[train_kept[i]] = v

    eval_tally = _flops.FlopTally()
    acc, val_loss, _ = classify(
        model, tokenizer, [val_examples[i] for i in val_kept], cfg.eval_batch_size, limit, tally=eval_tally,
        device=device, progress=cfg.progress,
    )
    model = accelerator.unwrap_model(model)
    return FinetuneResult(
        optimizer_state=_cpu_state(opt) if keep_optimizer_state else None,
        val_accuracy=acc,
        val_loss=val_loss,
        train_losses=losses,
        steps=total_steps,
        examples_seen=seen,
        flops={**tally.as_dict("train_"), **eval_tally.as_dict("eval_")},
        wall_seconds=time.time() - t0,
        num_params=n_params,
        config=asdict(cfg),
        example_losses=example_losses,
        n_dropped_train=len(train_examples) - len(train_kept),
        n_dropped_val=len(val_examples) - len(val_kept),
        max_tokens=limit,
        dtype=resolve_dtype(cfg.dtype, device),
        device=device.type,
    )
