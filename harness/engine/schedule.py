"""The optimizer and its learning-rate schedule, built one way for the training loop and the benchmark:
the run's optimizer (AdamW by default; optimizers/) over the method's parameter groups; linear warmup, then
linear decay to 0, cosine decay to 0, or constant.

The same formulas as transformers' get_{linear,cosine,constant}_schedule_with_warmup (tested
against them); written on torch's LambdaLR because importing transformers.optimization pulls in
its Trainer utilities (and peft, when installed): seconds of start-up for every run.
"""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from optimizers import optimizer_rule


def lr_factor(kind: str, step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_scheduler(optimizer: Optimizer, kind: str, warmup: int, total: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(kind, step, warmup, total))


def build_optimizer(method, train, optimizer_cfg, warmup: int, total: int) -> tuple[Optimizer, LambdaLR]:
    """The run's optimizer (`optimizer_cfg`, a parsed optimizer section; None: AdamW) over the method's parameter
    groups (adapter and head rates, each method's weight-decay policy; optimizers/), and train.schedule's
    schedule over `total` steps after `warmup`."""
    optimizer = optimizer_rule(optimizer_cfg).build(method, train)
    return optimizer, build_scheduler(optimizer, train.schedule, warmup, total)
