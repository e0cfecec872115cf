"""Commonsense-170k → the eight commonsense test sets, the protocol of LLM-Adapters (Hu et al. 2023,
AGI-Edgerunners/LLM-Adapters) that DoRA's commonsense table follows (NVlabs/DoRA, commonsense_reasoning).

Train: commonsense_170k (`zwhe99/commonsense_170k` on the hub, a copy of LLM-Adapters'
ft-training_set/commonsense_170k.json; fields instruction, input, output, answer), less a validation
set of 120 (DoRA's `val_set_size`, drawn as LLM-Adapters does: `train_test_split(test_size=120,
shuffle=True, seed=42)`). Test: BoolQ, PIQA, SIQA, HellaSwag, WinoGrande, ARC-e, ARC-c and OBQA, from
LLM-Adapters' dataset/<name>/test.json (`eval_source`: that folder, by default the files at the commit
below), each its own split; the reported test score is their mean, as the papers report. The model
learns to write `output` ("the correct answer is true"); the answer is the first match of the test
set's pattern (LLM-Adapters' `extract_answer`: true|false, solution1|2, answer1-5, ending1-4, option1|2)
in what it wrote, and in `output` for the reference.

The prompt is LLM-Adapters' evaluation prompt (commonsense_evaluate.py's `generate_prompt` without
input, its indentation kept). What differs: the loss is on the answer only (LLM-Adapters'
train_on_inputs default puts it on the prompt too), the chat template frames the prompt when the
tokenizer has one, and decoding is greedy (LLM-Adapters: 4 beams, max_new_tokens 32).
"""

import re

from harness.assets import resolve_path
from harness.errors import HarnessError, one_line
from tasks.base import Generation, Split, TaskData
from tasks.generative import exact_match

DEFAULT_TRAIN_SOURCE = "zwhe99/commonsense_170k"
DEFAULT_EVAL_SOURCE = (
    "https://raw.githubusercontent.com/AGI-Edgerunners/LLM-Adapters/816657208af4db747803f87ba40a4c71383fed7a/dataset"
)
VALID_SIZE = 120
APPROXIMATE_TRAIN_SIZE = 170_000  # as its name says, for plans made offline
TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n"
    "\n"
    "                ### Instruction:\n"
    "                {text}\n"
    "\n"
    "                ### Response:\n"
    "                "
)
PATTERNS = {
    "boolq": r"true|false",
    "piqa": r"solution1|solution2",
    "social_i_qa": r"answer1|answer2|answer3|answer4|answer5",
    "hellaswag": r"ending1|ending2|ending3|ending4",
    "winogrande": r"option1|option2",
    "ARC-Challenge": r"answer1|answer2|answer3|answer4|answer5",
    "ARC-Easy": r"answer1|answer2|answer3|answer4|answer5",
    "openbookqa": r"answer1|answer2|answer3|answer4|answer5",
}
ANY_PATTERN = "|".join(dict.fromkeys("|".join(PATTERNS.values()).split("|")))  # train and validation mix the eight


def answer(text: str, split: str) -> str:
    """The first match of `split`'s pattern in `text` ("" when none)."""
    found = re.findall(PATTERNS.get(split, ANY_PATTERN), text)
    return found[0] if found else ""


def load_json(source: str, what: str):
    import datasets

    try:
        if source.endswith(".json"):
            return datasets.load_dataset("json", data_files=source, split="train")
        return datasets.load_dataset(resolve_path(source), split="train")
    except Exception as error:  # the hub is unreachable, or the files are missing
        raise HarnessError(f"commonsense: {what} could not be loaded from '{source}': {one_line(error)}") from None


def as_split(rows, what: str) -> Split:
    if missing := [f for f in ("instruction", "output") if f not in rows.column_names]:
        raise HarnessError(f"commonsense: {what} lacks columns {missing}; has {rows.column_names}")
    return Split([(instruction,) for instruction in rows["instruction"]], list(rows["output"]))


def load(cfg) -> TaskData:
    train = load_json(cfg.source or DEFAULT_TRAIN_SOURCE, "commonsense_170k")
    held_out = train.train_test_split(test_size=VALID_SIZE, shuffle=True, seed=42)
    splits = {
        "train": as_split(held_out["train"], "commonsense_170k"),
        "validation": as_split(held_out["test"], "commonsense_170k"),
    }
    root = cfg.eval_source or DEFAULT_EVAL_SOURCE
    if "://" not in root:
        root = resolve_path(root)
    for name in PATTERNS:
        splits[name] = as_split(load_json(f"{root}/{name}/test.json", f"test set {name}"), f"test set {name}")
    return TaskData(
        name="commonsense",
        splits=splits,
        num_labels=0,
        metric_fn=exact_match,
        primary="exact_match",
        report_split="test",
        generation=Generation(TEMPLATE, cfg.max_new_tokens, answer, answer),
        average_of=tuple(PATTERNS),
    )
