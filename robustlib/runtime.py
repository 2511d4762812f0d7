"""Process-wide torch settings that compute in the lab needs, set where it is needed.

Nothing here runs at import. :func:`flush_denormals` is called by the functions that
train or attack (fine-tuning, adversarial training, attacks, pretraining); each says
so in its docstring. :func:`torch_threads` limits torch's thread pool for a block and
restores it afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager


def flush_denormals() -> None:
    """Flush denormal floats to zero for this process (``torch.set_flush_denormal``).

    Denormals made CPU training 5-55x slower after about 100 steps on this project's
    machines; flushing them costs nothing measurable in accuracy. torch offers no way
    to read the setting back, so it stays on for the rest of the process."""
    import torch

    torch.set_flush_denormal(True)


@contextmanager
def torch_threads(n: int):
    """Use ``n`` torch threads inside the block (0: leave torch's default), then restore.

    Small models on a shared machine can run an order of magnitude faster on one
    thread than on two that contend with another process."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch running out of memory (CUDA's own error, or a message
    saying so: CPU allocators and other backends raise plain RuntimeErrors)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (bool(oom) and isinstance(err, oom)) or "out of memory" in str(err).lower()


def halving_chunks(n: int, size: int, run_chunk, what: str, log) -> int:
    """Call ``run_chunk(start, stop)`` over ``range(n)`` in chunks of at most ``size``;
    a chunk that runs out of memory is retried at half the size, which then holds for
    the rest (down to 1, where the error is raised). Returns the size it ended at, for
    the caller to keep. ``what`` names a chunk's unit in the warning ("rows per
    forward")."""
    start = 0
    while start < n:
        step = min(size, n - start)
        try:
            run_chunk(start, start + step)
        except RuntimeError as err:
            if not is_out_of_memory(err) or step == 1:
                raise
            size = max(1, step // 2)
            log.warning("out of memory with %d %s; retrying with %d", step, what, size)
            empty_device_cache()
            continue
        start += step
    return size


def empty_device_cache() -> None:
    """Give cached GPU memory back after an out-of-memory error (nothing on the CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def precision(device, dtype: str):
    """Compute in ``dtype`` ("float32", "bfloat16", "float16") on ``device`` for the
    block (``torch.autocast``), the weights left as they are: how a model trained in
    float32 is attacked at another precision. float32 changes nothing."""
    import torch

    if dtype == "float32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, dtype)):
        yield
