"""LoRA-XS, MELoRA and DoRA: their paper's math, their errors, and equality with PEFT where PEFT
has the method (DoRA) or an equivalent LoRA (LoRA-XS with R folded into B, MELoRA with n=1).

LoRA, DoRA, LoRA-XS, MELoRA and target matching: init bounds, rank checks on convolutions,
rsLoRA scaling, DoRA's forward against its formula, config bounds and error messages (each message
asserted whole), dtype/device of the factors."""

import copy
import math

import peft
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.errors import HarnessError
from methods.dora import DoRA, DoraConfig, DoRALinear
from methods.inject import match_targets, name_shapes
from methods.lora import LoRA, LoraConfig
from methods.lora_xs import LoraXS, LoraXSConfig, LoraXSLinear
from methods.melora import Melora, MeloraConfig, MeloraLinear
from tests.conftest import tiny_batch, tiny_bert

HEAD = ["classifier"]


def peft_lora(model, r, alpha, targets, **extra):
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=extra.pop("dropout", 0.0), **extra
    )
    return peft.get_peft_model(copy.deepcopy(model), config)


def peft_layer(peft_model, name):
    return peft_model.base_model.model.get_submodule(name)


# -- LoRA-XS ------------------------------------------------------------------------------------


def test_lora_xs_factors_are_the_truncated_svd_with_singular_values_on_the_input_side():
    torch.manual_seed(0)
    base = nn.Linear(24, 16).double()
    layer = LoraXSLinear(base, r=5, alpha=16, dropout=0.0, init_std=1e-5)
    assert torch.allclose(layer.lora_B.T @ layer.lora_B, torch.eye(5, dtype=torch.float64), atol=1e-12)
    singular = torch.linalg.svdvals(base.weight.detach())
    assert torch.allclose(layer.lora_A.norm(dim=1), singular[:5], atol=1e-12)  # rows of Σ_r V_rᵀ
    residual = torch.linalg.matrix_norm(base.weight - layer.lora_B @ layer.lora_A)
    assert residual.item() == pytest.approx(singular[5:].square().sum().sqrt().item(), rel=1e-10)
    assert layer.lora_R.std().item() == pytest.approx(1e-5, rel=0.5)


def test_lora_xs_equals_peft_lora_with_r_folded_into_b():
    model = tiny_bert().double()
    targets = ["query", "value", "attention.output.dense", "output.dense"]
    ours = LoraXS(model, LoraXSConfig(r=4, alpha=16, targets=targets), HEAD)
    theirs = peft_lora(tiny_bert().double(), 4, 16, targets)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, layer in ours.layers.items():
            layer.lora_R.copy_(torch.randn(4, 4, generator=generator, dtype=torch.float64))
            peft_layer(theirs, name).lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer(theirs, name).lora_B["default"].weight.copy_(layer.lora_B @ layer.lora_R)
    assert torch.allclose(ours.model(**tiny_batch()).logits, theirs(**tiny_batch()).logits, atol=1e-12)


def test_lora_xs_trains_r_squared_parameters_and_keeps_factors_as_buffers():
    method = LoraXS(tiny_bert(), LoraXSConfig(r=4), HEAD)
    assert len(method.layers) == 2 * 4
    assert method.param_counts()["adapter"] == 2 * 4 * 4**2
    grouped = {
        id(p)
        for g in method.param_groups(type("T", (), {"lr": 1, "head_lr": 1, "weight_decay": 0}))
        for p in g["params"]
    }
    layer = next(iter(method.layers.values()))
    assert id(layer.lora_R) in grouped and not layer.lora_A.requires_grad
    assert "lora_A" in dict(layer.named_buffers()) and "lora_B" in dict(layer.named_buffers())


def test_lora_xs_svd_is_deterministic_and_rank_is_checked():
    first = LoraXS(tiny_bert(), LoraXSConfig(r=4), HEAD).layers
    second = LoraXS(tiny_bert(), LoraXSConfig(r=4), HEAD).layers
    assert all(
        torch.equal(first[n].lora_A, second[n].lora_A) and torch.equal(first[n].lora_B, second[n].lora_B) for n in first
    )
    with pytest.raises(
        HarnessError,
        match=r"lora_xs: rank r=33 exceeds min\(d_in, d_out\)=32 of layer 'bert.encoder.layer.0.attention.self.query'",
    ):
        LoraXS(tiny_bert(), LoraXSConfig(r=33), HEAD)


