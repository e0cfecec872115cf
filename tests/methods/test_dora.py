"""DoRA (weight-decomposed): equality with PEFT (outputs, gradients, merge, dropout in training and
evaluation), the magnitude's start and count, the detached norm, the forward against its formula with
and without bias, and the dense reference m ⊙ (W0 + s·B A)/‖W0 + s·B A‖."""

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from methods.dora import Dora, DoraConfig, DoraLinear
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import (
    FFN_OUT,
    LORA_TARGETS,
    check_adapter_count,
    check_linear_layers,
    peft_layer,
    peft_lora,
    trained,
)

HEAD = ["classifier"]


# -- DoRA ---------------------------------------------------------------------------------------


def dora_pair(dropout=0.0, targets=("query", "value", "intermediate.dense")):
    model = tiny_bert().double()
    ours = Dora(model, DoraConfig(r=4, alpha=8, dropout=dropout, targets=list(targets)), HEAD)
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
    method = Dora(tiny_bert(), DoraConfig(r=4, targets=["query", "intermediate.dense"]), HEAD)
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
    ours_out.pow(2).sum().backward(), theirs_out.pow(2).sum().backward()
    for name, layer in ours.layers.items():
        theirs_layer = peft_layer(theirs, name)
        for ours_grad, theirs_grad in [
            (layer.lora_A.grad, theirs_layer.lora_A["default"].weight.grad),
            (layer.lora_B.grad, theirs_layer.lora_B["default"].weight.grad),
            (layer.magnitude.grad, theirs_layer.lora_magnitude_vector["default"].weight.grad),
        ]:
            torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-12, atol=1e-12)


def test_dora_with_dropout_equals_peft_in_evaluation_at_the_cost_of_dropout_off():
    """In evaluation dropout is the identity: the output is PEFT's, and the layer reuses its base output
    (x W0ᵀ) instead of a second matmul with W0, so it costs what the same layer without dropout costs."""
    ours, theirs = dora_pair(dropout=0.3)
    ours.model.eval(), theirs.eval()
    assert torch.allclose(ours.model(**tiny_batch()).logits, theirs(**tiny_batch()).logits, atol=1e-12)
    dropped = ours.layers["bert.encoder.layer.0.intermediate.dense"]
    plain = DoraLinear(nn.Linear(32, 48).double(), r=4, alpha=8, dropout=0.0, rslora=False)
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
    scale = layer.magnitude / layer.weight_norm()
    (grad,) = torch.autograd.grad(scale.sum(), layer.lora_B, allow_unused=True)
    assert grad is None  # m/‖W0 + sBA‖ carries no gradient into B: the norm is a constant


# -- DoRA forward against W' = m · (W0 + sBA) / ‖W0 + sBA‖ (per output row) ----------------------------------------


@pytest.mark.parametrize("rslora", [False, True])
def test_dora_forward_with_bias_matches_formula(rslora):
    torch.manual_seed(0)
    model = tiny_bert().double()
    method = Dora(model, DoraConfig(r=4, alpha=8.0, dropout=0.0, rslora=rslora, targets=["query"]), HEAD)
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
    method = Dora(net, DoraConfig(r=2, alpha=4.0, dropout=0.0, targets=["proj"]), HEAD)
    layer = method.layers["proj"]
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, dtype=torch.float64) * 0.3)
        layer.magnitude.mul_(1 + 0.5 * torch.rand(6, dtype=torch.float64))
    weight = layer.base.weight + 2.0 * layer.lora_B @ layer.lora_A
    adapted = layer.magnitude[:, None] * weight / weight.norm(dim=1, keepdim=True)
    x = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ adapted.T)


def test_dora_is_the_magnitude_times_the_row_normalised_direction():
    r, alpha = 4, 6.0
    original, model, method = trained("dora", r=r, alpha=alpha, dropout=0.0, targets=LORA_TARGETS)

    def reference(name, w0, layer):
        direction = w0 + (alpha / r) * layer.lora_B @ layer.lora_A
        norms = torch.sqrt((direction**2).sum(dim=1, keepdim=True))
        return layer.magnitude[:, None] * direction / norms

    check_linear_layers(original, model, method, reference)


def dense_dora(layer: DoraLinear, x: torch.Tensor) -> torch.Tensor:
    """x W'ᵀ + b with W' = m ⊙ (W0 + s·B A)/‖W0 + s·B A‖ built densely from the layer's current tensors."""
    weight = layer.base.weight + layer.scaling * layer.lora_B @ layer.lora_A
    return x @ (layer.magnitude[:, None] * weight / weight.norm(dim=1, keepdim=True)).T + layer.base.bias


def test_dora_cached_base_norms_follow_every_change_of_w0():
    """‖W0‖² per row is cached: a W0 written in place (fold, load_state_dict), replaced or cast is read afresh."""
    torch.manual_seed(0)
    layer = DoraLinear(nn.Linear(8, 6).double(), r=2, alpha=4.0, dropout=0.0, rslora=False)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, dtype=torch.float64))
    x = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense_dora(layer, x), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        layer.base.weight.mul_(3)
    torch.testing.assert_close(layer(x), dense_dora(layer, x), rtol=1e-12, atol=1e-12)
    layer.fold()  # W0 ← m ⊙ (W0 + s·B A)/‖·‖, the update still applied on top
    torch.testing.assert_close(layer(x), dense_dora(layer, x), rtol=1e-12, atol=1e-12)
    layer.load_state_dict({**layer.state_dict(), "base.weight": torch.randn(6, 8, dtype=torch.float64)})
    torch.testing.assert_close(layer(x), dense_dora(layer, x), rtol=1e-12, atol=1e-12)
    layer.base.weight = nn.Parameter(torch.randn(6, 8, dtype=torch.float64), requires_grad=False)
    torch.testing.assert_close(layer(x), dense_dora(layer, x), rtol=1e-12, atol=1e-12)
    layer.float()
    torch.testing.assert_close(layer(x.float()), dense_dora(layer, x.float()))


def test_dora_reads_w0_s_row_norms_once_while_w0_is_unchanged():
    layer = DoraLinear(nn.Linear(8, 6), r=2, alpha=4.0, dropout=0.0, rslora=False)
    first = layer.base_row_norms_sq()
    assert layer.base_row_norms_sq() is first  # the cache, not ‖W0‖² again
    with torch.no_grad():
        layer.base.weight.mul_(2)
    assert layer.base_row_norms_sq() is not first


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"r": 4, "targets": ["query", "value"]}, 2 * 2 * (4 * (32 + 32) + 32)),
    ({"r": 2, "targets": ["intermediate.dense"]}, 2 * (2 * (32 + 48) + 48)),
    ({"r": 1, "targets": [FFN_OUT]}, 2 * (1 * (48 + 32) + 32)),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("dora", values, adapter)
