"""LoRTA (tests that kill mutants): factor dtypes and A's kaiming bound, and
the errors (exact one-line messages) for models without attention heads or with a hidden size the
heads do not divide, and for unmatched targets."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from methods.lorta import Lorta, LortaConfig, LortaFactors
from tests.conftest import tiny_bert
from tests.methods.references import NAMES, check_adapter_count, check_linear_layers, trained

HEAD = ["classifier"]


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.query = nn.Linear(d, d)


class Plain(nn.Module):
    """`layer.<n>.query` projections, a classifier, and an optional `config`."""

    def __init__(self, d: int = 8, config=None):
        super().__init__()
        self.layer = nn.ModuleList([Block(d), Block(d)])
        self.classifier = nn.Linear(d, 3)
        if config is not None:
            self.config = config


def error(call) -> str:
    with pytest.raises(HarnessError) as caught:
        call()
    return str(caught.value)


def test_lorta_factors_take_the_models_dtype():
    method = Lorta(tiny_bert().double(), LortaConfig(r=2), HEAD)
    params = [p for n, p in method.model.named_parameters() if p.requires_grad and not n.startswith("classifier")]
    assert params and all(p.dtype == torch.float64 for p in params)


def test_lorta_A_has_loras_kaiming_bound():
    """A: d×r with kaiming-uniform a = √5: U(±1/√r); A_kv (grouped-query k/v outputs) likewise, in the dtype asked."""
    torch.manual_seed(0)
    factors = LortaFactors(4096, 4, 1, 1, 4, narrow=2048, dtype=torch.float64)
    for output in (factors.A, factors.A_kv):
        ratio = output.abs().max().item() * math.sqrt(4)
        assert 0.95 < ratio <= 1.0 and output.dtype == torch.float64
    assert factors.A.shape == (4096, 4) and factors.A_kv.shape == (2048, 4)


def test_lorta_targets_of_two_narrower_widths_are_one_line():
    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = torch.nn.Linear(8, 8), torch.nn.Linear(8, 4), torch.nn.Linear(8, 2)

    model = torch.nn.Module()
    model.config = type("Config", (), {"num_attention_heads": 2})()
    model.layer = torch.nn.ModuleList([Attention()])
    with pytest.raises(HarnessError) as caught:
        Lorta(model, LortaConfig(r=2, targets=["q", "k", "v"]), [])
    assert (
        str(caught.value)
        == "lorta: the targets narrower than 8 must share one output width (grouped-query k, v); got [4, 2]"
    )
    with pytest.raises(HarnessError) as caught:
        Lorta(model, LortaConfig(r=2, targets=["k", "v"]), [])
    assert (
        str(caught.value)
        == "lorta: the targets narrower than 8 must share one output width (grouped-query k, v); got [4, 2]"
    )


def test_lorta_needs_attention_heads():
    message = "lorta: the model config has no num_attention_heads; LoRTA splits the matrices by attention head"
    assert error(lambda: Lorta(Plain(), LortaConfig(targets=["query"]), HEAD)) == message
    assert error(lambda: Lorta(Plain(config=SimpleNamespace()), LortaConfig(targets=["query"]), HEAD)) == message


def test_lorta_heads_must_divide_the_hidden_size():
    model = Plain(config=SimpleNamespace(num_attention_heads=3))
    assert (
        error(lambda: Lorta(model, LortaConfig(targets=["query"]), HEAD))
        == "lorta: hidden size 8 is not divisible by num_attention_heads=3"
    )


def test_lorta_unmatched_target_names_the_method():
    assert error(lambda: Lorta(tiny_bert(), LortaConfig(targets=["nothing_here"]), HEAD)).startswith(
        "lorta: target pattern 'nothing_here' matches no Linear module; the model has: "
    )


def test_lorta_is_the_cp_tensor_slice_of_each_layer_and_matrix():
    r, alpha, heads = 3, 2.0, 4
    targets = ["query", "key", "value", "attention.output.dense"]
    original, model, method = trained("lorta", r=r, alpha=alpha, targets=targets)
    factors = model.lorta_factors
    head_size = 32 // heads

    def reference(name, w0, layer):
        layer_index = int(name.split(".")[3])
        matrix = next(i for i, target in enumerate(targets) if name.endswith(NAMES[target]))
        delta = torch.zeros_like(w0)
        for h in range(heads):
            weights = factors.C_h[h] * factors.C_l[layer_index] * factors.C_m[matrix]  # λ_h
            delta[:, h * head_size : (h + 1) * head_size] = factors.A @ torch.diag(weights) @ factors.B
        return w0 + (alpha / r) * delta

    check_linear_layers(original, model, method, reference)


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"r": 4}, 4 * (32 + 8 + 4 + 2 + 4)),  # the whole model: r·(d + d_h + H + L + M)
    ({"r": 2, "targets": ["query", "value"]}, 2 * (32 + 8 + 4 + 2 + 2)),
    ({"r": 8, "targets": ["query"]}, 8 * (32 + 8 + 4 + 2 + 1)),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("lorta", values, adapter)


def test_two_targets_of_one_layer_and_matrix_type_are_one_line():
    names = [f"bert.encoder.layer.{layer}.attention.self.{m}" for layer in (0, 1) for m in ("key", "query")]
    assert error(lambda: Lorta(tiny_bert(), LortaConfig(targets=["re:.*self\\.(query|key)"]), HEAD)) == (
        f"lorta: several targets map to the same (layer, matrix): {sorted(names)}; give one pattern per matrix type"
    )
