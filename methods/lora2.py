"""LoRA²: multi-scale low-rank approximations (Zhang, Xiong, Qiu, Zhu, Xia; arXiv 2408.06854, Neurocomputing 2025),
checked against the reference code Godz-z/LoRA-2 (loralib/loralib/LoRA2.py: SVDLinear, RankAllocator,
compute_orth_regu; scripts/run_debertav3_*.sh).

AdaLoRA's P diag(E) Q (methods/adalora.py) with each singular-vector factor itself a LoRA of inner rank k:
    ΔW = s · P diag(E) Q,   P = bb·aa,  Q = B·A,   s = α/(r0 + 1e-5)
    A: k×d_in,  B: r0×k,  E: r0,  aa: k×r0,  bb: d_out×k
    y = x W0ᵀ + b + s · dropout(x) Aᵀ Bᵀ diag(E) aaᵀ bbᵀ      (the reference's forward, in that order)
r0 = the initial rank `r`, fixed while triplets are pruned (the reference's `ranknum`, 1e-5 included, as
AdaLoRA's code). E = 0 and A, B, aa, bb ~ N(0, 0.02²) at init (reference reset_parameters), so ΔW = 0 and
the outputs equal the pretrained model's at step 0. Merge: W0 ← W0 + s·P diag(E) Q.

Budget: AdaLoRA's, inherited (methods/adalora.py, methods/budget.py): the same importance
    I = |w·∂L/∂w|,  Ī ← β1 Ī + (1−β1) I,  Ū ← β2 Ū + (1−β2)|I − Ī|,  s(w) = Ī·Ū
but on E, aa and B only (the reference's update_ipt), triplet score
    S_i = s(E_i) + mean_j s(aa[j, i]) + mean_j s(B[i, j])
(A and bb are shared by every triplet of the matrix, so they are not scored: the paper's ~98.5 % fewer
scores); the same cubic global budget from r0·n to target_r·n between t_init and T − t_final, masking every
delta_t steps by zeroing E_i (the reference's masked_fill_), the mask frozen and held at T − t_final.
E ⊙ mask is thus E itself wherever the mask is held, and forward and merge both read E.
Loss += γ·R, R = the mean over all 4n factor matrices (n adapted) of the non-squared Frobenius distances
    ‖A Aᵀ − I‖_F, ‖BᵀB − I‖_F, ‖aa aaᵀ − I‖_F, ‖bbᵀbb − I‖_F      (each k×k; γ = `orth_reg`)
Params per adapted d_out×d_in matrix: k(d_in + d_out) + r0(2k + 1) while training; a pruned triplet frees
E_i, aa[:, i] and B[i, :], so the record's `adapter_final` is Σ_matrices k(d_in + d_out) + kept·(2k + 1).
DeBERTaV3-base, 6 matrices × 12 layers, k = r = 8: 1,336,896 ≈ 0.72 % of its 184 M (the paper's figure).
Weight decay (`decay="trainer"`): A, B, E, aa, bb decayed, biases and LayerNorm not (HF Trainer's rule in the
reference's run_glue.py; its scripts use 0 to 0.1 by task).

Defaults (the reference's DeBERTaV3-base scripts): the six matrices of each block; r = 8 (lora_r, 5 of 8
scripts; 4 on CoLA, RTE, STS-B), target_r = 3 (target_rank, 4 of 8; 1–2 on the others), k = 8 (hard-coded
there, a config key here), α = 32 (16 on MNLI, QQP, SST-2), β1 = β2 = 0.85, γ = 0.1 (reg_orth_coef;
0.3 RTE, STS-B), dropout 0 (SVDLinear's default, set by no script); the schedule's t_init/t_final/delta_t are AdaLoRA's
defaults (the scripts use AdaLoRA's Table 8 steps unchanged).

Where this differs from the reference code (it does not run as shipped: the model glue and its Trainer are
missing, and compute_orth_regu reads `A` before assigning it):
- merge: the reference's eval()/train() fold (B·A) * E * (bb·aa) element-wise, whose shapes (r×d_in,
  r×1, d_out×r) do not broadcast; here the merge is the forward's own P diag(E) Q.
- regulariser: the reference adds, after the four factors of a layer have been seen, a "cross-plane" term
  for every later parameter of the model that computes (B·A)ᵀ(bb·aa)ᵀ from detached copies and then
  discards it, adding the stale ‖gram − I‖_F of the last factor again (and counting it in the mean); the
  paper's regulariser is the four terms above, so that is what is computed.
- the mask freezes at T − t_final (AdaLoRA's code here, equal to PEFT's); the reference takes the same mask (the
  scores of step T − t_final − 1, budget b_T) at T − t_final only when it is a multiple of delta_t, else one step
  later, and re-takes it after every later step.
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from harness.checks import require
from methods.adalora import AdaLora, AdaLoraConfig
from methods.base import role_targets
from methods.budget import TripletLinear
from methods.capabilities import Capabilities
from methods.frozen import trained_factory
from methods.lowrank import AdditiveLayer, scaled
from methods.registry import register


@dataclass
class Lora2Config(AdaLoraConfig):
    name: str = "lora2"
    targets: list[str] = role_targets("q", "k", "v", "o", "ffn_in", "ffn_out")
    r: Optional[int] = 8  # initial rank r0 per matrix (null: ceil(1.5·target_r), AdaLoRA's)
    target_r: int = 3
    k: int = 8  # inner rank of the LoRAs P = bb·aa and Q = B·A
    alpha: float = 32

    def __post_init__(self):
        super().__post_init__()
        require(self.k > 0, f"method.k must be a positive inner rank, got {self.k}")


class Lora2Linear(AdditiveLayer):
    """A frozen nn.Linear plus s · (bb·aa) diag(E) (B·A), with a mask of the triplets kept in the budget."""

    def __init__(self, base: nn.Linear, r: int, k: int, alpha: float, dropout: float):
        super().__init__(base, dropout)
        factory = trained_factory(base)
        self.lora_A = nn.Parameter(torch.empty(k, base.in_features, **factory))
        self.lora_E = nn.Parameter(torch.zeros(r, **factory))
        self.lora_B = nn.Parameter(torch.empty(r, k, **factory))
        self.lora_aa = nn.Parameter(torch.empty(k, r, **factory))
        self.lora_bb = nn.Parameter(torch.empty(base.out_features, k, **factory))
        for factor in (self.lora_A, self.lora_B, self.lora_aa, self.lora_bb):
            nn.init.normal_(factor, mean=0.0, std=0.02)
        self.register_buffer("kept", torch.ones(r, dtype=torch.bool, device=base.weight.device))
        self.scaling = alpha / (r + 1e-5)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        q = F.linear(F.linear(x, self.lora_A), self.lora_B) * self.lora_E
        return scaled(F.linear(F.linear(q, self.lora_aa), self.lora_bb), self.scaling)

    def delta_weight(self) -> torch.Tensor:
        p, q = self.lora_bb @ self.lora_aa, self.lora_B @ self.lora_A
        return self.scaling * (p @ (self.lora_E[:, None] * q))

    zero_pruned = TripletLinear.zero_pruned  # E_i of the triplets outside the mask set to zero

    def kept_params(self) -> int:
        k = self.lora_A.shape[0]
        return k * (self.base.in_features + self.base.out_features) + int(self.kept.sum()) * (2 * k + 1)

    def factor_grams(self) -> list[torch.Tensor]:
        """The four k×k Gram matrices the orthogonality regulariser pulls toward I."""
        A, B, aa, bb = self.lora_A, self.lora_B, self.lora_aa, self.lora_bb
        return [A @ A.T, B.T @ B, aa @ aa.T, bb.T @ bb]


@register
class Lora2(AdaLora):
    name = "lora2"
    Config = Lora2Config
    capabilities = Capabilities(step_hook=True)
    scored_factors = ("aa", "E", "B")

    def new_layer(self, base: nn.Linear) -> Lora2Linear:
        return Lora2Linear(base, self.cfg.r, self.cfg.k, self.cfg.alpha, self.cfg.dropout)

    def extra_loss(self):
        if self.cfg.orth_reg == 0:
            return None
        penalties = [
            torch.linalg.matrix_norm(gram - torch.eye(len(gram), dtype=gram.dtype, device=gram.device))
            for layer in self.layers.values()
            for gram in layer.factor_grams()
        ]
        return self.cfg.orth_reg * torch.stack(penalties).mean()

    def triplet_scores(self) -> dict[str, torch.Tensor]:
        def score(name: str, factor: str) -> torch.Tensor:
            return self.sensitivity[(name, factor)] * self.uncertainty[(name, factor)]

        # aa is k×r0 (triplet i = column i), B is r0×k (triplet i = row i)
        return {
            name: score(name, "E") + score(name, "aa").mean(dim=0) + score(name, "B").mean(dim=1)
            for name in self.layers
        }
