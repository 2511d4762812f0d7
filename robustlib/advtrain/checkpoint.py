"""Checkpoints of adversarial training: one folder per completed round, and a pointer.

``round_<r>/`` holds the weights (safetensors) and ``state.json`` (settings, pool,
round records, evaluations); ``latest.json`` points at the last completed round and
moves only once the round's folder is complete, so a killed run resumes from a
round that was fully saved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..record import atomic_write, share_files


def save_round(checkpoint_dir: Path, round_: int, model, state: dict, keep: set[int]) -> None:
    """Save ``model`` and ``state`` as round ``round_``; then drop older rounds not in ``keep``."""
    from safetensors.torch import save_file

    folder = checkpoint_dir / f"round_{round_:04d}"
    if folder.exists():
        shutil.rmtree(folder)
    tmp = checkpoint_dir / f".round_{round_:04d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_untie(weights), str(tmp / "model.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state))
    share_files(tmp)
    tmp.rename(folder)
    atomic_write(checkpoint_dir / "latest.json", json.dumps({"round": round_}))
    # Only now is the previous round redundant (unless the caller keeps it).
    for old in checkpoint_dir.glob("round_*"):
        r = int(old.name.split("_")[1])
        if r != round_ and r not in keep:
            shutil.rmtree(old, ignore_errors=True)


def _untie(weights: dict) -> dict:
    """safetensors refuses tensors sharing memory (tied embeddings): clone duplicates."""
    seen, out = set(), {}
    for k, v in weights.items():
        ptr = (v.data_ptr(), v.shape)
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def load_round(checkpoint_dir: str | Path, round_: int | None = None, model=None):
    """The state saved after ``round_`` (None: the latest), and, if ``model`` is given,
    its weights loaded into it. Returns ``(round, state)``; ``(0, None)`` if nothing is saved."""
    checkpoint_dir = Path(checkpoint_dir)
    if round_ is None:
        pointer = checkpoint_dir / "latest.json"
        if not pointer.exists():
            return 0, None
        round_ = json.loads(pointer.read_text())["round"]
    folder = checkpoint_dir / f"round_{round_:04d}"
    if not (folder / "state.json").exists():
        raise FileNotFoundError(f"no checkpoint of round {round_} in {checkpoint_dir}")
    state = json.loads((folder / "state.json").read_text())
    if model is not None and (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return round_, state
