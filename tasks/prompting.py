"""Generative splits as token ids: prompt, then answer, with the loss on the answer only.

The prompt is the task's template around the example's text, in the tokenizer's chat template when it
has one (one user turn, then the assistant's turn opened), else the template alone after the BOS token.
The answer follows: its tokens (after a space when there is no chat template), then the stop token (the
tokenizer's EOS, or SEP for a tokenizer without one), which ends generation.

Lengths: the prompt's fixed part and `max_new_tokens` answer tokens are reserved, and the example's
text is cut (its first tokens kept) to the rest of `max_length`, so prompt + answer never exceed it and
training and generation see the same prompt; an answer longer than `max_new_tokens` is cut to it (its
stop token then dropped). The template is tokenized in the pieces around the text, once per split;
the text's tokens are spliced in between, so the lengths are exact.
"""

from dataclasses import dataclass

import torch

from harness.errors import HarnessError
from tasks.base import Generation, Split
from tasks.padding import right_padded

TEXT_MARK = "\u2063TEXT\u2063"  # stands for the text while the template is rendered
IGNORED = -100  # label of a token the loss skips (PyTorch's cross-entropy ignore_index)


def stop_token_id(tokenizer) -> int:
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return token_id
    raise HarnessError(f"tokenizer '{tokenizer.name_or_path}' has no EOS (or SEP) token to end an answer")


def prompt_pieces(tokenizer, template: str) -> tuple[list[int], list[int]]:
    """The prompt's token ids before and after the example's text."""
    if "{text}" not in template:
        raise HarnessError(f"a generative task's template needs a {{text}} field, got {template!r}")
    user = template.replace("{text}", TEXT_MARK)
    if tokenizer.chat_template:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        start = []
    else:
        rendered, start = user, [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    before, after = rendered.split(TEXT_MARK)
    tokens = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
    return start + tokens(before), tokens(after)


@dataclass
class EncodedPrompts:
    """Prompt + answer ids of all examples concatenated: example i is ids[offsets[i]:offsets[i+1]], its
    first prompt_lengths[i] tokens the prompt. `tokenizer` (set after encoding or loading, not cached)
    turns generated ids back into text."""

    input_ids: torch.Tensor
    offsets: torch.Tensor
    prompt_lengths: torch.Tensor
    tokenizer: object = None

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    def state(self) -> dict:
        return {"input_ids": self.input_ids, "offsets": self.offsets, "prompt_lengths": self.prompt_lengths}

    def eval_order(self) -> list[int]:
        """Shortest prompts first, so generation batches carry little padding."""
        lengths = self.prompt_lengths.tolist()
        return sorted(range(len(self)), key=lambda i: lengths[i])

    def batch(self, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
        """Training: prompt + answer, right-padded; labels are the answer's ids, IGNORED elsewhere."""
        ids, mask = right_padded(self.input_ids, self.offsets, indices, pad_id)
        labels = ids.masked_fill(mask == 0, IGNORED)
        for row, index in enumerate(indices):
            labels[row, : int(self.prompt_lengths[index])] = IGNORED
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def prompt_batch(self, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
        """Generation: the prompts alone, left-padded (every row's next token at the same position)."""
        lengths = self.prompt_lengths[indices].tolist()
        width = max(lengths)
        ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, (index, length) in enumerate(zip(indices, lengths)):
            start = int(self.offsets[index])
            ids[row, width - length :] = self.input_ids[start : start + length]
            mask[row, width - length :] = 1
        return {"input_ids": ids, "attention_mask": mask}


def encode_prompts(split: Split, tokenizer, generation: Generation, max_length: int) -> EncodedPrompts:
    before, after = prompt_pieces(tokenizer, generation.template)
    budget = max_length - len(before) - len(after) - generation.max_new_tokens
    if budget < 1:
        raise HarnessError(
            f"task.max_length={max_length} leaves no room for the text: the prompt's template takes "
            f"{len(before) + len(after)} tokens and the answer {generation.max_new_tokens} (task.max_new_tokens); "
            f"allowed: more than {len(before) + len(after) + generation.max_new_tokens}"
        )
    stop, space = stop_token_id(tokenizer), "" if tokenizer.chat_template else " "
    texts = tokenizer([text for text, *_ in split.texts], add_special_tokens=False)["input_ids"]
    answers = tokenizer([space + str(answer) for answer in split.labels], add_special_tokens=False)["input_ids"]
    ids, offsets, prompt_lengths = [], [0], []
    for text, answer in zip(texts, answers):
        prompt = before + text[:budget] + after
        answer = (answer + [stop])[: generation.max_new_tokens]
        ids.extend(prompt + answer)
        offsets.append(offsets[-1] + len(prompt) + len(answer))
        prompt_lengths.append(len(prompt))
    return EncodedPrompts(
        torch.tensor(ids, dtype=torch.int32),
        torch.tensor(offsets, dtype=torch.long),
        torch.tensor(prompt_lengths, dtype=torch.long),
        tokenizer,
    )
