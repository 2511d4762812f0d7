"""Checkpoints of adversarial training: one folder per completed round, and a pointer.

``round_<r>/`` holds the weights (safetensors), ``state.json`` (settings, pool,
round records, evaluations) and, for a run that carries its optimizer from round to
round, that state (``optimizer.safetensors`` for its tensors, ``optimizer.json`` for
the rest); ``latest.json`` points at the last completed round and
moves only once the round's folder is complete, so a killed run resumes from a
round that was fully saved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..record import atomic_write, share_files


def save_round(checkpoint_dir: Path, round_: int, model, state: dict, keep: set[int],
               optimizer_state: dict | None = None) -> None:
    """Save ``model``, ``state`` (and ``optimizer_state``, an optimizer's per-parameter
    state) as round ``round_``; then drop older rounds not in ``keep``."""
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
    if optimizer_state is not None:
        tensors, rest = _split_optimizer(optimizer_state)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(rest))
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


def _split_optimizer(optimizer_state: dict) -> tuple[dict, dict]:
    """``{param: {name: value}}`` -> tensors keyed ``"param/name"`` and the other values."""
    import torch

    tensors, rest = {}, {}
    for param, entry in optimizer_state.items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{param}/{name}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(param), {})[name] = value
    return tensors, rest


def load_optimizer(checkpoint_dir: str | Path | None, round_: int) -> dict | None:
    """The optimizer state saved with round ``round_`` (``{param index: {name: value}}``),
    or None if that round saved none."""
    if checkpoint_dir is None:
        return None
    folder = Path(checkpoint_dir) / f"round_{round_:04d}"
    if not (folder / "optimizer.json").exists():
        return None
    from safetensors.torch import load_file

    state: dict[int, dict] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        param, name = key.split("/", 1)
        state.setdefault(int(param), {})[name] = value
    for param, entry in json.loads((folder / "optimizer.json").read_text()).items():
        state.setdefault(int(param), {}).update(entry)
    return state
