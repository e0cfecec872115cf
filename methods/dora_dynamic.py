"""DoRA with dynamic rank distribution (Mao et al., ACL 2024, arXiv 2405.17357; not the
weight-decomposed DoRA of methods/dora.py). Checked against the official code
(MIkumikumi0116/DoRA, Finetune_Utils.py: Adaptive_Lora_Linear and its wrapper).

Each adapted matrix holds r0 rank-one components, all trained:
    ΔW = (α/r0) · B diag(c) A = (α/r0) · Σ_i c_i b_i a_iᵀ,   A: r0×d_in,  c: r0,  B: d_out×r0
c = 0 at init (ΔW = 0), A and B kaiming-uniform with a = 0 (A ~ U(±√(6/d_in)), B ~ U(±√(6/r0)));
the scale keeps the initial rank r0 = ceil(1.5·r_T) while components are pruned.

Importance of component i (no gradients): its share of its own matrix's update,
    s_i = ‖c_i b_i a_iᵀ‖_F / (‖B diag(c) A‖_F + 1e-8),   EMA ŝ_i ← β ŝ_i + (1−β) s_i, β = 0.9,
updated after every step until pruning ends (‖c_i b_i a_iᵀ‖_F = |c_i|·‖b_i‖·‖a_i‖ and
‖B diag(c) A‖²_F = Σ_ij (BᵀB)_ij c_i c_j (AAᵀ)_ij, so no d_out×d_in×r0 tensor is built).
Pruning window: steps t_s = int(0.15·T) to t_e = int(0.5·T), P = t_e − t_s. At window step
u = t − t_s with u % ΔT == 0 or u = P:
    k = int(N·(r0 − r_T)/r0·(u/P)³)   (N = n·r0 components over the n adapted matrices)
and the c_i whose EMA score is at or below the max(k, 1)-th smallest score over all matrices are
zeroed (at least one per event, as the official code). k is computed in integers, so the last
event prunes exactly N − n·r_T. After the window the last mask is frozen and pruned c_i are
re-zeroed after every step. Loss += η·R (the "dimensional equilibrium modulator"),
    R = Σ_matrices Σ_i (Var(a_i) + Var(b_i)) / (2·n·r0)     (unbiased variances)
while t ≤ t_e, then off. Steps are numbered from 1.
Params: r0(d_in + d_out + 1) per matrix while training; the record's `adapter_final` is
Σ over kept components of (d_in + d_out + 1) (the paper's count leaves out the n·r_T scalars c_i).
Weight decay (`decay="all"`): every trained tensor, the scalers c and the head's biases included,
one AdamW group as the official code (Finetune_And_Benchmark.py; weight_decay 0.01).
"""

from dataclasses import dataclass

import torch
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import role_targets
from methods.budget import BudgetConfig, BudgetMethod, TripletLinear
from methods.capabilities import Capabilities
from methods.registry import register


@dataclass
class DoraDynamicConfig(BudgetConfig):
    name: str = "dora_dynamic"
    targets: list[str] = role_targets("q", "k", "v", "o", "ffn_in", "ffn_out")
    alpha: float = 8
    dropout: float = 0.1
    beta: float = 0.9  # EMA of the component importance
    reg_weight: float = 0.1  # η, weight of the variance regulariser (off once pruning ends)
    prune_start: float = 0.15  # pruning window, as fractions of the total steps
    prune_end: float = 0.5
    delta_t: int = 100  # steps between two pruning events

    def __post_init__(self):
        super().__post_init__()
        require(0 <= self.beta < 1, f"method.beta must be in [0, 1), got {self.beta}")
        require(self.reg_weight >= 0, f"method.reg_weight must be >= 0, got {self.reg_weight}")
        require(
            0 <= self.prune_start < self.prune_end <= 1,
            "method.prune_start/prune_end must satisfy 0 <= start < end <= 1 (fractions of the total steps), got "
            f"{self.prune_start}, {self.prune_end}",
        )
        require(self.delta_t >= 1, f"method.delta_t must be >= 1 step, got {self.delta_t}")


class DynamicRankLinear(TripletLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__(base, r, alpha / r, dropout)
        nn.init.kaiming_uniform_(self.lora_A)
        nn.init.kaiming_uniform_(self.lora_B)

    def component_shares(self) -> torch.Tensor:
        """‖c_i b_i a_iᵀ‖_F / (‖B diag(c) A‖_F + 1e-8) for every component i."""
        with torch.no_grad():
            A, c, B = self.lora_A, self.lora_E, self.lora_B
            a_norms, b_norms = torch.linalg.vector_norm(A, dim=1), torch.linalg.vector_norm(B, dim=0)
            total_sq = ((B.T @ B) * (A @ A.T) * torch.outer(c, c)).sum().clamp_min(0)
            return c.abs() * a_norms * b_norms / (total_sq.sqrt() + 1e-8)


@register
class DoraDynamic(BudgetMethod):
    name = "dora_dynamic"
    Config = DoraDynamicConfig
    capabilities = Capabilities(step_hook=True, decay="all")

    def new_layer(self, base: nn.Linear) -> DynamicRankLinear:
        return DynamicRankLinear(base, self.cfg.r, self.cfg.alpha, self.cfg.dropout)

    def start(self, total_steps: int, optimizer=None) -> None:
        super().start(total_steps, optimizer)
        self.window_start = int(total_steps * self.cfg.prune_start)
        self.window = int(total_steps * self.cfg.prune_end) - self.window_start
        if self.window < 1:
            raise HarnessError(
                f"dora_dynamic: the pruning window {self.cfg.prune_start}–{self.cfg.prune_end} of {total_steps} steps "
                "holds no step; train longer or widen method.prune_start/prune_end"
            )
        self.completed_steps = 0
        self.scores = {name: torch.zeros_like(layer.lora_E, requires_grad=False) for name, layer in self.layers.items()}

    def checkpoint_state(self) -> dict:
        return {
            "completed_steps": self.completed_steps,
            "scores": {name: score.clone() for name, score in self.scores.items()},
        }

    def restore_checkpoint_state(self, state: dict) -> None:
        self.completed_steps = state["completed_steps"]
        for name, score in state["scores"].items():
            self.scores[name].copy_(score)

    def pruning_over(self, step: int) -> bool:
        return step - self.window_start > self.window

    def extra_loss(self):
        self.require_started()
        if self.cfg.reg_weight == 0 or self.pruning_over(self.completed_steps + 1):
            return None
        variance = sum(layer.lora_A.var(dim=1).sum() + layer.lora_B.var(dim=0).sum() for layer in self.layers.values())
        return self.cfg.reg_weight * variance / (2 * len(self.layers) * self.cfg.r)

    def prune_count(self, u: int) -> int:
        """k = int(N·(r0 − r_T)/r0·(u/P)³), in exact integer arithmetic."""
        r0, components = self.cfg.r, self.cfg.r * len(self.layers)
        return components * (r0 - self.cfg.target_r) * u**3 // (r0 * self.window**3)

    def on_step_end(self, step: int) -> None:
        self.require_started()
        self.completed_steps = step
        if self.pruning_over(step):
            self.hold_pruned()
            return
        beta = self.cfg.beta
        for name, layer in self.layers.items():
            self.scores[name].mul_(beta).add_((1 - beta) * layer.component_shares())  # shares carry no graph
        u = step - self.window_start
        if u >= 0 and (u % self.cfg.delta_t == 0 or u == self.window):
            self.prune_lowest(self.scores, max(self.prune_count(u), 1))