# -- MELoRA -------------------------------------------------------------------------------------


def test_melora_with_one_block_equals_peft_lora():
    model = tiny_bert().double()
    ours = Melora(model, MeloraConfig(r=4, n=1, alpha=16, dropout=0.0), HEAD)
    theirs = peft_lora(tiny_bert().double(), 4, 16, ["query", "value"])
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, layer in ours.layers.items():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator, dtype=torch.float64))
            peft_layer(theirs, name).lora_A["default"].weight.copy_(layer.lora_A[0])
            peft_layer(theirs, name).lora_B["default"].weight.copy_(layer.lora_B[0])
    ours_out, theirs_out = ours.model(**tiny_batch()).logits, theirs(**tiny_batch()).logits
    assert torch.allclose(ours_out, theirs_out, atol=1e-12)
    ours_out.sum().backward(), theirs_out.sum().backward()
    for name, layer in ours.layers.items():
        assert torch.allclose(layer.lora_A.grad[0], peft_layer(theirs, name).lora_A["default"].weight.grad, atol=1e-10)


@pytest.mark.parametrize("shape", [(6, 24), (2, 3, 24), (2, 2, 3, 24)])
def test_melora_update_is_the_block_diagonal_for_any_leading_dims(shape):
    torch.manual_seed(0)
    layer = MeloraLinear(nn.Linear(24, 12).double(), r=2, n=3, alpha=4, dropout=0.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    blocks = [layer.scaling * layer.lora_B[i] @ layer.lora_A[i] for i in range(3)]
    delta = torch.block_diag(*blocks)
    assert delta.shape == (12, 24) and torch.equal(delta[:4, 8:], torch.zeros(4, 16, dtype=torch.float64))
    x = torch.randn(shape, dtype=torch.float64)
    assert torch.allclose(layer(x), layer.base(x) + x @ delta.T, atol=1e-12)
    assert torch.allclose(layer.delta_weight(), delta, atol=1e-14)


def test_melora_init_parameter_count_and_divisibility():
    torch.manual_seed(0)
    layer = MeloraLinear(nn.Linear(64, 32), r=2, n=4, alpha=4, dropout=0.0)
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(64 / 4)  # kaiming-uniform on each block's fan-in
    assert layer.lora_A.abs().max() > 0.9 / math.sqrt(64 / 4)
    assert torch.count_nonzero(layer.lora_B) == 0
    method = Melora(tiny_bert(), MeloraConfig(r=2, n=4), HEAD)
    assert method.param_counts()["adapter"] == 2 * 2 * 2 * (32 + 32)  # r(d_in + d_out) per matrix
    with pytest.raises(
        HarnessError,
        match=r"melora: layer 'bert.encoder.layer.0.attention.self.query' \(32×32\) is not divisible into n=3 blocks",
    ):
        Melora(tiny_bert(), MeloraConfig(n=3), HEAD)
    with pytest.raises(HarnessError, match=r"melora: rank r=9 exceeds min\(d_in, d_out\)=8"):
        Melora(tiny_bert(), MeloraConfig(r=9, n=4), HEAD)


# -- DoRA ---------------------------------------------------------------------------------------


def dora_pair(dropout=0.0, targets=("query", "value", "intermediate.dense")):
    model = tiny_bert().double()
    ours = DoRA(model, DoraConfig(r=4, alpha=8, dropout=dropout, targets=list(targets)), HEAD)
    theirs = peft_lora(tiny_bert().double(), 4, 8, targets, dropout=dropout, use_dora=True)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, layer in ours.layers.items():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator, dtype=torch.float64) * 0.3)
            layer.magnitude.mul_(1 + 0.1 * torch.randn(layer.magnitude.shape, generator=generator, dtype=torch.float64))
            theirs_layer = peft_layer(theirs, name)
            theirs_layer.lora_A["default"].weight.copy_(layer.lora_A)
            theirs_layer.lora_B["default"].weight.copy_(layer.lora_B)
            theirs_layer.lora_magnitude_vector["default"].weight.copy_(layer.magnitude)
    return ours, theirs


