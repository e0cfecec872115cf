"""SURM and its structured matrices (tests that kill mutants): initial
scales (circulant std, Toeplitz std 0.02, Kronecker's kaiming bound 1/√(d_in/r)), dtypes of every
factor, shape errors and config bounds with their exact one-line messages, the adapter's dropout,
and the block dropout taken from the parent module (or the model's own `dropout` at top level)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.structured import Circulant, Kronecker, ToeplitzProduct, build_structure, circulant_product
from methods.surm import Surm, SurmConfig
from tests.conftest import tiny_bert
from tests.methods.references import (
    FFN_OUT,
    LORA_TARGETS,
    adapted_names,
    check_adapter_count,
    check_linear_layers,
    trained,
)

HEAD = ["classifier"]


def surm(model=None, **values) -> Surm:
    return Surm(model if model is not None else tiny_bert(), SurmConfig(**{"dropout": 0.0, **values}), HEAD)


def error(call) -> str:
    with pytest.raises(HarnessError) as caught:
        call()
    return str(caught.value)


# -- structured matrices --------------------------------------------------------------------------


def test_circulant_first_factor_is_gaussian_with_the_given_std_and_the_second_zero():
    torch.manual_seed(0)
    circulant = Circulant(4096, 0.02)
    assert circulant.c_A.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(circulant.c_B) == 0


def test_toeplitz_first_factor_is_gaussian_with_std_0_02_by_default():
    torch.manual_seed(0)
    toeplitz = ToeplitzProduct(4096)
    assert toeplitz.toeplitz_a.std().item() == pytest.approx(0.02, rel=0.05)
    assert toeplitz.toeplitz_a.abs().mean().item() == pytest.approx(0.02 * math.sqrt(2 / math.pi), rel=0.05)
    assert torch.count_nonzero(toeplitz.toeplitz_b) == 0


def test_kronecker_first_factor_has_loras_kaiming_bound():
    """kaiming-uniform with a = √5 on A: r×(d_in/r) gives U(±1/√(d_in/r))."""
    torch.manual_seed(0)
    kron = Kronecker(4096, 8, 4)
    ratio = kron.kron_A.abs().max().item() * math.sqrt(4096 / 4)
    assert 0.95 < ratio <= 1.0
    assert torch.count_nonzero(kron.kron_B) == 0


@pytest.mark.parametrize(
    "module",
    [
        lambda: Circulant(8, 0.1, dtype=torch.float64),
        lambda: ToeplitzProduct(8, dtype=torch.float64),
        lambda: Kronecker(8, 4, 2, dtype=torch.float64),
    ],
)
def test_every_structured_factor_takes_the_factory_dtype(module):
    assert all(p.dtype == torch.float64 for p in module().parameters())


def test_circulant_product_of_a_bfloat16_column_runs_its_fft_in_float32():
    torch.manual_seed(0)
    column, x = torch.randn(16), torch.randn(3, 16)
    out = circulant_product(column.bfloat16(), x.bfloat16(), 16)
    index = (torch.arange(16)[:, None] - torch.arange(16)[None, :]) % 16
    expected = x.bfloat16().float() @ column.bfloat16().float()[index].T
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.02, atol=0.05)


def test_toeplitz_needs_a_square_layer():
    assert error(lambda: build_structure("toeplitz", 32, 48, 2, 1.0, "layer.x")) == (
        "surm: structure=toeplitz needs a square layer, but 'layer.x' is 48×32; target square layers or use "
        "structure=kronecker"
    )


@pytest.mark.parametrize("d_in, d_out", [(6, 4), (4, 6), (5, 7)])
def test_kronecker_rank_must_divide_both_sizes(d_in, d_out):
    assert error(lambda: build_structure("kronecker", d_in, d_out, 3 if (d_in, d_out) != (5, 7) else 2, 1.0, "m")) == (
        f"surm: structure=kronecker needs method.r={3 if (d_in, d_out) != (5, 7) else 2} to divide both sizes of 'm' "
        f"({d_out}×{d_in})"
    )


# -- SURM config and layers -------------------------------------------------------------------------


def test_surm_rank_and_dropout_bounds():
    assert SurmConfig(r=1).r == 1
    assert error(lambda: SurmConfig(r=0)) == "method.r must be a positive integer, got 0"
    assert SurmConfig(dropout=0.0).dropout == 0.0
    for dropout in (1.0, 1.5, -0.2):
        assert error(lambda: SurmConfig(dropout=dropout)) == f"method.dropout must be in [0, 1), got {dropout}"


def test_surm_lora_placement_circulant_std_is_one():
    torch.manual_seed(0)
    method = surm(tiny_bert(hidden_size=1024, num_attention_heads=4, intermediate_size=8, num_hidden_layers=1))
    values = torch.cat([layer.structured.c_A.detach() for layer in method.layers.values()])
    assert values.std().item() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("structure, attribute", [("circulant", "c_A"), ("toeplitz", "toeplitz_a")])
def test_surm_adapter_placement_first_factor_std_is_0_02(structure, attribute):
    torch.manual_seed(0)
    method = surm(
        tiny_bert(hidden_size=1024, num_attention_heads=4, intermediate_size=8, num_hidden_layers=1),
        structure=structure,
        placement="adapter",
    )
    values = torch.cat([getattr(layer.structured, attribute).detach() for layer in method.layers.values()])
    assert values.std().item() == pytest.approx(0.02, rel=0.05)


def test_surm_adapter_kronecker_error_names_the_layer():
    assert error(lambda: surm(structure="kronecker", placement="adapter", r=3)) == (
        "surm: structure=kronecker needs method.r=3 to divide both sizes of "
        "'bert.encoder.layer.0.attention.output.dense' (32×32)"
    )


def test_surm_adapter_bias_takes_the_models_dtype():
    method = surm(tiny_bert().double(), placement="adapter")
    assert all(layer.adapter_bias.dtype == torch.float64 for layer in method.layers.values())


def test_surm_adapter_dropout_acts_in_training():
    method = surm(placement="adapter", dropout=0.5)
    adapter = method.layers["bert.encoder.layer.0.output.dense"]
    with torch.no_grad():
        adapter.structured.c_B.fill_(1.0)
    x = torch.randn(4, 48)
    adapter.eval()
    clean = adapter(x)
    adapter.train()
    torch.manual_seed(1)
    noisy = adapter(x)
    assert not torch.allclose(noisy, clean)
    adapter.eval()
    torch.testing.assert_close(adapter(x), clean)


class TopLevel(nn.Module):
    """A model whose adapted layer sits at the top level, next to a top-level `dropout`."""

    def __init__(self, dropout: nn.Module):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.dropout = dropout
        self.classifier = nn.Linear(8, 3)

    def forward(self, x):
        return self.classifier(self.dropout(self.fc(x)))


def test_surm_adapter_at_top_level_takes_the_models_dropout():
    model = TopLevel(nn.Dropout(0.3))
    method = Surm(model, SurmConfig(placement="adapter", targets=["fc"]), HEAD)
    layer = method.layers["fc"]
    assert isinstance(layer.block_dropout, nn.Dropout) and layer.block_dropout.p == 0.3
    assert isinstance(model.dropout, nn.Identity)


def test_surm_adapter_block_dropout_that_is_not_a_dropout_is_an_error():
    model = TopLevel(nn.ReLU())
    assert (
        error(lambda: Surm(model, SurmConfig(placement="adapter", targets=["fc"]), HEAD))
        == "surm: expected 'dropout' after 'fc' to be a Dropout, found ReLU"
    )
    bert = tiny_bert()
    bert.bert.encoder.layer[0].output.dropout = nn.Tanh()
    assert error(lambda: surm(bert, placement="adapter")) == (
        "surm: expected 'bert.encoder.layer.0.output.dropout' after 'bert.encoder.layer.0.output.dense' to be a "
        "Dropout, found Tanh"
    )


def circulant(column: torch.Tensor) -> torch.Tensor:
    """C_ij = c[(i − j) mod d]."""
    d = len(column)
    return torch.stack([torch.stack([column[(i - j) % d] for j in range(d)]) for i in range(d)])


def symmetric_toeplitz(v: torch.Tensor) -> torch.Tensor:
    """T_ij = v[|i − j|]."""
    d = len(v)
    return torch.stack([torch.stack([v[abs(i - j)] for j in range(d)]) for i in range(d)])


def kronecker(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """(B ⊗ A)[p·a + i, q·b + j] = B[p, q]·A[i, j] for A of shape a×b."""
    a, b = A.shape
    out = torch.zeros(B.shape[0] * a, B.shape[1] * b, dtype=A.dtype)
    for p in range(B.shape[0]):
        for q in range(B.shape[1]):
            out[p * a : (p + 1) * a, q * b : (q + 1) * b] = B[p, q] * A
    return out


@pytest.mark.parametrize("structure", ["circulant", "toeplitz", "kronecker"])
def test_surm_lora_placement_is_w0_plus_the_structured_matrix(structure):
    alpha, r = 1.5, 4
    targets = ["query", "value"] if structure != "kronecker" else LORA_TARGETS
    original, model, method = trained(
        "surm", structure=structure, placement="lora", alpha=alpha, r=r, dropout=0.0, targets=targets
    )

    def reference(name, w0, layer):
        s = layer.structured
        if structure == "circulant":
            return w0 + alpha * circulant(s.c_B * s.c_A)
        if structure == "toeplitz":
            return w0 + alpha * symmetric_toeplitz(s.toeplitz_b) @ symmetric_toeplitz(s.toeplitz_a)
        return w0 + (alpha / r) * kronecker(s.kron_B, s.kron_A)

    check_linear_layers(original, model, method, reference)


@pytest.mark.parametrize("structure, activation", [("circulant", "gelu"), ("toeplitz", "tanh"), ("kronecker", "silu")])
def test_surm_adapter_is_h_plus_act_of_m_h_plus_beta(structure, activation):
    alpha, r = 1.5, 4
    original, model, method = trained(
        "surm", structure=structure, placement="adapter", alpha=alpha, r=r, dropout=0.0, activation=activation
    )
    act = {"gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu}[activation]
    x = torch.randn(5, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert sorted(method.layers) == sorted(adapted_names(["attention.output.dense", FFN_OUT]))
    for name, wrapper in method.layers.items():
        base = original.get_submodule(name)
        s = wrapper.structured
        if structure == "circulant":
            matrix = alpha * circulant(s.c_B * s.c_A)
        elif structure == "toeplitz":
            matrix = alpha * symmetric_toeplitz(s.toeplitz_b) @ symmetric_toeplitz(s.toeplitz_a)
        else:
            matrix = (alpha / r) * kronecker(s.kron_B, s.kron_A)
        inputs = x[:, : base.in_features]
        with torch.no_grad():
            h = inputs @ base.weight.T + base.bias
            expected = h + act(h @ matrix.T) + wrapper.adapter_bias
            assert torch.count_nonzero(matrix) > 0 and torch.count_nonzero(wrapper.adapter_bias) > 0
            assert torch.allclose(wrapper(inputs), expected, atol=1e-10), name
            method.merge()  # not mergeable: a no-op
            assert torch.allclose(wrapper(inputs), expected, atol=1e-10), name


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"structure": "circulant", "targets": ["query", "value"]}, 2 * 2 * (2 * 32)),
    ({"structure": "toeplitz", "targets": ["query"]}, 2 * (2 * 32)),
    ({"structure": "kronecker", "r": 4, "targets": ["intermediate.dense"]}, 2 * (32 + 48)),
    ({"structure": "circulant", "placement": "adapter"}, 2 * 2 * (2 * 32 + 32)),
    ({"structure": "kronecker", "placement": "adapter", "r": 2}, 2 * 2 * (32 + 32 + 32)),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("surm", values, adapter)
