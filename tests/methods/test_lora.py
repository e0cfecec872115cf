"""LoRA: exact parameter counts, errors, and equality with Hugging Face PEFT's LoraConfig."""

import copy
import math

import peft
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from harness.errors import HarnessError
from methods.lora import Lora, LoraConfig, LoraLinear
from tests.conftest import tiny_batch, tiny_bert, tiny_cnn
from tests.methods.references import (
    LORA_TARGETS,
    adapted_names,
    check_adapter_count,
    check_linear_layers,
    conv_input,
    kaiming_sqrt5_bound,
    trained,
)

HEAD = ["classifier"]


def ours_and_peft(r=4, alpha=8.0, targets=("query", "value"), rslora=False):
    """Our LoRA and PEFT's on copies of one float64 model, with identical non-zero factors."""
    model = tiny_bert().double()
    reference = copy.deepcopy(model)
    ours = Lora(model, LoraConfig(r=r, alpha=alpha, targets=list(targets), rslora=rslora), HEAD)
    theirs = peft.get_peft_model(
        reference,
        peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, use_rslora=rslora),
    )
    generator = torch.Generator().manual_seed(3)
    for name, layer in ours.layers.items():
        with torch.no_grad():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator, dtype=torch.float64))
            peft_layer = theirs.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
    return ours, theirs


@pytest.mark.parametrize("rslora", [False, True])
def test_outputs_and_gradients_equal_peft(rslora):
    ours, theirs = ours_and_peft(rslora=rslora)
    ours_out = ours.model(**tiny_batch()).logits
    theirs_out = theirs(**tiny_batch()).logits
    assert torch.allclose(ours_out, theirs_out, atol=1e-12)
    ours_out.pow(2).sum().backward()
    theirs_out.pow(2).sum().backward()
    for name, layer in ours.layers.items():
        peft_layer = theirs.base_model.model.get_submodule(name)
        assert torch.allclose(layer.lora_A.grad, peft_layer.lora_A["default"].weight.grad, atol=1e-10)
        assert torch.allclose(layer.lora_B.grad, peft_layer.lora_B["default"].weight.grad, atol=1e-10)


def test_init_equals_peft_distribution_and_b_is_zero():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(256, 128), r=8, alpha=8, dropout=0.0, rslora=False)
    bound = 1 / math.sqrt(256)  # kaiming_uniform(a=√5) on fan_in 256
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.lora_B) == 0


def test_merged_weights_equal_peft_merge_and_unload():
    ours, theirs = ours_and_peft()
    ours.merge()
    merged = theirs.merge_and_unload()
    for name, layer in ours.layers.items():
        assert torch.allclose(layer.base.weight, merged.get_submodule(name).weight, atol=1e-12)


def test_parameter_count_is_r_times_din_plus_dout():
    ours, theirs = ours_and_peft(r=4, targets=("query", "value", "intermediate.dense"))
    # per layer: query 32×32, value 32×32, intermediate 48×32; two layers
    expected = 2 * 4 * ((32 + 32) + (32 + 32) + (32 + 48))
    assert ours.param_counts()["adapter"] == expected
    peft_count = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    assert peft_count == expected


def test_scaling_alpha_over_r_and_rslora():
    ours, _ = ours_and_peft(r=4, alpha=8)
    assert all(layer.scaling == 2.0 for layer in ours.layers.values())
    ours, _ = ours_and_peft(r=4, alpha=8, rslora=True)
    assert all(layer.scaling == 4.0 for layer in ours.layers.values())


def test_suffix_and_regex_targets():
    method = Lora(tiny_bert(), LoraConfig(targets=["output.dense"], r=2), HEAD)
    assert sorted(method.layers) == sorted(
        f"bert.encoder.layer.{i}.{m}" for i in range(2) for m in ("attention.output.dense", "output.dense")
    )
    method = Lora(tiny_bert(), LoraConfig(targets=[r"re:.*layer\.0\..*query"], r=2), HEAD)
    assert list(method.layers) == ["bert.encoder.layer.0.attention.self.query"]
    method = Lora(tiny_bert(), LoraConfig(targets=["all-linear"], r=2), HEAD)
    assert "classifier" not in method.layers and len(method.layers) == 2 * 6 + 1  # + pooler.dense


def test_unmatched_target_is_an_error_listing_module_names():
    with pytest.raises(HarnessError) as error:
        Lora(tiny_bert(), LoraConfig(targets=["query", "valeu"]), HEAD)
    message = str(error.value)
    assert "target pattern 'valeu' matches no Linear/Conv2d module" in message
    assert "bert.encoder.layer.<n>.attention.self.value" in message and "\n" not in message


def test_rank_above_layer_size_is_an_error_naming_the_layer():
    with pytest.raises(
        HarnessError,
        match=r"rank r=33 exceeds min\(d_in, d_out\)=32 of layer 'bert.encoder.layer.0.attention.self.query'",
    ):
        Lora(tiny_bert(), LoraConfig(r=33), HEAD)


def test_head_is_never_a_target_and_stays_trainable():
    method = Lora(tiny_bert(), LoraConfig(targets=["re:.*"], r=2), HEAD)
    assert not any(name.startswith("classifier") for name in method.layers)
    assert all(p.requires_grad for p in method.model.classifier.parameters())


def test_param_groups_split_adapter_and_head_rates_and_decay():
    method = Lora(tiny_bert(), LoraConfig(r=2), HEAD)
    train = type("T", (), {"lr": 1e-3, "head_lr": 5e-2, "weight_decay": 0.1})
    groups = method.param_groups(train)
    adapter = [g for g in groups if g["lr"] == 1e-3]
    head = [g for g in groups if g["lr"] == 5e-2]
    assert sum(p.numel() for g in adapter for p in g["params"]) == method.param_counts()["adapter"]
    assert sum(p.numel() for g in head for p in g["params"]) == method.param_counts()["head"]
    assert {g["weight_decay"] for g in head} == {0.1, 0.0}  # weight decayed, bias not


