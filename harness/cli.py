"""`python -m harness`: the Hydra application (one run, or a multirun with `-m` / `sweep=...`).

Exit status: 0 when every run succeeded (or was already done), 1 when a run failed (a multirun
finishes all its runs first and lists the failures), 2 for unknown config choices."""
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from harness import progress
from harness.errors import one_line
from harness.preflight import CONF_DIR, unknown_choices


def threads_for(launcher: DictConfig, cores: int) -> int | None:
    """Torch threads per run under the joblib launcher: the cores shared among its parallel jobs."""
    if "joblib" not in str(launcher.get("_target_", "")):
        return None
    jobs = launcher.get("n_jobs") or 1
    jobs = jobs if jobs > 0 else max(1, cores + 1 + jobs)  # joblib: -1 = all cores, -2 = all but one
    return max(1, cores // jobs)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> str:
    from harness.run import execute_run

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with open_dict(cfg):
        cfg.job_index = hydra_cfg.job.num if multirun else None
        if cfg.get("threads") is None:
            cfg.threads = threads_for(hydra_cfg.launcher, os.cpu_count() or 1)
    try:
        record = execute_run(cfg)
    except Exception as error:  # nothing could be recorded (e.g. results_dir not writable)
        print(f"error: {one_line(error)}", file=sys.stderr)
        record = {"status": "failed"}
    if multirun:
        progress.report_progress(hydra_cfg.sweep.dir)
    elif record["status"] != "success":
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
    if progress.OUTCOME["failed_runs"]:
        sys.exit(1)
