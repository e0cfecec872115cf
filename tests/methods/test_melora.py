"""MELoRA: one block equals PEFT's LoRA, the block-diagonal update for any leading dimensions, per-block
init bounds and counts, divisibility and rank errors, and the dense reference blockdiag(s·B_i A_i)."""

import math

import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from methods.melora import Melora, MeloraConfig, MeloraLinear
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import (
    LORA_TARGETS,
    check_adapter_count,
    check_linear_layers,
    kaiming_sqrt5_bound,
    peft_layer,
    peft_lora,
    trained,
)

HEAD = ["classifier"]


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


def test_melora_init_bound_is_per_block_fan_in():
    torch.manual_seed(0)
    method = Melora(tiny_bert(), MeloraConfig(r=8, n=2, targets=["query"]), HEAD)
    bound = kaiming_sqrt5_bound(32 // 2)
    for layer in method.layers.values():
        for block in layer.lora_A:
            assert bound * 0.95 < block.abs().max().item() <= bound


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


def test_melora_is_the_block_diagonal_of_the_mini_loras():
    r, n, alpha = 2, 4, 6.0
    original, model, method = trained("melora", r=r, n=n, alpha=alpha, targets=LORA_TARGETS)

    def reference(name, w0, layer):
        rows, cols = w0.shape[0] // n, w0.shape[1] // n
        delta = torch.zeros_like(w0)
        for i in range(n):
            delta[i * rows : (i + 1) * rows, i * cols : (i + 1) * cols] = (
                (alpha / r) * layer.lora_B[i] @ layer.lora_A[i]
            )
        return w0 + delta

    check_linear_layers(original, model, method, reference)


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"r": 2, "n": 2, "targets": ["query", "value"]}, 2 * 2 * 2 * (32 + 32)),
    ({"r": 1, "n": 4, "targets": ["intermediate.dense"]}, 2 * 1 * (32 + 48)),
    ({"r": 2, "n": 8, "targets": ["query"]}, 2 * 2 * (32 + 32)),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("melora", values, adapter)
