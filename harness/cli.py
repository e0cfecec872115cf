"""`python -m harness`: the Hydra application (one run, or a multirun with `-m` / `sweep=...`)."""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.errors import one_line
from harness.preflight import CONF_DIR, unknown_choices


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> str:
    from harness.run import execute_run

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        record = execute_run(cfg)
    except Exception as error:  # nothing could be recorded (e.g. results_dir not writable)
        print(f"error: {one_line(error)}", file=sys.stderr)
        record = {"status": "failed"}
    if record["status"] != "success" and not multirun:
        sys.exit(1)
    return record["status"]


def main() -> None:
    problems = unknown_choices(sys.argv[1:])
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if "--dry-run" in sys.argv[1:]:
        from harness.plan import main as plan

        plan(sys.argv[1:])
        return
    app()
