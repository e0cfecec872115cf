"""Hydra callback: at the end of a multirun, rebuild and print the leaderboard of its sweep.

The tables go to the multirun's own folder (hydra.sweep.dir), so scratch sweeps never overwrite the
curated leaderboards under results/ (`python -m harness.leaderboard --out ...` writes those)."""
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class LeaderboardCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from harness.leaderboard import build_and_write

        print(build_and_write(config.results_dir, sweep=config.get("sweep"), out_dir=config.hydra.sweep.dir))
