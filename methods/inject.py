"""Choosing target modules by name and swapping them for wrappers (shared by every method).

A pattern is a PEFT-style suffix (`query` matches `encoder.layer.0.attention.self.query`;
`output.dense` matches both `output.dense` and `attention.output.dense`), `re:<regex>` for a full
regex match, or `all-linear` for every module of the wanted types. Head modules are never targets.
Each pattern must match at least one module: a typo is an error listing the model's module names, and a
pattern that names only the task head (the model's head_modules, trained whole by the harness) says so.
"""

import re
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from harness.errors import HarnessError
from harness.role_maps import BERT_ROLES


def bert_targets(*roles: str) -> list[str]:
    """BERT's module names of `roles` (method YAMLs name roles): the config dataclasses' default targets, for
    methods built in code on a BERT (tests, notebooks)."""
    return [BERT_ROLES[role] for role in roles]


def is_under(name: str, prefixes: list[str]) -> bool:
    """Whether module/parameter `name` is one of `prefixes` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def candidate_modules(model: nn.Module, types: tuple[type, ...], exclude: list[str]) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, types) and n and not is_under(n, exclude)]


def pattern_matches(pattern: str, name: str) -> bool:
    if pattern == "all-linear":
        return True
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return name == pattern or name.endswith("." + pattern)


def name_shapes(names: list[str]) -> str:
    """Module names with layer indices folded, for error messages."""
    return ", ".join(dict.fromkeys(re.sub(r"\.\d+\.", ".<n>.", n) for n in names))


def match_targets(
    model: nn.Module,
    patterns: list[str],
    head_modules: list[str],
    types: tuple[type, ...] = (nn.Linear,),
    method: str = "method",
) -> list[str]:
    if not patterns:
        raise HarnessError(f"{method}: method.targets is empty; give module-name patterns or 'all-linear'")
    candidates = candidate_modules(model, types, head_modules)
    kinds = "/".join(t.__name__ for t in types)
    for pattern in patterns:
        if any(pattern_matches(pattern, n) for n in candidates):
            continue
        if any(n and is_under(n, head_modules) and pattern_matches(pattern, n) for n, _ in model.named_modules()):
            raise HarnessError(
                f"{method}: target pattern '{pattern}' matches only the task head (model.head_modules: "
                f"{', '.join(head_modules)}), which the harness trains whole and never adapts; choose backbone "
                f"modules: {name_shapes(candidates)}"
            )
        raise HarnessError(
            f"{method}: target pattern '{pattern}' matches no {kinds} module; the model has: {name_shapes(candidates)}"
        )
    return [n for n in candidates if any(pattern_matches(p, n) for p in patterns)]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def inject(model: nn.Module, names: list[str], wrap: Callable[[str, nn.Module], nn.Module]) -> dict[str, nn.Module]:
    """Replace each named module by `wrap(name, module)`; returns the wrappers by name."""
    wrappers = {}
    for name in names:
        base = model.get_submodule(name)
        wrappers[name] = wrap(name, base).train(base.training)  # keep the model's train/eval mode
        replace_module(model, name, wrappers[name])
    return wrappers


def run_with(module: nn.Module, x: torch.Tensor, **replacements: torch.Tensor | None) -> torch.Tensor:
    """`module`'s own forward on x with some of its tensors replaced (e.g. weight=W', bias=None).
    Keeps whatever the module does around its kernel (e.g. TF-style "same" padding of Conv2d
    subclasses), so a kernel of another shape runs exactly like the module, without re-creating it."""
    return functional_call(module, replacements, (x,))
