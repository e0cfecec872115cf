"""Assets the model loaders build once and keep: the de-quantised decoders and the MNIST MLP's pretrained
weights. Each lives in a folder under the cache root (`cache_dir`, else $PEFT_HARNESS_CACHE, else
~/.cache/peft-harness) named by a fingerprint of what it is built from. A folder is written in a temporary
folder beside it and then renamed, so a reader never sees half an asset; an incomplete or corrupt folder
(copied in part, a damaged file) is built again. Building draws no number from the run's random generators, so the
run that builds an asset initialises its model (a fresh head, an adapter) as every later run with its seed does.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch


def cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("PEFT_HARNESS_CACHE") or Path.home() / ".cache" / "peft-harness")


def cached_folder(folder: Path, is_complete: Callable[[Path], bool], write: Callable[[Path], None]) -> Path:
    """`folder`, built on first use by `write(scratch)` into a temporary folder that is then renamed to it;
    kept as it is where `is_complete(folder)`, built again where not."""
    if is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        with torch.random.fork_rng(devices=[]):  # a model built for the asset draws its init from a fork
            write(scratch)
        if not is_complete(folder):  # absent, or incomplete or corrupt: replaced
            shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)
    except OSError:
        if not is_complete(folder):  # another process may have finished first: its folder is as good
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
