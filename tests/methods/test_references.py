"""An independent reference per method, computed in the test from the paper's formula.

After a few training steps to a non-zero update, the effective weight of every adapted layer (read
off its outputs) equals the dense weight computed here from the paper's formula, reading the
method's tensors by name: never through the method's `delta_weight`, forward helpers or `dense()`.
The merged weight equals the same reference. Everything runs in float64 on a tiny BERT (hidden 32,
FFN 48, 2 layers, 4 heads; query/key/value/attention-output 32×32, intermediate 48×32, FFN output
32×48) or a tiny CNN, with non-square targets wherever the method allows them, so that swapped
factors or dimensions cannot pass.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from methods import method_class
from tests.conftest import tiny_batch, tiny_bert, tiny_cnn, tiny_images
from tests.training import train_steps

HEAD = ["classifier"]
FFN_OUT = r"re:.*\.layer\.\d+\.output\.dense"
LAYER = "bert.encoder.layer.{}."
NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention.output.dense": "attention.output.dense",
    "intermediate.dense": "intermediate.dense",
    FFN_OUT: "output.dense",
}


def build(name: str, model_fn=tiny_bert, seed: int = 0, **values):
    """(pristine copy of the backbone, adapted model, method), both models float64."""
    original = model_fn(seed=seed).double()
    model = model_fn(seed=seed).double()
    torch.manual_seed(seed + 100)
    cls = method_class(name)
    return original, model, cls(model, cls.Config(**values), HEAD)


def trained(name: str, steps: int = 4, total=None, model_fn=tiny_bert, before_step_end=None, **values):
    original, model, method = build(name, model_fn=model_fn, **values)
    batch = (
        (lambda step: {"pixel_values": tiny_images(seed=step)["pixel_values"].double()})
        if model_fn is tiny_cnn
        else (lambda step: tiny_batch(seed=step))
    )
    train_steps(method, batch, steps, total=total, before_step_end=before_step_end)
    return original, model, method


def effective_weight(layer: torch.nn.Module, d_in: int) -> torch.Tensor:
    """W of a layer that computes x ↦ W x + b, read off its outputs on the unit vectors."""
    with torch.no_grad():
        eye = torch.eye(d_in, dtype=torch.float64)
        return (layer(eye) - layer(torch.zeros(1, d_in, dtype=torch.float64))).T


def conv_input(conv: torch.nn.Conv2d) -> torch.Tensor:
    return torch.randn(2, conv.in_channels, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(11))


def adapted_names(targets: list[str], layers=(0, 1)) -> list[str]:
    return [LAYER.format(layer) + NAMES[target] for layer in layers for target in targets]


def check_linear_layers(original, model, method, reference) -> None:
    """Unmerged effective weight = reference(name, W0, wrapper) = merged weight, for every layer."""
    expected = {}
    for name, wrapper in method.layers.items():
        w0 = original.get_submodule(name).weight.detach()
        expected[name] = reference(name, w0, wrapper)
        assert torch.allclose(effective_weight(wrapper, w0.shape[1]), expected[name], atol=1e-10), name
    updated = [name for name in expected if not torch.allclose(expected[name], original.get_submodule(name).weight)]
    assert len(updated) >= len(expected) // 2, (
        f"only {updated} were updated by training; the check would be nearly empty"
    )
    method.merge()
    for name, wrapper in method.layers.items():
        assert torch.allclose(wrapper.base.weight, expected[name], atol=1e-10), f"{name}: merged weight"
        assert torch.allclose(effective_weight(wrapper, wrapper.base.weight.shape[1]), expected[name], atol=1e-10), (
            f"{name}: merged output"
        )


LORA_TARGETS = ["query", "intermediate.dense", FFN_OUT]


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


def test_lora_xs_is_w0_plus_u_r_times_r_times_sigma_v_r():
    r, alpha = 4, 6.0
    original, model, method = trained("lora_xs", r=r, alpha=alpha, targets=LORA_TARGETS)

    def reference(name, w0, layer):
        u, s, vh = torch.linalg.svd(w0, full_matrices=False)  # computed here, from the pristine W0
        return w0 + (alpha / r) * u[:, :r] @ layer.lora_R @ torch.diag(s[:r]) @ vh[:r]

    check_linear_layers(original, model, method, reference)


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


def test_dora_is_the_magnitude_times_the_row_normalised_direction():
    r, alpha = 4, 6.0
    original, model, method = trained("dora", r=r, alpha=alpha, dropout=0.0, targets=LORA_TARGETS)

    def reference(name, w0, layer):
        direction = w0 + (alpha / r) * layer.lora_B @ layer.lora_A
        norms = torch.sqrt((direction**2).sum(dim=1, keepdim=True))
        return layer.magnitude[:, None] * direction / norms

    check_linear_layers(original, model, method, reference)


def test_adalora_is_b_diag_e_a_over_the_initial_rank_with_pruned_triplets_zero():
    r, target_r, alpha = 3, 2, 6.0
    original, model, method = trained(
        "adalora",
        steps=12,
        total=12,
        r=r,
        target_r=target_r,
        alpha=alpha,
        t_init=2,
        t_final=3,
        delta_t=2,
        targets=LORA_TARGETS,
    )
    kept = {name: layer.kept.clone() for name, layer in method.layers.items()}
    assert sum(int(mask.sum()) for mask in kept.values()) == target_r * 6  # the final budget b_T
    for name, layer in method.layers.items():
        assert torch.all(layer.lora_E[~kept[name]] == 0), f"{name}: a pruned E_i is not zero"

    def reference(name, w0, layer):  # P Λ Q · α/(r + 1e-5), the official code's scale (PEFT's too)
        return w0 + alpha / (r + 1e-5) * layer.lora_B @ torch.diag(layer.lora_E) @ layer.lora_A

    check_linear_layers(original, model, method, reference)


def test_dora_dynamic_is_b_diag_c_a_over_r0_with_pruned_components_zero():
    r, target_r, alpha = 3, 1, 6.0
    original, model, method = trained(
        "dora_dynamic",
        steps=10,
        total=10,
        r=r,
        target_r=target_r,
        alpha=alpha,
        dropout=0.0,
        delta_t=1,
        targets=LORA_TARGETS,
    )
    assert sum(int(layer.kept.sum()) for layer in method.layers.values()) == target_r * 6
    for name, layer in method.layers.items():
        assert torch.all(layer.lora_E[~layer.kept] == 0), name

    check_linear_layers(
        original,
        model,
        method,
        lambda name, w0, layer: w0 + (alpha / r) * layer.lora_B @ torch.diag(layer.lora_E) @ layer.lora_A,
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


@pytest.mark.parametrize("frozen, gaussian", [("A", None), ("B", None), ("none", None), ("none", "B")])
def test_rac_lora_is_w0_plus_the_sum_of_every_links_update(frozen, gaussian):
    r, alpha, links, total = 2, 3.0, 3, 9
    boundaries = {round(k * total / links) for k in range(1, links)}  # 3 and 6
    folded = {}

    def record_link(step):  # the link's update, just before the method folds it
        if step in boundaries:
            for name, layer in method.layers.items():
                folded[name] = folded.get(name, 0) + (alpha / r) * (layer.lora_B @ layer.lora_A).detach()

    original, model, method = build(
        "rac_lora", r=r, alpha=alpha, links=links, frozen=frozen, gaussian=gaussian, targets=LORA_TARGETS
    )
    train_steps(method, lambda step: tiny_batch(seed=step), total, before_step_end=record_link)
    assert len(folded) == 6 and all(torch.count_nonzero(value) for value in folded.values())
    check_linear_layers(
        original, model, method, lambda name, w0, layer: w0 + folded[name] + (alpha / r) * layer.lora_B @ layer.lora_A
    )


@pytest.mark.parametrize("train_bn", [False, True])
def test_projection_gates_every_filter_by_its_channel_pair(train_bn):
    original, model, method = trained("projection", model_fn=tiny_cnn, train_bn=train_bn)
    assert sorted(method.layers) == ["backbone.0", "backbone.3", "backbone.6"]
    expected = {}
    for name, wrapper in method.layers.items():
        base = original.get_submodule(name)
        x = conv_input(base)
        gates = wrapper.gates
        assert gates.shape == (base.out_channels, base.in_channels // base.groups)
        weight = base.weight.clone()
        for o in range(gates.shape[0]):
            for i in range(gates.shape[1]):
                weight[o, i] = gates[o, i] * base.weight[o, i]
        expected[name] = weight.detach()
        assert not torch.allclose(gates, torch.ones_like(gates))
        with torch.no_grad():
            assert torch.allclose(wrapper(x), functional_call(base, {"weight": expected[name]}, (x,)), atol=1e-10), name
    method.merge()
    for name, wrapper in method.layers.items():
        assert torch.allclose(wrapper.base.weight, expected[name], atol=1e-10), name


# -- closed-form parameter counts --------------------------------------------------------------------
# tiny BERT: d = 32, FFN 48, 2 layers, H = 4 heads of 8; adapted matrices per layer as listed.
# tiny CNN: backbone.0 conv 3→8 3×3, backbone.3 depthwise 8→8 3×3 (groups 8), backbone.6 conv 8→12 1×1,
# BatchNorm 8 after each of the first two.
COUNTS = [
    ("lora", {"r": 4, "targets": ["query", "value"]}, 2 * 2 * 4 * (32 + 32)),
    ("lora", {"r": 2, "targets": ["intermediate.dense"]}, 2 * 2 * (32 + 48)),
    (
        "lora",
        {"r": 3, "targets": ["all-linear"]},
        2 * (4 * 3 * (32 + 32) + 2 * 3 * (32 + 48)) + 3 * (32 + 32),
    ),  # + pooler
    ("lora", {"r": 2, "targets": ["backbone.0", "backbone.6"], "model": "cnn"}, 2 * (3 * 3 * 3 + 8) + 2 * (8 + 12)),
    ("lora_xs", {"r": 4, "targets": ["query", "value"]}, 2 * 2 * 4**2),
    ("lora_xs", {"r": 8, "targets": ["intermediate.dense", "output.dense"]}, 2 * 3 * 8**2),  # output.dense: 2 per layer
    ("lora_xs", {"r": 2, "targets": ["all-linear"]}, (2 * 6 + 1) * 2**2),
    ("melora", {"r": 2, "n": 2, "targets": ["query", "value"]}, 2 * 2 * 2 * (32 + 32)),
    ("melora", {"r": 1, "n": 4, "targets": ["intermediate.dense"]}, 2 * 1 * (32 + 48)),
    ("melora", {"r": 2, "n": 8, "targets": ["query"]}, 2 * 2 * (32 + 32)),
    ("dora", {"r": 4, "targets": ["query", "value"]}, 2 * 2 * (4 * (32 + 32) + 32)),
    ("dora", {"r": 2, "targets": ["intermediate.dense"]}, 2 * (2 * (32 + 48) + 48)),
    ("dora", {"r": 1, "targets": [FFN_OUT]}, 2 * (1 * (48 + 32) + 32)),
    ("adalora", {"target_r": 2, "targets": ["query", "value"]}, 2 * 2 * 3 * (32 + 32 + 1)),  # r_init = ceil(1.5·2) = 3
    ("adalora", {"r": 4, "target_r": 1, "targets": ["intermediate.dense"]}, 2 * 4 * (32 + 48 + 1)),
    ("adalora", {"r": 2, "target_r": 2, "targets": ["query", FFN_OUT]}, 2 * 2 * (65 + 81)),
    ("dora_dynamic", {"target_r": 2, "targets": ["query", "value"]}, 2 * 2 * 3 * (32 + 32 + 1)),
    ("dora_dynamic", {"r": 5, "target_r": 3, "targets": ["intermediate.dense"]}, 2 * 5 * (32 + 48 + 1)),
    ("dora_dynamic", {"target_r": 4, "targets": ["key"]}, 2 * 6 * (32 + 32 + 1)),
    ("surm", {"structure": "circulant", "targets": ["query", "value"]}, 2 * 2 * (2 * 32)),
    ("surm", {"structure": "toeplitz", "targets": ["query"]}, 2 * (2 * 32)),
    ("surm", {"structure": "kronecker", "r": 4, "targets": ["intermediate.dense"]}, 2 * (32 + 48)),
    ("surm", {"structure": "circulant", "placement": "adapter"}, 2 * 2 * (2 * 32 + 32)),
    ("surm", {"structure": "kronecker", "placement": "adapter", "r": 2}, 2 * 2 * (32 + 32 + 32)),
    ("lorta", {"r": 4}, 4 * (32 + 8 + 4 + 2 + 4)),  # the whole model: r·(d + d_h + H + L + M)
    ("lorta", {"r": 2, "targets": ["query", "value"]}, 2 * (32 + 8 + 4 + 2 + 2)),
    ("lorta", {"r": 8, "targets": ["query"]}, 8 * (32 + 8 + 4 + 2 + 1)),
    ("rac_lora", {"r": 2, "frozen": "A", "targets": ["intermediate.dense"]}, 2 * 2 * 48),  # r·d_out
    ("rac_lora", {"r": 2, "frozen": "B", "targets": ["intermediate.dense"]}, 2 * 2 * 32),  # r·d_in
    ("rac_lora", {"r": 2, "frozen": "none", "targets": ["intermediate.dense"]}, 2 * 2 * (32 + 48)),
    ("projection", {"model": "cnn"}, 8 * 3 + 8 * 1 + 12 * 8),
    ("projection", {"train_bn": True, "model": "cnn"}, 8 * 3 + 8 * 1 + 12 * 8 + 2 * (8 + 8)),
    ("projection", {"targets": ["backbone.6"], "model": "cnn"}, 12 * 8),
    (
        "full",
        {},
        100 * 32
        + 64 * 32
        + 2 * 32
        + 2 * 32  # embeddings (word, position, type) + LayerNorm
        + 2 * (4 * (32 * 32 + 32) + 2 * 32 + (48 * 32 + 48) + (32 * 48 + 32) + 2 * 32)  # layers
        + 32 * 32
        + 32,
    ),  # pooler
    ("full", {"model": "cnn"}, 3 * 8 * 9 + 2 * 8 + 8 * 9 + 2 * 8 + 8 * 12 + 12),
    ("head", {}, 0),
    ("head", {"model": "cnn"}, 0),
]


@pytest.mark.parametrize("name, values, adapter", COUNTS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(COUNTS)])
def test_adapter_parameter_count_matches_the_closed_form(name, values, adapter):
    values = dict(values)
    model_fn = tiny_cnn if values.pop("model", None) == "cnn" else tiny_bert
    head = 12 * 3 + 3 if model_fn is tiny_cnn else 32 * 3 + 3
    _, model, method = build(name, model_fn=model_fn, **values)
    counts = method.param_counts()
    assert counts["adapter"] == adapter
    assert counts["head"] == head
    assert counts["trainable"] == adapter + head
