"""LoRA: exact parameter counts, errors, and equality with Hugging Face PEFT's LoraConfig."""

import copy
import math

import peft
import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from methods.lora import LoRA, LoraConfig, LoRALinear
from tests.conftest import tiny_batch, tiny_bert

HEAD = ["classifier"]


def ours_and_peft(r=4, alpha=8.0, targets=("query", "value"), rslora=False):
    """Our LoRA and PEFT's on copies of one float64 model, with identical non-zero factors."""
    model = tiny_bert().double()
    reference = copy.deepcopy(model)
    ours = LoRA(model, LoraConfig(r=r, alpha=alpha, targets=list(targets), rslora=rslora), HEAD)
    theirs = peft.get_peft_model(
        reference,
        peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, use_rslora=rslora),
    )
    generator = torch.Generator().manual_seed(3)
    for name, layer in ours.layers.items():
        with torch.no_grad():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator, dtype=torch.float64))
            peft_layer = theirs.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
    return ours, theirs


@pytest.mark.parametrize("rslora", [False, True])
def test_outputs_and_gradients_equal_peft(rslora):
    ours, theirs = ours_and_peft(rslora=rslora)
    ours_out = ours.model(**tiny_batch()).logits
    theirs_out = theirs(**tiny_batch()).logits
    assert torch.allclose(ours_out, theirs_out, atol=1e-12)
    ours_out.pow(2).sum().backward()
    theirs_out.pow(2).sum().backward()
    for name, layer in ours.layers.items():
        peft_layer = theirs.base_model.model.get_submodule(name)
        assert torch.allclose(layer.lora_A.grad, peft_layer.lora_A["default"].weight.grad, atol=1e-10)
        assert torch.allclose(layer.lora_B.grad, peft_layer.lora_B["default"].weight.grad, atol=1e-10)


def test_init_equals_peft_distribution_and_b_is_zero():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(256, 128), r=8, alpha=8, dropout=0.0, rslora=False)
    bound = 1 / math.sqrt(256)  # kaiming_uniform(a=√5) on fan_in 256
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.lora_B) == 0


def test_merged_weights_equal_peft_merge_and_unload():
    ours, theirs = ours_and_peft()
    ours.merge()
    merged = theirs.merge_and_unload()
    for name, layer in ours.layers.items():
        assert torch.allclose(layer.base.weight, merged.get_submodule(name).weight, atol=1e-12)


def test_parameter_count_is_r_times_din_plus_dout():
    ours, theirs = ours_and_peft(r=4, targets=("query", "value", "intermediate.dense"))
    # per layer: query 32×32, value 32×32, intermediate 48×32; two layers
    expected = 2 * 4 * ((32 + 32) + (32 + 32) + (32 + 48))
    assert ours.param_counts()["adapter"] == expected
    peft_count = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    assert peft_count == expected


def test_scaling_alpha_over_r_and_rslora():
    ours, _ = ours_and_peft(r=4, alpha=8)
    assert all(layer.scaling == 2.0 for layer in ours.layers.values())
    ours, _ = ours_and_peft(r=4, alpha=8, rslora=True)
    assert all(layer.scaling == 4.0 for layer in ours.layers.values())


def test_suffix_and_regex_targets():
    method = LoRA(tiny_bert(), LoraConfig(targets=["output.dense"], r=2), HEAD)
    assert sorted(method.layers) == sorted(
        f"bert.encoder.layer.{i}.{m}" for i in range(2) for m in ("attention.output.dense", "output.dense")
    )
    method = LoRA(tiny_bert(), LoraConfig(targets=[r"re:.*layer\.0\..*query"], r=2), HEAD)
    assert list(method.layers) == ["bert.encoder.layer.0.attention.self.query"]
    method = LoRA(tiny_bert(), LoraConfig(targets=["all-linear"], r=2), HEAD)
    assert "classifier" not in method.layers and len(method.layers) == 2 * 6 + 1  # + pooler.dense


def test_unmatched_target_is_an_error_listing_module_names():
    with pytest.raises(HarnessError) as error:
        LoRA(tiny_bert(), LoraConfig(targets=["query", "valeu"]), HEAD)
    message = str(error.value)
    assert "target pattern 'valeu' matches no Linear/Conv2d module" in message
    assert "bert.encoder.layer.<n>.attention.self.value" in message and "\n" not in message


def test_rank_above_layer_size_is_an_error_naming_the_layer():
    with pytest.raises(
        HarnessError,
        match=r"rank r=33 exceeds min\(d_in, d_out\)=32 of layer 'bert.encoder.layer.0.attention.self.query'",
    ):
        LoRA(tiny_bert(), LoraConfig(r=33), HEAD)


def test_head_is_never_a_target_and_stays_trainable():
    method = LoRA(tiny_bert(), LoraConfig(targets=["re:.*"], r=2), HEAD)
    assert not any(name.startswith("classifier") for name in method.layers)
    assert all(p.requires_grad for p in method.model.classifier.parameters())


def test_param_groups_split_adapter_and_head_rates_and_decay():
    method = LoRA(tiny_bert(), LoraConfig(r=2), HEAD)
    train = type("T", (), {"lr": 1e-3, "head_lr": 5e-2, "weight_decay": 0.1})
    groups = method.param_groups(train)
    adapter = [g for g in groups if g["lr"] == 1e-3]
    head = [g for g in groups if g["lr"] == 5e-2]
    assert sum(p.numel() for g in adapter for p in g["params"]) == method.param_counts()["adapter"]
    assert sum(p.numel() for g in head for p in g["params"]) == method.param_counts()["head"]
    assert {g["weight_decay"] for g in head} == {0.1, 0.0}  # weight decayed, bias not
