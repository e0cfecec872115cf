"""peft-harness: the engine (Hydra entry, training loop, run records, loggers, leaderboard)."""
