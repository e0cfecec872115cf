"""Pieces shared by the rank-budget methods (AdaLoRA, dynamic-rank DoRA).

Both write each adapted matrix's update as a sum of r rank-one components,
    ΔW = s · B diag(E) A = s · Σ_i E_i b_i a_iᵀ,   A: r×d_in,  E: r,  B: d_out×r
(AdaLoRA's P Λ Q; dynamic DoRA's B diag(c) A), and keep a global budget of components across all
adapted matrices by zeroing the E_i of the lowest-scored ones (a kthvalue threshold over every
component of every matrix). A pruned E_i is held at zero once the allocation is frozen.
Parameter count of a kept component: d_in + d_out + 1 (a_i, b_i and E_i).
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import LayerMethod
from methods.frozen import trained_factory
from methods.lowrank import AdditiveLayer, LowRankConfig, check_rank, scaled


@dataclass
class BudgetConfig(LowRankConfig):
    r: Optional[int] = None  # initial rank per matrix; null: ceil(1.5·target_r), both papers' b0 = 1.5·bT
    target_r: int = 2  # average rank per matrix after pruning (bT = target_r · matrices)

    def __post_init__(self):
        require(self.target_r > 0, f"method.target_r must be a positive rank, got {self.target_r}")
        if self.r is None:
            self.r = math.ceil(1.5 * self.target_r)
        super().__post_init__()
        require(
            self.target_r <= self.r,
            f"method.target_r ({self.target_r}) must be <= the initial rank method.r ({self.r})",
        )


def schedule_steps(value: float, total_steps: int, key: str) -> int:
    """A point of a schedule given either in steps (a whole number >= 1) or as a fraction of the
    total steps (a value in [0, 1))."""
    if value < 0 or (value >= 1 and value != int(value)):
        raise HarnessError(
            f"method.{key} must be a whole number of steps or a fraction in [0, 1) of the total steps, got {value}"
        )
    return int(value * total_steps) if value < 1 else int(value)


class TripletLinear(AdditiveLayer):
    """A frozen nn.Linear plus s · B diag(E) A, with a mask of the components kept in the budget."""

    def __init__(self, base: nn.Linear, r: int, scaling: float, dropout: float):
        super().__init__(base, dropout)
        factory = trained_factory(base)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_E = nn.Parameter(torch.zeros(r, **factory))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **factory))
        self.register_buffer("kept", torch.ones(r, dtype=torch.bool, device=base.weight.device))
        self.scaling = scaling

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ (self.lora_E[:, None] * self.lora_A))

    def update(self, x: torch.Tensor) -> torch.Tensor:
        return scaled(F.linear(F.linear(x, self.lora_A) * self.lora_E, self.lora_B), self.scaling)

    def zero_pruned(self) -> None:
        with torch.no_grad():
            self.lora_E.masked_fill_(~self.kept, 0.0)

    def kept_params(self) -> int:
        return int(self.kept.sum()) * (self.base.in_features + self.base.out_features + 1)


class BudgetMethod(LayerMethod):
    """A LayerMethod of TripletLinear layers under a global component budget. Subclasses build the
    layers (`new_layer`), score components and call `prune_lowest` on their schedule."""

    def new_layer(self, base: nn.Linear) -> TripletLinear:
        raise NotImplementedError

    def make_layer(self, name: str, base: nn.Linear) -> TripletLinear:
        check_rank(self.name, name, self.cfg.r, base.in_features, base.out_features)
        return self.new_layer(base)

    def initial_budget(self) -> int:
        return self.cfg.r * len(self.layers)

    def target_budget(self) -> int:
        return self.cfg.target_r * len(self.layers)

    def require_started(self) -> int:
        if self.total_steps is None:
            raise HarnessError(f"{self.name}: start(total_steps) must be called before training steps")
        return self.total_steps

    def prune_lowest(self, scores: dict[str, torch.Tensor], count: int) -> None:
        """Zero the components scoring at or below the `count`-th smallest score over all layers;
        the others are kept (count <= 0 keeps every component)."""
        with torch.no_grad():
            if count <= 0:
                for layer in self.layers.values():
                    layer.kept.fill_(True)
                return
            threshold = torch.kthvalue(torch.cat([scores[name] for name in self.layers]), count).values
            for name, layer in self.layers.items():
                layer.kept.copy_(scores[name] > threshold)
                layer.zero_pruned()

    def hold_pruned(self) -> None:
        for layer in self.layers.values():
            layer.zero_pruned()

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        """The kept-component masks besides the base method's tensors (they decide the final count
        and which components are held at zero)."""
        return {**super().learned_tensors(), **{f"{name}.kept": layer.kept for name, layer in self.layers.items()}}

    def allocation(self) -> dict[str, int]:
        return {name: int(layer.kept.sum()) for name, layer in self.layers.items()}

    def param_counts(self) -> dict[str, int]:
        counts = super().param_counts()
        counts["adapter"] = sum(layer.kept_params() for layer in self.layers.values())
        counts["trainable"] = counts["adapter"] + counts["head"]
        return counts
