"""Aurora: the dense reference ΔW_j = s·V (C ×₃ p_j)ᵀ U per matrix and chunk, computed here from the shared tensors
read by name; dropout on U x; the init; U, V, C held once; closed-form counts; every config and target error."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from harness.errors import HarnessError
from methods import METHODS
from methods.aurora import Aurora, AuroraConfig
from tests.conftest import tiny_batch, tiny_bert
from tests.methods.references import FFN_OUT, HEAD, build, check_linear_layers, effective_weight, message, trained
from tests.training import settings

ALL_SIX = ["query", "key", "value", "attention.output.dense", "intermediate.dense", FFN_OUT]


def chunked_bert(ffn: int = 64):
    """tiny_bert (d = 32, 2 layers) with an FFN of a multiple of d: ffn/32 chunks per FFN matrix."""
    return lambda seed=0: tiny_bert(seed=seed, intermediate_size=ffn)


def reference_delta(U, V, C, p, scale, d_out, d_in) -> torch.Tensor:
    """s·V M_kᵀ U per chunk k, M_k[a, b] = Σ_c C[a, b, c] p[c, k]; chunks stacked along the wider side."""
    blocks = []
    for k in range(p.shape[1]):
        M = sum(C[:, :, c] * p[c, k] for c in range(C.shape[2]))
        blocks.append(scale * V @ M.T @ U)
    return torch.cat(blocks, dim=0 if d_out >= d_in else 1)


def test_aurora_is_V_Mt_U_per_matrix_and_chunk():
    """All six matrices, FFN 64 = 2 chunks each way, s = 2, after 4 steps (V ≠ 0): unmerged = reference = merged."""
    original, model, method = trained("aurora", model_fn=chunked_bert(), r=3, scale=2.0, dropout=0.0, targets=ALL_SIX)
    U, V, C = model.aurora_factors.U, model.aurora_factors.V, model.aurora_factors.C
    assert U.shape == (3, 32) and V.shape == (32, 3) and C.shape == (3, 3, 3)
    chunks = {name: layer.aurora_p.shape[1] for name, layer in method.layers.items()}
    assert sorted(chunks.values()) == [1] * 8 + [2] * 4

    def reference(name, w0, layer):
        return w0 + reference_delta(U, V, C, layer.aurora_p, 2.0, *w0.shape)

    with torch.no_grad():
        check_linear_layers(original, model, method, reference)


@pytest.mark.parametrize("target", ["query", "intermediate.dense", FFN_OUT])
def test_dropout_acts_on_U_x_of_each_chunk(target):
    """In train mode: y = W0 x + b + s·Σ V M_kᵀ drop(U x_k) (or per output chunk), the mask on the R-sized U x."""
    _, model, method = build("aurora", model_fn=chunked_bert(96), r=4, scale=1.5, dropout=0.5, targets=[target])
    name, layer = next(iter(method.layers.items()))
    with torch.no_grad():
        model.aurora_factors.V.normal_()
    U, V, C = model.aurora_factors.U, model.aurora_factors.V, model.aurora_factors.C
    p, base = layer.aurora_p, layer.base
    x = torch.randn(5, base.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    layer.train()
    torch.manual_seed(9)
    got = layer(x)
    torch.manual_seed(9)
    n = p.shape[1]
    cores = [sum(C[:, :, c] * p[c, k] for c in range(4)) for k in range(n)]
    if base.in_features > base.out_features:
        latent = F.dropout(x.reshape(5, n, 32) @ U.T, 0.5, training=True)
        update = sum(latent[:, k] @ cores[k] @ V.T for k in range(n))
    else:
        latent = F.dropout(x @ U.T, 0.5, training=True)
        update = torch.cat([latent @ cores[k] @ V.T for k in range(n)], dim=1)
    assert torch.allclose(got, base(x) + 1.5 * update, atol=1e-10), name
    layer.eval()
    assert not torch.allclose(layer(x), got)


def test_aurora_init_v_zero_u_kaiming_c_and_p_xavier():
    torch.manual_seed(0)
    r = 64
    method = Aurora(chunked_bert(128)().double(), AuroraConfig(r=r, targets=["query", "intermediate.dense"]), HEAD)
    factors = method.model.aurora_factors
    assert torch.equal(factors.V, torch.zeros(32, r, dtype=torch.float64))
    for tensor, bound in (
        (factors.U, 1 / math.sqrt(32)),  # nn.Linear's default: kaiming-uniform a = √5
        (factors.C, math.sqrt(3) / r),  # xavier: fan-in = fan-out = R²
        (method.layers["bert.encoder.layer.0.attention.self.query"].aurora_p, math.sqrt(6 / (r + 1))),
        (method.layers["bert.encoder.layer.0.intermediate.dense"].aurora_p, math.sqrt(6 / (r + 4))),
    ):
        assert tensor.dtype == torch.float64
        assert 0.9 < tensor.abs().max().item() / bound <= 1.0
    # U (2048 draws) and C (R³ draws) reach their bound to within 1%: a = √6 (bound √(6/7)/√d) would not
    assert (
        factors.U.abs().max().item() * math.sqrt(32) > 0.99 and factors.C.abs().max().item() * r / math.sqrt(3) > 0.99
    )
    assert method.layers["bert.encoder.layer.1.intermediate.dense"].aurora_p.shape == (r, 4)


def test_u_v_c_are_held_once_by_the_model_not_by_the_layers():
    _, model, method = build("aurora", r=4, targets=["query", "value"])
    names = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier")]
    layers = [f"bert.encoder.layer.{i}.attention.self.{m}.aurora_p" for i in (0, 1) for m in ("query", "value")]
    assert sorted(names) == sorted(["aurora_factors.U", "aurora_factors.V", "aurora_factors.C", *layers])
    assert sorted(method.trainable_state_dict()) == sorted(names + ["classifier.weight", "classifier.bias"])
    groups = method.param_groups(settings(weight_decay=0.05))
    assert sum(p.numel() for g in groups for p in g["params"]) == method.param_counts()["trainable"]
    assert all(g["weight_decay"] == 0.05 for g in groups)  # decay="all": the reference's AdamW over everything
    assert all(layer.factors is model.aurora_factors for layer in method.layers.values())


# -- closed-form parameter counts: 2dR + R³ + R·(matrices + chunks), tiny BERT d = 32, 2 layers -------------------
COUNTS = [
    (chunked_bert(48), {"r": 4}, 2 * 32 * 4 + 4**3 + 4 * 6),  # q, k, v (the default targets)
    (
        chunked_bert(64),
        {"r": 3, "targets": ["query", "attention.output.dense", "intermediate.dense", FFN_OUT]},
        2 * 32 * 3 + 3**3 + 3 * 2 * (1 + 1 + 2 + 2),  # FFN 64: 2 chunks each way
    ),
    (chunked_bert(96), {"r": 8, "targets": ["intermediate.dense"]}, 2 * 32 * 8 + 8**3 + 8 * 2 * 3),
    (chunked_bert(48), {}, 2 * 32 * 32 + 32**3 + 32 * 6),  # R = 32
    (chunked_bert(48), {"r": 1}, 2 * 32 * 1 + 1**3 + 1 * 6),  # R = 1 is a valid rank
]


@pytest.mark.parametrize("model_fn, values, adapter", COUNTS)
def test_adapter_count_is_2dR_plus_R_cubed_plus_R_per_matrix_and_chunk(model_fn, values, adapter):
    _, _, method = build("aurora", model_fn=model_fn, **values)
    counts = method.param_counts()
    assert (counts["adapter"], counts["head"], counts["trainable"]) == (adapter, 32 * 3 + 3, adapter + 32 * 3 + 3)


def test_minilm_shape_all_six_matrices_is_4_chunks_per_ffn_matrix():
    """MiniLM (d 384, FFN 1536 = 4 chunks, 6 layers), the ViT's six matrices, R = 32: 2·384·32 + 32³ + 32·6·12."""
    config = BertConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12)
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
        method = Aurora(model, AuroraConfig(targets=ALL_SIX), HEAD)
    assert method.param_counts()["adapter"] == 2 * 384 * 32 + 32**3 + 32 * 6 * (4 + 4 + 4)


