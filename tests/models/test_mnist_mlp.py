"""RAC-LoRA's MNIST MLP (harness/models/mnist_mlp.py): its pre-trained weights are a cached asset, built
on first use under `<cache_dir>/mlp_mnist/<fingerprint>/` and read from there afterwards. The recipe is
shortened here (one epoch of one batch of 64 images) so that each build is one optimizer step; the full recipe's
weights are checked against the committed records by `python -m harness.verify rac_lora_mnist`."""

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from hydra import compose
from torch import nn

from harness.config.compose import project_config
from harness.config.sections import parse_settings
from harness.models import load_model, mnist_mlp


@pytest.fixture(scope="module")
def model_cfg():
    """The model section of `model=mlp_mnist` (tests change it with dataclasses.replace, never in place)."""
    with project_config():
        return parse_settings(compose("config", overrides=["model=mlp_mnist", "task=mnist5k_upper"])).model


@pytest.fixture(scope="module")
def split(model_cfg):
    """The first 64 images of the pretraining task's training split (loaded once: it takes seconds)."""
    full = mnist_mlp.pretraining_split(model_cfg)
    assert len(full) == 1750 and full.images.shape[1:] == (1, 28, 28)  # mnist5k digits 0-4, 70 % for training
    return dataclasses.replace(full, images=full.images[:64], labels=full.labels[:64])


@pytest.fixture
def builds(monkeypatch, split):
    """A one-step recipe, the split above, and the list of splits the builder was called on."""
    monkeypatch.setitem(mnist_mlp.PRETRAIN, "epochs", 1)
    monkeypatch.setitem(mnist_mlp.PRETRAIN, "batch_size", len(split))
    monkeypatch.setattr(mnist_mlp, "pretraining_split", lambda cfg: split)
    calls = []
    build = mnist_mlp.pretrain

    def counted(train):
        calls.append(train)
        return build(train)

    monkeypatch.setattr(mnist_mlp, "pretrain", counted)
    return calls


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def assert_bitwise_equal(first: dict, second: dict):
    assert first.keys() == second.keys()
    assert all(first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first), "differ"


def entry(cache: Path) -> Path:
    (folder,) = (cache / "mlp_mnist").iterdir()
    return folder


