"""Step-level checkpoints: a run killed mid-way (SIGKILL, pre-emption, a SLURM requeue) continues from its
last checkpoint instead of step 0, and on CPU ends bit for bit where an uninterrupted run ends.

`checkpoint.every_steps` and/or `checkpoint.every_minutes` (`CheckpointConfig`, an operational section:
not part of the run key, results do not depend on it) save, after an optimizer step, everything the rest
of the run depends on to `<results_dir>/runs/<run_key>.checkpoint.pt` (written to a temporary file, then renamed): the
method's learned tensors (`Method.state_tensors`: trained parameters, masks, folded weights) and its
other state (`Method.checkpoint_state`: AdaLoRA's importance averages, dynamic DoRA's scores, RAC-LoRA's
generator), the optimizer, scheduler and gradient scaler, the RNG states (Python, numpy, torch, CUDA),
the data position (the step: the seeded order is replayed up to it) and the loop's results so far
(curve, best and final evaluations with their outputs, running loss, time spent). The logger is flushed
first, and a resumed CSV log keeps the rows up to the checkpoint's step. The next attempt of the same run
key loads it after the method's set-up (a data-dependent initialisation such as LoRA-GA's runs again: it
is deterministic) and continues; the file is removed when the run ends (success or failure), kept when
it is interrupted or killed.
"""

import random
import time
from pathlib import Path

import numpy as np
import torch

from harness.config.sections import CheckpointConfig
from harness.store.files import atomic_write


def rng_state() -> dict:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), position, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def portable(outputs: dict) -> dict:
    """A split -> outputs map with numpy arrays as tensors (logits) or lists (generated texts), so the
    file loads with torch.load(weights_only=True)."""
    return {
        split: values.tolist() if values.dtype == object else torch.from_numpy(np.ascontiguousarray(values))
        for split, values in outputs.items()
    }


def from_portable(outputs: dict) -> dict:
    return {
        split: np.array(values, dtype=object) if isinstance(values, list) else values.numpy()
        for split, values in outputs.items()
    }


class Checkpointer:
    """Saves on the configured cadence and loads the last checkpoint of a run key."""

    def __init__(self, config: CheckpointConfig, path: Path):
        self.config, self.path = config, path
        self.last_saved = time.monotonic()

    def due(self, step: int, total: int) -> bool:
        if not self.config.enabled or step == total:
            return False
        if self.config.every_steps is not None and step % self.config.every_steps == 0:
            return True
        return (
            self.config.every_minutes is not None
            and time.monotonic() - self.last_saved >= 60 * self.config.every_minutes
        )

    def save(self, state: dict) -> None:
        def write(temporary: Path) -> None:
            with open(temporary, "wb") as handle:  # through Python's file: a full disk is an OSError, not torch's
                torch.save(state, handle)

        atomic_write(self.path, write)
        self.last_saved = time.monotonic()

    def load(self, run_key: str) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception:  # a file cut short: the run starts over
            return None
        return state if state.get("run_key") == run_key else None
