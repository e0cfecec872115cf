"""Small local copies of GLUE in the hub repository's own layout (nyu-mll/glue): one folder per
task with <split>-00000-of-00001.parquet files and a README whose YAML header lists the configs."""

from pathlib import Path

import pandas as pd

from tasks.glue import GLUE_TASKS

SPLITS = {"mnli": ("train", "validation_matched", "validation_mismatched", "test_matched")}


def example_rows(task: str, split: str, n: int) -> pd.DataFrame:
    spec = GLUE_TASKS[task]
    rows = []
    for i in range(n):
        row = {field: f"{task} {split} {field} number {i} word{i % 3}" for field in spec.text_fields}
        if split.startswith("test"):
            row["label"] = -1
        elif spec.num_labels == 1:
            row["label"] = float(i % 6) * 0.9
        else:
            row["label"] = i % spec.num_labels
        row["idx"] = i
        rows.append(row)
    return pd.DataFrame(rows)


def write_glue(root: Path, tasks=tuple(GLUE_TASKS), n: int = 12) -> Path:
    configs = []
    for task in tasks:
        splits = SPLITS.get(task, ("train", "validation", "test"))
        (root / task).mkdir(parents=True, exist_ok=True)
        files = []
        for split in splits:
            example_rows(task, split, n).to_parquet(root / task / f"{split}-00000-of-00001.parquet")
            files.append(f"  - split: {split}\n    path: {task}/{split}-*")
        configs.append(f"- config_name: {task}\n  data_files:\n" + "\n".join(files))
    (root / "README.md").write_text("---\nconfigs:\n" + "\n".join(configs) + "\n---\n# GLUE (test copy)\n")
    return root
