"""`python -m harness`: the Hydra application (one run, or a multirun with `-m` / `sweep=...`).

Exit status: 0 when every run succeeded (or was already done, or is being trained by another
launcher), 1 when a run failed or a step at the end of a sweep failed (a multirun finishes all its
runs first and lists the failures), 2 for a bad command line (unknown config choice or key, bad
override), 130 / 143 when SIGINT / SIGTERM interrupted a run (recorded as `interrupted`) or stopped a sweep.
A signal that comes while a run's record and runs.csv are being written waits until both are final
(harness.errors.SignalGate): a single run then exits as its record says (0 success, 1 failed) with one line
saying so; a sweep stops there (130 / 143). A run whose record is final but whose logger failed exits 1."""

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from harness.config.compose import register_defaults
from harness.config.preflight import CONF_DIR, command_line_problems
from harness.engine import distributed
from harness.errors import Interrupted, handle_interrupts, one_line, write_failed
from harness.protocol import progress


def threads_for(launcher: DictConfig, cores: int) -> int | None:
    """Torch threads per run under the joblib launcher: the cores shared among its parallel jobs."""
    if "joblib" not in str(launcher.get("_target_", "")):
        return None
    jobs = launcher.get("n_jobs") or 1
    jobs = jobs if jobs > 0 else max(1, cores + 1 + jobs)  # joblib: -1 = all cores, -2 = all but one
    return max(1, cores // jobs)


def finished_before(interruption: Interrupted) -> str:
    """What a signal that came while a run's record was written left: the run, finished, as recorded."""
    return (
        f"it came as run {interruption.run} was being recorded, which had finished and is recorded as "
        f"{interruption.finished}"
    )


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> str:
    from harness.engine.run import execute_run

    handle_interrupts()  # also in launcher workers (joblib, submitit) that run this function
    distributed.adopt_cluster_tasks()  # a submitit job of several tasks: one data-parallel run
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with open_dict(cfg):
        cfg.job_index = hydra_cfg.job.num if multirun else None
        if cfg.get("threads") is None:
            cfg.threads = threads_for(hydra_cfg.launcher, os.cpu_count() or 1)
    try:
        record = execute_run(cfg) or {"status": "elsewhere"}  # None: another launcher trains it
    except Interrupted as interruption:
        if interruption.finished is None or multirun:  # a sweep stops; harness.protocol.app.main says where
            raise
        print(f"{interruption}: {finished_before(interruption)}", file=sys.stderr)  # its record is what it says
        record = {"status": interruption.finished}
    except Exception as error:  # nothing could be recorded (e.g. results_dir not writable), or a view failed
        print(f"error: {one_line(error)}", file=sys.stderr)
        record = {"status": "failed"}
        progress.OUTCOME["step_errors"] += 1  # a sweep fails too, also where its record is a success
    if multirun:
        progress.report_progress(hydra_cfg.sweep.dir)
    elif record["status"] not in ("success", "elsewhere"):
        sys.exit(1)
    return record["status"]


def main() -> None:
    arguments = sys.argv[1:]
    register_defaults()  # the YAMLs extend the config dataclasses' defaults
    problems = command_line_problems(arguments)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if "--dry-run" in arguments:
        from harness.protocol.plan import main as plan

        plan(arguments)
        return
    handle_interrupts()
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra's own failures reach the handlers below
    try:
        app()
    except OSError as error:  # our writes name their file and key (harness.store.files); this is Hydra's output folder
        key = "hydra.sweep.dir" if "-m" in arguments or "--multirun" in arguments else "hydra.run.dir"
        print(f"error: {write_failed(error.filename or '?', error, key)}", file=sys.stderr)
        sys.exit(1)
    except (Interrupted, KeyboardInterrupt) as interruption:  # the run's record says `interrupted`
        code = interruption.exit_code if isinstance(interruption, Interrupted) else 130
        run = getattr(interruption, "run", None)
        if getattr(interruption, "finished", None):
            what = f"{finished_before(interruption)}; the sweep stops there, and the same command runs the rest"
        elif run:
            what = f"run {run} recorded as interrupted; the same command redoes it"
        else:
            what = "no run was in progress"
        print(
            f"{one_line(interruption) if isinstance(interruption, Interrupted) else 'interrupted by SIGINT'}: {what}; "
            f"exit status {code}",
            file=sys.stderr,
        )
        sys.exit(code)
    if progress.OUTCOME["failed_runs"] or progress.OUTCOME["step_errors"]:
        sys.exit(1)
