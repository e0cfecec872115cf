"""RAC-LoRA: Randomized Asymmetric Chain of LoRA (Malinovsky et al. 2024, arXiv 2410.08305), with its
two neighbours from the same paper as options. Checked against the reference code
(hammoudhasan/RACLora, rac_lora_mnist/models/lit_mnist_lora.py and callbacks.py).

A chain of T links (`links`) over the run's steps, on LoRA's update ΔW = s·B A (s = α/r; the
reference multiplies by a raw α, the same at its r = 1). At the start of every link one factor is a
fresh frozen Gaussian N(0, init_std²) (`frozen: A` or `frozen: B`) and the trained one is zero, so the
link starts at ΔW = 0; at the end of the link W0 ← W0 + s·B A and the next link starts. Links split
the total steps evenly (boundaries at round(k·T_steps/T), k = 1..T−1).
- `frozen: A|B`, `links: T > 1`: RAC-LoRA. Trainable r·d_out (A frozen) or r·d_in (B frozen) per matrix.
- `frozen: A|B`, `links: 1`: asymmetric LoRA (one random frozen factor, no chain).
- `frozen: none`, `links: T`: Chain of LoRA (both factors trained; each link re-initialised as LoRA:
  A kaiming-uniform(a=√5), B = 0, or with `gaussian: A|B` that factor N(0, init_std²) and the other
  zero, as in the paper's MNIST table; `links: 1` is then LoRA with that init). Trainable r·(d_in + d_out).
The random factors come from a generator seeded with the run's seed, so a seed reproduces them.
The optimizer's state is kept across links, as in the reference (its AdamW is created once and the
factors change in place); `reset_optimizer: true` clears the adapter's moments at every boundary.
The final merge folds the last link as LoRA does.
Weight decay (`decay="all"`): every trained tensor (the trained factor and the head), as the
reference's AdamW over all trainable parameters (configure_optimizers; torch's default 0.01).
Saved state: besides the trained factor, each adapted layer's base weight (the folded links) and
its frozen factor, so that a reload reproduces the function.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from harness.checks import require
from harness.errors import HarnessError
from methods.base import role_targets
from methods.capabilities import Capabilities
from methods.lora import Lora, LoraConfig, LoraLinear
from methods.lowrank import check_rank
from methods.registry import register

FROZEN = ("A", "B", "none")


@dataclass
class RacLoraConfig(LoraConfig):
    name: str = "rac_lora"
    targets: list[str] = role_targets("q", "v")
    frozen: str = "A"  # A | B | none
    gaussian: Optional[str] = None  # frozen: none only: the factor drawn N(0, init_std²) each link (null: LoRA's init)
    links: int = 4
    init_std: float = 1.0  # std of the frozen Gaussian factor
    reset_optimizer: bool = False

    def __post_init__(self):
        super().__post_init__()
        require(self.frozen in FROZEN, f"method.frozen must be one of {', '.join(FROZEN)}, got '{self.frozen}'")
        require(
            self.gaussian in (None, "A", "B") and (self.gaussian is None or self.frozen == "none"),
            "method.gaussian (A, B or null) chooses the Gaussian factor of a chain with frozen: none, got "
            f"'{self.gaussian}' with frozen: {self.frozen}",
        )
        require(self.links >= 1, f"method.links must be >= 1, got {self.links}")
        require(self.init_std > 0, f"method.init_std must be > 0, got {self.init_std}")
        require(not self.rslora, "method.rslora is not used by rac_lora (scale α/r)")


class ChainLinear(LoraLinear):
    """A LoRA layer whose update can be folded into the base weight and restarted."""

    def __init__(
        self,
        base: nn.Linear,
        r: int,
        alpha: float,
        dropout: float,
        frozen: str,
        gaussian: Optional[str],
        init_std: float,
        generator: torch.Generator,
    ):
        super().__init__(base, r, alpha, dropout, rslora=False)
        self.init_std, self.generator = init_std, generator
        self.random = frozen if frozen != "none" else gaussian  # the factor drawn at each link, or None
        if frozen != "none":
            getattr(self, f"lora_{frozen}").requires_grad_(False)
        self.restart()

    def restart(self) -> None:
        """Start a link: a fresh Gaussian factor and a zero other one (or LoRA's init: kaiming A, zero B)."""
        with torch.no_grad():
            if self.random is None:
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=self.generator)
                self.lora_B.zero_()
                return
            random = getattr(self, f"lora_{self.random}")
            draw = torch.randn(random.shape, generator=self.generator, dtype=random.dtype) * self.init_std
            random.copy_(draw.to(random.device))
            getattr(self, "lora_B" if self.random == "A" else "lora_A").zero_()

    def end_link(self) -> None:
        """W0 ← W0 + s·B A, then restart."""
        self.fold()
        self.restart()


@register
class RacLora(Lora):
    name = "rac_lora"
    Config = RacLoraConfig
    # each link is folded into W0 and its frozen factor redrawn, in on_step_end
    capabilities = Capabilities(step_hook=True, rewrites_frozen=True, decay="all")

    def apply(self) -> None:
        self.generator = torch.Generator().manual_seed(torch.initial_seed())
        super().apply()

    def make_layer(self, name: str, base: nn.Linear) -> ChainLinear:
        cfg = self.cfg
        check_rank(self.name, name, cfg.r, base.in_features, base.out_features)
        return ChainLinear(base, cfg.r, cfg.alpha, cfg.dropout, cfg.frozen, cfg.gaussian, cfg.init_std, self.generator)

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        """Each adapted layer's base weight (it holds the folded links) and, with a frozen factor,
        that factor (redrawn at every link), besides the base method's tensors."""
        tensors = super().learned_tensors()
        for name, layer in self.layers.items():
            tensors[f"{name}.base.weight"] = layer.base.weight
            if self.cfg.frozen != "none":
                tensors[f"{name}.lora_{self.cfg.frozen}"] = getattr(layer, f"lora_{self.cfg.frozen}")
        return tensors

    def checkpoint_state(self) -> dict:
        """The generator of the frozen factors' redraws (the chain's position follows from the step)."""
        return {"generator": self.generator.get_state()}

    def restore_checkpoint_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def start(self, total_steps: int, optimizer=None) -> None:
        super().start(total_steps, optimizer)
        links = self.cfg.links
        if links > total_steps:
            raise HarnessError(f"rac_lora: {links} links need at least as many steps; the run has {total_steps}")
        self.boundaries = {round(k * total_steps / links) for k in range(1, links)}

    def on_step_end(self, step: int) -> None:
        if step not in self.boundaries:
            return
        for layer in self.layers.values():
            layer.end_link()
        if self.cfg.reset_optimizer and self.optimizer is not None:
            for param in self.adapter_parameters():
                self.optimizer.state.pop(param, None)
