"""One run from composed config to record: set-up, the training loop (step, evaluate, generate), checkpoints,
distributed and sharded runs, device, memory, schedule, loggers."""
