import re

import pytest
import torch
from paper_direct import RESULTS, needs_results

from robustlib import models

# Parameter counts of the classifiers, as the paper's table of models prints them.
PYTHIA = {
    "pythia-14m": "7629056", "pythia-31m": "17.6M", "pythia-70m": "44.7M", "pythia-160m": "123.7M",
    "pythia-410m": "353.8M", "pythia-1b": "908.8M", "pythia-1.4b": "1.31B", "pythia-2.8b": "2.65B",
    "pythia-6.9b": "6.65B", "pythia-12b": "11.59B",
}


@pytest.mark.parametrize("name,printed", PYTHIA.items())
def test_pythia_classifier_param_counts(name, printed):
    n = models.num_params(name)
    if printed.isdigit():
        assert n == int(printed)
        return
    unit = {"M": 1e6, "B": 1e9}[printed[-1]]
    decimals = len(printed[:-1].split(".")[1])
    assert f"{n / unit:.{decimals}f}" == printed[:-1]


def test_qwen_presets_are_ordered_and_sized():
    sizes = [models.num_params(n) for n in models.family_sizes("qwen2.5")]
    assert sizes == sorted(sizes)
    assert 0.45e9 < sizes[0] < 0.55e9 and 13e9 < sizes[-1] < 15e9


def test_zoo_family_spans_30x_and_has_4_sizes():
    names = models.family_sizes("zoo")
    sizes = [models.num_params(n) for n in names]
    assert len(names) >= 4 and sizes == sorted(sizes)
    assert sizes[-1] / sizes[0] >= 30


def test_hub_id_resolves_to_preset():
    assert models.get_preset("EleutherAI/pythia-14m").name == "pythia-14m"
    with pytest.raises(KeyError, match="accepted"):
        models.get_preset("pythia-13m")


def test_unknown_names_raise_one_error_type():
    """Unknown presets, families, attacks, tasks and notebooks: one error type, both a
    KeyError and a ValueError, its message unquoted."""
    from robustlib import attacks, runner, tasks
    from robustlib.config import UnknownNameError

    for lookup, name in ((models.get_preset, "pythia-13m"), (models.family_sizes, "gpt5"),
                         (attacks.get_attack, "pgd"), (tasks.get_task, "nosuch"),
                         (runner.resolve_notebook, "99_nothing")):
        with pytest.raises(UnknownNameError) as err:
            lookup(name)
        assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
        assert str(err.value).startswith("unknown") and name in str(err.value)


def test_unknown_family_and_bad_names():
    with pytest.raises(ValueError, match="accepted"):
        models.family_sizes("gpt5")
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        models.load_classifier("./no/such/model")
    with pytest.raises(ValueError, match="dtype"):
        models.torch_dtype("float8")


