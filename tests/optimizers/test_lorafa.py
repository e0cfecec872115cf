"""LoRA-FA: A held fixed (not counted as trained, still saved), B's gradient projected as the paper's formula
computed here, and the same factors as PEFT's create_lorafa_optimizer after training."""

import math

import peft.optimizers
import pytest
import torch

from tests.optimizers.twins import (
    ALPHA,
    R,
    factors,
    largest_factor_difference,
    largest_move,
    loss_of,
    ours_optimizer,
    train,
    twins,
)

LR, DECAY = 1e-3, 0.1


def test_a_is_held_fixed_not_counted_but_kept_with_the_learned_state():
    ours, _ = twins(head_trained=True)
    trained_before = ours.param_counts()["adapter"]
    ours_optimizer(ours, "lorafa", LR)
    pairs = ours.lora_pairs()
    a_count = sum(a.numel() for _, a, _, _ in pairs)
    assert ours.param_counts()["adapter"] == trained_before - a_count == sum(b.numel() for _, _, b, _ in pairs)
    assert not any(a.requires_grad for _, a, _, _ in pairs)
    state = ours.trainable_state_dict()
    assert all(torch.equal(state[f"{name}.lora_A"], a) for name, a, _, _ in pairs)


def test_the_first_step_is_adam_s_on_the_projected_gradient_of_b():
    """Step 1 of bias-corrected Adam moves each entry by lr·ĝ/(|ĝ| + ε/√(1−β₂)) with ĝ = g_B (AAᵀ + δI)⁻¹/s²
    (δ = 1e-8, PEFT's damping); A does not move."""
    ours, _ = twins()
    optimizer = ours_optimizer(ours, "lorafa", LR)
    before = factors(ours)
    loss_of(ours.model, 1).backward()
    scaling = ALPHA / R
    damping = 1e-8 * torch.eye(R, dtype=torch.float64)
    projected = [
        b.grad @ torch.linalg.inv(a.detach() @ a.detach().T + damping) / scaling**2 for _, a, b, _ in ours.lora_pairs()
    ]
    optimizer.step()
    eps = 1e-6 / math.sqrt(1 - 0.999)
    for (_, a, b, _), grad, (a0, b0) in zip(ours.lora_pairs(), projected, zip(before[::2], before[1::2])):
        assert torch.equal(a, a0)
        assert torch.allclose(b - b0, -LR * grad / (grad.abs() + eps), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("steps", [3])
def test_trained_factors_equal_peft_s(steps):
    ours, theirs = twins()
    before = factors(ours)
    train(ours.model, ours_optimizer(ours, "lorafa", LR, DECAY), steps)
    train(
        theirs, peft.optimizers.create_lorafa_optimizer(theirs, r=R, lora_alpha=ALPHA, lr=LR, weight_decay=DECAY), steps
    )
    assert largest_factor_difference(ours, theirs) < 1e-12
    assert largest_move(ours, before) > 1e-3
