"""Image tasks, pixel batches, EfficientNet-Lite0, LoRA on convolutions (against PEFT) and model
projection."""

import copy
import gzip
from pathlib import Path

import datasets
import numpy as np
import peft
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.engine.run import execute_run
from harness.errors import HarnessError
from methods.lora import Lora, LoraConfig
from methods.projection import Projection, ProjectionConfig
from tasks import load_task
from tasks.base import ImageSplit
from tasks.pixels import PixelSplit
from tests.conftest import tiny_cnn, tiny_images
from tests.methods.references import peft_layer

HEAD = ["classifier"]


def task_cfg(name, source=None, **extra):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "name": name,
            "source": source,
            "max_length": 0,
            "limit_train": None,
            "limit_eval": None,
            "split_seed": 42,
            **extra,
        }
    )


# -- LoRA on Conv2d -----------------------------------------------------------------------------------


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1)
        self.classifier = nn.Linear(6, 3)

    def forward(self, x):
        return self.classifier(self.conv(x).mean(dim=(2, 3)))


def test_lora_on_conv2d_equals_peft():
    torch.manual_seed(0)
    net = ConvNet().double()
    theirs = peft.get_peft_model(copy.deepcopy(net), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["conv"]))
    method = Lora(net, LoraConfig(r=2, alpha=4, targets=["conv"]), HEAD)
    layer, twin = method.layers["conv"], peft_layer(theirs, "conv")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator, dtype=torch.float64))
        twin.lora_A["default"].weight.copy_(layer.lora_A)
        twin.lora_B["default"].weight.copy_(layer.lora_B)
    assert method.param_counts()["adapter"] == 2 * (4 * 3 * 3 + 6)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    ours_out, their_out = net(x), theirs(x)
    assert torch.allclose(ours_out, their_out, atol=1e-12)
    ours_out.sum().backward()
    their_out.sum().backward()
    assert torch.allclose(layer.lora_A.grad, twin.lora_A["default"].weight.grad, atol=1e-12)
    assert torch.allclose(layer.lora_B.grad, twin.lora_B["default"].weight.grad, atol=1e-12)
    merged = theirs.merge_and_unload()
    method.merge()
    assert torch.allclose(net.conv.base.weight, merged.conv.weight, atol=1e-12)


def test_lora_wraps_same_padding_conv_subclasses_and_rejects_grouped_convs():
    model = tiny_cnn()
    reference = model(**tiny_images()).logits
    method = Lora(
        model, LoraConfig(r=2, alpha=4, targets=["backbone.0", "backbone.6"]), HEAD
    )  # 3×3 stride-2 "same", 1×1
    assert method.param_counts()["adapter"] == 2 * (3 * 9 + 8) + 2 * (8 + 12)
    assert torch.allclose(model(**tiny_images()).logits, reference, atol=1e-6)
    with torch.no_grad():
        for layer in method.layers.values():
            layer.lora_B.normal_()
    unmerged = model(**tiny_images()).logits
    assert not torch.allclose(unmerged, reference, atol=1e-3)
    method.merge()
    assert torch.allclose(model(**tiny_images()).logits, unmerged, atol=1e-5)
    with pytest.raises(HarnessError, match=r"'backbone.3' is a grouped convolution \(groups=8\)"):
        Lora(tiny_cnn(), LoraConfig(targets=["backbone.3"]), HEAD)


# -- model projection ---------------------------------------------------------------------------------


def test_projection_gates_each_filter_and_counts_channel_pairs():
    model = tiny_cnn()
    method = Projection(model, ProjectionConfig(), HEAD)
    assert method.param_counts()["adapter"] == 8 * 3 + 8 * 1 + 12 * 8  # stem, depthwise (C_out gates), 1×1
    stem = method.layers["backbone.6"]
    with torch.no_grad():
        stem.gates.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, 5, 5)
    expected = F.conv2d(x, stem.base.weight * stem.gates[:, :, None, None], stem.base.bias)
    assert torch.allclose(stem(x), expected, atol=1e-6)
    with_bn = Projection(tiny_cnn(), ProjectionConfig(train_bn=True), HEAD)
    assert with_bn.param_counts()["adapter"] == 128 + 2 * (8 + 8)


