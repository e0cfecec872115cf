"""`python -m harness`: the first line (what will run, where its records go: harness/protocol/announce.py)
before the seconds of loading torch and the config, then the Hydra application (harness/protocol/app.py).
Ctrl-C before a run has started (inside those imports, or while the command line is checked) is one line
and exit status 130."""

import sys

from harness.fast_exit import run_then_exit

NOT_STARTED = "interrupted by SIGINT before any run started; nothing recorded"


def start() -> None:
    try:
        from harness.protocol.announce import announce

        announce(sys.argv[1:])
        from harness.protocol.app import main

        main()  # from its first run on, SIGINT is the application's (harness.errors.handle_interrupts)
    except KeyboardInterrupt:
        print(NOT_STARTED, file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    run_then_exit(start)
