"""AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning (Zhang et al. 2023,
arXiv 2303.10512, ICLR 2023).

SVD-shaped update per adapted matrix, all three factors trained:
    ΔW = B diag(E) A · α/(r_init + 1e-5),   A: r_init×d_in,  E: r_init,  B: d_out×r_init
E = 0, A and B ~ N(0, 0.02²) at init; the scale keeps the initial rank while triplets are pruned
(the official code and PEFT, 1e-5 included). Loss += γ·R with R the mean over all factor
matrices (every A and every B once) of ‖A Aᵀ − I‖_F and ‖BᵀB − I‖_F (the code's non-squared form).

Importance, every step until the allocation is frozen, per entry w of A, E, B:
    I = |w·∂L/∂w|,  Ī ← β1 Ī + (1−β1) I,  Ū ← β2 Ū + (1−β2)|I − Ī|,  s = Ī·Ū
triplet score S_i = s(E_i) + mean_j s(A_ij) + mean_j s(B_ji).
Global budget over the T optimizer steps (b0 = r_init·n, bT = target_r·n for n adapted matrices):
    b(t) = b0                                                  for t ≤ t_init
    b(t) = int(bT + (b0 − bT)·(1 − (t − t_init)/(T − t_final − t_init))³)   until T − t_final
masking every ΔT steps (t % ΔT == 0) by zeroing the E_i at or below the (b0 − b(t))-th smallest
S; at t = T − t_final the last mask (budget bT) is taken and frozen: pruned E_i are re-zeroed after
every later step. Masked triplets keep their gradients and may revive at the next allocation.
The allocation reads gradients, so it runs in `on_step_end` (after optimizer.step(), before
zero_grad()). t_init/t_final are steps, or fractions of T when below 1; t_init ≥ T − t_final is
an error. Params: r_init(d_in + d_out + 1) per matrix while training; the record's
`adapter_final` is Σ over kept triplets of (d_in + d_out + 1), the paper's budget.
Weight decay (`decay="trainer"`): A, E and B decayed, biases and LayerNorm not (HF Trainer's rule in
QingruZhang/AdaLoRA NLU/run_glue.py; its DeBERTaV3 scripts use 0 to 0.1 by task).
"""

from dataclasses import dataclass

import torch
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import role_targets
from methods.budget import BudgetConfig, BudgetMethod, TripletLinear, schedule_steps
from methods.capabilities import Capabilities
from methods.registry import register


@dataclass
class AdaLoraConfig(BudgetConfig):
    name: str = "adalora"
    targets: list[str] = role_targets("q", "k", "v", "o", "ffn_in", "ffn_out")
    alpha: float = 32
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg: float = 0.1  # γ, weight of the orthogonality regulariser
    t_init: float = 0.12  # steps before pruning starts (< 1: fraction of the total steps)
    t_final: float = 0.5  # steps after the budget is frozen (< 1: fraction of the total steps)
    delta_t: int = 10  # steps between two allocations

    def __post_init__(self):
        super().__post_init__()
        require(
            0 < self.beta1 < 1 and 0 < self.beta2 < 1,
            f"method.beta1/beta2 must be in (0, 1), got {self.beta1}, {self.beta2}",
        )
        require(self.orth_reg >= 0, f"method.orth_reg must be >= 0, got {self.orth_reg}")
        require(self.delta_t >= 1, f"method.delta_t must be >= 1 step, got {self.delta_t}")


@dataclass
class BudgetSchedule:
    """The cubic budget b(t) of AdaLoRA over `total` steps."""

    initial: int
    target: int
    t_init: int
    t_final: int
    total: int
    delta_t: int

    def freeze_step(self) -> int:
        return self.total - self.t_final

    def budget(self, step: int) -> int:
        if step <= self.t_init:
            return self.initial
        if step >= self.freeze_step():
            return self.target
        remaining = 1 - (step - self.t_init) / (self.total - self.t_final - self.t_init)
        return int((self.initial - self.target) * remaining**3 + self.target)

    def masks_at(self, step: int) -> bool:
        return self.t_init < step < self.freeze_step() and step % self.delta_t == 0


