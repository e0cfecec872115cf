"""Helpers shared by the method tests (tests/methods/test_<method>.py).

Independent references: after a few training steps to a non-zero update, the effective weight of every
adapted layer (read off its outputs) equals the dense weight computed in the test from the paper's formula,
reading the method's tensors by name: never through the method's `delta_weight`, forward helpers or
`dense()`. The merged weight equals the same reference. Everything runs in float64 on a tiny BERT (hidden
32, FFN 48, 2 layers, 4 heads; query/key/value/attention-output 32×32, intermediate 48×32, FFN output 32×48)
or a tiny CNN, with non-square targets wherever the method allows them, so that swapped factors or
dimensions cannot pass. Also: the closed-form count check, PEFT's LoRA as a twin, and the builders shared
by the rank-budget methods' tests.
"""

import copy
import math

import peft
import pytest
import torch

from harness.errors import HarnessError
from harness.role_maps import BERT_ROLES
from methods import METHODS
from methods.adalora import AdaLora, AdaLoraConfig
from tests.conftest import tiny_batch, tiny_bert, tiny_cnn, tiny_images
from tests.training import train_steps

HEAD = ["classifier"]


def peft_lora(model, r, alpha, targets, **extra):
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=extra.pop("dropout", 0.0), **extra
    )
    return peft.get_peft_model(copy.deepcopy(model), config)


def peft_layer(peft_model, name):
    return peft_model.base_model.model.get_submodule(name)


def kaiming_sqrt5_bound(fan_in: int) -> float:
    """kaiming_uniform_(a=√5): gain √(2/(1+5)), bound gain·√(3/fan_in) = 1/√fan_in."""
    return 1 / math.sqrt(fan_in)


TARGETS = ["query", "value", "intermediate.dense"]  # 32→32, 32→32, 32→48 in tiny_bert; 6 matrices


def labels(step: int) -> torch.Tensor:
    return torch.tensor([step % 3, (step + 1) % 3, 2, 0])


def adapter_params(method):
    return [p for layer in method.layers.values() for p in (layer.lora_A, layer.lora_E, layer.lora_B)]


def adalora(model=None, **values) -> AdaLora:
    return AdaLora(
        model if model is not None else tiny_bert(),
        AdaLoraConfig(**{"targets": TARGETS, "r": 3, "target_r": 2, **values}),
        HEAD,
    )


def message(values: dict, config) -> str:
    with pytest.raises(HarnessError) as error:
        config(**values)
    return str(error.value)


FFN_OUT = BERT_ROLES["ffn_out"]
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
    cls = METHODS[name]
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


# -- closed-form parameter counts --------------------------------------------------------------------
# tiny BERT: d = 32, FFN 48, 2 layers, H = 4 heads of 8; adapted matrices per layer as listed.
# tiny CNN: backbone.0 conv 3→8 3×3, backbone.3 depthwise 8→8 3×3 (groups 8), backbone.6 conv 8→12 1×1,
# BatchNorm 8 after each of the first two.


def check_adapter_count(name: str, values: dict, adapter: int) -> None:
    """The method's adapter count is `adapter` (each test file's closed form), beside the head's."""
    values = dict(values)
    model_fn = tiny_cnn if values.pop("model", None) == "cnn" else tiny_bert
    head = 12 * 3 + 3 if model_fn is tiny_cnn else 32 * 3 + 3
    _, model, method = build(name, model_fn=model_fn, **values)
    counts = method.param_counts()
    assert counts["adapter"] == adapter
    assert counts["head"] == head
    assert counts["trainable"] == adapter + head
