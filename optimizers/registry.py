"""Optimizers by name: `@register` on an OptimizerRule subclass adds it under its `name`."""

from harness.checks import parse_section
from harness.errors import HarnessError
from harness.registry import Registry
from optimizers.base import OptimizerRule

OPTIMIZERS: Registry[type[OptimizerRule]] = Registry("optimizer")


def register(cls: type[OptimizerRule]) -> type[OptimizerRule]:
    return OPTIMIZERS.add(cls.name, cls)


def parse_optimizer_config(node):
    """The optimizer section checked against the named optimizer's config dataclass (no section: AdamW)."""
    cls = OPTIMIZERS[node.get("name", "adamw") if node is not None else "adamw"]
    return parse_section(cls.Config, node, "optimizer")


def check_applies(optimizer: str, method: str, methods) -> None:
    """A one-line error where `optimizer` needs LoRA's factor pairs and `method` (of registry `methods`) has none."""
    if OPTIMIZERS[optimizer].needs_lora_pairs and not methods[method].capabilities.lora_pairs:
        paired = ", ".join(sorted(name for name, cls in methods.items() if cls.capabilities.lora_pairs))
        raise HarnessError(
            f"optimizer '{optimizer}' applies to the methods with LoRA's factor pairs (A, B): {paired}; "
            f"not to method '{method}' (use optimizer=adamw or optimizer=sgd)"
        )


def optimizer_rule(cfg=None) -> OptimizerRule:
    """The rule of a parsed optimizer section (None: the default AdamW)."""
    cfg = cfg if cfg is not None else parse_optimizer_config(None)
    return OPTIMIZERS[cfg.name](cfg)
