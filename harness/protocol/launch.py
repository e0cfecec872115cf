"""How a protocol's runs are launched: grouped into Hydra multiruns of `python -m harness` (so that launcher
overrides such as `hydra/launcher=joblib` apply), one multirun at a time, in rounds until a stage has
nothing left to do. Runs another launcher holds are left to it and waited for."""

import math
import subprocess
import sys
import time
from collections.abc import Callable

from harness.errors import HarnessError
from harness.protocol.outcomes import Outcomes

WAIT_SECONDS = 20  # between two looks at runs another launcher holds


def as_multiruns(runs: list[list[str]]) -> list[list[str]]:
    """Hydra multirun arguments covering exactly `runs` (each a list of `key=value`): one sweep over
    the keys whose values differ when the runs are their cartesian product, else one per group of
    runs that share everything but the task and the seed."""
    return [arguments for arguments, _ in multirun_groups(runs)]


def multirun_groups(runs: list[list[str]]) -> list[tuple[list[str], list[list[str]]]]:
    """`as_multiruns` with the runs each multirun covers."""
    values: dict[str, list[str]] = {}
    for overrides in runs:
        for override in overrides:
            key, value = override.split("=", 1)
            if value not in values.setdefault(key, []):
                values[key].append(value)
    if math.prod(len(v) for v in values.values()) == len(runs):
        return [([f"{k}={','.join(v)}" for k, v in values.items()], runs)]
    groups: dict[tuple, list[list[str]]] = {}
    for overrides in runs:
        groups.setdefault(tuple(o for o in overrides if not o.startswith(("task=", "seed="))), []).append(overrides)
    return [pair for group in groups.values() for pair in multirun_groups(group)]


def launch(arguments: list[str], extra: list[str]) -> None:
    """One multirun of `python -m harness` in a child process (its output shown as it comes)."""
    command = [
        sys.executable,
        "-m",
        "harness",
        "-m",
        *arguments,
        "~hydra.callbacks.leaderboard",
        "progress=false",
        *extra,
    ]
    print("$ python " + " ".join(command[1:]), flush=True)
    subprocess.run(command)


def run_rounds(stage: str, next_runs: Callable[[], list[list[str]]], outcomes: Outcomes, extra: list[str]) -> None:
    """Launches `next_runs()`, one multirun at a time, until it is empty. Runs that another launcher
    holds (a second `python -m harness.tune` on the same results) are left to it, and waited for where
    nothing else is left; a multirun after which none of its runs finished stops the protocol (a run
    that cannot even write its record)."""
    while runs := next_runs():
        free = [r for r in runs if not outcomes.store.is_locked(outcomes.composer.key(r))]
        if not free:
            time.sleep(WAIT_SECONDS)
            continue
        arguments, covered = multirun_groups(free)[0]
        print(
            f"{stage}: {len(runs)} run(s) to do now"
            + (f" ({len(runs) - len(free)} held by another launcher)" if len(free) < len(runs) else ""),
            flush=True,
        )
        launch(arguments, extra)
        if all(outcomes.record(r) is None and not outcomes.store.is_locked(outcomes.composer.key(r)) for r in covered):
            raise HarnessError(
                f"{stage}: none of the {len(covered)} run(s) just launched finished (see the output above)"
            )
