"""Argument checks shared by every wing: a condition or a one-line error, and a config section checked
against its dataclass (unknown keys, wrong types) with the error naming the key and what is allowed."""

from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from harness.errors import HarnessError


def require(condition: bool, message: str) -> None:
    if not condition:
        raise HarnessError(message)


def parse_section(schema: type, node: Any, where: str):
    """`node` (a DictConfig or dict) checked against dataclass `schema`; returns an instance."""
    allowed = ", ".join(f.name for f in fields(schema))
    if node is None:
        node = {}
    elif isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    elif not isinstance(node, dict):
        raise HarnessError(f"{where} must be a section of keys ({allowed}), got {node!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as error:
        raise HarnessError(f"{where}: unknown key '{error.key}'; allowed keys: {allowed}") from None
    except OmegaConfBaseException as error:
        message = str(error).strip().splitlines()[0]
        raise HarnessError(f"{where}.{error.key}: {message}") from None
