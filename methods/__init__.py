"""PEFT methods, one module each, discovered: importing this package imports every module in methods/,
and each method registers itself (`@register`, methods/registry.py). No list to keep."""

import importlib
import pkgutil

from methods.base import Method, MethodConfig
from methods.registry import METHODS, build_method, parse_method_config

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "MethodConfig", "build_method", "parse_method_config"]
