"""GLUE (Wang et al. 2019) from the Hugging Face hub (`nyu-mll/glue`) with `datasets`.

`source` is the dataset repository or a local directory with the same layout (one folder per task
of parquet files and a README whose YAML header lists the configs); both go through
`datasets.load_dataset(source, task)`. GLUE's test labels are hidden, so the reported split is
validation (MNLI: validation_matched, with validation_mismatched evaluated beside it).
Metrics are GLUE's standard ones: CoLA Matthews correlation; STS-B (regression, one output)
Pearson and Spearman; MRPC and QQP accuracy and F1; the others accuracy. The primary metric is the
one the LoRA paper reports (CoLA MCC, STS-B Pearson, accuracy elsewhere).
"""

from dataclasses import dataclass
from typing import Callable

from harness.errors import HarnessError, one_line
from tasks import metrics
from tasks.base import Split, TaskData

DEFAULT_SOURCE = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueSpec:
    text_fields: tuple[str, ...]
    num_labels: int
    metric_fn: Callable
    primary: str
    train_size: int  # examples in GLUE's train split (for run planning without a download)
    eval_splits: tuple[tuple[str, str], ...] = (("validation", "validation"),)


GLUE_TASKS = {
    "cola": GlueSpec(("sentence",), 2, metrics.matthews, "matthews_correlation", 8551),
    "sst2": GlueSpec(("sentence",), 2, metrics.accuracy, "accuracy", 67349),
    "mrpc": GlueSpec(("sentence1", "sentence2"), 2, metrics.accuracy_binary_f1, "accuracy", 3668),
    "qqp": GlueSpec(("question1", "question2"), 2, metrics.accuracy_binary_f1, "accuracy", 363846),
    "stsb": GlueSpec(("sentence1", "sentence2"), 1, metrics.correlations, "pearson", 5749),
    "mnli": GlueSpec(
        ("premise", "hypothesis"),
        3,
        metrics.accuracy,
        "accuracy",
        392702,
        (("validation", "validation_matched"), ("validation_mismatched", "validation_mismatched")),
    ),
    "qnli": GlueSpec(("question", "sentence"), 2, metrics.accuracy, "accuracy", 104743),
    "rte": GlueSpec(("sentence1", "sentence2"), 2, metrics.accuracy, "accuracy", 2490),
}


def load_split(source: str, task: str, split: str, spec: GlueSpec) -> Split:
    import datasets

    try:
        rows = datasets.load_dataset(source, task, split=split)
    except Exception as error:  # the hub is unreachable, or the files are missing
        raise HarnessError(
            f"GLUE '{task}' split '{split}' could not be loaded from '{source}': {one_line(error)}"
        ) from None
    missing = [f for f in (*spec.text_fields, "label") if f not in rows.column_names]
    if missing:
        raise HarnessError(f"GLUE '{task}' split '{split}' lacks columns {missing}; has {rows.column_names}")
    texts = list(zip(*(rows[f] for f in spec.text_fields)))
    label_type = float if spec.num_labels == 1 else int
    return Split([tuple(map(str, t)) for t in texts], [label_type(x) for x in rows["label"]])


def load(task: str, cfg) -> TaskData:
    spec = GLUE_TASKS[task]
    source = cfg.source or DEFAULT_SOURCE
    splits = {"train": load_split(source, task, "train", spec)}
    for ours, theirs in spec.eval_splits:
        splits[ours] = load_split(source, task, theirs, spec)
    return TaskData(
        name=task,
        splits=splits,
        num_labels=spec.num_labels,
        metric_fn=spec.metric_fn,
        primary=spec.primary,
        report_split="validation",
    )
