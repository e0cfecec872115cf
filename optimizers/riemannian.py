"""Riemannian-preconditioned LoRA (Zhang & Pilanci, "Riemannian Preconditioned LoRA for Fine-Tuning Foundation
Models", ICML 2024, arXiv 2402.02347): before each AdamW step, every LoRA pair's gradients are scaled by an r×r
preconditioner of the other factor,
    g_A ← (BᵀB + δI)⁻¹ g_A,        g_B ← g_B (AAᵀ + δI)⁻¹,
the gradient in the quotient geometry of the low-rank product BA (δ = `reg`, damping for a rank-deficient factor:
B = 0 at the start gives g_A/δ). Both from the factors before the step; computed in at least float32, written
back in the gradient's dtype. As PEFT's `create_riemannian_optimizer` (peft/optimizers/riemannian.py), which wraps
AdamW the same way after the loop's clipping; here over the method's parameter groups (the head at
train.head_lr, the method's weight-decay policy; PEFT: one group at lr). 2-D factors only: a LoRA on convolutions
is a one-line error. Other trained tensors (DoRA's magnitude, the head) step as AdamW's.
State: AdamW's; the preconditioners are recomputed each step (two r×r solves per pair).
"""

from dataclasses import dataclass

import torch

from harness.checks import require
from harness.errors import HarnessError
from optimizers.base import AdamConfig, OptimizerRule
from optimizers.registry import register


@dataclass
class RiemannianConfig(AdamConfig):
    name: str = "riemannian"
    reg: float = 1e-2  # δ, PEFT's default

    def __post_init__(self):
        super().__post_init__()
        require(self.reg > 0, f"optimizer.reg must be > 0 (the damping δ of (BᵀB + δI)⁻¹), got {self.reg}")


def linear_pairs(method, optimizer: str) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter, float]]:
    """(A, B, s) of the method's LoRA pairs, each a pair of matrices; a convolution's is a one-line error."""
    pairs = method.lora_pairs()
    convolutions = [name for name, a, b, _ in pairs if a.ndim != 2 or b.ndim != 2]
    if convolutions:
        raise HarnessError(
            f"optimizer '{optimizer}' preconditions matrix factors; the LoRA of '{convolutions[0]}' is a convolution's "
            f"({len(convolutions)} such layers): use it on Linear targets, or optimizer=adamw or loraplus"
        )
    return [(a, b, scaling) for _, a, b, scaling in pairs]


def damped(gram: torch.Tensor, reg: float) -> torch.Tensor:
    return gram + reg * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)


def times_inverse(grad: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """grad · gram⁻¹ for a symmetric gram: (gram⁻¹ gradᵀ)ᵀ, one solve."""
    return torch.linalg.solve(gram, grad.T).T


class RiemannianAdamW(torch.optim.AdamW):
    """AdamW whose step first preconditions each pair's gradients."""

    def __init__(self, groups: list[dict], pairs, reg: float, **adam):
        super().__init__(groups, **adam)
        self.pairs, self.reg = pairs, reg

    def step(self, closure=None):  # on detached factors and on .grad: nothing for autograd to record
        require(closure is None, "the Riemannian-preconditioned optimizer takes no closure")
        for a, b, _ in self.pairs:
            dtype = torch.promote_types(a.dtype, torch.float32)
            factor_a, factor_b = a.detach().to(dtype), b.detach().to(dtype)
            if a.grad is not None:
                a.grad.copy_(torch.linalg.solve(damped(factor_b.T @ factor_b, self.reg), a.grad.to(dtype)))
            if b.grad is not None:
                b.grad.copy_(times_inverse(b.grad.to(dtype), damped(factor_a @ factor_a.T, self.reg)))
        return super().step()


@register
class Riemannian(OptimizerRule):
    name = "riemannian"
    Config = RiemannianConfig
    needs_lora_pairs = True

    def build(self, method, train) -> torch.optim.Optimizer:
        pairs = linear_pairs(method, self.name)
        groups = method.param_groups(train)
        return RiemannianAdamW(groups, pairs, self.cfg.reg, betas=tuple(self.cfg.betas), eps=self.cfg.eps)
