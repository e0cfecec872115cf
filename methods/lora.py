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

from harness.errors import HarnessError
from harness.schema import require
from methods.base import LayerMethod, MethodConfig
from methods.registry import register


@dataclass
class LoraConfig(MethodConfig):
    name: str = "lora"
    targets: list[str] = field(default_factory=lambda: ["query", "value"])
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    rslora: bool = False

    def __post_init__(self):
        require(self.r > 0, f"method.r must be a positive rank, got {self.r}")
        require(self.alpha > 0, f"method.alpha must be > 0, got {self.alpha}")
        require(0 <= self.dropout < 1, f"method.dropout must be in [0, 1), got {self.dropout}")


def lora_scaling(alpha: float, r: int, rslora: bool) -> float:
    return alpha / math.sqrt(r) if rslora else alpha / r


def check_rank(method: str, name: str, r: int, d_in: int, d_out: int) -> None:
    if r > min(d_in, d_out):
        raise HarnessError(f"{method}: rank r={r} exceeds min(d_in, d_out)={min(d_in, d_out)} of layer '{name}' ({d_out}×{d_in})")


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__()
        self.base = base
        factory = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = lora_scaling(alpha, r, rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True


@register
class LoRA(LayerMethod):
    name = "lora"
    Config = LoraConfig

    def make_layer(self, name: str, base: nn.Linear) -> LoRALinear:
        check_rank(self.name, name, self.cfg.r, base.in_features, base.out_features)
        return LoRALinear(base, self.cfg.r, self.cfg.alpha, self.cfg.dropout, self.cfg.rslora)
