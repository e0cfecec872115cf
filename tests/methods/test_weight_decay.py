"""Weight decay per method, as each reference code applies it (the methods' docstrings cite them).

The tables below are written from the reference code, not from the harness: for every trainable
tensor (by the last part of its name) whether AdamW decays it. "trainer" methods follow HF Trainer's
rule (biases and normalisation layers exempt); "all" methods decay every trained tensor.
"""

import sys

import pytest
import torch

from methods import METHODS
from tests.conftest import tiny_bert, tiny_cnn
from tests.training import settings

HEAD = ["classifier"]
HEAD_TRAINER = {"classifier.weight": True, "classifier.bias": False}
HEAD_ALL = {"classifier.weight": True, "classifier.bias": True}
DECAYED = {  # (method, config values) → {parameter name suffix: decayed?}
    ("lora", ()): {"lora_A": True, "lora_B": True, **HEAD_TRAINER},
    ("lora_ga", ()): {"lora_A": True, "lora_B": True, **HEAD_TRAINER},  # trained through HF Trainer, as LoRA
    ("dora", ()): {"lora_A": True, "lora_B": True, "magnitude": True, **HEAD_TRAINER},
    ("adalora", ()): {"lora_A": True, "lora_E": True, "lora_B": True, **HEAD_TRAINER},
    ("lora_xs", ()): {"lora_R": True, **HEAD_ALL},
    ("melora", ()): {"lora_A": True, "lora_B": True, **HEAD_ALL},
    ("dora_dynamic", ()): {"lora_A": True, "lora_E": True, "lora_B": True, **HEAD_ALL},
    ("rac_lora", ()): {"lora_B": True, **HEAD_ALL},
    ("surm", ()): {"c_A": True, "c_B": True, **HEAD_TRAINER},
    ("surm", (("structure", "toeplitz"), ("placement", "adapter"))): {
        "toeplitz_a": True,
        "toeplitz_b": True,
        "adapter_bias": False,
        **HEAD_TRAINER,
    },
    ("lorta", ()): {"A": True, "B": True, "C_h": True, "C_l": True, "C_m": True, **HEAD_TRAINER},
    ("head", ()): HEAD_TRAINER,
    ("projection", ()): {"gates": False, **HEAD_TRAINER},
    ("projection", (("train_bn", True),)): {
        "gates": False,
        "weight": False,
        "bias": False,
        **HEAD_TRAINER,
    },  # BatchNorm
    # the PEFT bridge: HF Trainer's rule, as PEFT's own training scripts (Trainer) apply it
    ("peft", (("peft_type", "VERA"), ("targets", ("query", "value")))): {
        "vera_lambda_b.default": True,
        "vera_lambda_d.default": True,
        **HEAD_TRAINER,
    },
    ("peft", (("peft_type", "LORA"), ("targets", ("query", "value")))): {
        "lora_A.default.weight": True,
        "lora_B.default.weight": True,
        **HEAD_TRAINER,
    },
}
FULL_BERT_UNDECAYED = (
    "bias",
    "LayerNorm.weight",
)  # every other tensor of the backbone is a weight matrix or an embedding


def grouped(method, weight_decay=0.25) -> dict[str, float]:
    """Parameter name → the weight decay its optimizer group applies."""
    ids = {id(p): n for n, p in method.model.named_parameters()}
    return {
        ids[id(p)]: group["weight_decay"]
        for group in method.param_groups(settings(weight_decay=weight_decay))
        for p in group["params"]
    }


def built(name: str, values: dict):
    model = tiny_cnn() if name == "projection" else tiny_bert()
    cls = METHODS[name]
    return cls(model, cls.Config(**values), HEAD)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_states_its_declared_decay_in_its_docstring(name):
    """A method added later is held to its own statement (its test file checks the tensors); the table
    above covers the methods whose reference code was read for it."""
    docstring = sys.modules[METHODS[name].__module__].__doc__
    assert f'Weight decay (`decay="{METHODS[name].capabilities.decay}"' in docstring


def test_the_table_covers_every_method_but_full_fine_tuning():
    assert {name for name, _ in DECAYED} | {"full"} <= set(METHODS)


@pytest.mark.parametrize(
    "name, values",
    sorted(DECAYED),
    ids=[f"{n}{'-' + '-'.join(str(v) for _, v in c) if c else ''}" for n, c in sorted(DECAYED)],
)
def test_param_groups_decay_what_the_reference_decays(name, values):
    method = built(name, dict(values))
    decays = grouped(method)
    expected = DECAYED[(name, values)]
    assert set(decays) == {
        n for n, p in method.model.named_parameters() if p.requires_grad
    }  # every trainable tensor once
    for param_name, value in decays.items():
        suffix = max((s for s in expected if param_name == s or param_name.endswith("." + s)), key=len)
        assert value == (0.25 if expected[suffix] else 0.0), f"{name}: {param_name} decay {value}"


def test_full_fine_tuning_decays_weights_and_embeddings_but_not_biases_or_norms():
    decays = grouped(built("full", {}))
    for param_name, value in decays.items():
        exempt = any(param_name.endswith(s) for s in FULL_BERT_UNDECAYED)
        assert value == (0.0 if exempt else 0.25), param_name
    cnn = grouped(METHODS["full"](tiny_cnn(), METHODS["full"].Config(), HEAD))
    assert cnn["backbone.1.weight"] == cnn["backbone.1.bias"] == 0.0  # BatchNorm
    assert cnn["backbone.0.weight"] == cnn["backbone.6.weight"] == 0.25


@pytest.mark.parametrize("train_bn", [False, True])
def test_projection_gates_stay_at_one_under_weight_decay(train_bn):
    """1,000 AdamW steps with zero gradients at lr 1e-2 and weight decay 0.25: decay alone would take
    a decayed γ from 1 to (1 − 0.0025)^1000 ≈ 0.08."""
    method = built("projection", {"train_bn": train_bn})
    optimizer = torch.optim.AdamW(method.param_groups(settings(lr=1e-2, weight_decay=0.25)))
    for _ in range(1000):
        for param in method.model.parameters():
            if param.requires_grad:
                param.grad = torch.zeros_like(param)
        optimizer.step()
    for layer in method.layers.values():
        assert torch.equal(layer.gates, torch.ones_like(layer.gates))
    assert (
        method.model.classifier.weight.abs().max() < 0.1 * built("projection", {}).model.classifier.weight.abs().max()
    )  # decay does act
