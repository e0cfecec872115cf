"""LoRA-XS: the truncated SVD's factors (singular values on the input side), equality with PEFT's LoRA
with R folded into B, the r² count and frozen factors as buffers, config bounds, and the dense reference
W0 + s·B R A computed from the paper's formula."""

import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from methods.lora_xs import LoraXs, LoraXsConfig, LoraXsLinear
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import (
    LORA_TARGETS,
    check_adapter_count,
    check_linear_layers,
    peft_layer,
    peft_lora,
    trained,
)

HEAD = ["classifier"]


# -- LoRA-XS ------------------------------------------------------------------------------------


def test_lora_xs_factors_are_the_truncated_svd_with_singular_values_on_the_input_side():
    torch.manual_seed(0)
    base = nn.Linear(24, 16).double()
    layer = LoraXsLinear(base, r=5, alpha=16, dropout=0.0, init_std=1e-5)
    assert torch.allclose(layer.lora_B.T @ layer.lora_B, torch.eye(5, dtype=torch.float64), atol=1e-12)
    singular = torch.linalg.svdvals(base.weight.detach())
    assert torch.allclose(layer.lora_A.norm(dim=1), singular[:5], atol=1e-12)  # rows of Σ_r V_rᵀ
    residual = torch.linalg.matrix_norm(base.weight - layer.lora_B @ layer.lora_A)
    assert residual.item() == pytest.approx(singular[5:].square().sum().sqrt().item(), rel=1e-10)
    assert layer.lora_R.std().item() == pytest.approx(1e-5, rel=0.5)


def test_lora_xs_equals_peft_lora_with_r_folded_into_b():
    model = tiny_bert().double()
    targets = ["query", "value", "attention.output.dense", "output.dense"]
    ours = LoraXs(model, LoraXsConfig(r=4, alpha=16, targets=targets), HEAD)
    theirs = peft_lora(tiny_bert().double(), 4, 16, targets)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, layer in ours.layers.items():
            layer.lora_R.copy_(torch.randn(4, 4, generator=generator, dtype=torch.float64))
            peft_layer(theirs, name).lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer(theirs, name).lora_B["default"].weight.copy_(layer.lora_B @ layer.lora_R)
    assert torch.allclose(ours.model(**tiny_batch()).logits, theirs(**tiny_batch()).logits, atol=1e-12)


def test_lora_xs_trains_r_squared_parameters_and_keeps_factors_as_buffers():
    method = LoraXs(tiny_bert(), LoraXsConfig(r=4), HEAD)
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
    first = LoraXs(tiny_bert(), LoraXsConfig(r=4), HEAD).layers
    second = LoraXs(tiny_bert(), LoraXsConfig(r=4), HEAD).layers
    assert all(
        torch.equal(first[n].lora_A, second[n].lora_A) and torch.equal(first[n].lora_B, second[n].lora_B) for n in first
    )
    with pytest.raises(
        HarnessError,
        match=r"lora_xs: rank r=33 exceeds min\(d_in, d_out\)=32 of layer 'bert.encoder.layer.0.attention.self.query'",
    ):
        LoraXs(tiny_bert(), LoraXsConfig(r=33), HEAD)


# -- LoRA-XS config and layer --------------------------------------------------------------------------------


def test_lora_xs_init_std_bounds():
    assert LoraXsConfig(init_std=0.0).init_std == 0.0
    with pytest.raises(HarnessError) as error:
        LoraXsConfig(init_std=-0.5)
    assert str(error.value) == "method.init_std must be >= 0, got -0.5"


def test_lora_xs_factors_on_the_base_device():
    model = tiny_bert().to("meta")
    method = LoraXs(model, LoraXsConfig(r=4, targets=["query"]), HEAD)
    for layer in method.layers.values():
        assert layer.lora_R.device.type == "meta" and layer.lora_A.device.type == "meta"


def test_lora_xs_is_w0_plus_u_r_times_r_times_sigma_v_r():
    r, alpha = 4, 6.0
    original, model, method = trained("lora_xs", r=r, alpha=alpha, targets=LORA_TARGETS)

    def reference(name, w0, layer):
        u, s, vh = torch.linalg.svd(w0, full_matrices=False)  # computed here, from the pristine W0
        return w0 + (alpha / r) * u[:, :r] @ layer.lora_R @ torch.diag(s[:r]) @ vh[:r]

    check_linear_layers(original, model, method, reference)


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"r": 4, "targets": ["query", "value"]}, 2 * 2 * 4**2),
    ({"r": 8, "targets": ["intermediate.dense", "output.dense"]}, 2 * 3 * 8**2),  # output.dense: 2 per layer
    ({"r": 2, "targets": ["all-linear"]}, (2 * 6 + 1) * 2**2),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("lora_xs", values, adapter)
