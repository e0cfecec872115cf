"""Clean evaluation items: which examples of a task's evaluation splits are scored.

An evaluation item (validation or test) is *clean* when its content occurs exactly once in the whole
task: not twice in its own split, not in another split (training included). A repeated text is a
single item counted several times (its errors weigh double), and a text also in training measures
memory, not generalisation. Content means the example's stable id (harness/store/predictions.py
`example_ids`: the SHA-256 of the example's text tuple after the task's own normalisation, or of the
image's bytes), so "the same text" is exact equality; near-duplicates (case, URLs) are not matched.

The excluded ids of each packaged task are fixed and versioned in tasks/clean_items/<task>.json, with
where each excluded content occurs, and are applied when scoring: the leaderboard rescores every run
from its prediction file over the clean items (harness/report/cells.py), so committed records are
rescored without retraining and new ones are scored the same way; training data is left as it was.
A file's `clean_digest` per split (the SHA-256 of its sorted clean ids) pins the clean set itself;
tests/store/test_clean_items.py recomputes every file from the task's data. Tasks whose data comes
from the hub have no file until it is written where the hub can be reached:
    python -m harness.store.clean_items TASK [TASK ...]
"""

import argparse
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tasks
from harness.config.sections import TaskConfig
from harness.store.predictions import example_ids

CLEAN_ITEMS_DIR = Path(tasks.__file__).parent / "clean_items"
VERSION = 1
RULE = "an evaluation item is scored only when its content occurs once in the whole task (all splits)"


@dataclass(frozen=True)
class CleanItems:
    """A task's excluded contents (id without its `~k` repeat suffix) and the counts per evaluation split."""

    task: str
    version: int
    excluded: frozenset[str]
    splits: dict  # split -> {"items", "excluded", "repeats", "in_other_splits", "clean_digest"}

    def keeps(self, example_id: str) -> bool:
        return content(example_id) not in self.excluded

    def describe(self, split: str) -> str:
        """One line for a caption: how many items of `split` were left out and why."""
        counts = self.splits.get(split)
        if not counts:
            return f"{self.task}: {split} not surveyed"
        if not counts["excluded"]:
            return f"{self.task} {split}: all {counts['items']:,} items clean"
        return (
            f"{self.task} {split}: {counts['items'] - counts['excluded']:,} of {counts['items']:,} items "
            f"({counts['excluded']:,} left out: {counts['repeats']:,} repeated within {split}, "
            f"{counts['in_other_splits']:,} also in another split)"
        )


def content(example_id: str) -> str:
    return example_id.split("~", 1)[0]


def survey(task_name: str, splits: dict) -> dict:
    """The clean-items file of a task from its splits (name -> Split/ImageSplit, train included)."""
    ids = {name: example_ids(split) for name, split in splits.items()}
    where = {name: Counter(content(i) for i in values) for name, values in ids.items()}
    total = Counter()
    for counts in where.values():
        total.update(counts)
    evaluated = [name for name in ids if name != "train"]
    excluded = sorted({c for name in evaluated for c in where[name] if total[c] > 1})
    summary = {}
    for name in evaluated:
        contents = [content(i) for i in ids[name]]
        clean = sorted(i for i in ids[name] if total[content(i)] == 1)
        summary[name] = {
            "items": len(contents),
            "excluded": len(contents) - len(clean),
            "repeats": sum(1 for c in contents if where[name][c] > 1),
            "in_other_splits": sum(1 for c in contents if total[c] > where[name][c]),
            "clean_digest": hashlib.sha256("\n".join(clean).encode()).hexdigest(),
        }
    return {
        "task": task_name,
        "version": VERSION,
        "rule": RULE,
        "splits": summary,
        "excluded": {c: {name: where[name][c] for name in ids if where[name][c]} for c in excluded},
    }


def survey_task(task_name: str) -> dict:
    """`survey` of a task as the harness loads it by default (no limits: the sets hold for any limit)."""
    return survey(task_name, tasks.load_task(TaskConfig(name=task_name)).splits)


@cache
def clean_items(task_name: str) -> CleanItems | None:
    """The task's fixed clean-items set, or None where none was written (hub tasks not surveyed)."""
    path = CLEAN_ITEMS_DIR / f"{task_name}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return CleanItems(data["task"], data["version"], frozenset(data["excluded"]), data["splits"])


def applies(task_config: dict) -> CleanItems | None:
    """The clean items of a run's task config: only for the packaged data (`source` unset); another
    source holds other examples, which the file has not surveyed."""
    if task_config.get("source") or task_config.get("eval_source"):
        return None
    return clean_items(task_config.get("name", ""))


def write(task_name: str) -> Path:
    CLEAN_ITEMS_DIR.mkdir(exist_ok=True)
    path = CLEAN_ITEMS_DIR / f"{task_name}.json"
    path.write_text(json.dumps(survey_task(task_name), indent=1, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harness.store.clean_items",
        description="Write each task's clean-items file, tasks/clean_items/<task>.json, from its data.",
    )
    parser.add_argument("tasks", nargs="+", metavar="TASK")
    names = parser.parse_args(argv).tasks
    unknown = sorted(set(names) - set(tasks.TASK_LOADERS))
    if unknown:
        raise SystemExit(f"error: unknown task(s) {unknown}; allowed: {sorted(tasks.TASK_LOADERS)}")
    for name in names:
        print(write(name))


if __name__ == "__main__":
    main()
