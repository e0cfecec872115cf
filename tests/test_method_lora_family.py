"""LoRA, DoRA, LoRA-XS, MELoRA and target matching: init bounds, rank checks on convolutions,
rsLoRA scaling, DoRA's forward against its formula, config bounds and error messages (each message
asserted whole), dtype/device of the factors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.dora import DoRA, DoraConfig
from methods.inject import match_targets, name_shapes
from methods.lora import LoRA, LoraConfig
from methods.lora_xs import LoraXS, LoraXSConfig
from methods.melora import Melora, MeloraConfig
from tests.conftest import tiny_bert

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
