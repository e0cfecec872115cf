"""The optimizer interface: what an `optimizer=` choice gives the training loop (docs/design.md).

An optimizer rule is one module with a config dataclass (its section, `optimizer.*`, is part of the run key
unless it is the default AdamW: harness/store/identity.py) and a class that

- `prepare(method)`: changes what the method trains before its counts are taken (LoRA-FA freezes A);
- `build(method, train)`: the torch optimizer over the method's parameter groups (`method.param_groups`: the
  adapter at train.lr, the head at train.head_lr, each split by the method's weight-decay policy).

A rule that needs LoRA's factor pairs (`needs_lora_pairs`) applies only to the methods whose capabilities
declare them (`lora_pairs`); any other method is a one-line error before the model loads (optimizers/registry.py).
The loop then steps the optimizer as it steps AdamW (harness/engine/train.py): unscale, clip, `step()`, schedule.
"""

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from harness.checks import require


@dataclass
class OptimizerConfig:
    """Keys every optimizer has."""

    name: str = "adamw"


@dataclass
class AdamConfig(OptimizerConfig):
    """Adam's moments (torch.optim.AdamW's defaults)."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self):
        require(
            len(self.betas) == 2 and all(0 <= beta < 1 for beta in self.betas),
            f"optimizer.betas must be two numbers in [0, 1), got {self.betas}",
        )
        require(self.eps >= 0, f"optimizer.eps must be >= 0, got {self.eps}")


class OptimizerRule:
    """Base class: builds nothing; subclasses give `build`."""

    name: ClassVar[str]
    Config: ClassVar[type] = OptimizerConfig
    needs_lora_pairs: ClassVar[bool] = False

    def __init__(self, cfg: OptimizerConfig):
        self.cfg = cfg

    def prepare(self, method) -> None:
        """Called once the method is applied, before its counts are taken."""

    def build(self, method, train) -> torch.optim.Optimizer:
        raise NotImplementedError