def test_dora_magnitude_starts_at_the_row_norms_and_count_adds_d_out():
    method = DoRA(tiny_bert(), DoraConfig(r=4, targets=["query", "intermediate.dense"]), HEAD)
    layer = method.layers["bert.encoder.layer.0.intermediate.dense"]
    assert torch.allclose(layer.magnitude, layer.base.weight.norm(dim=1))
    assert method.param_counts()["adapter"] == 2 * ((4 * (32 + 32) + 32) + (4 * (32 + 48) + 48))


def test_dora_outputs_gradients_and_merge_equal_peft():
    ours, theirs = dora_pair()
    ours_out, theirs_out = ours.model(**tiny_batch()).logits, theirs(**tiny_batch()).logits
    assert torch.allclose(ours_out, theirs_out, atol=1e-12)
    ours_out.pow(2).sum().backward(), theirs_out.pow(2).sum().backward()
    for name, layer in ours.layers.items():
        theirs_layer = peft_layer(theirs, name)
        assert torch.allclose(layer.lora_A.grad, theirs_layer.lora_A["default"].weight.grad, atol=1e-10)
        assert torch.allclose(layer.lora_B.grad, theirs_layer.lora_B["default"].weight.grad, atol=1e-10)
        assert torch.allclose(
            layer.magnitude.grad, theirs_layer.lora_magnitude_vector["default"].weight.grad, atol=1e-10
        )
    ours.merge()
    merged = theirs.merge_and_unload()
    for name, layer in ours.layers.items():
        assert torch.allclose(layer.base.weight, merged.get_submodule(name).weight, atol=1e-12)


def test_dora_with_dropout_equals_peft_in_training_mode():
    ours, theirs = dora_pair(dropout=0.3)
    ours.model.train(), theirs.train()
    torch.manual_seed(11)
    ours_out = ours.model(**tiny_batch()).logits
    torch.manual_seed(11)
    theirs_out = theirs(**tiny_batch()).logits
    assert torch.allclose(ours_out, theirs_out, atol=1e-12)


def test_dora_with_dropout_equals_peft_in_evaluation_at_the_cost_of_dropout_off():
    """In evaluation dropout is the identity: the output is PEFT's, and the layer reuses its base output
    (x W0ᵀ) instead of a second matmul with W0, so it costs what the same layer without dropout costs."""
    ours, theirs = dora_pair(dropout=0.3)
    ours.model.eval(), theirs.eval()
    assert torch.allclose(ours.model(**tiny_batch()).logits, theirs(**tiny_batch()).logits, atol=1e-12)
    dropped = ours.layers["bert.encoder.layer.0.intermediate.dense"]
    plain = DoRALinear(nn.Linear(32, 48).double(), r=4, alpha=8, dropout=0.0, rslora=False)
    x = torch.randn(3, 5, 32, dtype=torch.float64)

    def flops(layer: nn.Module) -> int:
        with FlopCounterMode(display=False) as counter:
            layer(x)
        return counter.get_total_flops()

    dropped.eval()
    assert flops(dropped) == flops(plain)
    dropped.train()  # training with dropout: x̃ W0ᵀ is a matmul of its own, 2·15·32·48 more
    assert flops(dropped) == flops(plain) + 2 * 15 * 32 * 48


def test_dora_norm_is_detached():
    ours, _ = dora_pair()
    layer = ours.layers["bert.encoder.layer.0.attention.self.query"]
    scale = layer.magnitude_scale(layer.base.weight + layer.delta_weight())
    (grad,) = torch.autograd.grad(scale.sum(), layer.lora_B, allow_unused=True)
    assert grad is None  # m/‖W0 + sBA‖ carries no gradient into B: the norm is a constant


HEAD = ["classifier"]


class ConvNet(nn.Module):
    def __init__(self, c_in=4, c_out=6, kernel_size=3, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=kernel_size, padding=1, groups=groups)
        self.classifier = nn.Linear(c_out, 3)

    def forward(self, x):
        return self.classifier(self.conv(x).mean(dim=(2, 3)))


