"""Optimizers, one module each, discovered as methods are: importing this package imports every module in
optimizers/, and each registers itself (`@register`, optimizers/registry.py). The `optimizer=` config group
(conf/optimizer/) chooses one; AdamW is the default."""

import importlib
import pkgutil

from optimizers.base import OptimizerConfig, OptimizerRule
from optimizers.registry import OPTIMIZERS, check_applies, optimizer_rule, parse_optimizer_config

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "OPTIMIZERS",
    "OptimizerConfig",
    "OptimizerRule",
    "check_applies",
    "optimizer_rule",
    "parse_optimizer_config",
]
