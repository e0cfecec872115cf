"""LoRA: Low-Rank Adaptation (Hu et al. 2021, arXiv 2106.09685).

For each targeted linear layer with frozen W0 (d_out×d_in):
    y = x W0ᵀ + b + s · dropout(x) Aᵀ Bᵀ,      ΔW = s · B A
A (r×d_in) ~ kaiming-uniform(a=√5) (= U(±1/√d_in), as loralib and PEFT), B (d_out×r) = 0, so
ΔW = 0 at step 0. Scale s = α/r, or α/√r with rsLoRA (Kalajdzievski 2023). Merge: W0 ← W0 + s·B A.
Trainable params: r·(d_in + d_out) per adapted matrix (no LoRA bias).
Weight decay (`decay="trainer"`): A, B and the head's weight decayed, biases and LayerNorm not, HF
Trainer's rule as in the reference GLUE code (microsoft/LoRA examples/NLU, run_glue.py through the
bundled Trainer.create_optimizer; its RoBERTa scripts use weight_decay 0.1).

Conv2d layers (PEFT's convention): A is a k_h×k_w convolution C_in → r with the base layer's stride,
padding and dilation (run through the base layer's own forward, so TF-style "same"-padding subclasses
work), B a 1×1 convolution r → C_out; ΔW[o, i, :, :] = s·Σ_j B[o, j] A[j, i, :, :].
Trainable params r·(C_in·k_h·k_w + C_out). Grouped (e.g. depthwise) convolutions are an error: their
ΔW would be dense across groups and could not be merged.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.base import LayerMethod, role_targets
from methods.capabilities import Capabilities
from methods.frozen import trained_factory
from methods.inject import run_with
from methods.lowrank import AdditiveLayer, LowRankConfig, check_rank, scaled
from methods.registry import register


@dataclass
class LoraConfig(LowRankConfig):
    name: str = "lora"
    targets: list[str] = role_targets("q", "v")
    rslora: bool = False  # true: scale alpha/sqrt(r) instead of alpha/r


def lora_scaling(alpha: float, r: int, rslora: bool) -> float:
    return alpha / math.sqrt(r) if rslora else alpha / r


class LoraPairLayer(AdditiveLayer):
    """A layer whose update is s·B·A with trained factors `lora_A`, `lora_B` and scale `scaling`."""

    def lora_pair(self) -> tuple[nn.Parameter, nn.Parameter, float]:
        return self.lora_A, self.lora_B, self.scaling


class LoraLinear(LoraPairLayer):
    """A frozen nn.Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__(base, dropout)
        factory = trained_factory(base)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = lora_scaling(alpha, r, rslora)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        return scaled(F.linear(F.linear(x, self.lora_A), self.lora_B), self.scaling)


class LoraConv2d(LoraPairLayer):
    """A frozen nn.Conv2d (or subclass) plus B(A(x)): A k×k C_in → r, B 1×1 r → C_out."""

    def __init__(self, base: nn.Conv2d, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__(base, dropout)
        factory = trained_factory(base)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_channels, *base.kernel_size, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_channels, r, 1, 1, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = lora_scaling(alpha, r, rslora)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * torch.einsum("or,rikl->oikl", self.lora_B[:, :, 0, 0], self.lora_A)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        return scaled(F.conv2d(run_with(self.base, x, weight=self.lora_A, bias=None), self.lora_B), self.scaling)


@register
class Lora(LayerMethod):
    name = "lora"
    Config = LoraConfig
    capabilities = Capabilities(layer_kinds=(nn.Linear, nn.Conv2d), lora_pairs=True)
    layer_class = LoraLinear

    def make_layer(self, name: str, base: nn.Module) -> nn.Module:
        if isinstance(base, nn.Conv2d):
            if base.groups != 1:
                raise HarnessError(
                    f"{self.name}: '{name}' is a grouped convolution (groups={base.groups}); "
                    "LoRA adapts Linear and ungrouped Conv2d layers only"
                )
            check_rank(
                self.name,
                name,
                self.cfg.r,
                base.in_channels * base.kernel_size[0] * base.kernel_size[1],
                base.out_channels,
            )
            return LoraConv2d(base, self.cfg.r, self.cfg.alpha, self.cfg.dropout, self.cfg.rslora)
        check_rank(self.name, name, self.cfg.r, base.in_features, base.out_features)
        return self.layer_class(base, self.cfg.r, self.cfg.alpha, self.cfg.dropout, self.cfg.rslora)
