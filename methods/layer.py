"""The base of every adapter layer: a frozen layer (`base`) wrapped with a trained update, and merging.

A layer supplies `adapted(x)`, its forward before merging, and `merged_weight()`, the base weight that
gives the same outputs on its own. Merging is written once, here: W0 ← merged_weight(), after which
the layer is the base layer alone. Additive layers (methods/lowrank.py: y = base(x) + update(x))
supply only their ΔW.
"""

import torch
from torch import nn


class AdaptedLayer(nn.Module):
    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.merged = False

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output while the update is separate from the base weight."""
        raise NotImplementedError

    def merged_weight(self) -> torch.Tensor:
        """The base weight with the update folded in (same outputs as `adapted`, in the weight's dtype)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) if self.merged else self.adapted(x)

    def fold(self) -> None:
        """W0 ← merged_weight(), the update still in place (a method that restarts it calls this)."""
        with torch.no_grad():
            self.base.weight.copy_(self.merged_weight())

    def merge(self) -> None:
        """Fold the update into the base weight once; from then on the layer is the base layer."""
        if not self.merged:
            self.fold()
            self.merged = True
