"""Model loading, one module per family: text encoders (text.py), decoder language models
(decoder.py: as classifiers, or as LMs for generative tasks), image models (vision.py, with RAC-LoRA's MNIST MLP in mnist_mlp.py). `load_model`,
`load_tokenizer` and `max_positions` pick the family by `model.kind`."""


def family(cfg):
    if cfg.kind == "decoder":
        from harness.models import decoder

        return decoder
    from harness.models import text

    return text


def load_model(cfg, num_labels: int, cache_dir: str | None = None):
    """The model of `cfg` with a fresh task head of `num_labels` outputs (1: regression), or for a
    generative task (0 labels) a decoder with its own LM head."""
    if cfg.is_image:
        from harness.models.vision import IMAGE_MODELS

        return IMAGE_MODELS[cfg.kind](cfg, num_labels)
    if num_labels == 0:
        from harness.models import decoder

        return decoder.causal_lm(cfg, cache_dir)
    return family(cfg).sequence_classifier(cfg, num_labels, cache_dir)


def load_tokenizer(cfg, cache_dir: str | None = None):
    return family(cfg).load_tokenizer(cfg, cache_dir)


def max_positions(cfg, cache_dir: str | None = None) -> int | None:
    return family(cfg).max_positions(cfg, cache_dir)
