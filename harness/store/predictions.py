"""Per-example predictions of a run: <results_dir>/runs/<run_key>.predictions.parquet.

One row per example of every evaluated split at the final evaluation and, where it is another one,
at the best (`step` tells them apart; the record's `predictions.steps` names the final and the best): `split`, `step`,
`example_id` (a hash of the example's content, the same in every run of the
task whatever its limits; `~k` marks the k-th repeat of an identical example), `label`,
`prediction`, and `logits` (float32 per class) or, for regression, `value`; for a generative task, the
reference and extracted answers as `label` and `prediction` and the text written as `generation`. Zstandard-compressed
Parquet: about 40 bytes per example and evaluation with five classes (a default bbc_news run: 668
rows, 26 kB; the demo sweep's 11 runs: about 0.26 MB). The record names the file with
its SHA-256 (`predictions`), so statistics can pair runs on the same examples.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.store.files import atomic_write, described
from tasks.base import ImageSplit, Split


def predictions(outputs: np.ndarray) -> np.ndarray:
    """Class ids (argmax of the logits), or the single output of a regression head."""
    return outputs[:, 0] if outputs.shape[1] == 1 else outputs.argmax(axis=1)


def example_ids(split: Split | ImageSplit) -> list[str]:
    """Stable ids: the SHA-256 of each example's content (16 hex digits), `~k` on the k-th repeat."""
    ids, seen = [], {}
    for i in range(len(split)):
        content = split.images[i].tobytes() if isinstance(split, ImageSplit) else json.dumps(split.texts[i]).encode()
        digest = hashlib.sha256(content).hexdigest()[:16]
        seen[digest] = seen.get(digest, -1) + 1
        ids.append(digest if seen[digest] == 0 else f"{digest}~{seen[digest]}")
    return ids


def numbers(values: np.ndarray):
    """A pyarrow array over a numpy array's memory. pyarrow's `pa.array` would import pandas (0.2 s of a
    run's start-up) to check the input's kind; the buffers need no check."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def strings(values: list[str]):
    """A pyarrow string array from its UTF-8 bytes and their offsets (see `numbers`)."""
    encoded = [value.encode() for value in values]
    offsets = np.concatenate([[0], np.cumsum([len(value) for value in encoded])]).astype(np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))


def evaluated(evaluations: dict[int, dict[str, np.ndarray]]):
    """(step, split, outputs) of every evaluation, steps in order."""
    return [(step, split, values) for step, outputs in sorted(evaluations.items()) for split, values in outputs.items()]


def row_columns(task, evaluations: dict[int, dict[str, np.ndarray]]) -> dict:
    """The columns naming each row: split, step and example id."""
    ids = {split: example_ids(task.splits[split]) for split in task.eval_splits}
    rows = evaluated(evaluations)
    return {
        "split": strings([split for _, split, values in rows for _ in range(len(values))]).dictionary_encode(),
        "step": numbers(np.concatenate([np.full(len(values), step, dtype=np.int32) for step, _, values in rows])),
        "example_id": strings([i for _, split, _ in rows for i in ids[split]]),
    }


def generated_table(task, evaluations: dict[int, dict[str, np.ndarray]]):
    """A generative task's predictions: `label` and `prediction` are the reference and extracted answers,
    `generation` the text the model wrote."""
    rows, generation = evaluated(evaluations), task.generation
    return pa.table(
        {
            **row_columns(task, evaluations),
            "label": strings(
                [generation.reference(label, split) for _, split, _ in rows for label in task.splits[split].labels]
            ),
            "prediction": strings([generation.extract(text, split) for _, split, texts in rows for text in texts]),
            "generation": strings([text for _, _, texts in rows for text in texts]),
        }
    )


def table(task, encoded: dict, evaluations: dict[int, dict[str, np.ndarray]]):
    """The predictions as a pyarrow Table; `evaluations` maps a step to its outputs per split."""
    if task.is_generative:
        return generated_table(task, evaluations)
    rows = evaluated(evaluations)
    number = np.float32 if task.is_regression else np.int64
    outputs = np.concatenate([values.astype(np.float32) for _, _, values in rows])
    arrays = {
        **row_columns(task, evaluations),
        "label": numbers(np.concatenate([encoded[split].labels.numpy() for _, split, _ in rows]).astype(number)),
        "prediction": numbers(np.concatenate([predictions(values) for _, _, values in rows]).astype(number)),
    }
    if task.is_regression:
        arrays["value"] = numbers(outputs[:, 0])
    else:
        arrays["logits"] = pa.FixedSizeListArray.from_arrays(numbers(outputs.reshape(-1)), outputs.shape[1])
    return pa.table(arrays)


def write_predictions(path: Path, task, encoded: dict, outcome) -> dict:
    """Writes the final and best evaluations' predictions; returns the record's `predictions` entry."""

    evaluations = {outcome.best_step: outcome.best_outputs, outcome.steps: outcome.final_outputs}
    atomic_write(
        path, lambda temporary: pq.write_table(table(task, encoded, evaluations), temporary, compression="zstd")
    )
    return {**described(path), "steps": {"final": outcome.steps, "best": outcome.best_step}}
