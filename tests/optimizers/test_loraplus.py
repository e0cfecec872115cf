"""LoRA+: the groups and rates of PEFT's create_loraplus_optimizer, and the same factors after training."""

import peft.optimizers
import pytest
import torch

from tests.optimizers.twins import (
    factors,
    largest_factor_difference,
    largest_move,
    ours_optimizer,
    peft_factors,
    train,
    twins,
)

LR, RATIO, DECAY = 1e-3, 16.0, 0.1


def rates_by_tensor(optimizer) -> dict[int, tuple[float, float]]:
    return {id(t): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for t in group["params"]}


def test_b_at_ratio_times_a_rate_as_peft_groups_them():
    ours, theirs = twins()
    mine = rates_by_tensor(ours_optimizer(ours, "loraplus", LR, DECAY, lr_ratio=RATIO))
    reference = rates_by_tensor(
        peft.optimizers.create_loraplus_optimizer(
            theirs, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=RATIO, loraplus_weight_decay=DECAY
        )
    )
    pairs = ours.lora_pairs()
    assert len(pairs) == 6 and len(mine) == 12 == len(reference)
    for name, a, b, _ in pairs:
        theirs_a, theirs_b = peft_factors(theirs, name)
        assert mine[id(a)] == reference[id(theirs_a)] == (LR, DECAY)
        assert mine[id(b)] == reference[id(theirs_b)] == (LR * RATIO, DECAY)


def test_the_head_keeps_its_own_rate_and_one_d_adapter_tensors_take_b_s():
    from methods.dora import Dora, DoraConfig
    from tests.conftest import tiny_bert

    dora = Dora(tiny_bert(), DoraConfig(r=2, alpha=4.0, targets=["query"]), ["classifier"])
    optimizer = ours_optimizer(dora, "loraplus", LR, lr_ratio=4.0)
    rates = rates_by_tensor(optimizer)
    magnitudes = [p for n, p in dora.model.named_parameters() if n.endswith("magnitude")]
    assert len(magnitudes) == 2 and all(rates[id(m)][0] == 4 * LR for m in magnitudes)
    assert all(rates[id(p)][0] == LR for p in dora.head_parameters())  # head_lr = LR here
    for _, a, b, _ in dora.lora_pairs():
        assert rates[id(a)][0] == LR and rates[id(b)][0] == 4 * LR


@pytest.mark.parametrize("steps", [3])
def test_trained_factors_equal_peft_s(steps):
    ours, theirs = twins()
    before = factors(ours)
    train(ours.model, ours_optimizer(ours, "loraplus", LR, DECAY, lr_ratio=RATIO), steps)
    train(
        theirs,
        peft.optimizers.create_loraplus_optimizer(
            theirs, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=RATIO, loraplus_weight_decay=DECAY
        ),
        steps,
    )
    assert largest_factor_difference(ours, theirs) < 1e-12
    assert largest_move(ours, before) > 1e-3  # trained: B moved by ~steps × 16 × lr
