"""Invariants every registered method keeps, parametrized over the registry so
methods added later are checked too. Each method runs with its own conf/method YAML defaults."""

import pytest
import torch
from hydra import compose
from torch import nn

from harness.config.compose import project_config
from harness.config.preflight import group_options
from harness.engine.run import trainable_checksum
from methods import METHODS, build_method
from methods.inject import is_under
from tests.conftest import tiny_batch, tiny_bert, tiny_cnn, tiny_images
from tests.training import LABELS, settings, train_steps

HEAD = ["classifier"]
# Every method by its config: the registered methods (conf/method/<name>.yaml) and the PEFT bridge's
# configs (conf/method/peft/<tuner>.yaml), each with its own YAML defaults.
BRIDGED = sorted(option for option in group_options()["method"] if option.startswith("peft/"))
CONFIGS = sorted(name for name in METHODS if name != "peft") + BRIDGED


def for_images(name: str) -> bool:
    """Methods that adapt convolutions only are checked on a small CNN, the others on a tiny BERT."""
    capabilities = METHODS[name.split("/")[0]].capabilities
    return capabilities.adapts(nn.Conv2d) and not capabilities.adapts(nn.Linear)


def model_for(name: str, seed: int = 0):
    return tiny_cnn(seed=seed) if for_images(name) else tiny_bert(seed=seed)


def batch_for(name: str, seed: int = 1) -> dict:
    return tiny_images(seed=seed) if for_images(name) else tiny_batch(seed=seed)


# Bridged configs sized for MiniLM (hidden 384) whose blocks must divide the tiny model's 32 and 48
TINY_MODEL_OVERRIDES = {
    "peft/c3a": ["method.options.block_size=16"],
    "peft/vblora": ["method.options.vector_length=16"],
}


def method_node(name: str):
    with project_config():
        return compose("config", overrides=[f"method={name}", *TINY_MODEL_OVERRIDES.get(name, [])]).method


def applied(name: str, seed: int = 0):
    model = model_for(name, seed=seed)
    torch.manual_seed(seed + 100)
    return model, build_method(model, method_node(name), HEAD)


def perturb_trainable(model, seed: int = 7) -> None:
    """Random values in every trainable parameter, so the update is not zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("name", CONFIGS)
def test_outputs_unchanged_at_init(name):
    reference = model_for(name)(**batch_for(name)).logits
    model, method = applied(name)
    # a bridged tuner whose paper starts away from W0 says so; a restructured backbone starts where its paper says
    if getattr(method.cfg, "start", None) == "away" or method.capabilities.restructures:
        assert not torch.allclose(model(**batch_for(name)).logits, reference, rtol=0, atol=1e-6)
        return
    outputs = model(**batch_for(name)).logits
    if method.capabilities.replaces_head:  # its own fresh heads answer, not the model's: it starts away from it
        assert not torch.allclose(outputs, reference, rtol=0, atol=1e-6)
        return
    tolerance = 1e-6 if method.capabilities.identity_at_init else 1e-4
    assert torch.allclose(outputs, reference, atol=tolerance)
    # "near, not at" must be true: a method that starts at W0 is held to 1e-6
    if not method.capabilities.identity_at_init:
        assert not torch.equal(outputs, reference)


@pytest.mark.parametrize("name", CONFIGS)
def test_param_counts_add_up(name):
    original = model_for(name)
    backbone = sum(p.numel() for n, p in original.named_parameters() if not n.startswith("classifier."))
    model, method = applied(name)
    counts = method.param_counts()
    assert counts["backbone"] == backbone
    classifier = sum(p.numel() for p in original.classifier.parameters())
    assert counts["head"] == (0 if method.capabilities.replaces_head else classifier)  # a replaced head is frozen
    assert counts["trainable"] == counts["adapter"] + counts["head"]
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["total"] == sum(p.numel() for p in model.parameters())


def trained(name: str, steps: int = 8, seed: int = 0):
    """A method after `steps` steps of an 8-step run: RAC-LoRA has folded links (4 links), AdaLoRA
    and dynamic DoRA have pruned to their final budgets (freeze at step 4)."""
    model, method = applied(name, seed=seed)
    perturb_trainable(model)  # every factor non-zero, so every trainable tensor gets a gradient
    train_steps(method, lambda step: batch_for(name, seed=step), steps, total=8)
    return model, method


def added_parameters(method) -> dict[str, torch.nn.Parameter]:
    """Trainable tensors the method added to the model (not the backbone's own, not the head)."""
    return {
        n: p
        for n, p in method.model.named_parameters()
        if p.requires_grad
        and ".base." not in n
        and not is_under(n, HEAD)
        and n.rsplit(".", 1)[-1] not in ("weight", "bias")
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_every_trainable_tensor_changes_the_output(name):
    model, method = applied(name)
    perturb_trainable(model)
    batch = batch_for(name)
    with torch.no_grad():
        reference = model(**batch).logits
        for n, param in model.named_parameters():
            if param.requires_grad:
                saved = param.clone()
                param.add_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(5)))
                assert not torch.equal(model(**batch).logits, reference), f"{n} is trainable but disconnected"
                param.copy_(saved)


