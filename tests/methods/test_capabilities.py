"""Each method's declared capabilities (methods/capabilities.py) agree with what the method does: the
declaration is on its own class, a declared step hook or data-dependent start is the hook overridden,
a method that trains the backbone trains every weight, only a method that says so writes into frozen
tensors during training, and the adapted layers are of the declared kinds."""

import pytest
import torch

from methods import METHODS, Method, build_method
from methods.base import LayerMethod
from methods.capabilities import Capabilities
from tests.methods import test_invariants as invariants
from tests.methods.test_invariants import applied, trained

REGISTERED = sorted(METHODS)
OWN = [
    name for name in REGISTERED if name != "peft"
]  # each with its conf/method YAML defaults (PEFT's tuners: bridged)


@pytest.mark.parametrize("name", REGISTERED)
def test_every_method_declares_its_capabilities_on_its_own_class(name):
    cls = METHODS[name]
    assert isinstance(cls.__dict__.get("capabilities"), Capabilities), f"{cls.__name__} declares no capabilities"


@pytest.mark.parametrize("name", REGISTERED)
def test_a_step_hook_is_declared_exactly_where_on_step_end_is_overridden(name):
    cls = METHODS[name]
    assert cls.capabilities.step_hook == (cls.on_step_end is not Method.on_step_end)


@pytest.mark.parametrize("name", REGISTERED)
def test_a_data_dependent_start_is_declared_exactly_where_initialise_is_overridden(name):
    cls = METHODS[name]
    assert cls.capabilities.needs_data_at_init == (cls.initialise is not Method.initialise)


@pytest.mark.parametrize("name", OWN)
def test_a_method_is_fine_on_generative_tasks_exactly_when_it_trains_something_without_a_task_head(name):
    """A generative task has no task head (the model answers through its LM head): the method is applied
    with no head modules, and must then still train some tensor."""
    model = invariants.model_for(name)
    torch.manual_seed(100)
    method = build_method(model, invariants.method_node(name), [])
    assert method.capabilities.generative_ok == any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", OWN)
def test_trains_backbone_is_declared_exactly_where_every_weight_is_trained(name):
    model, method = applied(name)
    assert method.capabilities.trains_backbone == all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", OWN)
def test_replaces_head_is_declared_exactly_where_the_task_head_is_frozen_and_unused(name):
    model, method = applied(name)
    head = list(model.classifier.parameters())
    assert method.capabilities.replaces_head == (not any(p.requires_grad for p in head))
    if method.capabilities.replaces_head:
        batch = invariants.batch_for(name)
        before = model(**batch).logits
        with torch.no_grad():
            for param in head:
                param.add_(1.0)
        assert torch.equal(model(**batch).logits, before)


@pytest.mark.parametrize("name", [name for name in OWN if issubclass(METHODS[name], LayerMethod)])
def test_the_adapted_layers_are_of_the_declared_kinds(name):
    _, method = applied(name)
    assert method.layers and all(method.capabilities.adapts(type(layer.base)) for layer in method.layers.values())


@pytest.mark.parametrize("name", OWN)
def test_frozen_tensors_change_during_training_only_where_declared(name):
    model, _ = applied(name)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model, method = trained(name)
    changed = [n for n, p in model.named_parameters() if n in frozen and not torch.equal(p, frozen[n])]
    assert bool(changed) == method.capabilities.rewrites_frozen, changed


def test_shardable_is_a_frozen_untouched_backbone_that_needs_no_data_at_init():
    assert Capabilities().shardable
    for declared in (
        {"trains_backbone": True},
        {"rewrites_frozen": True},
        {"needs_data_at_init": True},
        {"restructures": True},
    ):
        assert not Capabilities(**declared).shardable


def test_layer_kinds_match_subclasses_and_any_module():
    assert Capabilities().adapts(torch.nn.Linear) and not Capabilities().adapts(torch.nn.Conv2d)
    assert Capabilities(layer_kinds=(torch.nn.Module,)).adapts(torch.nn.Conv2d)
    assert not Capabilities(layer_kinds=()).adapts(torch.nn.Linear)


def test_capabilities_narrowed_by_the_config_stay_on_the_instance():
    from tests.conftest import tiny_bert

    adapter = METHODS["surm"](tiny_bert(), METHODS["surm"].Config(placement="adapter"), ["classifier"])
    assert not adapter.capabilities.mergeable and METHODS["surm"].capabilities.mergeable
    near = METHODS["peft"](
        tiny_bert(), METHODS["peft"].Config(peft_type="LORA", start="near", targets=["query"]), ["classifier"]
    )
    assert not near.capabilities.identity_at_init and METHODS["peft"].capabilities.identity_at_init
