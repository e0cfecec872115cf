"""Our LoRA and PEFT's LoRA on copies of one float64 tiny BERT, factors equal (B non-zero, so that every factor's
gradient is), both trained a few steps by an optimizer of each side on the same batches."""

import copy

import peft
import torch

from harness.config.sections import TrainConfig
from methods.lora import Lora, LoraConfig
from optimizers import optimizer_rule, parse_optimizer_config
from tests.conftest import tiny_batch, tiny_bert

TARGETS = ["query", "value", "intermediate.dense"]  # 32→32, 32→32, 32→48 per layer, 2 layers
R, ALPHA = 4, 8.0


def twins(head_trained: bool = False):
    """(ours, theirs): our Lora and PEFT's PeftModel. PEFT trains the LoRA factors only (no modules_to_save); with
    `head_trained` False our head is frozen too, so that both sides train the same tensors."""
    model = tiny_bert().double()
    theirs = peft.get_peft_model(
        copy.deepcopy(model), peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0)
    )
    ours = Lora(model, LoraConfig(r=R, alpha=ALPHA, targets=TARGETS), ["classifier"])
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, a, b, _ in ours.lora_pairs():
            b.copy_(0.1 * torch.randn(b.shape, generator=generator, dtype=torch.float64))
            theirs_a, theirs_b = peft_factors(theirs, name)
            theirs_a.copy_(a)
            theirs_b.copy_(b)
    if not head_trained:
        for tensor in ours.head_parameters():
            tensor.requires_grad_(False)
    return ours, theirs


def peft_factors(theirs, name: str) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    layer = theirs.base_model.model.get_submodule(name)
    return layer.lora_A["default"].weight, layer.lora_B["default"].weight


def loss_of(model, step: int) -> torch.Tensor:
    logits = model(**tiny_batch(seed=step)).logits
    return torch.nn.functional.cross_entropy(logits, torch.tensor([step % 3, (step + 1) % 3, 2, 0]))


def train(model, optimizer, steps: int) -> None:
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss_of(model, step).backward()
        optimizer.step()


def ours_optimizer(ours, name: str, lr: float, weight_decay: float = 0.0, **settings):
    """Our optimizer `name` on `ours` as a run builds it (prepare, then build over the method's groups)."""
    rule = optimizer_rule(parse_optimizer_config({"name": name, **settings}))
    rule.prepare(ours)
    return rule.build(ours, TrainConfig(lr=lr, head_lr=lr, weight_decay=weight_decay))


def factors(ours) -> list[torch.Tensor]:
    return [tensor.detach().clone() for _, a, b, _ in ours.lora_pairs() for tensor in (a, b)]


def largest_move(ours, before: list[torch.Tensor]) -> float:
    return max((now - then).abs().max().item() for now, then in zip(factors(ours), before))


def largest_factor_difference(ours, theirs) -> float:
    return max(
        (mine - peft_tensor).abs().max().item()
        for name, a, b, _ in ours.lora_pairs()
        for mine, peft_tensor in zip((a, b), peft_factors(theirs, name))
    )