class ConvNet(nn.Module):
    def __init__(self, c_in=4, c_out=6, kernel_size=3, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=kernel_size, padding=1, groups=groups)
        self.classifier = nn.Linear(c_out, 3)

    def forward(self, x):
        return self.classifier(self.conv(x).mean(dim=(2, 3)))


# -- init: A ~ U(±1/√fan_in) ----------------------------------------------------------------------------------


def test_lora_linear_init_bound_is_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    method = Lora(tiny_bert(), LoraConfig(r=8, targets=["query"]), HEAD)
    bound = kaiming_sqrt5_bound(32)
    for layer in method.layers.values():
        a = layer.lora_A.abs().max().item()
        assert bound * 0.97 < a <= bound


def test_lora_conv_init_bound_is_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    method = Lora(ConvNet(), LoraConfig(r=6, targets=["conv"]), HEAD)
    a = method.layers["conv"].lora_A
    bound = kaiming_sqrt5_bound(4 * 3 * 3)
    assert bound * 0.97 < a.abs().max().item() <= bound


# -- LoRA on convolutions: rank check, grouped convolutions, rsLoRA ---------------------------------------------


def test_conv_rank_check_uses_c_in_times_kernel_area():
    # d_in = C_in·k_h·k_w = 2·2·3 = 12 < C_out = 20
    Lora(ConvNet(2, 20, kernel_size=(2, 3)), LoraConfig(r=12, targets=["conv"]), HEAD)
    with pytest.raises(HarnessError) as error:
        Lora(ConvNet(2, 20, kernel_size=(2, 3)), LoraConfig(r=13, targets=["conv"]), HEAD)
    assert str(error.value) == "lora: rank r=13 exceeds min(d_in, d_out)=12 of layer 'conv' (20×12)"


def test_linear_rank_check_message():
    with pytest.raises(HarnessError) as error:
        Lora(tiny_bert(), LoraConfig(r=33, targets=["query"]), HEAD)
    assert (
        str(error.value)
        == "lora: rank r=33 exceeds min(d_in, d_out)=32 of layer 'bert.encoder.layer.0.attention.self.query' (32×32)"
    )


def test_grouped_conv_is_an_error():
    with pytest.raises(HarnessError) as error:
        Lora(ConvNet(4, 6, groups=2), LoraConfig(r=2, targets=["conv"]), HEAD)
    assert str(error.value) == (
        "lora: 'conv' is a grouped convolution (groups=2); LoRA adapts Linear and ungrouped Conv2d layers only"
    )


def test_rslora_on_conv_scales_by_alpha_over_sqrt_r():
    torch.manual_seed(0)
    net = ConvNet().double()
    method = Lora(net, LoraConfig(r=4, alpha=6.0, rslora=True, targets=["conv"]), HEAD)
    layer = method.layers["conv"]
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, dtype=torch.float64))
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    delta = 6.0 / math.sqrt(4) * torch.einsum("oj,jikl->oikl", layer.lora_B[:, :, 0, 0], layer.lora_A)
    expected = F.conv2d(x, layer.base.weight + delta, layer.base.bias, padding=1)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_is_w0_plus_scaled_b_a(rslora):
    r, alpha = 4, 6.0
    original, model, method = trained("lora", r=r, alpha=alpha, rslora=rslora, targets=LORA_TARGETS)
    scale = alpha / math.sqrt(r) if rslora else alpha / r
    assert sorted(method.layers) == sorted(adapted_names(LORA_TARGETS))
    check_linear_layers(original, model, method, lambda name, w0, layer: w0 + scale * layer.lora_B @ layer.lora_A)


def test_lora_on_convolutions_is_w0_plus_b_times_a_per_kernel_position():
    r, alpha = 2, 3.0
    original, model, method = trained("lora", model_fn=tiny_cnn, r=r, alpha=alpha, targets=["backbone.0", "backbone.6"])
    expected = {}
    for name, wrapper in method.layers.items():
        base = original.get_submodule(name)
        x = conv_input(base)
        A, B = wrapper.lora_A, wrapper.lora_B[:, :, 0, 0]  # A: r×C_in×k×k, B: C_out×r×1×1
        delta = torch.zeros_like(base.weight)
        for o in range(B.shape[0]):
            for j in range(r):
                delta[o] += (alpha / r) * B[o, j] * A[j]
        expected[name] = (base.weight + delta).detach()
        assert torch.count_nonzero(delta) > 0
        with torch.no_grad():
            reference = functional_call(base, {"weight": expected[name]}, (x,))
            assert torch.allclose(wrapper(x), reference, atol=1e-10), name
    method.merge()
    for name, wrapper in method.layers.items():
        assert torch.allclose(wrapper.base.weight, expected[name], atol=1e-10), name


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"r": 4, "targets": ["query", "value"]}, 2 * 2 * 4 * (32 + 32)),
    ({"r": 2, "targets": ["intermediate.dense"]}, 2 * 2 * (32 + 48)),
    ({"r": 3, "targets": ["all-linear"]}, 2 * (4 * 3 * (32 + 32) + 2 * 3 * (32 + 48)) + 3 * (32 + 32)),  # + pooler
    ({"r": 2, "targets": ["backbone.0", "backbone.6"], "model": "cnn"}, 2 * (3 * 3 * 3 + 8) + 2 * (8 + 12)),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("lora", values, adapter)
