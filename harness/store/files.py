"""Files beside the records: written atomically (temporary file, fsync, rename), so that a killed
process leaves the previous complete file or the new one, never a truncated one; a write that fails is one
line naming the file and the config key that chose its folder; created with the
process umask (0644 under the usual 022), like any file `open` creates; checksummed with SHA-256."""

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

from harness.digest import sha256_file
from harness.errors import HarnessError, write_failed


def umask_mode() -> int:
    """0o666 less the process umask: the mode `open(path, "w")` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[Path], None], key: str = "results_dir") -> None:
    """`write(temporary)` fills a temporary file in `path`'s folder, which then replaces `path`. An OSError
    (disk full, a folder where the file goes, no permission) is one line naming the file and `key`, the config
    key that chose its folder."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder is in the file's place", str(path))
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(Path(temporary))
        os.chmod(temporary, umask_mode())  # mkstemp creates 0600: readable by the owner only
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_failed(path, error, key) from None
        raise


@contextlib.contextmanager
def writes_to(path: Path, key: str = "results_dir"):
    """An OSError inside the block (writing `path` in place, as a log does) is one line naming `path` and `key`."""
    try:
        yield
    except OSError as error:
        raise write_failed(path, error, key) from None


def atomic_write_text(path: Path, text: str, key: str = "results_dir") -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text), key)


def described(path: Path) -> dict:
    """How a record names a file beside it: name, SHA-256 and size."""
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def ensure_writable(folder: Path, key: str) -> None:
    """`folder` exists (created if need be) and takes new files; else one line naming the config key."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise HarnessError(
            f"{key}: folder '{folder}' is not writable ({error.strerror}); set {key} to a writable folder"
        ) from None
