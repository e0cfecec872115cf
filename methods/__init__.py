"""PEFT methods, one module each; importing this package registers them all."""
from methods import adalora, dora, dora_dynamic, full, head, lora, lora_ga, lora_xs, lorta, melora, peft_bridge, projection, rac_lora, surm  # noqa: F401  (registration)
from methods.base import Method, MethodConfig
from methods.registry import METHODS, build_method, method_class, parse_method_config

__all__ = ["METHODS", "Method", "MethodConfig", "build_method", "method_class", "parse_method_config"]
