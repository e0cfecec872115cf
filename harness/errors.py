"""The exception types users see: a single line naming what is wrong and what is allowed, and the
interruption of a run by a signal."""

import signal


class HarnessError(Exception):
    """A user-facing error; its message is one line, printed without a traceback."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: the run is recorded as interrupted, the process exits 128 + signal."""

    def __init__(self, signum: int):
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.signal_name}")


def raise_interrupted(signum: int, frame) -> None:
    """Signal handler: the first SIGINT/SIGTERM raises Interrupted; later ones are ignored while the
    record of the interrupted run is written."""
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


def handle_interrupts() -> None:
    """SIGINT and SIGTERM raise Interrupted (main thread only; elsewhere Python's defaults stay)."""
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, raise_interrupted)
    except ValueError:  # not the main thread
        pass


def one_line(error: BaseException) -> str:
    """The message of any exception squeezed onto one line, prefixed by its type if not ours."""
    text = " ".join(str(error).split()) or repr(error)
    if isinstance(error, (HarnessError, Interrupted)):
        return text
    return f"{type(error).__name__}: {text}"
