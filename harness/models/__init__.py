"""Model loading, one module per family: text encoders (text.py), image models (vision.py, with
RAC-LoRA's MNIST MLP in mnist_mlp.py). `load_model` picks the family by `model.kind`."""


def load_model(cfg, num_labels: int):
    """The model of `cfg` with a fresh task head of `num_labels` outputs (1: regression)."""
    if cfg.is_image:
        from harness.models.vision import IMAGE_MODELS

        return IMAGE_MODELS[cfg.kind](cfg, num_labels)
    from harness.models.text import sequence_classifier

    return sequence_classifier(cfg, num_labels)
