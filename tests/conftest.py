import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest
import torch
from hydra import compose
from transformers import BertConfig, BertForSequenceClassification

from harness.config.compose import project_config

# Under pytest-xdist (`-n N`: the README's test command) each worker gets its share of the cores, for its own
# torch and for the runs it starts as subprocesses (torch's default thread count reads OMP_NUM_THREADS).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

QUICK = [
    "model=tiny_bert",
    "task.limit_train=32",
    "task.limit_eval=16",
    "train.max_steps=2",
    "train.batch_size=8",
    "progress=false",
]


@pytest.fixture
def make_config(tmp_path):
    """Compose the real config with overrides; results and caches go to tmp_path."""

    def make(*overrides: str, quick: bool = True):
        with project_config():
            return compose(
                "config",
                overrides=[
                    f"results_dir={tmp_path / 'results'}",
                    f"cache_dir={tmp_path / 'cache'}",
                    *(QUICK if quick else []),
                    *overrides,
                ],
            )

    return make


def tiny_bert(num_labels: int = 3, seed: int = 0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    settings = {
        "vocab_size": 100,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        **overrides,
    }
    config = BertConfig(num_labels=num_labels, **settings)
    return BertForSequenceClassification(config).eval()


def tiny_batch(batch: int = 4, length: int = 10, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(1, 100, (batch, length), generator=generator),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }


def tiny_cnn(num_labels: int = 3, seed: int = 0):
    """A small CNN with the structures image methods must handle: TF-style "same"-padding Conv2d
    subclasses (EfficientNet's), a depthwise conv, BatchNorm, and a `classifier` head."""
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding, Conv2dStaticSamePadding
    from torch import nn

    from harness.models.vision import ImageClassifier

    torch.manual_seed(seed)
    backbone = nn.Sequential(
        Conv2dStaticSamePadding(3, 8, kernel_size=3, stride=2, bias=False, image_size=16),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        Conv2dDynamicSamePadding(8, 8, kernel_size=3, groups=8, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, kernel_size=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return ImageClassifier(backbone, 12, num_labels).eval()


def tiny_images(batch: int = 4, size: int = 16, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}
