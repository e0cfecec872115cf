"""Evaluation of a generative split: batched greedy generation, answer extraction, exact match.

Prompts are left-padded (tasks/prompting.py: EncodedPrompts.prompt_batch), shortest first, and
continued by transformers' `generate` with greedy decoding (no sampling, one beam) for at most the
task's `max_new_tokens`, each row stopping at the stop token (then padded). A row's text is what it
wrote, decoded without special tokens (the stop and padding tokens are special); the task's `extract` reads the answer
from it and its
`reference` from the label, and exact match compares the two. With a sharded backbone (harness/engine/sharding.py)
every rank generates, in step (`synced_gpus`: a rank whose rows have stopped keeps running forwards
until every rank's have).
"""

import numpy as np
import torch

from harness.engine.sharding import is_sharded
from tasks.prompting import stop_token_id


@torch.no_grad()
def generate(
    model, encoded, max_new_tokens: int, batch_size: int, pad_id: int, device: torch.device, dtype: torch.dtype | None
) -> list[str]:
    """The text the model writes after each prompt of `encoded` (an EncodedPrompts), in split order."""
    from transformers import GenerationConfig

    model.eval()
    tokenizer, order = encoded.tokenizer, encoded.eval_order()
    stop = stop_token_id(tokenizer)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=stop
    )
    texts = [""] * len(encoded)
    synced = is_sharded(
        model
    )  # every rank keeps stepping until all have stopped: each forward gathers every rank's shards
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in encoded.prompt_batch(indices, pad_id).items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            written = model.generate(**batch, generation_config=config, synced_gpus=synced)[
                :, batch["input_ids"].shape[1] :
            ].cpu()
        for index, row in zip(indices, written.tolist()):
            texts[index] = tokenizer.decode(
                row, skip_special_tokens=True
            )  # the stop token and the padding after it dropped
    return texts


def evaluate_generative(
    model, encoded, name: str, task, batch_size: int, pad_id: int, device: torch.device, dtype: torch.dtype | None
) -> tuple[dict[str, float], np.ndarray]:
    """The task's metrics on split `name` (its labels are the answers) and the generated texts (an object array)."""
    generation = task.generation
    texts = generate(model, encoded, generation.max_new_tokens, batch_size, pad_id, device, dtype)
    answers = np.array([generation.extract(text, name) for text in texts], dtype=object)
    references = np.array([generation.reference(label, name) for label in task.splits[name].labels], dtype=object)
    return task.metric_fn(answers, references), np.array(texts, dtype=object)
