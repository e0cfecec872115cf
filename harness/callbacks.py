"""Hydra callback: at the end of a multirun, rebuild and print the leaderboard."""
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class LeaderboardCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from harness.leaderboard import build_and_write

        print(build_and_write(config.results_dir, sweep=config.get("sweep")))
