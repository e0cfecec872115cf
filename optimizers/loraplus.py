"""LoRA+ (Hayou, Ghosh & Yu, "LoRA+: Efficient Low Rank Adaptation of Large Models", ICML 2024, arXiv 2402.12354):
AdamW with B's learning rate λ times A's, η_B = λ·η_A (λ = `lr_ratio`, the paper's recommended 2⁴ = 16), since
for wide layers A and B need rates of different orders for the features to keep learning efficiently.

Groups as PEFT's `create_loraplus_optimizer` (peft/optimizers/loraplus.py, the reference code's): among the
adapter's tensors, B of each LoRA pair and every 1-D tensor (DoRA's magnitude) at λ·train.lr, the others (A) at
train.lr. Where it differs: the task head stays at train.head_lr as in every run (PEFT puts a trained head's
weight at η_A and its bias at η_B), and weight decay follows the method's policy at train.weight_decay (PEFT: its
`loraplus_weight_decay` on every tensor but 1-D ones outside decay_parameters). tests/optimizers/test_loraplus.py
holds the groups and the trained factors to PEFT's on PEFT's LoRA model.
State: AdamW's two moments per trained tensor, as AdamW.
"""

from dataclasses import dataclass

import torch

from harness.checks import require
from optimizers.base import AdamConfig, OptimizerRule
from optimizers.registry import register


@dataclass
class LoraPlusConfig(AdamConfig):
    name: str = "loraplus"
    lr_ratio: float = 16.0  # η_B / η_A (PEFT's loraplus_lr_ratio; the paper recommends 2^4 for most tasks)

    def __post_init__(self):
        super().__post_init__()
        require(self.lr_ratio > 0, f"optimizer.lr_ratio must be > 0 (η_B / η_A), got {self.lr_ratio}")


@register
class LoraPlus(OptimizerRule):
    name = "loraplus"
    Config = LoraPlusConfig
    needs_lora_pairs = True

    def build(self, method, train) -> torch.optim.Optimizer:
        fast = {id(b) for _, _, b, _ in method.lora_pairs()}

        def rate(name: str, tensor: torch.nn.Parameter) -> float:
            return self.cfg.lr_ratio if id(tensor) in fast or tensor.ndim == 1 else 1.0

        groups = method.param_groups(train, adapter_rate=rate)
        return torch.optim.AdamW(groups, betas=tuple(self.cfg.betas), eps=self.cfg.eps)
