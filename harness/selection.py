"""The tuning protocol's selection rule (harness/tune.py), applied to records: among a (model, method,
task)'s search runs, the (lr, head lr) pair with the best primary metric on the tuning split; the
protocol uses it to pick, the leaderboard to keep only the chosen runs."""
import pandas as pd

from harness.records import method_label


def tuning_of(record: dict) -> dict | None:
    """The `tuning` section of a run of a tuning protocol (harness/tune.py), else None."""
    return (record.get("config") or {}).get("tuning")


def lr_pair(record: dict) -> tuple[float, float]:
    train = record["config"]["train"]
    return train["lr"], train["head_lr"]


def tuning_grid(record: dict) -> list[tuple[float, float]]:
    """The (lr, head lr) pairs a protocol run's search covered, in grid order."""
    tuning = tuning_of(record)
    return list(zip(tuning["lr_grid"], tuning["head_lr_grid"]))


def grid_text(pairs) -> str:
    return " ".join(f"{lr:g}/{head:g}" for lr, head in pairs)


def best_tuned(records: list[dict]) -> dict | None:
    """Among one (model, method, task)'s protocol runs, the search-seed run with the best primary
    metric on the tuning split (ties: the first in grid order); None while a grid point has not
    finished (succeeded or failed) or when none succeeded."""
    if not records:
        return None
    grid = tuning_grid(records[0])
    search = [r for r in records if r["seed"] == tuning_of(r)["search_seed"]]
    if not set(grid) <= {lr_pair(r) for r in search if r["status"] in ("success", "failed")}:
        return None  # the search is not finished: no choice yet
    best = None
    for record in (r for r in search if r["status"] == "success"):
        metrics = record["metrics"]
        score = metrics["final"][tuning_of(record)["split"]][metrics["primary"]] * (1 if metrics["higher_is_better"] else -1)
        rank = (-score, grid.index(lr_pair(record)))
        if best is None or rank < best[0]:
            best = (rank, record)
    return None if best is None else best[1]


def select_tuned(records: list[dict]) -> tuple[list[dict], pd.DataFrame]:
    """Protocol runs reduced to the chosen (lr, head lr) of each (model, method, task), every seed
    at it; other records pass through. Also the table of chosen values."""
    groups: dict[tuple, list[dict]] = {}
    kept = []
    for record in records:
        if tuning_of(record) is None:
            kept.append(record)
        else:
            groups.setdefault((record["model"], method_label(record["method"], record.get("variant")), record["task"]), []).append(record)
    rows = []
    for (model, method, task), group in sorted(groups.items()):
        winner = best_tuned(group)
        if winner is None:
            continue
        kept += [r for r in group if lr_pair(r) == lr_pair(winner)]
        tuning, metrics = tuning_of(winner), winner["metrics"]
        search = [r for r in group if r["seed"] == tuning["search_seed"] and r["status"] == "success"]
        rows.append({"model": model, "method": method, "task": task, "lr": f"{lr_pair(winner)[0]:g}",
                     "head lr": f"{lr_pair(winner)[1]:g}",
                     "searched (lr/head lr)": grid_text(tuning_grid(winner)),
                     "chosen on": f"{tuning['split']} {metrics['primary']} {100 * metrics['final'][tuning['split']][metrics['primary']]:.2f} (seed {tuning['search_seed']})",
                     "trials": len(tuning_grid(winner)),
                     "search scores": [100 * r["metrics"]["final"][tuning["split"]][r["metrics"]["primary"]] for r in search],
                     "higher_is_better": metrics["higher_is_better"]})
    columns = ["model", "method", "task", "lr", "head lr", "searched (lr/head lr)", "chosen on", "trials", "search scores",
               "higher_is_better"]
    return kept, pd.DataFrame(rows, columns=columns)
