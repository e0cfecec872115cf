"""LoRA-GA: Low-Rank Adaptation with Gradient Approximation (Wang, Yu, Li, NeurIPS 2024,
arXiv 2407.05000; reference code Outsider565/LoRA-GA).

LoRA (methods/lora.py) whose factors start in the direction of full fine-tuning's first step.
Before step 1, on `grad_batches` batches of the run's own training order (the model in train mode):
    G = mean over the batches of ∂L/∂W0                      (each adapted weight, d_out×d_in)
    G = U S Vᵀ (exact SVD in float64), direction ArB2r:    A0 = Vᵀ[:r],  B0 = U[:, r:2r]
    stable scale f = d_out^{1/4} / √γ:
      style "reference" (the paper's code): A0 ← f·A0, B0 ← f·B0
      style "peft" (PEFT's init_lora_weights="lora_ga"): B0 ← f·B0·diag(S[r:2r]), A0 unscaled
    W0 ← W0 − s·B0 A0, so the model's outputs are unchanged at step 0; s = α/√r (rsLoRA, the official
    LoRA-GA setting) or α/r.
Then training is plain LoRA: y = x W0ᵀ + b + s·x Aᵀ Bᵀ. Trainable params r·(d_in + d_out) per matrix, as
LoRA (2r ≤ min(d_in, d_out), since 2r singular pairs are split between A and B). Other directions:
ArBr (A: odd rows of Vᵀ, B: even columns of U) and A2rBr (A = Vᵀ[r:2r], B = U[:, :r]).
The reference and PEFT take the singular pairs from torch.svd_lowrank(q=4r, niter=4), a randomised
approximation of the same top-2r pairs (in float32); this one is exact and deterministic (the
differences to PEFT are measured in tests/methods/test_lora_ga.py). Singular vectors have arbitrary signs, so
one exact init differs from another by signs of A's rows and B's columns (same subspace, same scale).
The gradient pass counts into the run's cost (cost.init_seconds, inside train_seconds). On a bf16 base
(model.dtype) each batch's gradient comes in bf16, as autocast computes it in bf16 either way; the sum and the SVD
are float64, and W0 − s·B0 A0 is written back in bf16 (rounded). A quantized base is refused: W0 can be neither
differentiated nor rewritten exactly.
Saved state: A, B and the initial factors A0, B0 (buffers): loading them re-applies W0 − s·B0 A0 to
a freshly built model, so the round trip needs no data.
Weight decay (`decay="trainer"`): as LoRA (the reference trains through HF Trainer).
"""

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from harness.checks import require
from methods.base import LayerMethod, role_targets
from methods.capabilities import Capabilities
from methods.lora import LoraConfig, LoraLinear
from methods.lowrank import check_rank
from methods.registry import register

DIRECTIONS = ("ArB2r", "A2rBr", "ArBr")
STYLES = ("reference", "peft")


@dataclass
class LoraGaConfig(LoraConfig):
    name: str = "lora_ga"
    targets: list[str] = role_targets("q", "k", "v", "o", "ffn_in", "ffn_out")
    alpha: float = 16
    rslora: bool = True
    grad_batches: int = 8
    direction: str = "ArB2r"
    stable_gamma: float = 16
    style: str = (
        "reference"  # reference: A0, B0 both scaled by d_out^(1/4)/√γ; peft: B0 also carries S[r:2r] (PEFT's lora_ga)
    )

    def __post_init__(self):
        super().__post_init__()
        require(self.grad_batches > 0, f"method.grad_batches must be > 0, got {self.grad_batches}")
        require(
            self.direction in DIRECTIONS,
            f"method.direction must be one of {', '.join(DIRECTIONS)}, got '{self.direction}'",
        )
        require(self.style in STYLES, f"method.style must be one of {', '.join(STYLES)}, got '{self.style}'")
        require(self.stable_gamma > 0, f"method.stable_gamma must be > 0, got {self.stable_gamma}")


