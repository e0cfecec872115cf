"""Model loading, one module per family: text encoders (text.py), decoder language models
(decoder.py: as classifiers, or as LMs for generative tasks), image models (vision.py, with RAC-LoRA's MNIST MLP
in mnist_mlp.py). `MODEL_KINDS` names each `model.kind` and its family's module; `load_model`, `load_tokenizer`
and `max_positions` pick the family by `model.kind`."""

import importlib

from harness.registry import Registry

# model.kind → the module of its family, imported when a model of that kind is loaded (they import torch and
# transformers, kept out of the start-up of commands that load no model)
MODEL_KINDS: Registry[str] = Registry(
    "model kind",
    {
        "text": "harness.models.text",
        "decoder": "harness.models.decoder",
        "efficientnet_lite0": "harness.models.vision",
        "mlp_mnist": "harness.models.vision",
    },
)

BASE_DTYPES = ("auto", "fp32", "bf16", "fp16")  # model.dtype: the frozen base's storage (harness/models/storage.py)
QUANTIZATIONS = ("nf4", "int8")  # model.quantize: bitsandbytes' 4-bit NormalFloat or 8-bit rows


def family(cfg):
    return importlib.import_module(MODEL_KINDS[cfg.kind])


def load_model(cfg, num_labels: int, cache_dir: str | None = None):
    """The model of `cfg` with a fresh task head of `num_labels` outputs (1: regression), or for a
    generative task (0 labels) a decoder with its own LM head."""
    if cfg.is_image:
        return family(cfg).IMAGE_MODELS[cfg.kind](cfg, num_labels, cache_dir)
    if num_labels == 0:
        return family(cfg).causal_lm(cfg, cache_dir)
    return family(cfg).sequence_classifier(cfg, num_labels, cache_dir)


def load_tokenizer(cfg, cache_dir: str | None = None):
    return family(cfg).load_tokenizer(cfg, cache_dir)


def max_positions(cfg, cache_dir: str | None = None) -> int | None:
    return family(cfg).max_positions(cfg, cache_dir)
