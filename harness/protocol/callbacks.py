"""Hydra callback of every multirun: the sweep's plan and progress at the start, then its leaderboard
and the list of failed runs at the end.

The leaderboard goes to the multirun's own folder (hydra.sweep.dir; its path is printed after it), so
scratch sweeps never overwrite the official leaderboard (written only by `python -m harness.tune
sweep=official`). A step of the callback that fails is one `error:` line and makes the sweep exit 1
(Hydra itself would only warn)."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from harness.errors import one_line
from harness.protocol import progress


def attempt(step: str, action) -> None:
    """Runs `action`; an exception becomes one line and a failed sweep."""
    try:
        action()
    except Exception as error:
        print(f"error: {step} failed: {one_line(error)}", file=sys.stderr)
        progress.OUTCOME["step_errors"] += 1


class LeaderboardCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        attempt("the sweep's plan", lambda: progress.write_plan(config))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from harness.report.board import build_and_write

        def leaderboard() -> None:
            print(
                build_and_write(
                    config.results_dir,
                    sweep=config.get("sweep"),
                    out_dir=config.hydra.sweep.dir,
                    sweep_caption=config.get("caption"),
                )
            )
            print(
                f"leaderboard: {Path(config.hydra.sweep.dir) / 'leaderboard.md'} (with .csv, .tex and plots beside it)"
            )

        attempt("the sweep's leaderboard", leaderboard)
        attempt("the sweep's summary", lambda: self.summarize(config))

    @staticmethod
    def summarize(config: DictConfig) -> None:
        text, failed = progress.summary(config.hydra.sweep.dir)
        progress.OUTCOME["failed_runs"] = failed
        if text:
            print(text, file=sys.stderr if failed else sys.stdout)
