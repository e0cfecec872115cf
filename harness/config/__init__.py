"""Config: typed sections, their defaults in Hydra's ConfigStore, command-line checks, per-task tables, the role map,
paths."""

from harness.config import roles  # noqa: F401  (registers the ${roles:...} resolver before any config is composed)
