"""LoRA-FA (Zhang et al., "LoRA-FA: Memory-efficient Low-rank Adaptation for Large Language Models Fine-tuning",
arXiv 2308.03303; the optimizer of Wang et al., "LoRA-FA: Efficient and Effective Low Rank Representation
Fine-tuning", PEFT's `create_lorafa_optimizer`): each LoRA pair's A is frozen at its initial value (so the backward
keeps only A·x, r numbers per token, not x) and B's gradient is replaced by the one closest to full fine-tuning's,
    g_B ← (1/s²)·g_B·(AAᵀ + δI)⁻¹        (s the pair's LoRA scale, δ = 1e-8 as PEFT),
then every trained tensor steps by the AdamW of transformers ("adamw-hf", PEFT's LoraFAOptimizer): m ← β₁m +
(1−β₁)g, v ← β₂v + (1−β₂)g², p ← p − lr·√(1−β₂ᵗ)/(1−β₁ᵗ)·m/(√v + ε), then p ← p − lr·wd·p (decay after the step;
torch's AdamW decays before it and puts ε inside the bias correction).
Trainable params: the B factors and the head, r·d_out per adapted matrix (half of LoRA's for square ones); A is
held fixed (methods/base.py `hold_fixed`: saved and checksummed with the run's state, not counted as trained).
Where it differs from PEFT: groups are the method's (head at train.head_lr, the method's weight-decay policy;
PEFT: one group at lr, every tensor decayed), and the projection runs at the factors' precision, at least float32
(PEFT multiplies under bfloat16 autocast wherever bfloat16 is available, CPUs included).
tests/optimizers/test_lorafa.py holds the trained factors to PEFT's on PEFT's LoRA model in float64.
State: m and v per trained tensor (for B: its projected gradient's).
"""

import math
from dataclasses import dataclass, field

import torch

from harness.checks import require
from optimizers.base import AdamConfig, OptimizerRule
from optimizers.registry import register
from optimizers.riemannian import damped, linear_pairs, times_inverse

DELTA = 1e-8  # PEFT's damping of AAᵀ before its inverse


@dataclass
class LoraFaConfig(AdamConfig):
    name: str = "lorafa"
    eps: float = 1e-6  # LoraFAOptimizer's (transformers' AdamW) default
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


class LoraFaAdamW(torch.optim.Optimizer):
    """transformers' AdamW (bias-corrected, decay after the step) with B's gradients projected."""

    def __init__(self, groups: list[dict], projected: dict[int, tuple[torch.Tensor, float]], betas, eps: float):
        super().__init__(groups, {"betas": tuple(betas), "eps": eps, "weight_decay": 0.0})
        self.projected = projected  # id(B) -> (A, s)

    def projected_gradient(self, tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in self.projected:
            return tensor.grad
        a, scaling = self.projected[id(tensor)]
        dtype = torch.promote_types(a.dtype, torch.float32)
        factor = a.detach().to(dtype)
        grad = times_inverse(tensor.grad.to(dtype), damped(factor @ factor.T, DELTA)) / scaling**2
        return grad.to(tensor.grad.dtype)

    def step(self, closure=None):
        require(closure is None, "the LoRA-FA optimizer takes no closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for tensor in group["params"]:
                if tensor.grad is None:
                    continue
                grad = self.projected_gradient(tensor)
                state = self.state[tensor]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(tensor), exp_avg_sq=torch.zeros_like(tensor))
                state["step"] += 1
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1.0 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                step_size = group["lr"] * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                with torch.no_grad():  # in place on a trained leaf
                    tensor.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]), value=-step_size)
                    if group["weight_decay"] > 0:
                        tensor.add_(tensor, alpha=-group["lr"] * group["weight_decay"])


@register
class LoraFa(OptimizerRule):
    name = "lorafa"
    Config = LoraFaConfig
    needs_lora_pairs = True

    def prepare(self, method) -> None:
        linear_pairs(method, self.name)  # matrices only: refused before anything is counted
        method.hold_fixed({f"{name}.lora_A": a for name, a, _, _ in method.lora_pairs()})

    def build(self, method, train) -> torch.optim.Optimizer:
        projected = {id(b): (a, scaling) for a, b, scaling in linear_pairs(method, self.name)}
        return LoraFaAdamW(method.param_groups(train), projected, self.cfg.betas, self.cfg.eps)
