"""The tuning protocol's plan and time estimate (`python -m harness.tune sweep=... --dry-run`, also printed
before every protocol run).

Per cell: the runs left (search points not finished, then the seeds stage at the pick) and their
length (optimizer steps and evaluations, from the task's training-set size and the train config; a
seeds stage with overrides of its own, e.g. more epochs, has its own length).
Time per run = steps × the measured seconds per step + evaluations × the measured seconds per
evaluation + the measured time outside both (plus the process's start before the record's clock, a
stated constant), each the median over this cell's finished records (any lr or
seed: the speed does not depend on them); cells without a record use the median of their (model,
task)'s other cells, and cells without even that are counted as unknown. The estimate is of
wall-clock time with the launcher the protocol runs with; two launchers halve neither the work nor
this figure (run `--dry-run` again while they run to see the time left).
"""

import statistics

from harness.config.sections import TaskConfig, TrainConfig, parse_section
from harness.engine.train import plan_steps
from harness.protocol.plan import train_size
from harness.store.records import record_label

LAUNCH_SECONDS = 8.0  # a run's process before its record's clock starts: interpreter, imports, Hydra's multirun


def rates(record: dict) -> tuple[float, float, float] | None:
    """(seconds per step, seconds per evaluation, seconds outside both) of a finished run."""
    cost = record.get("cost")
    if record["status"] != "success" or not cost or not cost.get("steps"):
        return None
    evaluations = max(
        1, len({point["step"] for point in record["metrics"]["curve"]})
    )  # a point per split per evaluation
    outside = cost["wall_seconds"] - cost["train_seconds"] - cost["eval_seconds"] + LAUNCH_SECONDS
    return cost["train_seconds"] / cost["steps"], cost["eval_seconds"] / evaluations, outside


def run_length(cfg, sizes: dict) -> tuple[int, int]:
    """(optimizer steps, evaluations) of one run."""
    train, task = parse_section(TrainConfig, cfg.train, "train"), parse_section(TaskConfig, cfg.task, "task")
    plan = plan_steps(train, train_size(task, sizes)[0] or 1)
    return plan.total_steps, -(-plan.total_steps // plan.eval_every)


def estimate(cells, protocol, outcomes, store) -> str:
    """The plan: per cell its runs left and their estimated time; then the totals."""
    measured: dict[tuple, list[tuple]] = {}
    for record in store.load_all()[0]:
        found = rates(record)
        if found is not None:
            label = record_label(record)
            measured.setdefault((record["model"], label, record["task"]), []).append(found)
    by_model_task: dict[tuple, list[tuple]] = {}
    for (model, _, task), values in measured.items():
        by_model_task.setdefault((model, task), []).extend(values)
    sizes, lines, total_runs, total_seconds, unknown, planned = {}, [], 0, 0.0, 0, 0
    for cell in cells:
        pending, scores = outcomes.search(cell)
        seeds = len(cell.stage_seeds(protocol))
        searches_left = protocol.search.trials - len(scores)
        seeds_left = seeds if searches_left else len(outcomes.unfinished(outcomes.final_runs(cell)))
        runs_left = searches_left + seeds_left
        planned += protocol.search.trials + seeds
        search_length = run_length(outcomes.composer(cell.run(protocol, 0, protocol.search_seed)), sizes)
        lengths = [
            search_length,
            run_length(outcomes.composer(cell.run(protocol, 0, protocol.search_seed, "seeds")), sizes)
            if cell.seeds_stage
            else search_length,
        ]  # composed once where the stages are the same runs
        known = measured.get((cell.suite.model, cell.method, cell.task)) or by_model_task.get(
            (cell.suite.model, cell.task)
        )
        if known:
            per_step, per_eval, outside = (statistics.median(column) for column in zip(*known))
            per_run = [steps * per_step + evaluations * per_eval + outside for steps, evaluations in lengths]
            seconds = searches_left * per_run[0] + seeds_left * per_run[1]
            total_seconds += seconds
            each = " / ".join(dict.fromkeys(f"{value:,.0f}" for value in per_run))
            time_text = f"{seconds / 60:,.0f} min ({each} s per run)"
        else:
            unknown += runs_left
            time_text = "time unknown (no finished run of this model and task yet)"
        total_runs += runs_left
        length = " / ".join(
            dict.fromkeys(f"{steps} steps and {evaluations} evaluations" for steps, evaluations in lengths)
        )
        lines.append(
            f"  {cell.suite.model} {cell.method} {cell.task} ({cell.axis}): {len(scores)}/{protocol.search.trials} "
            f"searched, {runs_left} runs left of {length}{' (search / seeds stage)' if ' / ' in length else ''}: "
            f"{time_text}"
        )
    stages = (
        " or ".join(dict.fromkeys(cell.stage_text(protocol) for cell in cells))
        or f"{len(protocol.seeds) - 1} more seeds"
    )
    head = (
        f"protocol: {len(cells)} (model, method, task) cells × ({protocol.search.trials} search trials on seed "
        f"{protocol.search_seed} + {stages}) = {planned} runs; "
        f"{total_runs} left, estimated {total_seconds / 3600:,.1f} h of run time (about {total_seconds / 7200:,.1f} h "
        f"wall-clock with two launchers)" + (f" plus {unknown} runs of unknown time" if unknown else "")
    )
    return "\n".join([head, *lines])
