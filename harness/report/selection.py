"""The tuning protocol's selection rule (harness/protocol/tune.py), applied to records: among a (model, method,
task)'s search runs, the (lr, head lr) pair with the best primary metric on the tuning split, once the
search's trials have all finished; the protocol uses it to pick, the leaderboard to keep only the
chosen runs."""

from collections.abc import Mapping

import pandas as pd

from harness.store.records import record_label

FAILED = float("-inf")


def best_exponent(scores: Mapping[float, float]) -> float:
    """The exponent with the highest score (scores oriented so that higher is better); ties: the smallest."""
    return min(scores, key=lambda j: (-scores[j], j))


def tuning_of(record: dict) -> dict | None:
    """The `tuning` section of a run of a tuning protocol (harness/protocol/tune.py), else None: the selection
    split, the search seed, the number of search trials and the run's point of the search (`exponent`:
    the value searched is the method's default × step^exponent, harness/protocol/lr_search.py); `stage: seeds`
    on a run of a seeds stage with overrides of its own (a longer budget than the search's)."""
    return (record.get("config") or {}).get("tuning")


def of_seeds_stage(record: dict) -> bool:
    return tuning_of(record).get("stage") == "seeds"


def lr_pair(record: dict) -> tuple[float, float]:
    train = record["config"]["train"]
    return train["lr"], train["head_lr"]


def grid_text(pairs) -> str:
    return " ".join(f"{lr:g}/{head:g}" for lr, head in pairs)


def selection_score(record: dict) -> float:
    """The record's primary metric on the selection split, oriented so that higher is better; failed: −inf."""
    if record["status"] != "success":
        return FAILED
    metrics, split = record["metrics"], tuning_of(record)["split"]
    return metrics["final"][split][metrics["primary"]] * (1 if metrics["higher_is_better"] else -1)


def search_records(records: list[dict]) -> dict[float, dict]:
    """One (model, method, task)'s finished (succeeded or failed) search-seed runs by their exponent."""
    return {
        tuning_of(r)["exponent"]: r
        for r in records
        if r["seed"] == tuning_of(r)["search_seed"] and not of_seeds_stage(r) and r["status"] in ("success", "failed")
    }


def best_tuned(records: list[dict]) -> dict | None:
    """Among one (model, method, task)'s protocol runs, the search-seed run the protocol picks (the
    best selection score; ties: the smaller exponent; `lr_search.best_exponent`); None while fewer
    than the protocol's trials have finished (succeeded or failed) or when none succeeded."""
    search = search_records(records)
    if not search or len(search) < tuning_of(next(iter(search.values())))["trials"]:
        return None  # the search is not finished: no choice yet
    scores = {exponent: selection_score(record) for exponent, record in search.items()}
    best = search[best_exponent(scores)]
    return best if best["status"] == "success" else None


def edge_gain(search: dict[float, dict], chosen: float) -> float | None:
    """Points ×100 by which the chosen search point beat its one searched neighbour on the selection
    split (oriented: positive = better), when it lies on the edge of at least two points; else None
    (also when the neighbour failed)."""
    exponents = sorted(search)
    if len(exponents) < 2 or chosen not in (exponents[0], exponents[-1]):
        return None
    neighbour = search[exponents[1] if chosen == exponents[0] else exponents[-2]]
    if neighbour["status"] != "success":
        return None
    return 100 * (selection_score(search[chosen]) - selection_score(neighbour))


def select_tuned(records: list[dict]) -> tuple[list[dict], pd.DataFrame]:
    """Protocol runs reduced to the chosen (lr, head lr) of each (model, method, task), every seed
        at it (only the seeds stage's runs where it has runs of its own: the search's at the pick trained
        on a shorter budget); other records pass through. Also the table of chosen values: the searched pairs in grid
        order with their selection scores, the number of trials and whether the pick is on the edge of
        the searched range (the leaderboard's "widen the grid" flag) and, when it is, by how many points the
    pick beat the searched point next to it (`edge gain`, on the selection split: small when the score
    has flattened at the edge, large when the optimum probably lies beyond)."""
    groups: dict[tuple, list[dict]] = {}
    kept = []
    for record in records:
        if tuning_of(record) is None:
            kept.append(record)
        else:
            groups.setdefault((record["model"], record_label(record), record["task"]), []).append(record)
    rows = []
    for (model, method, task), group in sorted(groups.items()):
        winner = best_tuned(group)
        if winner is None:
            continue
        at_pick = [r for r in group if lr_pair(r) == lr_pair(winner)]
        own_stage = [r for r in at_pick if of_seeds_stage(r)]
        kept += own_stage or at_pick
        tuning, metrics = tuning_of(winner), winner["metrics"]
        split, primary = tuning["split"], metrics["primary"]
        search = dict(sorted(search_records(group).items()))
        rows.append(
            {
                "model": model,
                "method": method,
                "task": task,
                "lr": f"{lr_pair(winner)[0]:g}",
                "head lr": f"{lr_pair(winner)[1]:g}",
                "searched (lr/head lr)": grid_text(lr_pair(r) for r in search.values()),
                "chosen on": f"{split} {primary} {100 * metrics['final'][split][primary]:.2f} "
                f"(seed {tuning['search_seed']})",
                "trials": len(search),
                "at edge": tuning["exponent"] in (min(search), max(search)),
                "edge gain": edge_gain(search, tuning["exponent"]),
                "search scores": [
                    100 * r["metrics"]["final"][tuning["split"]][r["metrics"]["primary"]]
                    for r in search.values()
                    if r["status"] == "success"
                ],
                "higher_is_better": metrics["higher_is_better"],
            }
        )
    columns = [
        "model",
        "method",
        "task",
        "lr",
        "head lr",
        "searched (lr/head lr)",
        "chosen on",
        "trials",
        "at edge",
        "edge gain",
        "search scores",
        "higher_is_better",
    ]
    return kept, pd.DataFrame(rows, columns=columns)
