"""DoRA: Weight-Decomposed Low-Rank Adaptation (Liu et al. 2024, arXiv 2402.09353).

The adapted weight is split into a trained magnitude and a LoRA-updated direction:
    W' = m ⊙ (W0 + s·B A) / ‖W0 + s·B A‖,      s = α/r
with the norm per output row (over d_in; NVlabs' code and PEFT, not the paper's per-column
wording) and detached from the graph (paper §4.3: treated as a constant, no gradient through it).
m (d_out) starts at the row norms of W0, A and B as LoRA (A kaiming-uniform(a=√5), B = 0), so
W' = W0 at step 0. W' is never materialised in the forward:
    y = x W0ᵀ + b + (m/‖·‖ − 1) ⊙ (x̃ W0ᵀ) + (m/‖·‖) ⊙ s·(x̃ Aᵀ Bᵀ),   x̃ = dropout(x)
(x̃ W0ᵀ is the base output without bias when dropout is off or in evaluation, where dropout is the
identity; one extra matmul only in training with dropout, as in PEFT's DoraLinearVariant).
Merge: W0 ← (m/‖W0 + s·B A‖) ⊙_row (W0 + s·B A).
Trainable params: r·(d_in + d_out) + d_out per adapted matrix.
Weight decay (`decay="trainer"`): A, B and the magnitude m decayed (toward 0, as HF Trainer does in
NVlabs/DoRA commonsense_reasoning/finetune.py, whose scripts use weight_decay 0, and in its VL-BART
trainer at 0.01), biases and LayerNorm not.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import role_targets
from methods.capabilities import Capabilities
from methods.lora import Lora, LoraConfig, LoraLinear
from methods.registry import register


@dataclass
class DoraConfig(LoraConfig):
    name: str = "dora"
    targets: list[str] = role_targets("q", "k", "v", "ffn_in", "ffn_out")
    r: int = 16
    alpha: float = 32
    dropout: float = 0.05


class DoraLinear(LoraLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__(base, r, alpha, dropout, rslora)
        self.magnitude = nn.Parameter(torch.linalg.vector_norm(base.weight.detach(), dim=1))

    def magnitude_scale(self, weight: torch.Tensor) -> torch.Tensor:
        """m / ‖weight‖ per output row (weight = W0 + s·B A), with the norm detached."""
        return self.magnitude / torch.linalg.vector_norm(weight, dim=1).detach()

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        with torch.no_grad():  # the norm is a constant (no graph for W0 + s·B A)
            weight = self.base.weight + self.delta_weight()
        scale = self.magnitude_scale(weight)
        if isinstance(self.dropout, nn.Identity) or not self.training:  # x̃ = x
            dropped, base_part = x, out if self.base.bias is None else out - self.base.bias
        else:
            dropped = self.dropout(x)
            base_part = F.linear(dropped, self.base.weight)
        lora = F.linear(F.linear(dropped, self.lora_A), self.lora_B)
        return out + (scale - 1) * base_part + (scale * self.scaling) * lora  # s folded into the d_out vector

    def merged_weight(self) -> torch.Tensor:
        weight = self.base.weight + self.delta_weight()
        return self.magnitude_scale(weight)[:, None] * weight


@register
class Dora(Lora):
    name = "dora"
    Config = DoraConfig
    capabilities = Capabilities(layer_kinds=(nn.Linear,), lora_pairs=True)
    layer_class = DoraLinear
