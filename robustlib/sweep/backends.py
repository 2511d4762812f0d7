"""Where jobs run: a local process pool, or Ray tasks on a cluster.

A backend has ``slots`` (jobs it runs at once; the scheduler never submits more),
``submit(payload, resources) -> concurrent.futures.Future`` of
:func:`robustlib.sweep.worker.execute`'s result, and ``close()``. Neither passes
results through anything but the run store: a job's future carries a few words of
status, the tables and checkpoints stay on disk (a shared file system on a cluster).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

from .worker import execute

log = logging.getLogger("robustlib.sweep")

BACKENDS = ("local", "ray")
#: Tries at starting a local Ray instance (:meth:`RayBackend._start`).
RAY_START_ATTEMPTS = 3
#: Thread-count variables a job's process gets, so that workers sharing a CPU split it.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def gpu_count() -> int:
    """CUDA devices this process sees (0 without torch's CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def _init_worker(gpus, threads: int) -> None:
    """Runs once in each pool worker: its GPU (one each, from a queue) and its threads.
    The notebook kernels it starts inherit both."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    if threads:
        for name in THREAD_ENV:
            os.environ[name] = str(threads)


class LocalBackend:
    """A process pool on this machine: one worker per GPU (each seeing only its own, by
    ``CUDA_VISIBLE_DEVICES``), or on a CPU-only machine ``workers`` of them (default 1)
    splitting the cores evenly. Workers start their notebooks' kernels themselves."""

    name = "local"

    def __init__(self, workers: int | None = None):
        gpus = gpu_count()
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers={workers!r} is invalid; accepted: a positive integer")
        self.slots = workers or (gpus or 1)
        ctx = multiprocessing.get_context("spawn")  # no forked copies of torch's threads
        queue = None
        if gpus:
            queue = ctx.Queue()
            for i in range(self.slots):
                queue.put(i % gpus)
        threads = 0 if gpus else max(1, (os.cpu_count() or 1) // self.slots)
        self.pool = ProcessPoolExecutor(self.slots, mp_context=ctx, initializer=_init_worker,
                                        initargs=(queue, threads))
        self.describe = (f"local: {self.slots} worker(s), " + (f"{gpus} GPU(s)" if gpus else
                                                                f"{threads} thread(s) each"))

    def submit(self, payload: dict, resources: dict) -> Future:
        return self.pool.submit(execute, payload)

    def close(self, cancel: bool = False) -> None:
        if cancel:  # a sweep interrupted: stop the workers and the kernels they started
            _kill_children()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _kill_children() -> None:
    import psutil

    me = psutil.Process()
    children = me.children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=5)


class RayBackend:
    """Each job a Ray task asking for the CPUs and GPUs it needs (per notebook
    ``resources`` in the study file, else ``cpus``/``gpus``); Ray places it on a node
    that has them and sets ``CUDA_VISIBLE_DEVICES`` itself. ``address``: ``"auto"``
    (the cluster this node belongs to), ``"ray://host:10001"`` (a remote one), or None
    (a new local instance with ``num_cpus`` CPUs). The run store must be on a file system
    every node mounts at the same path."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus: float = 1, gpus: float = 0, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise ImportError("the ray backend needs Ray: pip install 'ray>=2.9'") from None
        self.ray = ray
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": num_cpus or os.cpu_count()}
            self._start(address is None, include_dashboard=False, log_to_driver=False, configure_logging=False,
                        **kwargs)
        self.cpus, self.gpus = cpus, gpus
        self.remote = ray.remote(execute)
        total = ray.cluster_resources()
        self.slots = max(1, int(total.get("CPU", 1) // max(cpus, 1e-9)))
        if gpus:
            self.slots = min(self.slots, max(1, int(total.get("GPU", 0) // gpus)))
        self.describe = (f"ray ({address or 'local instance'}): {total.get('CPU', 0):g} CPUs, "
                         f"{total.get('GPU', 0):g} GPUs")

    def _start(self, local: bool, **kwargs) -> None:
        """``ray.init(**kwargs)``; a new local instance is tried up to
        :data:`RAY_START_ATTEMPTS` times, since on a loaded machine Ray's raylet can
        give up on its slow-starting metrics agent (a fixed 15 s wait, Ray issue 65983)
        and the start then fails as a whole."""
        from tenacity import before_sleep_log, retry, stop_after_attempt, wait_fixed

        def attempt() -> None:
            try:
                self.ray.init(**kwargs)
            except Exception:
                self.ray.shutdown()  # what did start, before the next attempt
                raise

        if local:
            attempt = retry(stop=stop_after_attempt(RAY_START_ATTEMPTS), wait=wait_fixed(2), reraise=True,
                            before_sleep=before_sleep_log(log, logging.WARNING))(attempt)
        attempt()

    def submit(self, payload: dict, resources: dict) -> Future:
        options = {"num_cpus": resources.get("cpus", self.cpus), "num_gpus": resources.get("gpus", self.gpus),
                   "max_retries": 0}  # a failed job is the sweep's to report, not Ray's to repeat
        return self.remote.options(**options).remote(payload).future()

    def close(self, cancel: bool = False) -> None:
        self.ray.shutdown()


def make_backend(name: str, workers: int | None = None, address: str | None = None, cpus: float = 1,
                 gpus: float = 0):
    """The backend called ``name`` (:data:`BACKENDS`)."""
    if name == "local":
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(address, cpus=cpus, gpus=gpus, num_cpus=workers)
    raise ValueError(f"unknown backend {name!r}; accepted: {list(BACKENDS)}")
