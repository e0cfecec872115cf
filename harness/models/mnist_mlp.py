"""The MLP of RAC-LoRA's MNIST experiment (Malinovsky et al. 2024; reference hammoudhasan/RACLora,
rac_lora_mnist/models/lit_mnist.py): 784 → 64 → 64 → 5 (`l1`, `l2`, `l3`, with biases), ReLU and
dropout 0.1 after the two hidden layers, cross-entropy on the logits.

`model=mlp_mnist` is this MLP pre-trained on the task named by `model.path` (default
`mnist5k_lower`, digits 0–4), as the reference does before adapting it to digits 5–9 with the same
5-way output layer: AdamW lr 2e-4, weight decay 0.01, batch 128, 50 epochs (the reference stops
early on validation loss with patience 10 within at most 50 epochs), seed 0 in a forked RNG, so the
pre-trained weights are the same for every run and the run's own random state is untouched.

The pre-trained weights are a cached asset: `pretrain` builds them on first use and they are kept in
`<cache_dir>/mlp_mnist/<fingerprint>/` (harness/models/cache.py), the fingerprint covering everything
that determines them: the pretraining recipe, the task and a sha256 of its training split, the input
transform, the architecture and the torch version. Later loads read the file, checked against the
sha256 recorded beside it.
"""

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from harness.digest import sha256_file
from harness.errors import HarnessError
from harness.models.cache import cache_root, cached_folder
from tasks import load_task
from tasks.pixels import PixelSplit

PRETRAIN = {"lr": 2e-4, "weight_decay": 0.01, "batch_size": 128, "epochs": 50, "seed": 0}
ARCHITECTURE = {"inputs": 784, "hidden": 64, "num_labels": 5, "dropout": 0.1}  # MnistMLP's arguments
WEIGHTS, MANIFEST = "weights.pt", "manifest.json"


class MnistMLP(nn.Module):
    def __init__(self, inputs: int, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(inputs, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, pixel_values, labels=None) -> SequenceClassifierOutput:
        x = pixel_values.flatten(1)
        x = self.dropout(F.relu(self.l1(x)))
        x = self.dropout(F.relu(self.l2(x)))
        logits = self.l3(x)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


@contextmanager
def pretraining_rng():
    """torch's RNG seeded with the pretraining seed, forked: the caller's random state is untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(PRETRAIN["seed"])
        yield


def pretrain(train: PixelSplit) -> dict[str, torch.Tensor]:
    """The weights of the MLP pre-trained on `train` by PRETRAIN's recipe."""
    with pretraining_rng():
        model = MnistMLP(**ARCHITECTURE)
        optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"], weight_decay=PRETRAIN["weight_decay"])
        model.train()
        for _ in range(PRETRAIN["epochs"]):
            order = torch.randperm(len(train)).tolist()
            for start in range(0, len(order), PRETRAIN["batch_size"]):
                model(**train.batch(order[start : start + PRETRAIN["batch_size"]])).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    return model.state_dict()


def pretraining_split(cfg) -> PixelSplit:
    """The training split of the pretraining task `cfg.path`, as the model's input."""
    task = load_task(
        OmegaConf.create({"name": cfg.path, "source": None, "limit_train": None, "limit_eval": None, "split_seed": 42})
    )
    return PixelSplit.from_split(task.splits["train"], cfg.image_size, cfg.channels, cfg.mean, cfg.std)


def recipe(cfg, train: PixelSplit) -> dict:
    """Everything that determines the pre-trained weights (its sha256 names the cache folder)."""
    data = hashlib.sha256()
    for tensor in (train.images, train.labels):
        data.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        data.update(tensor.contiguous().numpy().tobytes())
    return {
        "pretrain": PRETRAIN,
        "architecture": ARCHITECTURE,
        "task": cfg.path,
        "train_sha256": data.hexdigest(),
        "inputs": {
            "image_size": cfg.image_size,
            "channels": cfg.channels,
            "mean": list(cfg.mean),
            "std": list(cfg.std),
        },
        "torch": torch.__version__,
    }


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds the weights file that its manifest's sha256 describes."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return sha256_file(folder / WEIGHTS) == manifest["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def pretrained_weights(cfg, cache_dir: str | None) -> dict[str, torch.Tensor]:
    """The pre-trained weights from the cache, built (and cached) on first use."""
    train = pretraining_split(cfg)
    built_from = recipe(cfg, train)
    fingerprint = hashlib.sha256(json.dumps(built_from, sort_keys=True).encode()).hexdigest()

    def write(scratch: Path) -> None:
        torch.save(pretrain(train), scratch / WEIGHTS)
        manifest = built_from | {"weights_sha256": sha256_file(scratch / WEIGHTS)}
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))

    folder = cached_folder(cache_root(cache_dir) / "mlp_mnist" / fingerprint[:16], is_complete, write)
    return torch.load(folder / WEIGHTS, weights_only=True)


def pretrained_mlp(cfg, num_labels: int, cache_dir: str | None = None) -> MnistMLP:
    """The MLP with its pre-trained weights (in eval mode), or as initialised where `random_init`."""
    if num_labels != ARCHITECTURE["num_labels"]:
        raise HarnessError(
            f"model '{cfg.name}' has a 5-way output layer (reused, as in the reference); "
            f"the task has {num_labels} labels"
        )
    with pretraining_rng():
        model = MnistMLP(**ARCHITECTURE)
    if cfg.random_init:
        return model
    model.load_state_dict(pretrained_weights(cfg, cache_dir))
    return model.eval()
