"""Aurora: mode approximation (Wang et al., NeurIPS 2023, "Parameter-efficient Tuning of Large-scale Multimodal
Foundation Model", arXiv 2305.08381; reference code WillDreamer/Aurora: CP/med.py, CP/vit.py, CP/blip_vqa.py).

Three tensors are shared by every adapted matrix of the model: U ∈ ℝ^{R×d} (a d → R linear map, no bias),
V ∈ ℝ^{d×R} (R → d, no bias) and the core C ∈ ℝ^{R×R×R}. Each adapted d×d matrix j has its own vector
p_j ∈ ℝ^R, which contracts C's THIRD index (mode 3; the reference's `CP_C @ p`):
    M_j = C ×₃ p_j,   M_j[a, b] = Σ_c C[a, b, c] p_j[c]
    y = W0 x + b + s · V (M_jᵀ dropout(U x)),     ΔW_j = s · V M_jᵀ U
(U x contracts C's first index, V reads its second: the reference's row-vector `CP_V(dp(CP_U(x)) @ M_j)`).
A feed-forward matrix that maps d → n·d (ffn_in) or n·d → d (ffn_out) is split into n d-sized chunks, each chunk
k its own vector p_k, as the reference's ViT MLP does (4 chunks for each of fc1 and fc2):
    d → n·d: output rows [k·d, (k+1)·d) get s · V M_kᵀ dropout(U x),       ΔW = s · [V M_kᵀ U; …] stacked by rows
    n·d → d: y += s · V Σ_k M_kᵀ dropout(U x_k) (x_k: input chunk k),      ΔW = s · [V M_kᵀ U, …] side by side
A layer stores its vectors as one tensor `aurora_p` ∈ ℝ^{R×n}, column k = p_k (the reference's layout: R×1 per
BERT matrix, R×4 per ViT attention, R×8 per ViT MLP). Merge: W0 ← W0 + ΔW_j for every adapted matrix; U, V, C are
read, never written, so merging one layer leaves the others' updates as they were.
Init (as the reference): U as nn.Linear's default (kaiming-uniform a = √5, U(±1/√d)), V = 0, C xavier-uniform
(fan-in = fan-out = R², bound √3/R), each `aurora_p` xavier-uniform (bound √(6/(R + n))). V = 0 ⇒ ΔW = 0: the
outputs are exactly the pretrained model's at step 0 (U, C and p get gradients from the second step on).
Shared tensors: U, V, C live once, in the module `aurora_factors` added to the model (as LoRTA's factors), so the
parameter count, the optimizer, the saved state and merging see them once; the layers hold them unregistered.
Trainable params: 2dR + R³ + R·Σ_j n_j for the whole model (n_j = 1 for a d×d matrix, the chunk count for a
feed-forward one). U and V are shared, so every target must be d×d, n·d×d or d×n·d for one hidden size d (the
model config's `hidden_size`, else the smallest target dimension): a grouped-query k/v (Llama's H_kv·d_h × d) or
an FFN width that is not a multiple of d is a one-line error.
Weight decay (`decay="all"`): every trained tensor, U, V, C, the p vectors and the whole head (biases included),
as the reference's torch AdamW over all parameters (train_retrieval.py, train_vqa.py: weight_decay 0.05 from
configs/*.yaml; the harness's train.weight_decay, 0 unless a run sets it).
Defaults: r = R = 32 (`--R` of train_retrieval.py and train_vqa.py; train_video_retrieval.py: 64), s = 1 (`self.s = 1`),
dropout 0.1 (the reference's `nn.Dropout(0.1)` in every adapted module), targets q, k, v (CP/med.py, the
reference's BERT text encoder, adapts query, key and value, the family of this harness's text models; its ViT also
adapts the attention projection and both MLP matrices: `method.targets='${roles:q,k,v,o,ffn_in,ffn_out}'`).
The lr/head_lr and weight decay of conf/method/aurora.yaml come from the reference's configs (see there).

Where this differs from the reference code, and why:
- The cross-modal parts do not apply to this harness's single-modality models and are left out: the text side's
  scale/shift residuals (CP_scaleself/CP_shiftself, CP_scalecross/CP_shiftcross, added in 'multimodal' mode only),
  cross-attention and the momentum encoders; U, V, C are shared here by the one model's matrices only.
- Dropout sits on U x, before the core, as CP/med.py (BERT) has it; CP/vit.py drops (U x)·M_j, after it.
- The chunks: CP/vit.py reshapes C @ p (R×R×4) to R×4R and its result to (4, R), which interleaves: the R-vector of
  its fc1 chunk k takes column ⌊(kR + b)/4⌋ of M_{(kR + b) mod 4} at position b, mixing all four chunk vectors,
  and its fc2, interleaved alike, contracts U x_k with C's second index (M_k, not M_kᵀ). Here each chunk k is the
  plain M_k = C ×₃ p_k in the same orientation as every other matrix (the formula above): the same tensors and
  count, a placement without the reshape's interleaving.
- p's xavier bound depends on how many vectors share a tensor: here one R×n tensor per adapted matrix, the
  reference's bound for the BERT matrices (R×1), a wider one than its ViT's R×4 / R×8 groups.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import LayerMethod, MethodConfig, role_targets
from methods.capabilities import Capabilities
from methods.frozen import trained_factory
from methods.inject import inject, match_targets
from methods.lowrank import AdditiveLayer, scaled
from methods.registry import register


@dataclass
class AuroraConfig(MethodConfig):
    name: str = "aurora"
    targets: list[str] = role_targets("q", "k", "v")
    r: int = 32
    scale: float = 1.0
    dropout: float = 0.1

    def __post_init__(self):
        require(self.r > 0, f"method.r must be a positive rank, got {self.r}")
        require(self.scale > 0, f"method.scale must be > 0, got {self.scale}")
        require(0 <= self.dropout < 1, f"method.dropout must be in [0, 1), got {self.dropout}")


class AuroraFactors(nn.Module):
    """U (R×d), V (d×R) and the core C (R×R×R), shared by every adapted matrix."""

    def __init__(self, d: int, r: int, **factory):
        super().__init__()
        self.U = nn.Parameter(torch.empty(r, d, **factory))
        self.V = nn.Parameter(torch.zeros(d, r, **factory))
        self.C = nn.Parameter(torch.empty(r, r, r, **factory))
        nn.init.kaiming_uniform_(self.U, a=math.sqrt(5))
        nn.init.xavier_uniform_(self.C)

    def cores(self, p: torch.Tensor) -> torch.Tensor:
        """M_k = C ×₃ p_k for every column of p (R×n): R×R×n."""
        return self.C @ p


class AuroraLinear(AdditiveLayer):
    """A frozen nn.Linear plus s·V M_kᵀ U on each of its n d-sized chunks (outputs, or inputs when `chunked_input`)."""

    def __init__(
        self, base: nn.Linear, factors: AuroraFactors, chunks: int, chunked_input: bool, scale: float, dropout: float
    ):
        super().__init__(base, 0.0)  # dropout acts on U x, not on x (module docstring)
        object.__setattr__(self, "factors", factors)  # shared, registered once on the model (not per layer)
        r = factors.C.shape[0]
        self.aurora_p = nn.Parameter(torch.empty(r, chunks, **trained_factory(base)))
        nn.init.xavier_uniform_(self.aurora_p)
        self.latent_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.chunks, self.chunked_input, self.scale = chunks, chunked_input, scale

    def update(self, x: torch.Tensor) -> torch.Tensor:
        factors, cores = self.factors, self.factors.cores(self.aurora_p)
        if self.chunked_input:  # n·d → d: Σ_k M_kᵀ U x_k
            latent = self.latent_dropout(F.linear(x.unflatten(-1, (self.chunks, -1)), factors.U))  # (…, n, R)
            return scaled(F.linear(torch.einsum("...ka,abk->...b", latent, cores), factors.V), self.scale)
        latent = self.latent_dropout(F.linear(x, factors.U))  # (…, R)
        mixed = torch.einsum("...a,abk->...kb", latent, cores)  # (…, n, R): M_kᵀ U x per output chunk
        return scaled(F.linear(mixed, factors.V).flatten(-2), self.scale)

    def delta_weight(self) -> torch.Tensor:
        factors = self.factors
        blocks = torch.einsum("ib,abk,aj->kij", factors.V, factors.cores(self.aurora_p), factors.U)  # V M_kᵀ U
        dense = blocks.permute(1, 0, 2).flatten(1) if self.chunked_input else blocks.flatten(0, 1)
        return scaled(dense, self.scale)


@register
class Aurora(LayerMethod):
    name = "aurora"
    Config = AuroraConfig
    capabilities = Capabilities(decay="all")

    def apply(self) -> None:
        names = match_targets(self.model, self.cfg.targets, self.head_modules, method=self.name)
        modules = {name: self.model.get_submodule(name) for name in names}
        d = getattr(getattr(self.model, "config", None), "hidden_size", None) or min(
            min(module.in_features, module.out_features) for module in modules.values()
        )
        chunking = {name: self.chunking(name, module, d) for name, module in modules.items()}
        self.factors = AuroraFactors(d, self.cfg.r, **trained_factory(modules[names[0]]))
        self.model.add_module("aurora_factors", self.factors)

        def wrap(name: str, base: nn.Linear) -> AuroraLinear:
            return AuroraLinear(base, self.factors, *chunking[name], self.cfg.scale, self.cfg.dropout)

        self.layers = inject(self.model, names, wrap)

    def chunking(self, name: str, module: nn.Linear, d: int) -> tuple[int, bool]:
        """(n, whether the input is chunked) of a d×d, n·d×d or d×n·d target."""
        d_out, d_in = module.out_features, module.in_features
        if d_in == d and d_out % d == 0:
            return d_out // d, False
        if d_out == d and d_in % d == 0:
            return d_in // d, True
        raise HarnessError(
            f"aurora: U (d→R) and V (R→d) are shared, so every target must be d×d, n·d×d or d×n·d for the hidden "
            f"size d={d}; '{name}' is {d_out}×{d_in}"
        )
