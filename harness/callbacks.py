"""Hydra callback of every multirun: the sweep's plan and progress at the start, then its leaderboard
and the list of failed runs at the end.

The leaderboard goes to the multirun's own folder (hydra.sweep.dir), so scratch sweeps never
overwrite the curated leaderboards under results/ (`python -m harness.leaderboard --out ...` writes
those)."""
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from harness import progress


class LeaderboardCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        progress.write_plan(config)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from harness.leaderboard import build_and_write

        print(build_and_write(config.results_dir, sweep=config.get("sweep"), out_dir=config.hydra.sweep.dir))
        text, failed = progress.summary(config.hydra.sweep.dir)
        progress.OUTCOME["failed_runs"] = failed
        if text:
            print(text, file=sys.stderr if failed else sys.stdout)