def test_zoo_classifier_loads_offline_with_pad_eos_right(tmp_path):
    model, tok = models.load_classifier("zoo-0.3m", seed=3)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "right"
    assert model.config.pad_token_id == tok.pad_token_id
    assert sum(p.numel() for p in model.parameters()) == models.num_params("zoo-0.3m")
    # The body is pretrained (same for every seed); the head depends on the seed.
    model2, _ = models.load_classifier("zoo-0.3m", seed=4)
    body = "gpt_neox.layers.0.attention.query_key_value.weight"
    sd1, sd2 = model.state_dict(), model2.state_dict()
    assert torch.equal(sd1[body], sd2[body])
    assert not torch.equal(sd1["score.weight"], sd2["score.weight"])
    # Saved as safetensors and reloaded from a local path, logits unchanged.
    folder = models.save_classifier(model, tok, tmp_path / "m")
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.bin"))
    again, _ = models.load_classifier(str(folder))
    x = tok(["System password: a\nUser password: b"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, again(**x).logits)


def test_loading_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.load_classifier("zoo-0.3m", seed=9)
    assert torch.equal(torch.rand(3), expected)
    # ... and the head is still the seed's
    a, _ = models.load_classifier("zoo-0.3m", seed=9)
    b, _ = models.load_classifier("zoo-0.3m", seed=9)
    assert torch.equal(a.score.weight, b.score.weight)


def test_head_reads_last_non_pad_token(batched_and_single):
    model, tok = models.load_classifier("zoo-0.3m")
    batched, single = batched_and_single(model, tok, ["short text", "a considerably longer text than the first one"])
    assert torch.allclose(batched, single, atol=1e-5)


def test_zoo_pretrain_compute_recorded():
    manifest = models.zoo_manifest()
    for name in models.family_sizes("zoo"):
        rec = manifest["models"][name]
        assert models.pretrain_compute(name) == 6 * rec["lm_num_params"] * rec["pretrain_tokens"]
        assert rec["pretrain_flops"] == models.pretrain_compute(name)
        assert rec["lm_num_params"] == models.num_params(name, "causal_lm")


@pytest.mark.hub
def test_real_pythia_14m_from_the_hub(hub):
    model, tok = models.load_classifier("EleutherAI/pythia-14m")
    assert sum(p.numel() for p in model.parameters()) == 7_629_056
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"


def test_pick_device_names_what_is_accepted(monkeypatch):
    assert models.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'gpu'.*accepted.*'auto', 'cpu', 'cuda'"):
        models.pick_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no GPU"):
        models.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.pick_device("auto") == torch.device("cuda")
    assert models.pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"num_labels": 0}, ValueError, "num_labels=0 is invalid; accepted: an integer >= 2"),
        ({"num_labels": 1}, ValueError, "num_labels=1"),
        ({"num_labels": "2"}, ValueError, "num_labels='2'"),
        ({"num_labels": 2.0}, ValueError, "num_labels=2.0"),
        ({"seed": "0"}, ValueError, "seed='0'"),
        ({"seed": 1.5}, ValueError, "seed=1.5"),
        ({"dtype": "float8"}, ValueError, "unknown dtype 'float8'; accepted"),
        ({"device": "tpu"}, ValueError, "unknown device 'tpu'; accepted"),
        ({"name_or_path": ""}, ValueError, "model must be a preset name.*got ''"),
        ({"name_or_path": None}, ValueError, "got None"),
        ({"name_or_path": "./no/such/model"}, FileNotFoundError, "'./no/such/model' is neither a preset"),
        ({"name_or_path": "zoo-9m"}, FileNotFoundError, "'zoo-9m' is neither a preset"),
    ],
)
def test_bad_load_classifier_arguments_are_named(kwargs, error, match):
    kwargs = {"name_or_path": "zoo-0.3m", **kwargs}
    with pytest.raises(error, match=match):
        models.load_classifier(**kwargs)


