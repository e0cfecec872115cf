"""The registry of things chosen by name: a mapping whose unknown names are one-line errors, and the
four registries (methods, tasks, model kinds, loggers) agree with the names the config sections accept."""

import pytest

from harness.config.sections import MODEL_KINDS as ACCEPTED_MODEL_KINDS
from harness.config.sections import LoggerConfig
from harness.engine.loggers import LOGGERS
from harness.errors import HarnessError
from harness.models import MODEL_KINDS
from harness.registry import Registry
from methods import METHODS
from tasks import TASK_LOADERS


def colours() -> Registry[int]:
    return Registry("colour", {"red": 1, "green": 2})


def test_a_registry_reads_like_a_mapping_in_registration_order():
    registry = colours()
    registry.add("blue", 3)
    assert list(registry) == ["red", "green", "blue"] and len(registry) == 3
    assert sorted(registry) == ["blue", "green", "red"]
    assert registry["green"] == 2 and dict(registry.items()) == {"red": 1, "green": 2, "blue": 3}
    assert "red" in registry and "purple" not in registry and None not in registry
    assert registry.get("purple") is None and registry.get("purple", 0) == 0 and registry.get("red") == 1


def test_register_decorates_and_returns_the_entry():
    registry: Registry[type] = Registry("shape")

    @registry.register("square")
    class Square:
        pass

    assert registry["square"] is Square and Square.__name__ == "Square"


def test_an_unknown_name_is_one_line_naming_it_and_the_available_ones():
    with pytest.raises(HarnessError) as error:
        colours()["purple"]
    assert str(error.value) == "unknown colour 'purple'; available: green, red"


def test_a_name_registered_twice_is_an_error_and_keeps_the_first_entry():
    registry = colours()
    with pytest.raises(HarnessError) as error:
        registry.add("red", 9)
    assert str(error.value) == "colour 'red' is registered twice"
    with pytest.raises(HarnessError):
        Registry("colour", {"red": 1}).register("red")(2)
    assert registry["red"] == 1


@pytest.mark.parametrize(
    "registry, kind, known",
    [
        (METHODS, "method", {"lora", "full", "head", "peft"}),
        (TASK_LOADERS, "task", {"bbc_news", "sst2", "mnist5k", "gsm8k"}),
        (MODEL_KINDS, "model kind", {"text", "decoder", "efficientnet_lite0", "mlp_mnist"}),
        (LOGGERS, "logger", {"csv", "wandb"}),
    ],
)
def test_the_four_registries_share_the_type_and_its_error(registry, kind, known):
    assert isinstance(registry, Registry) and known <= set(registry)
    with pytest.raises(HarnessError) as error:
        registry["nope"]
    assert str(error.value) == f"unknown {kind} 'nope'; available: {', '.join(sorted(registry))}"


def test_the_model_section_accepts_exactly_the_registered_model_kinds():
    assert set(ACCEPTED_MODEL_KINDS) == set(MODEL_KINDS)


def test_the_logger_section_accepts_exactly_the_registered_loggers():
    for name in LOGGERS:
        assert LoggerConfig(use={name: True}).names == LoggerConfig(name=name).names == [name]
    assert LoggerConfig(name="none").names == LoggerConfig().names == []
    assert LoggerConfig(use={"csv": True, "wandb": False}, name="wandb").names == ["csv", "wandb"]
    for bad in (LoggerConfig, lambda name: LoggerConfig(use={name: True})):
        with pytest.raises(HarnessError) as error:
            bad(name="nope") if bad is LoggerConfig else bad("nope")
        allowed = str(error.value).split("allowed: ")[1]
        assert allowed.split(", ") == [*LOGGERS, "none"]
