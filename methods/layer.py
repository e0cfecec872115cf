"""The base of every adapter layer: a frozen layer (`base`) wrapped with a trained update, and merging.

A layer supplies `adapted(x)`, its forward before merging, and `merged_weight()`, the base weight that
gives the same outputs on its own. Merging is written once, here: W0 ← merged_weight(), after which
the layer is the base layer alone. Additive layers (methods/lowrank.py: y = base(x) + update(x))
supply only their ΔW.
"""

import torch
from torch import nn

from methods.frozen import is_quantized


def dequantised_linear(quantized: nn.Module, weight: torch.Tensor) -> nn.Linear:
    """A plain linear layer with `weight` (a merged weight: fp32, as methods/frozen.py de-quantises W0) and
    `quantized`'s bias in fp32, frozen, in place of a quantized one."""
    linear = nn.Linear(quantized.in_features, quantized.out_features, bias=quantized.bias is not None)
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if quantized.bias is not None:
        linear.bias = nn.Parameter(quantized.bias.detach().float(), requires_grad=False)
    return linear.to(weight.device)


class AdaptedLayer(nn.Module):
    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.merged = False

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output while the update is separate from the base weight."""
        raise NotImplementedError

    def merged_weight(self) -> torch.Tensor:
        """The base weight with the update folded in (same outputs as `adapted`; full precision, `fold` stores it as
        the base holds its weight)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) if self.merged else self.adapted(x)

    def fold(self) -> None:
        """W0 ← merged_weight(), the update still in place (a method that restarts it calls this). A quantized base
        cannot hold the merged weight exactly: its layer becomes a plain fp32 linear layer holding it (de-quantised)."""
        with torch.no_grad():
            self.write_base_weight(self.merged_weight())

    def write_base_weight(self, weight: torch.Tensor) -> None:
        """W0 ← `weight` in the base's storage; a quantized base is replaced by a plain fp32 layer holding it."""
        if is_quantized(self.base):
            self.base = dequantised_linear(self.base, weight)
        else:
            self.base.weight.copy_(weight)

    def merge(self) -> None:
        """Fold the update into the base weight once; from then on the layer is the base layer."""
        if not self.merged:
            self.fold()
            self.merged = True
