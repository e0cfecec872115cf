"""Evaluation of one split: batched inference in the split's evaluation order (text: shortest
examples first), then the task's metrics; `on_batch(k, n)` after each batch k of n (the progress bar's
"evaluating <split> k/n"). Splits are EncodedSplit (text) or PixelSplit (images); generative splits
(EncodedPrompts) are evaluated by generation instead (harness/engine/generate.py, no per-batch report)."""

from collections.abc import Callable

import numpy as np
import torch

from harness.store.predictions import predictions


@torch.no_grad()
def predict(
    model,
    encoded,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype | None,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The model's outputs in the split's order: N×classes logits, or N×1 for a regression head."""
    model.eval()
    order = encoded.eval_order()
    outputs = None
    batches = -(-len(order) // batch_size)
    for number, start in enumerate(range(0, len(order), batch_size), 1):
        indices = order[start : start + batch_size]
        batch = encoded.batch(indices, pad_id)
        batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(**batch).logits.float().cpu()
        if outputs is None:
            outputs = torch.empty(len(encoded), logits.shape[-1], dtype=torch.float32)
        outputs[indices] = logits
        if on_batch is not None:
            on_batch(number, batches)
    return outputs.numpy()


def evaluate(
    model,
    encoded: dict,
    task,
    split: str,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype | None,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """The task's metrics on `split` and the model's outputs: see `predict`, or for a generative task
    the generated texts (harness/engine/generate.py)."""
    if task.is_generative:
        from harness.engine.generate import evaluate_generative

        return evaluate_generative(model, encoded[split], split, task, batch_size, pad_id, device, dtype)
    outputs = predict(model, encoded[split], batch_size, pad_id, device, dtype, on_batch)
    return metrics(task, encoded[split], outputs), outputs


def metrics(task, encoded, outputs: np.ndarray) -> dict[str, float]:
    """The task's metrics of `outputs` (N×classes, in the split's order) against the split's labels."""
    labels = encoded.labels.numpy()
    preds = predictions(outputs)
    if not task.is_regression:
        preds, labels = preds.astype(np.int64), labels.astype(np.int64)
    return task.metric_fn(preds, labels)
