"""AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019): torch.optim.AdamW over the
method's parameter groups. The default optimizer: every run before the optimizer axis existed trained with it
(betas 0.9, 0.999, eps 1e-8, torch's defaults), and a run that keeps them keeps its run key."""

import torch

from optimizers.base import AdamConfig, OptimizerRule
from optimizers.registry import register


@register
class AdamW(OptimizerRule):
    name = "adamw"
    Config = AdamConfig

    def build(self, method, train) -> torch.optim.Optimizer:
        return torch.optim.AdamW(method.param_groups(train), betas=tuple(self.cfg.betas), eps=self.cfg.eps)
