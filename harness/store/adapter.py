"""A run's trained state kept on request (`save_adapter=true`): everything the method learned
(`Method.trainable_state_dict()`: adapter tensors, the task head, and what the method folds, masks
or prunes) as <results_dir>/runs/<run_key>.adapter.safetensors, named with its SHA-256 in the
record's `adapter`. `load_adapter` puts it onto a freshly built model with the same method config,
which then gives the trained model's outputs."""

from pathlib import Path

from harness.digest import sha256_file
from harness.errors import HarnessError
from harness.store.files import atomic_write, described


def save_adapter(path: Path, method) -> dict:
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in method.trainable_state_dict().items()}
    atomic_write(path, lambda temporary: save_file(state, str(temporary)))
    return described(path)


def load_adapter(record: dict, runs_dir: Path, method) -> None:
    """Loads the adapter a record names onto `method` (built on a fresh model), checking its SHA-256."""
    from safetensors.torch import load_file

    entry = record.get("adapter")
    if not entry:
        raise HarnessError(f"run {record['run_key']} kept no adapter; run it with save_adapter=true")
    path = Path(runs_dir) / entry["file"]
    if sha256_file(path) != entry["sha256"]:
        raise HarnessError(f"{path}: SHA-256 differs from the record's; the file was changed or truncated")
    method.load_trainable_state_dict(load_file(str(path)))