def test_the_adapter_tensors_live_on_the_backbone_device():
    """A backbone on another device than the default (here meta): U, V, C and every p are created beside it."""
    with torch.device("meta"):
        model = chunked_bert(64)()
    method = Aurora(model, AuroraConfig(r=4, targets=["query", "intermediate.dense"]), HEAD)
    factors = model.aurora_factors
    tensors = [factors.U, factors.V, factors.C, *(layer.aurora_p for layer in method.layers.values())]
    assert [t.device.type for t in tensors] == ["meta"] * 7


def test_a_single_adapted_matrix_is_V_Mt_U():
    """One target (one matrix in the whole model): 2dR + R³ + R parameters and W0 + s·V M_kᵀ U per chunk."""
    torch.manual_seed(0)
    model = Plain((24, 8)).double()
    w0 = model.square.weight.detach().clone()
    method = Aurora(model, AuroraConfig(r=2, scale=1.5, dropout=0.0, targets=["square"]), HEAD)
    assert list(method.layers) == ["square"] and method.param_counts()["adapter"] == 2 * 8 * 2 + 2**3 + 2
    factors, layer = model.aurora_factors, method.layers["square"]
    with torch.no_grad():
        factors.V.normal_()
    U, V, C = factors.U, factors.V, factors.C
    expected = w0 + reference_delta(U, V, C, layer.aurora_p, 1.5, 8, 8)
    assert torch.allclose(effective_weight(layer, 8), expected, atol=1e-12)


