"""SGD, the plain baseline: torch.optim.SGD over the method's parameter groups, p ← p − lr·(g + wd·p) (with
`momentum` μ > 0: a buffer b ← μ·b + g + wd·p, Nesterov's look-ahead where `nesterov`). Momentum 0 by default:
plain stochastic gradient descent, the method's gradient and nothing else."""

from dataclasses import dataclass

import torch

from harness.checks import require
from optimizers.base import OptimizerConfig, OptimizerRule
from optimizers.registry import register


@dataclass
class SgdConfig(OptimizerConfig):
    name: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        require(0 <= self.momentum < 1, f"optimizer.momentum must be in [0, 1), got {self.momentum}")
        require(
            not self.nesterov or self.momentum > 0,
            "optimizer.nesterov=true needs optimizer.momentum > 0 (Nesterov's step is a momentum step)",
        )


@register
class Sgd(OptimizerRule):
    name = "sgd"
    Config = SgdConfig

    def build(self, method, train) -> torch.optim.Optimizer:
        return torch.optim.SGD(method.param_groups(train), momentum=self.cfg.momentum, nesterov=self.cfg.nesterov)
