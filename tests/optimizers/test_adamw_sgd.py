"""AdamW, the default, is torch's AdamW over the method's groups as before the optimizer axis existed (bitwise);
SGD steps p ← p − lr·(g + wd·p), and with momentum keeps torch's buffer."""

import copy

import pytest
import torch

from harness.config.sections import TrainConfig
from methods.lora import Lora, LoraConfig
from optimizers import optimizer_rule, parse_optimizer_config
from tests.conftest import tiny_bert
from tests.optimizers.twins import TARGETS, loss_of, train

TRAIN = TrainConfig(lr=1e-3, head_lr=5e-3, weight_decay=0.1)


def lora():
    return Lora(tiny_bert().double(), LoraConfig(r=4, alpha=8.0, targets=TARGETS), ["classifier"])


def built(method, section: dict | None):
    return optimizer_rule(None if section is None else parse_optimizer_config(section)).build(method, TRAIN)


@pytest.mark.parametrize("section", [None, {"name": "adamw"}])
def test_the_default_is_torch_adamw_over_the_method_groups_bitwise(section):
    ours = lora()
    reference = copy.deepcopy(ours)
    optimizer = built(ours, section)
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    train(ours.model, optimizer, 3)
    train(reference.model, torch.optim.AdamW(reference.param_groups(TRAIN)), 3)
    mine, theirs = ours.trainable_state_dict(), reference.trainable_state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_groups_are_the_adapter_and_head_rates_split_by_the_decay_policy():
    ours = lora()
    groups = built(ours, None).param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-3, 0.1), (5e-3, 0.1), (5e-3, 0.0)]
    assert sum(len(g["params"]) for g in groups) == 12 + 2  # 6 pairs; the head's weight and bias
    assert groups[2]["params"] == [ours.model.classifier.bias]


def test_sgd_steps_by_the_gradient_and_decay():
    ours = lora()
    optimizer = built(ours, {"name": "sgd"})
    before = {n: p.detach().clone() for n, p in ours.model.named_parameters() if p.requires_grad}
    loss_of(ours.model, 1).backward()
    grads = {n: p.grad.clone() for n, p in ours.model.named_parameters() if p.requires_grad}
    optimizer.step()
    undecayed = ours.undecayed()
    for name, tensor in ours.model.named_parameters():
        if name in before:
            lr = 5e-3 if name.startswith("classifier") else 1e-3
            decay = 0.0 if name in undecayed else 0.1
            expected = before[name] - lr * (grads[name] + decay * before[name])
            assert torch.allclose(tensor, expected, rtol=0, atol=1e-15), name


def test_sgd_momentum_keeps_a_buffer_and_nesterov_looks_ahead():
    ours = lora()
    optimizer = built(ours, {"name": "sgd", "momentum": 0.9, "nesterov": True})
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"] is True
    train(ours.model, optimizer, 2)
    assert all("momentum_buffer" in optimizer.state[p] for g in optimizer.param_groups for p in g["params"])
