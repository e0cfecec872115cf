"""Methods by name: `@register` on a Method subclass, `build_method` to apply one from config."""

from torch import nn

from harness.checks import parse_section
from harness.errors import HarnessError
from methods.base import Method

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise HarnessError(f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def parse_method_config(node):
    """The method section checked against the named method's config dataclass."""
    cls = method_class(node.get("name") if node is not None else None)
    return parse_section(cls.Config, node, "method")


def build_method(model: nn.Module, node, head_modules: list[str]) -> Method:
    cfg = parse_method_config(node)
    return METHODS[cfg.name](model, cfg, head_modules)
