"""The PEFT bridge's `method.options` checked against the chosen tuner's own config class (peft.<X>Config).

Before a model is loaded: every key must be one of the class's dataclass fields (the error lists that
tuner's keys) and every value must fit the field's type hint (bool, int, float, str, Literal, list, tuple,
dict, Optional/Union of them; a field typed by a PEFT class such as LoftQConfig is left to PEFT); then the
config is built once, so PEFT's own checks run too. An exception PEFT raises on the options (its config's
checks, or a crash while its tuner injects: VeRA with r=0 divides by zero) becomes one line naming the
options to blame: those its message names (`block_size` or 'block size'), else each one whose PEFT default,
alone, makes the same step succeed (where the step still fails with every option as given); where none can be
told, the tuner.
"""

import re
import types
from dataclasses import MISSING, Field, fields
from typing import Any, Callable, Literal, Union, get_args, get_origin, get_type_hints

import torch

from harness.errors import HarnessError

NOUNS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def accepted_keys(found: type, reserved: dict[str, str]) -> list[str]:
    """The keyword arguments of config class `found` a user may set: its fields but `reserved` and PEFT's own."""
    return [f.name for f in fields(found) if f.name not in reserved and f.name not in ("peft_version", "auto_mapping")]


def check_options(where: str, found: type, options: dict[str, Any], reserved: dict[str, str]) -> None:
    """Each option a field of `found` (not one the harness sets) holding a value of the field's type hint, and
    `found(**options)` built without error; one-line HarnessErrors naming the option otherwise."""
    accepted, hints = accepted_keys(found, reserved), get_type_hints(found)
    for key, value in options.items():
        if key in reserved:
            raise HarnessError(f"{where}: method.options.{key} is set by the harness ({reserved[key]}); remove it")
        if key not in accepted:
            raise HarnessError(f"{where}: {found.__name__} has no option '{key}'; it accepts: {', '.join(accepted)}")
        if not fits(value, hints[key]):
            raise HarnessError(
                f"{where}: method.options.{key}={shown(value)}: {found.__name__}.{key} takes {described(hints[key])}"
            )
    run_peft(where, found, options, lambda given: found(**given))


def run_peft(
    where: str,
    found: type,
    options: dict[str, Any],
    step: Callable[[dict[str, Any]], Any],
    trial: Callable[[dict[str, Any]], Any] | None = None,
):
    """`step(options)`, PEFT's code; what it raises becomes one line naming the options to blame (found by
    running `trial`, a side-effect-free `step`, with options changed), or else the tuner."""
    try:
        return step(options)
    except (HarnessError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as error:
        blamed = blame(found, options, str(error), trial or step)
        if not blamed:
            raise HarnessError(f"{where}: PEFT could not apply {found.__name__}: {reason_of(error)}") from None
        defaults = {f.name: default_of(f) for f in fields(found)}
        named = ", ".join(f"method.options.{key}={shown(options[key])}" for key in blamed)
        told = ", ".join(f"{key}={shown(defaults[key])}" for key in blamed if defaults[key] is not MISSING)
        raise HarnessError(
            f"{where}: {named}: PEFT {'refuses' if isinstance(error, ValueError) else 'fails on'} "
            f"{'it' if len(blamed) == 1 else 'them'} ({reason_of(error)})"
            + (f"; {found.__name__}'s default: {told}" if told else "")
        ) from None


def reason_of(error: Exception) -> str:
    """The first line of PEFT's message; the exception's type too where it is a crash, not a ValueError."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, ValueError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def blame(found: type, options: dict[str, Any], message: str, step: Callable[[dict[str, Any]], Any]) -> list[str]:
    """The options PEFT's error is about: those `message` names, else those whose default alone lets `step` pass."""
    named = [key for key in options if re.search(rf"(?<![\w.]){spelled(key)}(?!\w)", message)]
    if named:
        return named
    if not fails(step, options):  # an error that does not come back is no option's fault
        return []
    defaults = {f.name: default_of(f) for f in fields(found)}
    return [
        key
        for key, value in options.items()
        if defaults.get(key, MISSING) is not MISSING
        and value != defaults[key]
        and not fails(step, {**options, key: defaults[key]})
    ]


def spelled(key: str) -> str:
    """A regex for option `key` as messages write it: `block_size` or 'block size'."""
    return "[_ ]".join(map(re.escape, key.split("_")))


def fails(step: Callable[[dict[str, Any]], Any], options: dict[str, Any]) -> bool:
    try:
        step(options)
    except Exception:
        return True
    return False


def default_of(spec: Field) -> Any:
    if spec.default is not MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not MISSING else MISSING


def fits(value: Any, hint: Any) -> bool:
    """Whether `value` (as the config gives it: YAML scalars, lists, dicts) fits type hint `hint`."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if origin is Literal:
        return any(literal_matches(value, arg) for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple, dict) or origin in (list, tuple, dict):
        return container_fits(value, origin or hint, args)
    return True  # a PEFT class (LoftQConfig, ...): its own checks


def container_fits(value: Any, kind: type, args: tuple) -> bool:
    if kind is dict:
        return isinstance(value, dict) and (
            not args or all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
        )
    if not isinstance(value, (list, tuple)):
        return False
    if kind is tuple and args and args[-1] is not Ellipsis:
        return len(value) == len(args) and all(fits(v, arg) for v, arg in zip(value, args))
    return not args or all(fits(v, args[0]) for v in value)


def literal_matches(value: Any, literal: Any) -> bool:
    """`value == literal`, where a literal spelled `prefix[what]` (PEFT's 'pissa_niter_[number of iters]')
    stands for the prefix followed by something."""
    if isinstance(value, bool) or isinstance(literal, bool):
        return value is literal
    if value == literal:
        return True
    prefix = literal.split("[", 1)[0] if isinstance(literal, str) and literal.endswith("]") else None
    return bool(prefix) and isinstance(value, str) and value.startswith(prefix) and len(value) > len(prefix)


def described(hint: Any) -> str:
    """Type hint `hint` in words: 'an integer', 'a list of integers, an integer or null', ..."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        # sorted, null last: typing caches a Union by its set of members, so the order of its args is the order
        # in which the process first built that Union (Union[int, list[int]] and Union[list[int], int] are one)
        parts = sorted(set(described(arg) for arg in args), key=lambda part: (part == "null", part))
        return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"
    if origin is Literal:
        return "one of " + ", ".join(shown(arg) if isinstance(arg, bool) else repr(arg) for arg in args)
    words = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    if hint in (list, tuple) or origin in (list, tuple):
        return "a list" + (f" of {NOUNS.get(args[0], 'items')}" if args else "")
    if hint is dict or origin is dict:
        return "a mapping {key: value}"
    return getattr(hint, "__name__", str(hint))


def shown(value: Any) -> str:
    """A value as written on the command line (true, null, 4, abc, [1, 2])."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)
