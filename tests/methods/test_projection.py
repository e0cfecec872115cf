"""Model projection: the gated filter bank against its formula W[o, i] · γ[o, i] (with and without trained
BatchNorm), and its closed-form counts."""

import pytest
import torch
from torch.func import functional_call

from tests.conftest import tiny_cnn
from tests.methods.references import check_adapter_count, conv_input, trained


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


# -- closed-form parameter counts (tiny models: tests/methods/references.py) --------------------------------
COUNTS = [
    ({"model": "cnn"}, 8 * 3 + 8 * 1 + 12 * 8),
    ({"train_bn": True, "model": "cnn"}, 8 * 3 + 8 * 1 + 12 * 8 + 2 * (8 + 8)),
    ({"targets": ["backbone.6"], "model": "cnn"}, 12 * 8),
]


@pytest.mark.parametrize("values, adapter", COUNTS)
def test_adapter_parameter_count_matches_the_closed_form(values, adapter):
    check_adapter_count("projection", values, adapter)
