"""The training-step benchmark: `python -m harness.bench`."""
