"""What the LoRA optimizers take from their config and where they refuse: betas and eps reach the AdamW they build,
a closure is refused in one line, a factor pair in bf16 is preconditioned in fp32 (the formula computed here), a
tensor without a gradient is skipped without ending the step, and a LoRA on convolutions is refused naming the
optimizer and the first convolution."""

import pytest
import torch

from harness.errors import HarnessError
from optimizers.lorafa import LoraFaAdamW
from optimizers.riemannian import RiemannianAdamW
from tests.optimizers.twins import loss_of, ours_optimizer, twins

BETAS, EPS = (0.8, 0.95), 1e-5


@pytest.mark.parametrize("name", ["loraplus", "lorafa", "riemannian"])
def test_betas_and_eps_reach_every_group(name):
    ours, _ = twins()
    optimizer = ours_optimizer(ours, name, 1e-3, betas=list(BETAS), eps=EPS)
    assert optimizer.param_groups and all(
        group["betas"] == BETAS and group["eps"] == EPS for group in optimizer.param_groups
    )


@pytest.mark.parametrize(
    "name, text",
    [
        ("lorafa", "the LoRA-FA optimizer takes no closure"),
        ("riemannian", "the Riemannian-preconditioned optimizer takes no closure"),
    ],
)
def test_a_closure_is_refused_in_one_line(name, text):
    ours, _ = twins()
    optimizer = ours_optimizer(ours, name, 1e-3)
    loss_of(ours.model, 1).backward()
    with pytest.raises(HarnessError) as error:
        optimizer.step(lambda: loss_of(ours.model, 1))
    assert str(error.value) == text


def bf16_pair(seed: int = 0) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """A (r × d_in) and B (d_out × r) in bf16 with bf16 gradients."""
    generator = torch.Generator().manual_seed(seed)
    a, b = (torch.nn.Parameter(torch.randn(shape, generator=generator).bfloat16()) for shape in ((3, 8), (6, 3)))
    a.grad, b.grad = (torch.randn(t.shape, generator=generator).bfloat16() for t in (a, b))
    return a, b


def test_riemannian_preconditions_a_bf16_pair_in_fp32():
    """g_A ← (BᵀB + δI)⁻¹ g_A, g_B ← g_B (AAᵀ + δI)⁻¹ computed in fp32 from the bf16 tensors, written back in bf16
    (lr 0: only the preconditioning is looked at)."""
    a, b = bf16_pair()
    reg, eye = 0.01, torch.eye(3)
    fa, fb, ga, gb = (t.float() for t in (a.detach(), b.detach(), a.grad, b.grad))
    expected_a = (torch.linalg.inv(fb.T @ fb + reg * eye) @ ga).bfloat16()
    expected_b = (gb @ torch.linalg.inv(fa @ fa.T + reg * eye)).bfloat16()
    optimizer = RiemannianAdamW([{"params": [a, b], "lr": 0.0}], [(a, b, 1.0)], reg)
    optimizer.step()
    assert a.grad.dtype == b.grad.dtype == torch.bfloat16
    torch.testing.assert_close(a.grad, expected_a, rtol=0.02, atol=1e-3)
    torch.testing.assert_close(b.grad, expected_b, rtol=0.02, atol=1e-3)


def test_lorafa_projects_a_bf16_gradient_in_fp32():
    """B's first step: Adam's update of the projected gradient g_B (AAᵀ + δI)⁻¹ / s² (computed here in fp32), which
    at step 1 is lr · sign-like g/(|g| + eps); its sign pattern and the step's dtype are checked."""
    a, b = bf16_pair()
    scaling, lr = 2.0, 1e-2
    fa = a.detach().float()
    projected = b.grad.float() @ torch.linalg.inv(fa @ fa.T + 1e-8 * torch.eye(3)) / scaling**2
    before = b.detach().clone()
    optimizer = LoraFaAdamW([{"params": [b], "lr": lr, "weight_decay": 0.0}], {id(b): (a, scaling)}, (0.9, 0.999), 1e-6)
    optimizer.step()
    assert b.dtype == torch.bfloat16 and optimizer.state[b]["exp_avg"].dtype == torch.bfloat16
    expected_exp_avg = (0.1 * projected).bfloat16()
    torch.testing.assert_close(optimizer.state[b]["exp_avg"], expected_exp_avg, rtol=0.02, atol=1e-3)
    moved = (b.detach() - before).float()
    assert torch.equal(torch.sign(moved[moved != 0]), -torch.sign(projected[moved != 0]))


def test_lorafa_skips_a_tensor_without_a_gradient_and_steps_the_next():
    a, b = bf16_pair()
    idle = torch.nn.Parameter(torch.zeros(4))  # no gradient this step
    before = b.detach().clone()
    LoraFaAdamW([{"params": [idle, b], "lr": 1e-2, "weight_decay": 0.0}], {id(b): (a, 1.0)}, (0.9, 0.999), 1e-6).step()
    assert not torch.equal(b.detach(), before) and torch.count_nonzero(idle) == 0


@pytest.mark.parametrize("name", ["lorafa", "riemannian"])
def test_a_lora_on_convolutions_is_refused_naming_the_optimizer_and_the_first_convolution(name):
    from methods.lora import Lora, LoraConfig
    from tests.conftest import tiny_cnn

    lora = Lora(tiny_cnn(), LoraConfig(r=2, alpha=2.0, targets=["backbone.0", "backbone.6"]), ["classifier"])
    first = lora.lora_pairs()[0][0]
    with pytest.raises(HarnessError) as error:
        ours_optimizer(lora, name, 1e-3)
    assert str(error.value) == (
        f"optimizer '{name}' preconditions matrix factors; the LoRA of '{first}' is a convolution's (2 such layers): "
        "use it on Linear targets, or optimizer=adamw or loraplus"
    )


def test_loraplus_takes_a_ratio_below_one():
    """η_B / η_A < 1 is a legal LoRA+ setting (B slower than A): only a ratio <= 0 is refused."""
    ours, _ = twins()
    optimizer = ours_optimizer(ours, "loraplus", 1e-3, lr_ratio=0.5)
    assert sorted({group["lr"] for group in optimizer.param_groups}) == [5e-4, 1e-3]