@pytest.mark.parametrize("name", CONFIGS)
def test_a_step_changes_every_trainable_tensor_and_nothing_frozen(name):
    model, method = applied(name)
    perturb_trainable(model)
    optimizer = torch.optim.AdamW(method.param_groups(settings(lr=1e-2)))
    method.start(4, optimizer)
    method.train_mode()
    for step in (1, 2):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss = model(**batch_for(name, seed=step), labels=LABELS).loss
        extra = method.extra_loss()
        (loss if extra is None else loss + extra).backward()
        optimizer.step()
        for n, p in model.named_parameters():  # checked before on_step_end and zero_grad
            if p.requires_grad:
                assert p.grad is not None and torch.count_nonzero(p.grad) > 0, f"{n} is trainable but got no gradient"
                assert not torch.equal(before[n], p), f"{n} got a gradient but the step did not change it"
            else:
                assert torch.equal(before[n], p), f"{n} is frozen but the optimizer changed it"
        method.on_step_end(step)
        optimizer.zero_grad()


@pytest.mark.parametrize("name", CONFIGS)
def test_merge_after_training_gives_the_same_outputs_from_the_base_weights_alone(name):
    if not METHODS[name.split("/")[0]].capabilities.mergeable:
        pytest.skip("declared not mergeable: its update is not a weight (merge leaves the model as it is)")
    model, method = trained(name)
    unmerged = model(**batch_for(name)).logits
    method.merge()
    assert torch.allclose(model(**batch_for(name)).logits, unmerged, atol=1e-5)
    with torch.no_grad():  # merged: the added tensors no longer take part
        for param in added_parameters(method).values():
            param.add_(1.0)
    assert torch.allclose(model(**batch_for(name)).logits, unmerged, atol=1e-5)


ROUND_TRIPS = [(name, {}) for name in CONFIGS] + [("projection", {"train_bn": True}), ("full", {"model": "cnn"})]


@pytest.mark.parametrize(
    "name, extra", ROUND_TRIPS, ids=[f"{n}{'-' + '-'.join(map(str, e.values())) if e else ''}" for n, e in ROUND_TRIPS]
)
def test_saved_state_after_training_restores_the_outputs_in_a_fresh_model(name, extra):
    """Saved after folding (RAC-LoRA), pruning (AdaLoRA, dynamic DoRA) and BatchNorm statistics
    updates (trained BatchNorm layers); loaded into a model built with other random draws."""

    def build(seed):
        extra_values = {k: v for k, v in extra.items() if k != "model"}
        model = tiny_cnn() if extra.get("model") == "cnn" or for_images(name) else tiny_bert()
        torch.manual_seed(seed)
        node = method_node(name)
        node.update(extra_values)
        return model, build_method(model, node, HEAD)

    model, method = build(100)
    batch = (
        (lambda step: tiny_images(seed=step))
        if isinstance(model.classifier, nn.Linear) and hasattr(model, "backbone")
        else (lambda step: tiny_batch(seed=step))
    )
    perturb_trainable(model)
    train_steps(method, batch, 8)
    expected, checksum = model(**batch(0)).logits, trainable_checksum(method)
    state = method.trainable_state_dict()
    fresh_model, fresh_method = build(7)
    assert not torch.allclose(fresh_model(**batch(0)).logits, expected, atol=1e-4)
    assert trainable_checksum(fresh_method) != checksum
    fresh_method.load_trainable_state_dict(state)
    assert torch.equal(fresh_model(**batch(0)).logits, expected)
    assert trainable_checksum(fresh_method) == checksum
    assert fresh_method.param_counts() == method.param_counts() and fresh_method.allocation() == method.allocation()
