"""Methods by name: `@register` on a Method subclass adds it under its `name`; `build_method` applies one from
its config section."""

from torch import nn

from harness.checks import parse_section
from harness.registry import Registry
from methods.base import Method

METHODS: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    return METHODS.add(cls.name, cls)


def parse_method_config(node):
    """The method section checked against the named method's config dataclass."""
    cls = METHODS[node.get("name") if node is not None else None]
    return parse_section(cls.Config, node, "method")


def build_method(model: nn.Module, node, head_modules: list[str]) -> Method:
    cfg = parse_method_config(node)
    return METHODS[cfg.name](model, cfg, head_modules)
