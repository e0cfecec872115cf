"""Full fine-tuning: every parameter of the backbone and the head is trained.

Trainable params: all backbone params + head. The reference point every PEFT method is compared to.
Weight decay (`decay="trainer"`): every weight, biases and normalisation layers (LayerNorm,
BatchNorm) excepted, HF Trainer's rule as in the fine-tuning baselines of the LoRA paper's code.
Saved state: every parameter, and the running statistics of the (trained) BatchNorm layers.
"""

from methods.base import Method
from methods.capabilities import Capabilities
from methods.registry import register


@register
class FullFineTuning(Method):
    name = "full"
    capabilities = Capabilities(layer_kinds=(), trains_backbone=True)

    def apply(self) -> None:
        for param in self.model.parameters():
            param.requires_grad_(True)
