"""Ending `python -m harness` without the interpreter's module teardown.

Tearing down torch's and transformers' modules after a run costs about 1 s of a default run's 100 s
(`python -m harness.bench --overhead`). Once the command has finished — its records and files written
and closed — the process runs its exit handlers (logging's flush among them), flushes the standard
streams and ends with `os._exit`, keeping the exit status `sys.exit` would have given. Where other
non-daemon threads are still alive (a launcher's pool, a logger's uploader) it exits the normal way, so that they
are joined as usual; an uncaught exception also takes the normal way (its traceback is printed)."""

import atexit
import os
import sys
import threading
from collections.abc import Callable


def exit_status(code) -> int:
    """The status `sys.exit(code)` ends a process with (None: 0, an int: itself, else 1 after printing it)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_then_exit(command: Callable[[], object]) -> None:
    try:
        command()
        status = 0
    except SystemExit as stop:
        status = exit_status(stop.code)
    if any(not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()  # noqa: SLF001 (what the interpreter itself runs at exit)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)
