"""DoRA: Weight-Decomposed Low-Rank Adaptation (Liu et al. 2024, arXiv 2402.09353).

The adapted weight is split into a trained magnitude and a LoRA-updated direction:
    W' = m ⊙ (W0 + s·B A) / ‖W0 + s·B A‖,      s = α/r
with the norm per output row (over d_in; NVlabs' code and PEFT, not the paper's per-column
wording) and detached from the graph (paper §4.3: treated as a constant, no gradient through it).
m (d_out) starts at the row norms of W0, A and B as LoRA (A kaiming-uniform(a=√5), B = 0), so
W' = W0 at step 0. Neither W' nor W0 + s·B A is materialised: the norm is
    ‖W0 + s·B A‖² = ‖W0‖² (cached, W0 frozen) + 2s·rowsum(W0 Aᵀ ⊙ B) + s²·rowsum(B (A Aᵀ) ⊙ B)
and the forward, with g = m/‖·‖ and x̃ = dropout(x),
    y = x W0ᵀ + b + (g − 1) ⊙ (x̃ W0ᵀ) + g ⊙ s·(x̃ Aᵀ Bᵀ)          (NVlabs' code, PEFT's DoraLinearVariant)
is computed as x W0ᵀ + b + (g − 1) ⊙ t + s·x̃ Aᵀ Bᵀ with t = x̃ W0ᵀ + s·x̃ Aᵀ Bᵀ (one matmul, the LoRA
output added in its epilogue); when dropout is off or in evaluation (x̃ = x) it is b + g ⊙ t, one matmul with
W0, as the base layer alone. Training with dropout needs x W0ᵀ and x̃ W0ᵀ: two matmuls with W0.
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
from methods.frozen import frozen_weight, is_quantized
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
        self.magnitude = nn.Parameter(torch.linalg.vector_norm(frozen_weight(base), dim=1))
        self.base_norms = None  # ((W0's storage, its version), ‖W0‖² per row): see base_row_norms_sq

    def base_row_norms_sq(self) -> torch.Tensor:
        """‖W0‖² per output row (W0 is frozen), computed again when W0 is in another storage (replaced, or its
        `.data` set) or written in place (fold, load_state_dict: its version counter moves on); `_apply` (moved or
        cast) drops it, as the storage of a cast-back weight may reuse the address. Writes through `.data` are
        not seen."""
        weight = self.base.weight
        stamp = (weight.data_ptr(), weight._version)
        if self.base_norms is None or self.base_norms[0] != stamp:
            self.base_norms = (stamp, torch.linalg.vector_norm(frozen_weight(self.base), dim=1).square())
        return self.base_norms[1]

    def _apply(self, fn, recurse=True):
        self.base_norms = None
        return super()._apply(fn, recurse)

    def weight_norm(self) -> torch.Tensor:
        """‖W0 + s·B A‖ per output row without building W0 + s·B A (detached):
        ‖W0‖² (cached) + s·rowsum((2·W0 Aᵀ + s·B (A Aᵀ)) ⊙ B), in fp32 whatever the base's storage (outside
        autocast; W0 de-quantised or upcast: methods/frozen.py)."""
        with torch.no_grad(), torch.autocast(self.lora_A.device.type, enabled=False):
            A, B, s = self.lora_A, self.lora_B, self.scaling
            cross_and_square = torch.addmm(F.linear(frozen_weight(self.base), A), B, A @ A.T, beta=2, alpha=s)
            return (self.base_row_norms_sq() + s * torch.linalg.vecdot(cross_and_square, B)).clamp_min(0).sqrt()

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.magnitude / self.weight_norm()
        weight, bias = self.base.weight, self.base.bias
        dropped = x if isinstance(self.dropout, nn.Identity) or not self.training else self.dropout(x)
        rows = dropped.reshape(-1, dropped.shape[-1])
        lora = F.linear(F.linear(rows, self.lora_A), self.lora_B * self.scaling)  # s·x̃ Aᵀ Bᵀ
        if is_quantized(self.base):  # x̃ W0ᵀ through the quantized layer (its own kernel; it keeps W0 packed)
            product = self.base(rows)
            adapted = (product if bias is None else product - bias) + lora
        else:
            adapted = torch.addmm(lora, rows, weight.T)  # x̃ W0ᵀ + s·x̃ Aᵀ Bᵀ
        if dropped is x:  # y = b + m/‖·‖ ⊙ (x W0ᵀ + s·x Aᵀ Bᵀ)
            out = scale * adapted if bias is None else torch.addcmul(bias, scale, adapted)
        else:  # y = x W0ᵀ + b + (m/‖·‖ − 1) ⊙ x̃ W0ᵀ + m/‖·‖ ⊙ s·x̃ Aᵀ Bᵀ
            base = self.base(x).reshape(rows.shape[0], -1)
            out = torch.addcmul(base, scale - 1, adapted).add_(lora)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def merged_weight(self) -> torch.Tensor:
        return (self.magnitude / self.weight_norm())[:, None] * (frozen_weight(self.base) + self.delta_weight())


@register
class Dora(Lora):
    name = "dora"
    Config = DoraConfig
    capabilities = Capabilities(layer_kinds=(nn.Linear,), lora_pairs=True)
    layer_class = DoraLinear
