"""Choosing an optimizer: the registry, its one-line errors, and which methods each applies to."""

import pytest

from harness.errors import HarnessError
from methods import METHODS
from optimizers import OPTIMIZERS, check_applies, parse_optimizer_config

PAIRED = ["dora", "lora", "lora_ga"]  # the methods whose layers are LoRA's s·B·A


def test_the_optimizers_are_discovered():
    assert sorted(OPTIMIZERS) == ["adamw", "lorafa", "loraplus", "riemannian", "sgd"]


def test_the_lora_optimizers_apply_to_the_paired_methods_only():
    assert sorted(name for name, cls in METHODS.items() if cls.capabilities.lora_pairs) == PAIRED
    for optimizer in ("loraplus", "lorafa", "riemannian"):
        for method in PAIRED:
            check_applies(optimizer, method, METHODS)
        with pytest.raises(HarnessError) as error:
            check_applies(optimizer, "surm", METHODS)
        assert str(error.value) == (
            f"optimizer '{optimizer}' applies to the methods with LoRA's factor pairs (A, B): dora, lora, lora_ga; "
            "not to method 'surm' (use optimizer=adamw or optimizer=sgd)"
        )
    for optimizer in ("adamw", "sgd"):
        for method in METHODS:
            check_applies(optimizer, method, METHODS)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"name": "adam"}, "unknown optimizer 'adam'; available: adamw, lorafa, loraplus, riemannian, sgd"),
        ({"name": "adamw", "lr_ratio": 4}, "optimizer: unknown key 'lr_ratio'; allowed keys: name, betas, eps"),
        ({"name": "adamw", "betas": [0.9, 1.0]}, "optimizer.betas must be two numbers in [0, 1), got [0.9, 1.0]"),
        ({"name": "adamw", "eps": -1}, "optimizer.eps must be >= 0, got -1.0"),
        ({"name": "loraplus", "lr_ratio": 0}, "optimizer.lr_ratio must be > 0 (η_B / η_A), got 0.0"),
        ({"name": "riemannian", "reg": 0}, "optimizer.reg must be > 0 (the damping δ of (BᵀB + δI)⁻¹), got 0.0"),
        ({"name": "sgd", "momentum": 1}, "optimizer.momentum must be in [0, 1), got 1.0"),
        (
            {"name": "sgd", "nesterov": True},
            "optimizer.nesterov=true needs optimizer.momentum > 0 (Nesterov's step is a momentum step)",
        ),
    ],
)
def test_a_bad_optimizer_section_is_one_line(section, message):
    with pytest.raises(HarnessError) as error:
        parse_optimizer_config(section)
    assert str(error.value) == message
