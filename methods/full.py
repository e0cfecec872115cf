"""Full fine-tuning: every parameter of the backbone and the head is trained.

Trainable params: all backbone params + head. The reference point every PEFT method is compared to.
"""
from methods.base import Method
from methods.registry import register


@register
class FullFineTuning(Method):
    name = "full"

    def apply(self) -> None:
        for param in self.model.parameters():
            param.requires_grad_(True)
