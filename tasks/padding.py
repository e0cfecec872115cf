"""Batches of variable-length examples stored end to end (flat ids and offsets), padded on the right."""

import torch


def right_padded(
    flat: torch.Tensor, offsets: torch.Tensor, indices: list[int], pad_value: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples `indices` of `flat` (example i is flat[offsets[i]:offsets[i+1]]) as rows padded with
    `pad_value` to the longest, and the attention mask (1 on real tokens)."""
    starts, ends = offsets[indices].tolist(), offsets[[i + 1 for i in indices]].tolist()
    width = max(end - start for start, end in zip(starts, ends))
    padded = torch.full((len(indices), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, (start, end) in enumerate(zip(starts, ends)):
        padded[row, : end - start] = flat[start:end]
        mask[row, : end - start] = 1
    return padded, mask