def split_pairs(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, r: int, direction: str):
    """(rows of Vᵀ for A, columns of U for B, their singular values) by the direction's rule."""
    a_index, b_index = {
        "ArB2r": (range(0, r), range(r, 2 * r)),
        "A2rBr": (range(r, 2 * r), range(0, r)),
        "ArBr": (range(1, 2 * r, 2), range(0, 2 * r, 2)),
    }[direction]
    return vh[list(a_index)], u[:, list(b_index)], s[list(b_index)]


def gradient_factors(
    grad: torch.Tensor, r: int, direction: str, style: str, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A0 (r×d_in) and B0 (d_out×r) from the weight's gradient, in float64."""
    u, s, vh = torch.linalg.svd(grad.double(), full_matrices=False)
    a, b, s_b = split_pairs(u, s, vh, r, direction)
    factor = grad.shape[0] ** 0.25 / math.sqrt(gamma)
    if style == "peft":
        return a, b * s_b * factor
    return a * factor, b * factor


class LoraGaLinear(LoraLinear):
    """LoRA whose initial factors A0, B0 (buffers, zero until `initialise`) are offset from W0."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__(base, r, alpha, dropout, rslora)
        self.register_buffer("init_A", torch.zeros_like(self.lora_A))
        self.register_buffer("init_B", torch.zeros_like(self.lora_B))

    @torch.no_grad()
    def start_from(self, a0: torch.Tensor, b0: torch.Tensor) -> None:
        """A = A0, B = B0 and W0 ← W0 − s·B0 A0 (any previous offset taken back first)."""
        weight = self.base.weight
        weight += (self.scaling * (self.init_B.double() @ self.init_A.double())).to(weight.dtype)
        self.init_A.copy_(a0), self.init_B.copy_(b0)
        weight -= (self.scaling * (self.init_B.double() @ self.init_A.double())).to(weight.dtype)
        self.lora_A.copy_(a0), self.lora_B.copy_(b0)


@register
class LoraGa(LayerMethod):
    name = "lora_ga"
    Config = LoraGaConfig
    # it differentiates W0 and writes W0 − s·B0 A0 into it before step 1: a quantized base can do neither exactly
    capabilities = Capabilities(needs_data_at_init=True, lora_pairs=True, quantized_base_ok=False)

    @property
    def init_batches(self) -> int:
        return self.cfg.grad_batches

    def make_layer(self, name: str, base: nn.Linear) -> nn.Module:
        check_rank(self.name, name, 2 * self.cfg.r, base.in_features, base.out_features)
        return LoraGaLinear(base, self.cfg.r, self.cfg.alpha, self.cfg.dropout, self.cfg.rslora)

    def initialise(self, loss_of: Callable[[dict], torch.Tensor], batches: Iterable[dict]) -> None:
        """G per adapted weight (the mean over the batches of the task loss's gradient), then A0, B0 and
        the offset W0. Only the adapted weights get gradients; no parameter's .grad is touched."""
        weights = [layer.base.weight for layer in self.layers.values()]
        for weight in weights:
            weight.requires_grad_(True)
        sums, count = [torch.zeros_like(w, dtype=torch.float64) for w in weights], 0
        try:
            self.train_mode()
            for batch in batches:
                for total, grad in zip(sums, torch.autograd.grad(loss_of(batch), weights)):
                    total += grad
                count += 1
        finally:
            for weight in weights:
                weight.requires_grad_(False)
            self.model.eval()
        for layer, total in zip(self.layers.values(), sums):
            a0, b0 = gradient_factors(
                total / count, self.cfg.r, self.cfg.direction, self.cfg.style, self.cfg.stable_gamma
            )
            layer.start_from(a0.to(layer.lora_A.dtype), b0.to(layer.lora_B.dtype))

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **super().learned_tensors(),
            **{
                f"{name}.{buffer}": getattr(layer, buffer)
                for name, layer in self.layers.items()
                for buffer in ("init_A", "init_B")
            },
        }

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """The trained factors, and W0 offset by the saved A0, B0 (the fresh model's own offset undone)."""
        for name, layer in self.layers.items():
            layer.start_from(state[f"{name}.init_A"], state[f"{name}.init_B"])
        super().load_trainable_state_dict(state)
