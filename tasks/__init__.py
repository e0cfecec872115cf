"""Task families: packaged text tasks (bbc_news, tweet_sentiment), GLUE from the hub, and image tasks
(fashion_mnist, mnist5k, digits packaged; cifar10/cifar100 from the hub), and generative tasks for
decoder LMs (tasks/generative.py: offline instruction tasks; gsm8k.py and commonsense.py from the hub)."""

from functools import partial
from typing import Callable

from harness.registry import Registry
from tasks import bbc_news, commonsense, generative, glue, gsm8k, images, tweet_sentiment
from tasks.base import ImageSplit, Split, TaskData, require_every_class, require_nonempty
from tasks.splits import limit_split

TASK_LOADERS: Registry[Callable[..., TaskData]] = Registry(
    "task",
    {
        "bbc_news": bbc_news.load,
        "tweet_sentiment": tweet_sentiment.load,
        **{name: partial(glue.load, name) for name in glue.GLUE_TASKS},
        "fashion_mnist": images.load_fashion_mnist,
        **{name: partial(images.load_mnist5k, name, digits) for name, digits in images.MNIST5K_TASKS.items()},
        "digits": images.load_digits,
        **{name: partial(images.load_hub_images, name) for name in images.HUB_IMAGE_SETS},
        **generative.INSTRUCTION_TASKS,
        "gsm8k": gsm8k.load,
        "commonsense": commonsense.load,
    },
)

# Hub recipes' training-set sizes, approximately, for run plans made without their data (harness/protocol/plan.py)
APPROXIMATE_TRAIN_SIZES = {"gsm8k": gsm8k.APPROXIMATE_TRAIN_SIZE, "commonsense": commonsense.APPROXIMATE_TRAIN_SIZE}


def load_task(cfg) -> TaskData:
    """The task named by `cfg.name`, every class of a classification task present in every split of its
    source, with `limit_train` / `limit_eval` applied (fixed subsets, stratified by label for
    classification: tasks/splits.py)."""
    task = require_every_class(TASK_LOADERS[cfg.name](cfg), cfg.source or "its default source")
    task.splits = {
        name: limit_split(
            split, cfg.limit_train if name == "train" else cfg.limit_eval, cfg.split_seed, task.stratified
        )
        for name, split in task.splits.items()
    }
    return require_nonempty(task)


__all__ = ["APPROXIMATE_TRAIN_SIZES", "TASK_LOADERS", "ImageSplit", "Split", "TaskData", "load_task"]
