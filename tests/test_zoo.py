"""robustlib.zoo: the offline family's corpus, tokenizer, shapes and pretraining loop
(tiny runs; the shipped weights are checked against their manifest)."""

import pytest
import torch

from robustlib import flops, models, paths, zoo

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sizes_match_the_shipped_configs_and_manifest():
    import json

    manifest = models.zoo_manifest()
    assert sorted(manifest["models"]) == sorted(zoo.ZOO_SIZES)
    for name, size in zoo.ZOO_SIZES.items():
        config = json.loads((paths.zoo_dir() / name / "config.json").read_text())
        for key, value in size.config_kwargs().items():
            if key in config:
                assert config[key] == value, (name, key)
        record = manifest["models"][name]
        assert record["pretrain_flops"] == flops.pretrain_flops(record["lm_num_params"], record["pretrain_tokens"])
        assert record["pretrain_tokens"] >= manifest["pretrain"]["tokens"]


@pytest.fixture(scope="module")
def corpus():
    return zoo.build_corpus()


def test_corpus_is_the_shipped_one_and_split_into_documents(corpus):
    """The corpus is a pure function of the Python version: on the version the family
    was built with, it is the very text the manifest hashed."""
    import json
    import platform

    manifest = json.loads((paths.zoo_dir() / "manifest.json").read_text())
    if manifest["python"] == platform.python_version():
        assert zoo.sha256(corpus) == manifest["corpus_sha256"] and len(corpus) == manifest["corpus_chars"]
    docs = zoo.corpus_documents(corpus)
    assert len(docs) > 1000 and all(docs) and zoo.EOS not in docs[0]


def test_batches_are_the_same_for_every_size():
    stream = torch.arange(10_000)
    cfg = zoo.PretrainConfig(tokens=4 * 16 * 3, seq_len=16, batch_size=4, seed=1)
    a, b = list(zoo.pretrain_batches(stream, cfg)), list(zoo.pretrain_batches(stream, cfg))
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (4, 16)
    other = list(zoo.pretrain_batches(stream, zoo.PretrainConfig(tokens=4 * 16 * 3, seq_len=16, batch_size=4,
                                                                 seed=2)))
    assert not torch.equal(a[0], other[0])


def test_a_tiny_pretraining_lowers_the_loss_and_records_6nd(corpus, zoo_tokenizer):
    stream = zoo.token_stream(corpus[:200_000], zoo_tokenizer)
    cfg = zoo.PretrainConfig(tokens=8 * 64 * 40, seq_len=64, batch_size=8, warmup_steps=5, lr=3e-3)
    model, record = zoo.pretrain("zoo-0.3m", stream, cfg, progress=False)
    assert record["pretrain_tokens"] == 8 * 64 * 40
    assert record["pretrain_flops"] == 6 * record["lm_num_params"] * record["pretrain_tokens"]
    assert record["lm_num_params"] == models.num_params("zoo-0.3m", "causal_lm")
    batch = next(zoo.pretrain_batches(stream, cfg))
    with torch.no_grad():
        final = model(input_ids=batch, labels=batch).loss.item()
    chance = torch.log(torch.tensor(float(zoo.VOCAB_SIZE))).item()  # 8.3 nats: where a random init starts
    assert final < chance - 1 and record["final_loss"] < chance  # (a mean over every step here)


def test_unknown_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown zoo size.*zoo-9m.*accepted"):
        zoo.make_zoo(tmp_path, sizes=["zoo-9m"])
