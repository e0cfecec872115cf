"""docs/adding-a-method.md stays true: its code blocks (the worked example's method module, YAML and test
file, each fenced with its path) are written to files, the method registers itself from them and composes
from its YAML, and every generic invariant (tests/methods/test_invariants.py), every capability check
that reads a method (tests/methods/test_capabilities.py) and the guide's own tests pass on it. The
registry is left as it was."""

import importlib.util
import re
from pathlib import Path

import pytest
from hydra import compose

from harness.config.compose import project_config, register_defaults
from methods import METHODS
from tests.methods import test_capabilities as capabilities
from tests.methods import test_invariants as invariants

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "adding-a-method.md"
FENCE = re.compile(r"^```\w+ (\S+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXAMPLE = "row_scale"
FILES = {f"methods/{EXAMPLE}.py", f"conf/method/{EXAMPLE}.yaml", f"tests/methods/test_{EXAMPLE}.py"}


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The guide's files written under a temporary root, the method registered and its base config node
    stored; afterwards the registry holds exactly the methods it held before."""
    root = tmp_path_factory.mktemp("guide")
    blocks = {path: code for path, code in FENCE.findall(GUIDE.read_text())}
    assert set(blocks) == FILES, "the guide's fenced files are the method, its YAML and its test file"
    for path, code in blocks.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(code)
    before = dict(METHODS.entries)
    with pytest.MonkeyPatch.context() as patch:
        load(root / f"methods/{EXAMPLE}.py", f"guide_{EXAMPLE}")
        register_defaults.cache_clear()  # the config store's base node for the new method, as at start-up
        register_defaults()

        def method_node(name: str):
            with project_config():
                return compose(
                    "config", overrides=[f"method={name}", f"hydra.searchpath=[file://{root / 'conf'}]"]
                ).method

        patch.setattr(invariants, "method_node", method_node)
        yield root
    METHODS.entries.clear()
    METHODS.entries.update(before)
    assert EXAMPLE not in METHODS


def test_the_example_registers_itself_and_composes_from_its_yaml(example):
    assert METHODS[EXAMPLE].__module__ == f"guide_{EXAMPLE}"
    node = invariants.method_node(EXAMPLE)
    assert node.name == EXAMPLE and node.lr == 0.01 and node.head_lr == 0.005
    assert list(node.targets) == ["query", "value"]  # the roles q, v on the default model


@pytest.mark.parametrize(
    "check",
    [
        invariants.test_outputs_unchanged_at_init,
        invariants.test_param_counts_add_up,
        invariants.test_every_trainable_tensor_changes_the_output,
        invariants.test_a_step_changes_every_trainable_tensor_and_nothing_frozen,
        invariants.test_merge_after_training_gives_the_same_outputs_from_the_base_weights_alone,
        lambda name: invariants.test_saved_state_after_training_restores_the_outputs_in_a_fresh_model(name, {}),
        capabilities.test_every_method_declares_its_capabilities_on_its_own_class,
        capabilities.test_a_step_hook_is_declared_exactly_where_on_step_end_is_overridden,
        capabilities.test_a_data_dependent_start_is_declared_exactly_where_initialise_is_overridden,
        capabilities.test_trains_backbone_is_declared_exactly_where_every_weight_is_trained,
        capabilities.test_a_method_is_fine_on_generative_tasks_exactly_when_it_trains_something_without_a_task_head,
        capabilities.test_the_adapted_layers_are_of_the_declared_kinds,
        capabilities.test_frozen_tensors_change_during_training_only_where_declared,
    ],
    ids=lambda check: getattr(check, "__name__", "saved_state_round_trip").removeprefix("test_"),
)
def test_the_generic_checks_hold_for_the_example(example, check):
    check(EXAMPLE)


def test_the_guides_own_tests_pass(example):
    tests = load(example / f"tests/methods/test_{EXAMPLE}.py", f"guide_test_{EXAMPLE}")
    names = [name for name in dir(tests) if name.startswith("test_")]
    assert len(names) == 3
    for name in names:
        getattr(tests, name)()
