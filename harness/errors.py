"""The exception types users see: a single line naming what is wrong and what is allowed, and the
interruption of a run by a signal.

Signals and the record (docs/design.md §2, "honest status"): outside a run, SIGINT/SIGTERM raise `Interrupted`
at once (`handle_interrupts`). Inside a run's record life cycle a `SignalGate` decides: while the run computes
(`gate.open()`), the first signal raises `Interrupted`, which the run records as `interrupted`; while its record
and views are written, a signal is held and raised only once they are final, so that a record, the runs table and
the exit status never disagree about a run.
"""

import os
import signal


class HarnessError(Exception):
    """A user-facing error; its message is one line, printed without a traceback."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: the run is recorded as interrupted, the process exits 128 + signal. `run` names
    the run it stopped; `finished` is the status of a run whose record was being written when the signal came
    (the signal was held until it was final: harness.errors.SignalGate)."""

    run: str | None = None
    finished: str | None = None

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


class SignalGate:
    """SIGINT and SIGTERM for one run's record life cycle (a context manager; main thread only, elsewhere a no-op).

    Inside `with gate:` a signal is held; inside `with gate.open():` (the run's computing) the first one
    raises `Interrupted` there, and one held before raises on entry. On leaving the gate the previous handlers
    come back and a signal that was held and never raised is raised as `Interrupted`, its `finished` attribute
    set to the status the run was recorded with (`gate.finished`). One signal raises at most once: later ones
    are held (ignored) while the interrupted run is recorded."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.held: int | None = None
        self.raised = False
        self.computing = False
        self.finished: str | None = None  # the status of the run's final record, once it is written
        self.run: str | None = None  # the run, as the interruption's line names it
        self.previous: dict | None = None

    def receive(self, signum: int, frame) -> None:
        if self.held is None:
            self.held = signum
        if self.computing and not self.raised:
            self.raised = True
            raise Interrupted(signum)

    def __enter__(self) -> "SignalGate":
        try:
            self.previous = {signum: signal.signal(signum, self.receive) for signum in self.SIGNALS}
        except ValueError:  # not the main thread: signals never reach this code
            self.previous = None
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.previous is None:
            return
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.held is not None and not self.raised:
            if self.previous[self.held] is signal.SIG_IGN:
                return
            interruption = Interrupted(self.held)
            if self.finished is not None:
                interruption.run, interruption.finished = self.run, self.finished
            raise interruption

    def open(self) -> "_Open":
        """The run's computing: a signal raises `Interrupted` here (one held already raises on entry)."""
        return _Open(self)


class _Open:
    def __init__(self, gate: SignalGate):
        self.gate = gate

    def __enter__(self) -> None:
        self.gate.computing = True
        if self.gate.held is not None and not self.gate.raised:
            self.gate.raised = True
            raise Interrupted(self.gate.held)

    def __exit__(self, *exception) -> None:
        self.gate.computing = False


def write_failed(path: os.PathLike, error: OSError, key: str) -> HarnessError:
    """The one line for a file that could not be written: the file, the reason and the config key that chose it."""
    reason = error.strerror or " ".join(str(error).split())
    return HarnessError(
        f"could not write {path} ({reason}); {key} chooses this folder: set it to a writable one with free space"
    )


def one_line(error: BaseException) -> str:
    """The message of any exception squeezed onto one line, prefixed by its type if not ours."""
    text = " ".join(str(error).split()) or repr(error)
    if isinstance(error, (HarnessError, Interrupted)):
        return text
    return f"{type(error).__name__}: {text}"
