"""Image splits as model input: uint8 images kept in memory, each batch converted on the fly
(scaled to [0, 1], grey replicated to the model's channels, resized bilinearly with antialiasing
to the model's input size, normalised with the model's mean and std), so no resized copy of a
dataset is ever stored."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tasks.base import ImageSplit


@dataclass
class PixelSplit:
    images: torch.Tensor  # uint8, N×C×H×W
    labels: torch.Tensor
    size: int | None  # square input size; None keeps the images' own
    channels: int
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_split(cls, split: ImageSplit, size: int | None, channels: int, mean, std) -> "PixelSplit":
        images = torch.from_numpy(split.images)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        shape = (1, -1, 1, 1)
        return cls(
            images.contiguous(),
            torch.tensor(split.labels),
            size,
            channels,
            torch.tensor(mean, dtype=torch.float32).view(shape),
            torch.tensor(std, dtype=torch.float32).view(shape),
        )

    def __len__(self) -> int:
        return len(self.labels)

    def eval_order(self) -> list[int]:
        return list(range(len(self)))

    def batch(self, indices: list[int], pad_id: int = 0) -> dict[str, torch.Tensor]:
        pixels = self.images[indices].float() / 255
        if pixels.shape[1] != self.channels:
            pixels = pixels.mean(dim=1, keepdim=True).expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(pixels.shape[-2:]) != (self.size, self.size):
            pixels = F.interpolate(
                pixels, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return {"pixel_values": (pixels - self.mean) / self.std, "labels": self.labels[indices]}
