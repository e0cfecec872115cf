"""Tokenization with an explicit on-disk cache, and padding of batches.

A split is tokenized once per key (task, split, tokenizer, max length, preprocessing version,
fingerprint of the split's texts and labels) and saved as flat tensors; any later run with the
same key loads it instead of tokenizing. Batches are padded to their longest example.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import write_failed
from tasks.base import Generation, Split
from tasks.padding import right_padded
from tasks.prompting import EncodedPrompts, encode_prompts

PREPROCESS_VERSION = 1
TOKENIZE_CHUNK = 1000


@dataclass
class EncodedSplit:
    """Token ids of all examples concatenated; example i is ids[offsets[i]:offsets[i+1]]."""

    input_ids: torch.Tensor
    offsets: torch.Tensor
    token_type_ids: torch.Tensor | None
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def eval_order(self) -> list[int]:
        """Shortest examples first, so evaluation batches carry little padding."""
        lengths = (self.offsets[1:] - self.offsets[:-1]).tolist()
        return sorted(range(len(self)), key=lambda i: lengths[i])

    def batch(self, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
        ids, mask = right_padded(self.input_ids, self.offsets, indices, pad_id)
        out = {"input_ids": ids, "attention_mask": mask, "labels": self.labels[indices]}
        if self.token_type_ids is not None:
            out["token_type_ids"] = right_padded(self.token_type_ids, self.offsets, indices, 0)[0]
        return out


def fingerprint(split: Split) -> str:
    digest = hashlib.sha256()
    for texts, label in zip(split.texts, split.labels):
        digest.update(json.dumps([texts, label]).encode())
    return digest.hexdigest()


def cache_key(
    task: str, split_name: str, split: Split, tokenizer, max_length: int, generation: Generation | None = None
) -> str:
    parts = [
        task,
        split_name,
        tokenizer.name_or_path,
        type(tokenizer).__name__,
        len(tokenizer),
        max_length,
        PREPROCESS_VERSION,
        fingerprint(split),
    ]
    if generation is not None:  # a generative split: its prompt and the chat template shape the ids too
        parts += [generation.template, generation.max_new_tokens, tokenizer.chat_template]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def tokenize(split: Split, tokenizer, max_length: int, regression: bool) -> EncodedSplit:
    ids, types, offsets = [], [], [0]
    for start in range(0, len(split), TOKENIZE_CHUNK):
        columns = list(zip(*split.texts[start : start + TOKENIZE_CHUNK]))
        encoded = tokenizer(*columns, truncation=True, max_length=max_length)
        for row, row_ids in enumerate(encoded["input_ids"]):
            ids.extend(row_ids)
            offsets.append(offsets[-1] + len(row_ids))
            if "token_type_ids" in encoded:
                types.extend(encoded["token_type_ids"][row])
    return EncodedSplit(
        input_ids=torch.tensor(ids, dtype=torch.int32),
        offsets=torch.tensor(offsets, dtype=torch.long),
        token_type_ids=torch.tensor(types, dtype=torch.int8) if types else None,
        labels=torch.tensor(split.labels, dtype=torch.float32 if regression else torch.long),
    )


def encode_cached(
    task: str,
    split_name: str,
    split: Split,
    tokenizer,
    max_length: int,
    regression: bool,
    cache_dir: str | None,
    generation: Generation | None = None,
) -> tuple[EncodedSplit | EncodedPrompts, bool]:
    """The encoded split (EncodedPrompts for a generative task: tasks/prompting.py) and whether it came
    from the cache (cache_dir None: no caching)."""

    def encode():
        if generation is not None:
            return encode_prompts(split, tokenizer, generation, max_length)
        return tokenize(split, tokenizer, max_length, regression)

    if cache_dir is None:
        return encode(), False
    key = cache_key(task, split_name, split, tokenizer, max_length, generation)
    path = Path(cache_dir) / "tokenized" / f"{task}-{split_name}-{key}.pt"
    if path.exists():
        try:
            state = torch.load(path, weights_only=True)
            return (
                EncodedPrompts(**state, tokenizer=tokenizer) if generation is not None else EncodedSplit(**state)
            ), True
        except Exception:  # a truncated cache file from a killed run: rebuild it
            path.unlink(missing_ok=True)
    encoded = encode()
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:  # through Python's file: a full disk is an OSError, not torch's
            torch.save(encoded.state() if generation is not None else encoded.__dict__, handle)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise write_failed(path, error, "cache_dir") from None
    return encoded, False