def kaiming_sqrt5_bound(fan_in: int) -> float:
    """kaiming_uniform_(a=√5): gain √(2/(1+5)), bound gain·√(3/fan_in) = 1/√fan_in."""
    return 1 / math.sqrt(fan_in)


# -- init: A ~ U(±1/√fan_in) ----------------------------------------------------------------------------------


def test_lora_linear_init_bound_is_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    method = LoRA(tiny_bert(), LoraConfig(r=8, targets=["query"]), HEAD)
    bound = kaiming_sqrt5_bound(32)
    for layer in method.layers.values():
        a = layer.lora_A.abs().max().item()
        assert bound * 0.97 < a <= bound


def test_lora_conv_init_bound_is_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    method = LoRA(ConvNet(), LoraConfig(r=6, targets=["conv"]), HEAD)
    a = method.layers["conv"].lora_A
    bound = kaiming_sqrt5_bound(4 * 3 * 3)
    assert bound * 0.97 < a.abs().max().item() <= bound


def test_melora_init_bound_is_per_block_fan_in():
    torch.manual_seed(0)
    method = Melora(tiny_bert(), MeloraConfig(r=8, n=2, targets=["query"]), HEAD)
    bound = kaiming_sqrt5_bound(32 // 2)
    for layer in method.layers.values():
        for block in layer.lora_A:
            assert bound * 0.95 < block.abs().max().item() <= bound


# -- LoRA on convolutions: rank check, grouped convolutions, rsLoRA ---------------------------------------------


def test_conv_rank_check_uses_c_in_times_kernel_area():
    # d_in = C_in·k_h·k_w = 2·2·3 = 12 < C_out = 20
    LoRA(ConvNet(2, 20, kernel_size=(2, 3)), LoraConfig(r=12, targets=["conv"]), HEAD)
    with pytest.raises(HarnessError) as error:
        LoRA(ConvNet(2, 20, kernel_size=(2, 3)), LoraConfig(r=13, targets=["conv"]), HEAD)
    assert str(error.value) == "lora: rank r=13 exceeds min(d_in, d_out)=12 of layer 'conv' (20×12)"


def test_linear_rank_check_message():
    with pytest.raises(HarnessError) as error:
        LoRA(tiny_bert(), LoraConfig(r=33, targets=["query"]), HEAD)
    assert (
        str(error.value)
        == "lora: rank r=33 exceeds min(d_in, d_out)=32 of layer 'bert.encoder.layer.0.attention.self.query' (32×32)"
    )


def test_grouped_conv_is_an_error():
    with pytest.raises(HarnessError) as error:
        LoRA(ConvNet(4, 6, groups=2), LoraConfig(r=2, targets=["conv"]), HEAD)
    assert str(error.value) == (
        "lora: 'conv' is a grouped convolution (groups=2); LoRA adapts Linear and ungrouped Conv2d layers only"
    )


def test_rslora_on_conv_scales_by_alpha_over_sqrt_r():
    torch.manual_seed(0)
    net = ConvNet().double()
    method = LoRA(net, LoraConfig(r=4, alpha=6.0, rslora=True, targets=["conv"]), HEAD)
    layer = method.layers["conv"]
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, dtype=torch.float64))
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    delta = 6.0 / math.sqrt(4) * torch.einsum("oj,jikl->oikl", layer.lora_B[:, :, 0, 0], layer.lora_A)
    expected = F.conv2d(x, layer.base.weight + delta, layer.base.bias, padding=1)
    torch.testing.assert_close(layer(x), expected)


# -- DoRA forward against W' = m · (W0 + sBA) / ‖W0 + sBA‖ (per output row) ----------------------------------------


@pytest.mark.parametrize("rslora", [False, True])
def test_dora_forward_with_bias_matches_formula(rslora):
    torch.manual_seed(0)
    model = tiny_bert().double()
    method = DoRA(model, DoraConfig(r=4, alpha=8.0, dropout=0.0, rslora=rslora, targets=["query"]), HEAD)
    layer = method.layers["bert.encoder.layer.0.attention.self.query"]
    assert layer.base.bias is not None  # BERT initialises biases to 0: set them below
    with torch.no_grad():
        layer.base.bias.copy_(torch.randn(32, dtype=torch.float64))
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, dtype=torch.float64) * 0.3)
        layer.magnitude.mul_(1 + 0.5 * torch.rand(32, dtype=torch.float64))
    s = 8.0 / math.sqrt(4) if rslora else 8.0 / 4
    weight = layer.base.weight + s * layer.lora_B @ layer.lora_A
    adapted = layer.magnitude[:, None] * weight / weight.norm(dim=1, keepdim=True)
    x = torch.randn(3, 5, 32, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ adapted.T + layer.base.bias)


