"""Model projection (Ewen, Diaz-Rodriguez, Ramsay; arXiv 2602.06245, 2026) for convolutional networks.

Every targeted convolution keeps its pretrained filters frozen and learns one scalar gate per
(output channel, input channel) pair, i.e. a projection of the pretrained filter bank:
    W'[o, i, :, :] = γ[o, i] · W[o, i, :, :],   γ ∈ R^{C_out × C_in/groups},   γ = 1 at init
so outputs are unchanged at step 0. The convolution runs through the base layer's own forward with
W' (TF-style "same" padding kept). Merge: W ← W ⊙ γ. Trainable params: C_out·C_in/groups per conv
(a depthwise conv gets C_out gates; a 1×1 conv gets as many gates as it has weights, so on 1×1
convolutions the method trains as many numbers as full fine-tuning of those layers would). The task
head is trained; BatchNorm affine parameters stay frozen unless `train_bn: true` (then they count
as adapter parameters). Default targets: every Conv2d of the backbone.
Weight decay (`decay="trainer"`, the gates exempt): the gates are never decayed (they start at 1 and
decay would pull them, and the filters they scale, toward 0; there is no public reference code), nor
are BatchNorm parameters and biases; the head's weight is (HF Trainer's rule).
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from methods.base import LayerMethod, MethodConfig
from methods.capabilities import Capabilities
from methods.frozen import trained_factory
from methods.inject import is_under, run_with
from methods.layer import AdaptedLayer
from methods.registry import register


@dataclass
class ProjectionConfig(MethodConfig):
    name: str = "projection"
    targets: list[str] = field(default_factory=lambda: ["re:.*"])  # every Conv2d of the backbone
    train_bn: bool = False  # true: also train BatchNorm weight and bias


class GatedConv2d(AdaptedLayer):
    def __init__(self, base: nn.Conv2d):
        super().__init__(base)
        self.gates = nn.Parameter(
            torch.ones(base.out_channels, base.in_channels // base.groups, **trained_factory(base))
        )

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight * self.gates[:, :, None, None]

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        return run_with(self.base, x, weight=self.merged_weight())


@register
class Projection(LayerMethod):
    name = "projection"
    Config = ProjectionConfig
    capabilities = Capabilities(layer_kinds=(nn.Conv2d,))

    def make_layer(self, name: str, base: nn.Conv2d) -> GatedConv2d:
        return GatedConv2d(base)

    def undecayed(self) -> set[str]:
        return super().undecayed() | {f"{name}.gates" for name in self.layers}

    def apply(self) -> None:
        super().apply()
        if self.cfg.train_bn:
            for name, module in self.model.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not is_under(name, self.head_modules):
                    for param in module.parameters():
                        param.requires_grad_(True)