def test_the_first_load_builds_and_caches_the_weights(builds, model_cfg, tmp_path):
    model = load_model(model_cfg, 5, str(tmp_path))
    assert len(builds) == 1 and not model.training
    folder = entry(tmp_path)
    assert len(folder.name) == 16 and sorted(p.name for p in folder.iterdir()) == ["manifest.json", "weights.pt"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["weights_sha256"] == hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest()
    assert manifest["pretrain"]["epochs"] == 1 and manifest["task"] == "mnist5k_lower"
    assert not list(tmp_path.rglob(".building-*"))  # no scratch folder left


def test_a_second_load_reads_the_cache_without_training(builds, model_cfg, tmp_path, monkeypatch):
    first = weights(load_model(model_cfg, 5, str(tmp_path)))
    monkeypatch.setattr(mnist_mlp, "pretrain", lambda train: pytest.fail("the builder ran again"))
    second = load_model(model_cfg, 5, str(tmp_path))
    assert_bitwise_equal(weights(second), first)
    assert len(builds) == 1 and not second.training


def test_cached_weights_equal_freshly_built_ones_bitwise(builds, model_cfg, tmp_path, split):
    """The first load (built), the second (read back from the file) and a build outside the cache agree
    bit for bit, and loading leaves the caller's random state as it was."""
    torch.manual_seed(7)
    built = weights(load_model(model_cfg, 5, str(tmp_path)))
    after_load = torch.rand(3)
    read = weights(load_model(model_cfg, 5, str(tmp_path)))
    fresh = mnist_mlp.pretrain(split)
    assert_bitwise_equal(built, fresh)
    assert_bitwise_equal(read, fresh)
    torch.manual_seed(7)
    assert torch.equal(after_load, torch.rand(3))
    initial = random_init_reference()
    assert not torch.equal(fresh["l1.weight"], initial["l1.weight"])  # the step moved the weights


def truncate(folder):
    path = folder / "weights.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(folder):
    path = folder / "weights.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside l1.weight's data
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "weights.pt").unlink(),
        lambda folder: (folder / "manifest.json").unlink(),
        lambda folder: (folder / "manifest.json").write_text("{"),
        truncate,
        flip_a_byte,
    ],
    ids=["no weights", "no manifest", "manifest cut short", "weights cut short", "a byte flipped"],
)
def test_a_partial_or_corrupt_entry_is_rebuilt(builds, model_cfg, tmp_path, damage):
    first = weights(load_model(model_cfg, 5, str(tmp_path)))
    damage(entry(tmp_path))
    again = weights(load_model(model_cfg, 5, str(tmp_path)))
    assert len(builds) == 2
    assert_bitwise_equal(again, first)
    manifest = json.loads((entry(tmp_path) / "manifest.json").read_text())
    assert manifest["weights_sha256"] == hashlib.sha256((entry(tmp_path) / "weights.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        lambda cfg, monkeypatch: (monkeypatch.setitem(mnist_mlp.PRETRAIN, "lr", 1e-3), cfg)[1],
        lambda cfg, monkeypatch: (monkeypatch.setitem(mnist_mlp.ARCHITECTURE, "dropout", 0.2), cfg)[1],
        lambda cfg, monkeypatch: dataclasses.replace(cfg, mean=[0.5]),
        lambda cfg, monkeypatch: dataclasses.replace(cfg, path="mnist5k_upper"),
    ],
    ids=["learning rate", "architecture", "input transform", "pretraining task"],
)
def test_a_change_to_what_determines_the_weights_builds_a_new_entry(builds, model_cfg, tmp_path, monkeypatch, change):
    load_model(model_cfg, 5, str(tmp_path))
    load_model(change(model_cfg, monkeypatch), 5, str(tmp_path))
    assert len(builds) == 2 and len(list((tmp_path / "mlp_mnist").iterdir())) == 2


def test_the_training_data_is_part_of_the_fingerprint(builds, model_cfg, tmp_path, split, monkeypatch):
    load_model(model_cfg, 5, str(tmp_path))
    relabelled = dataclasses.replace(split, labels=split.labels.flip(0))
    monkeypatch.setattr(mnist_mlp, "pretraining_split", lambda cfg: relabelled)
    load_model(model_cfg, 5, str(tmp_path))
    assert len(builds) == 2 and len(list((tmp_path / "mlp_mnist").iterdir())) == 2


def test_without_cache_dir_the_cache_is_peft_harness_cache(builds, model_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_HARNESS_CACHE", str(tmp_path / "env"))
    load_model(model_cfg, 5)
    assert entry(tmp_path / "env").is_dir() and len(builds) == 1


def random_init_reference() -> dict[str, torch.Tensor]:
    """torch's default initialisation of 784→64, 64→64, 64→5 linear layers from seed 0, in that order."""
    torch.manual_seed(0)
    layers = {"l1": nn.Linear(784, 64), "l2": nn.Linear(64, 64), "l3": nn.Linear(64, 5)}
    return {f"{name}.{p}": t for name, layer in layers.items() for p, t in layer.state_dict().items()}


def test_random_init_needs_no_cache(model_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mlp, "pretraining_split", lambda cfg: pytest.fail("the task was loaded"))
    monkeypatch.setattr(mnist_mlp, "pretrain", lambda train: pytest.fail("the builder ran"))
    torch.manual_seed(7)
    model = load_model(dataclasses.replace(model_cfg, random_init=True), 5, str(tmp_path / "cache"))
    after_load = torch.rand(3)
    assert not (tmp_path / "cache").exists()
    assert_bitwise_equal(weights(model), random_init_reference())
    torch.manual_seed(7)
    assert torch.equal(after_load, torch.rand(3))
