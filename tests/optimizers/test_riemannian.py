"""Riemannian-preconditioned LoRA: the preconditioned gradients as the paper's formula computed here, and the
same factors as PEFT's create_riemannian_optimizer after training."""

import peft.optimizers
import pytest
import torch

from harness.errors import HarnessError
from tests.optimizers.twins import (
    factors,
    largest_factor_difference,
    largest_move,
    loss_of,
    ours_optimizer,
    train,
    twins,
)

LR, REG, DECAY = 1e-3, 1e-2, 0.1


def test_the_step_preconditions_each_pair_by_the_other_factor_s_gram_matrix():
    """g_A ← (BᵀB + δI)⁻¹ g_A and g_B ← g_B (AAᵀ + δI)⁻¹, from the factors before the step, written into .grad."""
    ours, _ = twins()
    optimizer = ours_optimizer(ours, "riemannian", LR, reg=REG)
    loss_of(ours.model, 1).backward()
    pairs = ours.lora_pairs()
    expected = []
    for _, a, b, _ in pairs:
        eye = torch.eye(a.shape[0], dtype=a.dtype)
        expected.append(
            (
                torch.linalg.inv(b.detach().T @ b.detach() + REG * eye) @ a.grad,
                b.grad @ torch.linalg.inv(a.detach() @ a.detach().T + REG * eye),
            )
        )
    optimizer.step()
    for (_, a, b, _), (grad_a, grad_b) in zip(pairs, expected):
        assert torch.allclose(a.grad, grad_a, rtol=1e-10, atol=1e-14)
        assert torch.allclose(b.grad, grad_b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("steps", [3])
def test_trained_factors_equal_peft_s(steps):
    ours, theirs = twins()
    before = factors(ours)
    train(ours.model, ours_optimizer(ours, "riemannian", LR, DECAY, reg=REG), steps)
    reference = peft.optimizers.create_riemannian_optimizer(
        theirs, torch.optim.AdamW, lr=LR, reg=REG, weight_decay=DECAY
    )
    train(theirs, reference, steps)
    assert largest_factor_difference(ours, theirs) < 1e-12
    assert largest_move(ours, before) > 1e-3


def test_a_lora_on_convolutions_is_refused_in_one_line():
    from methods.lora import Lora, LoraConfig
    from tests.conftest import tiny_cnn

    lora = Lora(tiny_cnn(), LoraConfig(r=2, alpha=2.0, targets=["backbone.0", "backbone.6"]), ["classifier"])
    with pytest.raises(HarnessError, match=r"^optimizer 'riemannian' preconditions matrix factors; the LoRA of '"):
        ours_optimizer(lora, "riemannian", LR)