class AdaLoraLinear(TripletLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__(base, r, alpha / (r + 1e-5), dropout)
        nn.init.normal_(self.lora_A, mean=0.0, std=0.02)
        nn.init.normal_(self.lora_B, mean=0.0, std=0.02)


@register
class AdaLora(BudgetMethod):
    name = "adalora"
    Config = AdaLoraConfig
    capabilities = Capabilities(step_hook=True)
    scored_factors: tuple[str, ...] = ("A", "E", "B")  # the layer's lora_<factor> tensors whose entries are scored

    def new_layer(self, base: nn.Linear) -> AdaLoraLinear:
        return AdaLoraLinear(base, self.cfg.r, self.cfg.alpha, self.cfg.dropout)

    def start(self, total_steps: int, optimizer=None) -> None:
        super().start(total_steps, optimizer)
        cfg = self.cfg
        self.schedule = BudgetSchedule(
            self.initial_budget(),
            self.target_budget(),
            schedule_steps(cfg.t_init, total_steps, "t_init"),
            schedule_steps(cfg.t_final, total_steps, "t_final"),
            total_steps,
            cfg.delta_t,
        )
        if self.schedule.t_init >= self.schedule.freeze_step():
            raise HarnessError(
                f"{self.name}: no budgeting phase: t_init ({self.schedule.t_init} steps) must be < total steps "
                f"− t_final ({total_steps} − {self.schedule.t_final} = {self.schedule.freeze_step()}); lower "
                "method.t_init/t_final or train longer"
            )
        self.sensitivity: dict[tuple[str, str], torch.Tensor] = {}
        self.uncertainty: dict[tuple[str, str], torch.Tensor] = {}

    def checkpoint_state(self) -> dict:
        """The importance averages (sensitivity Ī and uncertainty Ū), keyed "<layer>|<factor>"."""
        return {
            kind: {f"{name}|{factor}": value.clone() for (name, factor), value in getattr(self, kind).items()}
            for kind in ("sensitivity", "uncertainty")
        }

    def restore_checkpoint_state(self, state: dict) -> None:
        for kind in ("sensitivity", "uncertainty"):
            setattr(self, kind, {tuple(key.rsplit("|", 1)): value for key, value in state[kind].items()})

    def extra_loss(self):
        if self.cfg.orth_reg == 0:
            return None
        penalties = []
        for layer in self.layers.values():
            for gram in (layer.lora_A @ layer.lora_A.T, layer.lora_B.T @ layer.lora_B):
                penalties.append(
                    torch.linalg.matrix_norm(gram - torch.eye(len(gram), dtype=gram.dtype, device=gram.device))
                )
        return self.cfg.orth_reg * torch.stack(penalties).mean()

    def update_importance(self) -> None:
        with torch.no_grad():
            beta1, beta2 = self.cfg.beta1, self.cfg.beta2
            for name, layer in self.layers.items():
                for factor in self.scored_factors:
                    param = getattr(layer, f"lora_{factor}")
                    key = (name, factor)
                    importance = (param * param.grad).abs() if param.grad is not None else torch.zeros_like(param)
                    sensitivity = beta1 * self.sensitivity.get(key, torch.zeros_like(param)) + (1 - beta1) * importance
                    uncertainty = (
                        beta2 * self.uncertainty.get(key, torch.zeros_like(param))
                        + (1 - beta2) * (importance - sensitivity).abs()
                    )
                    self.sensitivity[key], self.uncertainty[key] = sensitivity, uncertainty

    def triplet_scores(self) -> dict[str, torch.Tensor]:
        def score(name: str, factor: str) -> torch.Tensor:
            return self.sensitivity[(name, factor)] * self.uncertainty[(name, factor)]

        return {
            name: score(name, "E") + (score(name, "A").mean(dim=1) + score(name, "B").mean(dim=0))
            for name in self.layers
        }

    def mask_to_budget(self, budget: int) -> None:
        self.prune_lowest(self.triplet_scores(), self.initial_budget() - budget)

    def on_step_end(self, step: int) -> None:
        self.require_started()
        schedule = self.schedule
        if step < schedule.freeze_step():
            self.update_importance()
            if schedule.masks_at(step):
                self.mask_to_budget(schedule.budget(step))
        elif step == schedule.freeze_step():
            if not self.sensitivity:  # a run so short that the freeze step is the first: score on this step's gradients
                self.update_importance()
            self.mask_to_budget(schedule.target)
            self.sensitivity.clear()
            self.uncertainty.clear()
        else:
            self.hold_pruned()
