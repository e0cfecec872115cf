"""The MLP of RAC-LoRA's MNIST experiment (Malinovsky et al. 2024; reference hammoudhasan/RACLora,
rac_lora_mnist/models/lit_mnist.py): 784 → 64 → 64 → 5 (`l1`, `l2`, `l3`, with biases), ReLU and
dropout 0.1 after the two hidden layers, cross-entropy on the logits.

`model=mlp_mnist` is this MLP pre-trained on the task named by `model.path` (default
`mnist5k_lower`, digits 0–4), as the reference does before adapting it to digits 5–9 with the same
5-way output layer: AdamW lr 2e-4, weight decay 0.01, batch 128, 50 epochs (the reference stops
early on validation loss with patience 10 within at most 50 epochs), seed 0 in a forked RNG, so the
pre-trained weights are the same for every run and the run's own random state is untouched. It takes
about a second on a CPU, so it runs at every load instead of being cached.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from harness.errors import HarnessError

PRETRAIN = {"lr": 2e-4, "weight_decay": 0.01, "batch_size": 128, "epochs": 50, "seed": 0}


class MnistMLP(nn.Module):
    def __init__(self, num_labels: int = 5, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(784, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, pixel_values, labels=None) -> SequenceClassifierOutput:
        x = pixel_values.flatten(1)
        x = self.dropout(F.relu(self.l1(x)))
        x = self.dropout(F.relu(self.l2(x)))
        logits = self.l3(x)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def pretrained_mlp(cfg, num_labels: int) -> MnistMLP:
    from omegaconf import OmegaConf

    from tasks import load_task
    from tasks.pixels import PixelSplit

    if num_labels != 5:
        raise HarnessError(
            f"model '{cfg.name}' has a 5-way output layer (reused, as in the reference); the task has {num_labels} labels"
        )
    with torch.random.fork_rng():
        torch.manual_seed(PRETRAIN["seed"])
        model = MnistMLP()
        if cfg.random_init:
            return model
        task = load_task(
            OmegaConf.create(
                {"name": cfg.path, "source": None, "limit_train": None, "limit_eval": None, "split_seed": 42}
            )
        )
        train = PixelSplit.from_split(task.splits["train"], cfg.image_size, cfg.channels, cfg.mean, cfg.std)
        optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"], weight_decay=PRETRAIN["weight_decay"])
        model.train()
        for _ in range(PRETRAIN["epochs"]):
            order = torch.randperm(len(train)).tolist()
            for start in range(0, len(order), PRETRAIN["batch_size"]):
                model(**train.batch(order[start : start + PRETRAIN["batch_size"]])).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    return model.eval()
