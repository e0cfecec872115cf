"""A few optimizer steps of a method the way the loop drives it (harness/engine/train.py), for method tests."""

from typing import Callable, Optional

import torch

LABELS = torch.tensor([0, 1, 2, 0])


def settings(lr: float = 1e-2, head_lr: Optional[float] = None, weight_decay: float = 0.0):
    """The train.* keys `Method.param_groups` reads."""
    return type("Train", (), {"lr": lr, "head_lr": lr if head_lr is None else head_lr, "weight_decay": weight_decay})


def train_steps(
    method,
    batch: Callable[[int], dict],
    steps: int,
    total: Optional[int] = None,
    lr: float = 1e-2,
    before_step_end: Optional[Callable[[int], None]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    labels: torch.Tensor = LABELS,
) -> torch.optim.Optimizer:
    """`steps` AdamW steps (of a run of `total` steps) on `batch(step)`: train mode, task loss + the
    method's extra loss, backward, optimizer.step(), `before_step_end(step)` (gradients and the
    step's update in place), method.on_step_end(step), zero_grad(); the model is left in eval mode."""
    if optimizer is None:
        optimizer = torch.optim.AdamW(method.param_groups(settings(lr)))
        method.start(total or steps, optimizer)
    for step in range(1, steps + 1):
        method.train_mode()
        loss = method.model(**batch(step), labels=labels).loss
        extra = method.extra_loss()
        (loss if extra is None else loss + extra).backward()
        optimizer.step()
        if before_step_end is not None:
            before_step_end(step)
        method.on_step_end(step)
        optimizer.zero_grad()
    method.model.eval()
    return optimizer