# -- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, text",
    [
        ({"r": 0}, "method.r must be a positive rank, got 0"),
        ({"scale": 0.0}, "method.scale must be > 0, got 0.0"),
        ({"dropout": 1.0}, "method.dropout must be in [0, 1), got 1.0"),
        ({"dropout": -0.1}, "method.dropout must be in [0, 1), got -0.1"),
    ],
)
def test_config_errors_are_one_line(values, text):
    assert message(values, AuroraConfig) == text


def error(model, targets) -> str:
    with pytest.raises(HarnessError) as caught:
        Aurora(model, AuroraConfig(r=2, targets=targets), HEAD)
    return str(caught.value)


def test_an_unmatched_target_names_the_method():
    assert error(tiny_bert(), ["nothing_here"]).startswith(
        "aurora: target pattern 'nothing_here' matches no Linear module; the model has: "
    )


def test_an_ffn_width_not_a_multiple_of_d_is_one_line():
    assert error(tiny_bert(), ["query", "intermediate.dense"]) == (
        "aurora: U (d→R) and V (R→d) are shared, so every target must be d×d, n·d×d or d×n·d for the hidden size "
        "d=32; 'bert.encoder.layer.0.intermediate.dense' is 48×32"
    )


class Plain(nn.Module):
    """Two linears (8→8 and `wide`), a classifier, an optional config."""

    def __init__(self, wide: tuple[int, int], hidden_size=None):
        super().__init__()
        self.square, self.wide, self.classifier = nn.Linear(8, 8), nn.Linear(*wide), nn.Linear(8, 3)
        if hidden_size is not None:
            self.config = BertConfig(hidden_size=hidden_size, num_attention_heads=1)


def test_without_a_config_d_is_the_smallest_target_dimension():
    method = Aurora(Plain((24, 8)), AuroraConfig(r=2, targets=["square", "wide"]), HEAD)
    assert method.model.aurora_factors.U.shape == (2, 8) and method.layers["wide"].aurora_p.shape == (2, 3)
    assert method.layers["wide"].chunked_input
    assert error(Plain((8, 12)), ["square", "wide"]).endswith("for the hidden size d=8; 'wide' is 12×8")


def test_the_config_hidden_size_is_d():
    """A grouped-query-like k (d → d/2) has no d-sized chunks: the config's hidden size is d, not the smaller side."""
    assert error(Plain((8, 4), hidden_size=8), ["wide"]).endswith("for the hidden size d=8; 'wide' is 4×8")
    assert error(Plain((8, 16), hidden_size=16), ["square"]).endswith("for the hidden size d=16; 'square' is 8×8")


def test_the_class_declares_a_mergeable_identity_start_decaying_everything():
    capabilities = METHODS["aurora"].capabilities
    assert capabilities.mergeable and capabilities.identity_at_init and capabilities.decay == "all"
    model = tiny_bert()
    reference = model(**tiny_batch()).logits
    Aurora(model, AuroraConfig(r=4), HEAD)
    assert torch.equal(model(**tiny_batch()).logits, reference)
