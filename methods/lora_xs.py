"""LoRA-XS: Low-Rank Adaptation with Extremely Small number of parameters (Bałazy et al. 2024,
arXiv 2405.17604).

Truncated SVD of each frozen weight, W0 ≈ U_r Σ_r V_rᵀ, gives frozen factors B = U_r (d_out×r) and
A = Σ_r V_rᵀ (r×d_in; singular values on the input side, as the reference code); only the r×r
matrix R between them is trained:
    y = x W0ᵀ + b + s · dropout(x) Aᵀ Rᵀ Bᵀ,      ΔW = s · B R A,   s = α/r
R ~ N(0, σ²) with σ = 1e-5 (the paper's init: near zero, not zero). Merge: W0 ← W0 + s·B R A.
Trainable params: r² per adapted matrix; A and B are buffers (r·(d_in + d_out) frozen values).
The SVD is exact (torch.linalg.svd in float64, computed once per matrix), hence deterministic; it reads W0 in
full precision (methods/frozen.py: de-quantised on a quantized base, upcast on a bf16 one).
Weight decay (`decay="all"`): every trained tensor, R and the whole head (biases included), as the
reference's own torch AdamW over all of them (MohammadrezaBanaei/LoRA-XS main_glue.py; no
weight_decay given, so torch's default 0.01).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.checks import require
from methods.base import LayerMethod, role_targets
from methods.capabilities import Capabilities
from methods.frozen import frozen_weight, trained_factory
from methods.lowrank import AdditiveLayer, LowRankConfig, check_rank, scaled
from methods.registry import register


@dataclass
class LoraXsConfig(LowRankConfig):
    name: str = "lora_xs"
    targets: list[str] = role_targets("q", "v", "o", "ffn_out")
    r: int = 16
    alpha: float = 16
    dropout: float = 0.0
    init_std: float = 1e-5

    def __post_init__(self):
        super().__post_init__()
        require(self.init_std >= 0, f"method.init_std must be >= 0, got {self.init_std}")


def svd_factors(weight: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B = U_r (d_out×r) and A = Σ_r V_rᵀ (r×d_in) of the rank-r truncated SVD of `weight`."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return u[:, :r].to(weight.dtype), (s[:r, None] * vh[:r]).to(weight.dtype)


class LoraXsLinear(AdditiveLayer):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, init_std: float):
        super().__init__(base, dropout)
        up, down = svd_factors(frozen_weight(base), r)
        self.register_buffer("lora_B", up)
        self.register_buffer("lora_A", down)
        self.lora_R = nn.Parameter(torch.randn(r, r, **trained_factory(base)) * init_std)
        self.scaling = alpha / r

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_R @ self.lora_A)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        latent = F.linear(F.linear(x, self.lora_A), self.lora_R)
        return scaled(F.linear(latent, self.lora_B), self.scaling)


@register
class LoraXs(LayerMethod):
    name = "lora_xs"
    Config = LoraXsConfig
    # R ~ N(0, 1e-5²): the update starts near zero, not at zero
    capabilities = Capabilities(identity_at_init=False, decay="all")

    def make_layer(self, name: str, base: nn.Linear) -> LoraXsLinear:
        check_rank(self.name, name, self.cfg.r, base.in_features, base.out_features)
        return LoraXsLinear(base, self.cfg.r, self.cfg.alpha, self.cfg.dropout, self.cfg.init_std)