# -- tasks and pixels ---------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_and_keeps_the_official_test_set(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 100), ("t10k", 30)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    task = load_task(task_cfg("fashion_mnist", str(tmp_path)))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 90, "validation": 10, "test": 30}
    assert sorted(task.splits["validation"].labels) == list(range(10))  # stratified
    assert task.is_image and task.num_labels == 10 and task.report_split == "test"
    assert task.splits["test"].images.shape == (30, 28, 28)
    with pytest.raises(
        HarnessError, match="fashion_mnist: .*t10k-images-idx3-ubyte.gz not found; install the Debian package"
    ):
        (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
        load_task(task_cfg("fashion_mnist", str(tmp_path)))


@pytest.mark.parametrize(
    "name, sizes, shape", [("mnist5k", (3500, 749, 751), (28, 28)), ("digits", (1257, 269, 271), (8, 8))]
)
def test_packaged_image_tasks(name, sizes, shape):
    task = load_task(task_cfg(name))
    assert tuple(len(task.splits[s]) for s in ("train", "validation", "test")) == sizes
    assert task.splits["train"].images.shape[1:] == shape and task.splits["train"].images.dtype == np.uint8
    assert task.num_labels == 10


def test_hub_image_sets_load_a_local_copy_in_the_hub_layout(tmp_path):
    rng = np.random.default_rng(1)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    for split, n in (("train", 40), ("test", 10)):
        images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
        data = datasets.Dataset.from_dict({"img": images, "label": [i % 2 for i in range(n)]}, features=features)
        (tmp_path / "plain_text").mkdir(exist_ok=True)
        data.to_parquet(tmp_path / "plain_text" / f"{split}-00000-of-00001.parquet")
    task = load_task(task_cfg("cifar10", str(tmp_path)))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 36, "validation": 4, "test": 10}
    assert task.label_names == ["cat", "dog"] and task.splits["train"].images.shape[1:] == (32, 32, 3)
    with pytest.raises(
        HarnessError, match="cifar100: .*needs train and test splits with columns 'img' and 'fine_label'"
    ):
        load_task(task_cfg("cifar100", str(tmp_path)))


def test_pixel_batches_replicate_grey_resize_and_normalise():
    split = ImageSplit(np.full((3, 8, 8), 255, dtype=np.uint8), [0, 1, 2])
    pixels = PixelSplit.from_split(split, 16, 3, [0.5, 0.25, 0.0], [0.5, 0.25, 1.0])
    batch = pixels.batch([2, 0])
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["labels"].tolist() == [2, 0]
    assert torch.allclose(batch["pixel_values"][:, 0], torch.ones(2, 16, 16))  # (1 − 0.5)/0.5
    assert torch.allclose(batch["pixel_values"][:, 1], torch.full((2, 16, 16), 3.0))
    colour = ImageSplit(np.zeros((2, 4, 4, 3), dtype=np.uint8), [0, 1])
    assert PixelSplit.from_split(colour, None, 3, [0, 0, 0], [1, 1, 1]).batch([0])["pixel_values"].shape == (1, 3, 4, 4)


# -- through the harness ------------------------------------------------------------------------------


def test_image_task_with_a_text_model_is_a_one_line_error(make_config):
    record = execute_run(make_config("task=digits"))
    assert record["status"] == "failed"
    assert record["error"] == (
        "task 'digits' is an image task but model 'tiny_bert' is a text model; choose a model of the task's kind"
    )


def test_lora_on_efficientnet_convolutions_end_to_end(make_config):
    targets = "method.targets=['re:.*_(expand|project)_conv',_conv_head]"
    record = execute_run(
        make_config(
            "task=digits",
            "model=efficientnet_lite0",
            "model.image_size=32",
            "method=lora",
            "method.r=4",
            targets,
            "train.max_steps=2",
            "train.batch_size=4",
        )
    )
    assert record["status"] == "success", record.get("error")
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    convs = [m for n, m in net.named_modules() if n.endswith(("_expand_conv", "_project_conv", "_conv_head"))]
    assert all(m.kernel_size == (1, 1) for m in convs) and len(convs) == 32  # 15 expand, 16 project, 1 head
    assert record["params"]["adapter"] == sum(4 * (m.in_channels + m.out_channels) for m in convs)
    assert record["params"]["head"] == 1280 * 10 + 10


@pytest.mark.parametrize("name, bn_training", [("head", False), ("lora", False), ("full", True)])
def test_batchnorm_with_frozen_parameters_keeps_its_running_statistics(name, bn_training):
    from omegaconf import OmegaConf

    from methods import build_method

    model = tiny_cnn()
    method = build_method(
        model, OmegaConf.create({"name": name, "targets": ["backbone.6"]} if name == "lora" else {"name": name}), HEAD
    )
    stats = model.backbone[1].running_mean.clone()
    method.train_mode()
    assert model.training and model.backbone[1].training == bn_training
    model(**tiny_images())
    assert torch.equal(model.backbone[1].running_mean, stats) != bn_training