def test_a_folder_without_a_model_and_cuda_without_a_gpu(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        models.load_classifier(str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' was asked for, but torch sees no GPU"):
        models.load_classifier("zoo-0.3m", device="cuda")


@pytest.mark.parametrize("offline", [True, False])
def test_a_hub_model_that_cannot_load_fails_fast_and_says_why(offline, monkeypatch, tmp_path):
    """Offline (HF_HUB_OFFLINE) or unreachable, a hub id not in the cache fails in
    seconds, naming the model and the alternatives, instead of a minute of retries."""
    import time

    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match="'foo/bar'.*local folder") as err:
        models.load_classifier("foo/bar")
    assert time.time() - t0 < 15
    assert ("HF_HUB_OFFLINE is set" in str(err.value)) == offline
    from robustlib.studies import FinetuneStudyConfig

    with pytest.raises(FileNotFoundError, match="'foo/bar'"):  # and so does a study naming it, before any kernel
        FinetuneStudyConfig(sizes=["foo/bar"])


@pytest.mark.parametrize("kind", ["bert", "roberta", "t5"])
def test_encoders_are_refused_at_load_naming_the_class(kind, tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model(kind).save_pretrained(tmp_path / kind)
    with pytest.raises(ValueError, match=f"'{kind}'.*not a decoder-only language model; the lab supports"):
        models.load_classifier(str(tmp_path / kind))
    with pytest.raises(ValueError, match="not a decoder-only"):
        models.load_causal_lm(str(tmp_path / kind))


def test_the_causal_lm_loader(tmp_path):
    lm, tok = models.load_causal_lm("zoo-0.3m")
    assert type(lm).__name__ == "GPTNeoXForCausalLM" and not lm.training
    assert tok.pad_token == tok.eos_token and lm.config.pad_token_id == tok.pad_token_id
    assert lm.get_output_embeddings() is not None
    assert sum(p.numel() for p in lm.parameters()) == models.num_params("zoo-0.3m", "causal_lm")
    half, _ = models.load_causal_lm("zoo-0.3m", dtype="bfloat16")
    assert next(half.parameters()).dtype == torch.bfloat16
    clf, ctok = models.load_classifier("zoo-0.3m")
    assert clf.config.robustlib_base_model == "zoo-0.3m"
    folder = models.save_classifier(clf, ctok, tmp_path / "clf")
    with pytest.raises(ValueError, match="holds a classifier.*made from, 'zoo-0.3m'"):
        models.load_causal_lm(str(folder))
    with pytest.raises(ValueError, match="unknown dtype"):
        models.load_causal_lm("zoo-0.3m", dtype="int8")


def test_dtype_names_and_auto():
    import torch

    assert models.resolve_dtype("auto", "cpu") == "float32" and models.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert models.torch_dtype("auto", "cpu") is torch.float32 and models.torch_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'; accepted: \\['auto'"):
        models.resolve_dtype("fp8")
    with pytest.raises(ValueError, match="unknown dtype"):
        models.torch_dtype(torch.int8)


def test_precision_computes_in_bf16_and_float32_leaves_it():
    import torch

    from robustlib.runtime import precision

    model, tok = models.load_classifier("zoo-0.3m", device="cpu")
    ids = tok(["hello there"], return_tensors="pt")["input_ids"]
    with precision("cpu", "bfloat16"):
        assert model(input_ids=ids).logits.dtype is torch.bfloat16
    with precision("cpu", "float32"):
        assert model(input_ids=ids).logits.dtype is torch.float32
    assert next(model.parameters()).dtype is torch.float32  # weights untouched


@needs_results
def test_pretrain_compute_equals_the_released_column_for_every_pythia_size():
    """The released ``pretrain_compute`` is 6 x backbone x 299.89B exactly, for every
    Pythia size a training table holds; the no-ramp table's two misfiled figures (the
    31m and 70m values under 410m and 2.8b) are the exception the loader outvotes."""
    import pandas as pd

    seen = set()
    for path in sorted(RESULTS.rglob("*.csv")):
        raw = pd.read_csv(path)
        if "pretrain_compute" not in raw.columns:
            continue
        for name, value in zip(raw["model_name_or_path"], raw["pretrain_compute"]):
            size = re.search(r"pythia-([0-9.]+[mb])", name)
            if size and "no_ramp" not in str(raw.get("model_key", pd.Series([""])).iloc[0]):
                assert models.pretrain_compute(f"pythia-{size.group(1)}") == int(value), (path.name, name)
                seen.add(size.group(1))
    assert {"14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b"} <= seen


@needs_results
def test_the_releases_qwen_figures_imply_no_single_token_count():
    """For the lab's own runs Qwen2.5 gets the published 18T; the release's column, read
    as 6 x the classifier's N x D, implies another D per size (stated in the docstring
    of ``models.pretrain_compute``)."""
    import pandas as pd

    raw = pd.concat(pd.read_csv(p) for p in RESULTS.rglob("*.csv")
                    if "pretrain_compute" in pd.read_csv(p, nrows=0).columns)
    qwen = raw[raw["model_name_or_path"].str.contains("Qwen2.5")].drop_duplicates("num_params")
    implied = dict(zip(qwen["model_name_or_path"].str.extract(r"(Qwen2\.5-[0-9.]+B)")[0],
                       qwen["pretrain_compute"] / 6 / qwen["num_params"] / 1e12))
    assert implied == pytest.approx({"Qwen2.5-0.5B": 18.0, "Qwen2.5-1.5B": 10.5, "Qwen2.5-3B": 25.91,
                                     "Qwen2.5-7B": 4.58, "Qwen2.5-14B": 11.08}, abs=0.01)
    assert models.pretrain_compute("qwen2.5-7B") == 6 * models.num_params("qwen2.5-7B", "backbone") * 18 * 10**12
