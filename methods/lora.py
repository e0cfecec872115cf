"""LoRA: Low-Rank Adaptation (Hu et al. 2021, arXiv 2106.09685).

For each targeted linear layer with frozen W0 (d_out×d_in):
    y = x W0ᵀ + b + s · dropout(x) Aᵀ Bᵀ,      ΔW = s · B A
A (r×d_in) ~ kaiming-uniform(a=√5) (= U(±1/√d_in), as loralib and PEFT), B (d_out×r) = 0, so
ΔW = 0 at step 0. Scale s = α/r, or α/√r with rsLoRA (Kalajdzievski 2023). Merge: W0 ← W0 + s·B A.
Trainable params: r·(d_in + d_out) per adapted matrix (no LoRA bias).
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import LayerMethod
from methods.lowrank import AdditiveLinear, LowRankConfig, check_rank
from methods.registry import register


@dataclass
class LoraConfig(LowRankConfig):
    name: str = "lora"
    targets: list[str] = field(default_factory=lambda: ["query", "value"])
    rslora: bool = False


def lora_scaling(alpha: float, r: int, rslora: bool) -> float:
    return alpha / math.sqrt(r) if rslora else alpha / r


class LoRALinear(AdditiveLinear):
    """A frozen nn.Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__(base, dropout)
        factory = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = lora_scaling(alpha, r, rslora)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling


@register
class LoRA(LayerMethod):
    name = "lora"
    Config = LoraConfig
    layer_class = LoRALinear

    def make_layer(self, name: str, base: nn.Linear) -> LoRALinear:
        check_rank(self.name, name, self.cfg.r, base.in_features, base.out_features)
        return self.layer_class(base, self.cfg.r, self.cfg.alpha, self.cfg.dropout, self.cfg.rslora)
