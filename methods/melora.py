"""MELoRA: Mini-Ensemble Low-Rank Adapters (Ren et al. 2024, arXiv 2402.17263).

n mini LoRAs on the block diagonal: the input is cut into n equal chunks and mini LoRA i maps
chunk i of x to chunk i of y,
    ΔW = blockdiag(s·B_1 A_1, …, s·B_n A_n),   A_i: r×(d_in/n),  B_i: (d_out/n)×r,   s = α/r
each A_i kaiming-uniform(a=√5) on its own fan-in d_in/n, each B_i = 0 (ΔW = 0 at step 0).
Trainable params: n·r·(d_in/n + d_out/n) = r·(d_in + d_out) per adapted matrix, for an equivalent
rank n·r. d_in and d_out must be divisible by n (an error names the layer; the reference code
silently leaves the remainder unadapted). The forward works for any number of leading dimensions
(the reference assumes 3-D input) and the merge uses torch.block_diag (the reference merge is broken).
Weight decay (`decay="all"`): every trained tensor, head biases included, as the reference's own
torch AdamW (ChasonShi/MELoRA run_glue_lora.py: no weight_decay given, torch's default 0.01; its
script's --weight_decay 0.1 never reaches that optimizer).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import LayerMethod, role_targets
from methods.capabilities import Capabilities
from methods.frozen import trained_factory
from methods.lowrank import AdditiveLayer, LowRankConfig, check_rank, scaled
from methods.registry import register


@dataclass
class MeloraConfig(LowRankConfig):
    name: str = "melora"
    targets: list[str] = role_targets("q", "v")
    r: int = 8
    n: int = 2
    alpha: float = 16
    dropout: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        require(self.n > 0, f"method.n must be a positive number of mini LoRAs, got {self.n}")


class MeloraLinear(AdditiveLayer):
    def __init__(self, base: nn.Linear, r: int, n: int, alpha: float, dropout: float):
        super().__init__(base, dropout)
        self.n = n
        factory = trained_factory(base)
        self.lora_A = nn.Parameter(torch.empty(n, r, base.in_features // n, **factory))
        self.lora_B = nn.Parameter(torch.zeros(n, base.out_features // n, r, **factory))
        for block in self.lora_A:  # per block, so the fan-in is d_in/n
            nn.init.kaiming_uniform_(block, a=math.sqrt(5))
        self.scaling = alpha / r

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * torch.block_diag(*(self.lora_B @ self.lora_A))

    def update(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.unflatten(-1, (self.n, -1))  # (..., n, d_in/n)
        latent = torch.einsum("...ni,nri->...nr", chunks, self.lora_A)
        return scaled(torch.einsum("...nr,nor->...no", latent, self.lora_B).flatten(-2), self.scaling)


@register
class Melora(LayerMethod):
    name = "melora"
    Config = MeloraConfig
    capabilities = Capabilities(decay="all")

    def make_layer(self, name: str, base: nn.Linear) -> MeloraLinear:
        n = self.cfg.n
        if base.in_features % n or base.out_features % n:
            raise HarnessError(
                f"melora: layer '{name}' ({base.out_features}×{base.in_features}) is not divisible "
                f"into n={n} blocks; choose n dividing both d_in and d_out"
            )
        check_rank(self.name, name, self.cfg.r, base.in_features // n, base.out_features // n)
        return MeloraLinear(base, self.cfg.r, n, self.cfg.alpha, self.cfg.dropout)