# -- target matching -------------------------------------------------------------------------------------------


def test_empty_targets_default_method_name():
    with pytest.raises(HarnessError) as error:
        match_targets(tiny_bert(), [], HEAD)
    assert str(error.value) == "method: method.targets is empty; give module-name patterns or 'all-linear'"
    with pytest.raises(HarnessError) as error:
        match_targets(tiny_bert(), ["nomatch"], HEAD)
    assert str(error.value).startswith("method: target pattern 'nomatch' matches no Linear module; the model has: ")


def test_name_shapes_folds_layer_indices():
    assert name_shapes(["a.0.b", "a.1.b", "c", "d.12.e.3.f"]) == "a.<n>.b, c, d.<n>.e.<n>.f"


# -- LoRA-XS and MELoRA configs and layers --------------------------------------------------------------------


def test_lora_xs_init_std_bounds():
    assert LoraXSConfig(init_std=0.0).init_std == 0.0
    with pytest.raises(HarnessError) as error:
        LoraXSConfig(init_std=-0.5)
    assert str(error.value) == "method.init_std must be >= 0, got -0.5"


def test_lora_xs_factors_on_the_base_device():
    model = tiny_bert().to("meta")
    method = LoraXS(model, LoraXSConfig(r=4, targets=["query"]), HEAD)
    for layer in method.layers.values():
        assert layer.lora_R.device.type == "meta" and layer.lora_A.device.type == "meta"


def test_melora_n_bounds():
    assert MeloraConfig(n=1).n == 1
    for n in (0, -2):
        with pytest.raises(HarnessError) as error:
            MeloraConfig(n=n)
        assert str(error.value) == f"method.n must be a positive number of mini LoRAs, got {n}"


def test_melora_rank_check_on_blocks():
    Melora(tiny_bert(), MeloraConfig(r=16, n=2, targets=["query"]), HEAD)
    with pytest.raises(HarnessError) as error:
        Melora(tiny_bert(), MeloraConfig(r=17, n=2, targets=["query"]), HEAD)
    assert (
        str(error.value)
        == "melora: rank r=17 exceeds min(d_in, d_out)=16 of layer 'bert.encoder.layer.0.attention.self.query' (16×16)"
    )


@pytest.mark.parametrize(
    "n, layer, shape",
    [
        (3, "bert.encoder.layer.0.intermediate.dense", "48×32"),  # d_out divisible, d_in not
        (3, "bert.encoder.layer.0.output.dense", "32×48"),  # d_in divisible, d_out not
    ],
)
def test_melora_blocks_must_divide_both_sides(n, layer, shape):
    target = layer.split("layer.0.")[1]
    with pytest.raises(HarnessError) as error:
        Melora(tiny_bert(), MeloraConfig(r=2, n=n, targets=[f"layer.0.{target}"]), HEAD)
    assert str(error.value) == (
        f"melora: layer '{layer}' ({shape}) is not divisible into n={n} blocks; choose n dividing both d_in and d_out"
    )


class NoBiasNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 6, bias=False)
        self.classifier = nn.Linear(6, 3)

    def forward(self, x):
        return self.classifier(self.proj(x))


def test_dora_forward_without_bias_matches_formula():
    torch.manual_seed(0)
    net = NoBiasNet().double()
    method = DoRA(net, DoraConfig(r=2, alpha=4.0, dropout=0.0, targets=["proj"]), HEAD)
    layer = method.layers["proj"]
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, dtype=torch.float64) * 0.3)
        layer.magnitude.mul_(1 + 0.5 * torch.rand(6, dtype=torch.float64))
    weight = layer.base.weight + 2.0 * layer.lora_B @ layer.lora_A
    adapted = layer.magnitude[:, None] * weight / weight.norm(dim=1, keepdim=True)
    x = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ adapted.T)
