"""What every task family hands the harness: labelled text or image splits, a label space and its metrics."""

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.errors import HarnessError


@dataclass
class Split:
    """One split: `texts` holds one tuple per example (one text, or a sentence pair)."""

    texts: list[tuple[str, ...]]
    labels: list

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "Split":
        return Split([self.texts[i] for i in indices], [self.labels[i] for i in indices])


@dataclass
class ImageSplit:
    """One split of images: `images` is uint8, N×H×W (grey) or N×H×W×3 (colour)."""

    images: np.ndarray
    labels: list

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> "ImageSplit":
        return ImageSplit(self.images[list(indices)], [self.labels[i] for i in indices])


@dataclass(frozen=True)
class Generation:
    """How a generative task (tasks/generative.py) prompts, answers and scores."""

    template: str  # the prompt, with {text} where the example's text goes
    max_new_tokens: int
    extract: Callable[[str, str], str]  # (text written, split name) -> the answer it gives ("" when none)
    reference: Callable[[str, str], str]  # (label, split name) -> the answer to match


@dataclass
class TaskData:
    """A task ready for tokenization.

    `splits` always has `train` and `validation`; `report_split` is the split whose scores the
    leaderboard reports (`test` for the packaged tasks, `validation` for GLUE, whose test labels are
    hidden). Every split other than `train` is evaluated. `num_labels` is 1 for regression, 0 for a
    generative task (`generation` set; its labels are answer texts).
    """

    name: str
    splits: dict[str, Split | ImageSplit]
    num_labels: int
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    primary: str
    report_split: str
    higher_is_better: bool = True
    label_names: list[str] = field(default_factory=list)
    generation: Generation | None = None
    average_of: tuple[str, ...] = ()  # the report split's metrics: the mean of these splits' (several test sets)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def with_report(self, values: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """An evaluation's metrics per split, with the report split's added where it is the mean of others."""
        if not self.average_of:
            return values
        return {
            **values,
            self.report_split: {
                key: sum(values[split][key] for split in self.average_of) / len(self.average_of)
                for key in values[self.average_of[0]]
            },
        }

    @property
    def is_generative(self) -> bool:
        return self.generation is not None

    @property
    def stratified(self) -> bool:
        """Whether subsets keep each label's share: classification, and generative tasks with label words."""
        return not self.is_regression and (not self.is_generative or bool(self.label_names))

    @property
    def is_image(self) -> bool:
        return isinstance(self.splits["train"], ImageSplit)

    @property
    def eval_splits(self) -> list[str]:
        return [name for name in self.splits if name != "train"]


def require_nonempty(task: TaskData) -> TaskData:
    for name, split in task.splits.items():
        if len(split) == 0:
            raise HarnessError(f"task '{task.name}': split '{name}' is empty")
    return task


def require_every_class(task: TaskData, source: str) -> TaskData:
    """A classification task whose every class has examples in every split: a class missing from a split
    (an empty class folder of a local source) would train a head with a class never seen, or score one
    never tested."""
    if task.is_regression or task.is_generative:
        return task
    for name, split in task.splits.items():
        missing = sorted(set(range(task.num_labels)) - set(np.asarray(split.labels).tolist()))
        if missing:
            label = task.label_names[missing[0]] if task.label_names else missing[0]
            raise HarnessError(
                f"task '{task.name}': class '{label}' has no examples in split '{name}' of source '{source}'; "
                "every class must be present in every split (add examples of it, or remove the class)"
            )
    return task
