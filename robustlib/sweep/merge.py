"""Gathering per-model runs into the run of the whole cell.

A merge job's run is the run the one-cell pipeline would have made (every size and
seed of the cell, the same parameters and input): its tables are the union of its
model runs' tables, and its artifacts (checkpoints, per-model JSON) are hard links to
theirs (a copy where the file system has no hard links), so the merged run costs no
disk and every path it records stays inside it. Its notebook then runs as a resumed
study: every model is already in its tables, so it only renders the charts.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

from ..record import Run


def merge_runs(target: Run, sources: list[Run]) -> dict[str, int]:
    """Fill ``target`` with the tables and artifacts of ``sources`` (completed runs of
    the same notebook). Idempotent: a merge killed half-way and run again gives the
    same run. Two sources holding different files at one artifact path are refused
    (``ValueError`` naming the path): they would not be the same study. Returns rows
    per table."""
    not_done = [f"{r.study}/{r.name} ({r.state})" for r in sources if not r.completed]
    if not_done:
        raise ValueError(f"cannot merge runs that are not completed: {not_done}")
    tables: dict[str, list] = {}
    for run in sources:
        for path in sorted((run.path / "tables").glob("*.jsonl")):
            tables.setdefault(path.stem, []).extend(run.load_rows(path.stem))
        _link_tree(run.path / "artifacts", target.path / "artifacts")
    for name, rows in tables.items():
        target.save_table(name, rows)
    return {name: len(rows) for name, rows in tables.items()}


def _link_tree(src: Path, dst: Path) -> None:
    if not src.exists():
        return
    for path in sorted(src.rglob("*")):
        if not path.is_file():
            continue
        out = dst / path.relative_to(src)
        if out.exists():
            if os.path.samefile(out, path) or filecmp.cmp(out, path, shallow=False):
                continue
            raise ValueError(f"runs to merge hold different files at artifacts/{path.relative_to(src)} "
                             f"({path} and {out}); they are not models of one study")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, out)
        except OSError:  # no hard links here (another device, some network file systems)
            shutil.copy2(path, out)
