"""Pieces shared by the LoRA family: the rank/scale/dropout config, the rank check, and the
adapter layer that adds an update ΔW to a frozen layer (nn.Linear or nn.Conv2d: forward, ΔW for merging)."""

from dataclasses import dataclass

import torch
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import MethodConfig
from methods.frozen import frozen_weight
from methods.layer import AdaptedLayer


@dataclass
class LowRankConfig(MethodConfig):
    r: int = 8
    alpha: float = 8
    dropout: float = 0.0

    def __post_init__(self):
        require(self.r > 0, f"method.r must be a positive rank, got {self.r}")
        require(self.alpha > 0, f"method.alpha must be > 0, got {self.alpha}")
        require(0 <= self.dropout < 1, f"method.dropout must be in [0, 1), got {self.dropout}")


def scaled(update: torch.Tensor, scaling: float) -> torch.Tensor:
    """update · scaling, without a pass over the update when scaling is 1 (bitwise the same result)."""
    return update if scaling == 1 else update * scaling


def check_rank(method: str, name: str, r: int, d_in: int, d_out: int) -> None:
    if r > min(d_in, d_out):
        raise HarnessError(
            f"{method}: rank r={r} exceeds min(d_in, d_out)={min(d_in, d_out)} of layer '{name}' ({d_out}×{d_in})"
        )


class AdditiveLayer(AdaptedLayer):
    """y = base(x) + update(dropout(x)); merged: W0 ← W0 + ΔW and y = base(x).

    Subclasses define `update` (the forward of the update, on the dropped-out input) and
    `delta_weight` (the same update in the shape of the base weight, for merging)."""

    def __init__(self, base: nn.Module, dropout: float):
        super().__init__(base)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def update(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.update(self.dropout(x))

    def merged_weight(self) -> torch.Tensor:
        return frozen_weight(self.base) + self.delta_weight()
