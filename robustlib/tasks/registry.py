"""The task registry: every task with the function that loads its examples.

:data:`TASKS` maps a task name to its :class:`~robustlib.tasks.spec.Task` and
``_LOADERS`` the same name to its :data:`Loader`; :func:`register_task` adds to both,
:func:`get_task` looks a name up (case- and punctuation-insensitively) and
:func:`load_examples`, the one entry point, checks its arguments and calls the loader.
Loaders draw their randomness from :func:`_rng`, one seeded stream per task, split and
seed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from robustlib.config import UnknownNameError, is_int
from robustlib.tasks.prompts import PromptTask
from robustlib.tasks.spec import Example, Task, _normalize

logger = logging.getLogger("robustlib.tasks")

SPLITS = ("train", "validation")
#: What a task is: a binary classification (:class:`Task`) or requests a chat model
#: answers (:class:`PromptTask`).
TASK_KINDS = ("classification", "generative")

Loader = Callable[..., list[Example]]
"""``loader(task, split, n, seed, source) -> list[Example]``; arguments are already
validated by :func:`load_examples` (split in :data:`SPLITS`, n None or a positive
int)."""

TASKS: dict[str, Task | PromptTask] = {}
_LOADERS: dict[str, Loader] = {}


class UnknownTaskError(UnknownNameError):
    """An unknown task name (a KeyError for dict-like use, a ValueError for input checks)."""


def register_task(task: Task | PromptTask, loader: Loader | None = None, *, overwrite: bool = False):
    """Register ``task`` with the function that loads its examples.

    Use it as a call, ``register_task(task, loader)``, or as a decorator::

        @register_task(Task(name="my_task", ...))
        def load_my_task(task, split, n, seed, source): ...

    Names are matched case- and punctuation-insensitively, so ``"MyTask"`` and
    ``"my_task"`` are the same name. A name that is taken raises ``ValueError`` unless
    ``overwrite=True``. Returns the loader (so the decorator leaves it usable).
    """
    if not isinstance(task, (Task, PromptTask)):
        raise TypeError(f"register_task expects a Task or a PromptTask, got {type(task).__name__}")

    def _register(fn: Loader) -> Loader:
        if not callable(fn):
            raise TypeError(f"the loader for task {task.name!r} must be callable, got {fn!r}")
        key = _normalize(task.name)
        clash = [name for name in TASKS if _normalize(name) == key]
        if clash and not overwrite:
            raise ValueError(
                f"task name {task.name!r} is already registered (as {clash[0]!r}); pass overwrite=True to replace it"
            )
        for name in clash:
            del TASKS[name]
            _LOADERS.pop(name, None)
        TASKS[task.name] = task
        _LOADERS[task.name] = fn
        logger.debug("registered task %s v%s", task.name, task.version)
        return fn

    return _register if loader is None else _register(loader)


def get_task(name: str | Task | PromptTask, kind: str | None = None) -> Task | PromptTask:
    """The registered task called ``name`` (case-insensitive; ``"PasswordMatch"`` works).

    ``kind``: ``"classification"`` or ``"generative"`` to refuse a task of the other
    kind (a study that fine-tunes classifiers cannot use StrongREJECT, say).

    Raises:
        UnknownTaskError: (a KeyError and a ValueError) naming the bad name and listing
            the registered ones (of ``kind``).
    """
    if kind not in (None, *TASK_KINDS):
        raise ValueError(f"kind={kind!r} is invalid; accepted: {TASK_KINDS} or None")
    found = None
    if isinstance(name, (Task, PromptTask)):
        found = name
    elif isinstance(name, str):
        key = _normalize(name)
        found = next((task for registered, task in TASKS.items() if _normalize(registered) == key), None)
    names = sorted(n for n, t in TASKS.items() if kind in (None, t.kind))
    if found is None:
        raise UnknownTaskError(f"unknown task {name!r}; registered{f' {kind}' if kind else ''} tasks: "
                               f"{', '.join(names)}")
    if kind is not None and found.kind != kind:
        raise UnknownTaskError(f"task {found.name!r} is a {found.kind} task; this needs a {kind} task: "
                               f"{', '.join(names)}")
    return found


def load_examples(
    task: str | Task,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    source: str | Path | None = None,
) -> list[Example]:
    """Load ``n`` examples of ``task`` for ``split``.

    Args:
        task: a registered task name (or alias such as ``"PasswordMatch"``) or a Task.
        split: ``"train"`` or ``"validation"``. Hub datasets that have no validation
            split (all four used here) give their ``"test"`` split for ``"validation"``.
        n: number of examples. Required for generated tasks. For hub tasks ``None``
            means all (in the dataset's order); otherwise a seeded random subsample in
            random order, and asking for more than there are is an error.
        seed: the same seed gives the same examples; train and validation use separate
            random streams.
        source: generated tasks: must be ``None``. Hub tasks: ``None`` for the hub id,
            or a local file (``.jsonl``, ``.json``, ``.csv``, ``.parquet``; taken as the
            requested split), a ``save_to_disk`` folder, or a folder of such files named
            by split (``train.jsonl``, ``validation.csv``, ``test.parquet``,
            ``train-00000-of-00001.parquet``, ...).

    Errors for bad input (unknown task or split, bad ``n``/``seed``/``source``, missing
    file) are raised before anything is loaded or generated.
    """
    spec = get_task(task)
    try:
        # A Task object (possibly a variant of a registered one) uses the loader
        # registered under its name.
        loader = _LOADERS[get_task(spec.name).name]
    except UnknownTaskError:
        raise UnknownTaskError(
            f"task {spec.name!r} is not registered, so it has no loader; register it with "
            f"register_task(task, loader). Registered tasks: {', '.join(sorted(TASKS))}"
        ) from None
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for task {spec.name!r}; accepted: {', '.join(SPLITS)}")
    if n is not None and (not is_int(n) or n <= 0):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if not is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")  # noqa: TRY004
    if spec.generated:
        if n is None:
            raise ValueError(f"task {spec.name!r} is generated: n (a positive integer) is required")
        if source is not None:
            raise ValueError(f"task {spec.name!r} is generated: source must be None, got {source!r}")
    examples = loader(spec, split, None if n is None else int(n), int(seed), source)
    logger.info("loaded %d %s examples of %s v%s", len(examples), split, spec.name, spec.version)
    return examples


def class_balance(examples: Iterable[Example]) -> dict[int, int]:
    """Count examples per label: ``{0: n0, 1: n1}`` (both keys always present)."""
    counts = {0: 0, 1: 0}
    for ex in examples:
        counts[ex.label] += 1
    return counts


def to_hf_dataset(examples: Sequence[Example]):
    """A :class:`datasets.Dataset` with columns ``text``, ``label``, ``target``,
    ``task``, ``task_version`` (one row per example, same order)."""
    import datasets

    if not examples:
        raise ValueError("to_hf_dataset needs at least one example, got none")
    return datasets.Dataset.from_dict(
        {
            "text": [ex.text for ex in examples],
            "label": [ex.label for ex in examples],
            "target": [ex.target for ex in examples],
            "task": [ex.task for ex in examples],
            "task_version": [ex.task_version for ex in examples],
        }
    )


def _rng(task: Task, split: str, seed: int) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and
    # machines (unlike hash()), and a separate stream per task and split.
    return random.Random(f"{task.name}/{split}/{seed}")
