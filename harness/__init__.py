"""peft-harness: the engine (Hydra entry, training loop, run records, loggers, leaderboard)."""
from harness import roles  # noqa: F401,E402  (registers the ${roles:...} resolver before any config is composed)
