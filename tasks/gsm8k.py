"""MetaMathQA → GSM8K, the recipe of Hugging Face PEFT's method comparison
(huggingface/peft, method_comparison/MetaMathQA: data.py, utils.py).

Train: MetaMathQA (`meta-math/MetaMathQA`, train; `query` → `response`), examples whose
f"{query} {response}" has at most 1,300 characters (PEFT's CHAR_LIMIT: 93.8 % of them). Validation: 50
questions of GSM8K's train split (`openai/gsm8k`, config main), PEFT's draw (numpy seed 0, shuffle, first
50). Test: GSM8K's test split (1,319). Prompt: "Question: {query} Think step by step.\\nAnswer:" (PEFT's
query template). Answers: PEFT's `parse_answer` (the text after the last of the first delimiter found
among "The answer is: ", "The answer is ", "The final answer is: ", "The final answer is ", "#### ", up
to the line's end, stripped of " .!?$%"), compared as numbers (fractions allowed, float of the decimal;
commas are not removed, as in PEFT) or else as text; no answer is wrong.

What differs from PEFT: the loss is on the answer only (PEFT's covers the question too), the prompt is
framed by the tokenizer's chat template when it has one, decoding is greedy (PEFT's `generate` takes the
model's own generation defaults), and `max_length` (default 768, PEFT's max_seq_length) holds the
prompt and `max_new_tokens` answer tokens (default 300, PEFT's).
"""

from decimal import Decimal, DivisionByZero, InvalidOperation

import numpy as np

from harness.assets import resolve_path
from harness.errors import HarnessError, one_line
from tasks.base import Generation, Split, TaskData
from tasks.generative import exact_match

DEFAULT_TRAIN_SOURCE = "meta-math/MetaMathQA"
DEFAULT_EVAL_SOURCE = "openai/gsm8k"
TEMPLATE = "Question: {text} Think step by step.\nAnswer:"
CHAR_LIMIT = 1300
VALID_SIZE = 50
APPROXIMATE_TRAIN_SIZE = 370_000  # MetaMathQA's 395K less the filter's 6.2 % (PEFT's figure), for plans made offline
DELIMITERS = ("The answer is: ", "The answer is ", "The final answer is: ", "The final answer is ", "#### ")


def parse_answer(text: str) -> str | None:
    text = text.strip().rstrip(".!?")
    delimiter = next((d for d in DELIMITERS if d in text), None)
    if delimiter is None:
        return None
    return text.rpartition(delimiter)[-1].strip().split("\n", 1)[0].strip(" .!?$%")


def as_number(text: str) -> float | None:
    """A number or fraction as a float (PEFT's convert_to_decimal), None when it is neither."""
    try:
        if "/" in text:
            parts = text.split("/")
            if len(parts) != 2 or Decimal(parts[1].strip()) == 0:
                return None
            return float(Decimal(parts[0].strip()) / Decimal(parts[1].strip()))
        return float(Decimal(text.strip()))
    except (DivisionByZero, InvalidOperation, ValueError):
        return None


def answer(text: str, split: str = "") -> str:
    """The answer `text` gives, as matched: the number's float written out, else the parsed text ("" if none)."""
    parsed = parse_answer(text)
    if parsed is None:
        return ""
    number = as_number(parsed)
    return parsed if number is None else repr(number)


def load_rows(source: str, config: str | None, split: str, fields: tuple[str, str]):
    import datasets

    try:
        rows = datasets.load_dataset(resolve_path(source), config, split=split)
    except Exception as error:  # the hub is unreachable, or the files are missing
        raise HarnessError(
            f"gsm8k: '{source}' ({config or 'default'}, {split}) could not be loaded: {one_line(error)}"
        ) from None
    if missing := [f for f in fields if f not in rows.column_names]:
        raise HarnessError(f"gsm8k: '{source}' {split} lacks columns {missing}; has {rows.column_names}")
    return rows[fields[0]], rows[fields[1]]


def load(cfg) -> TaskData:
    queries, responses = load_rows(cfg.source or DEFAULT_TRAIN_SOURCE, None, "train", ("query", "response"))
    kept = [i for i, (q, r) in enumerate(zip(queries, responses)) if len(f"{q} {r}") <= CHAR_LIMIT]
    splits = {"train": Split([(queries[i],) for i in kept], [responses[i] for i in kept])}
    eval_source = cfg.eval_source or DEFAULT_EVAL_SOURCE
    questions, solutions = load_rows(eval_source, "main", "train", ("question", "answer"))
    indices = np.arange(len(questions))
    np.random.RandomState(0).shuffle(indices)  # PEFT: np.random.seed(0); np.random.shuffle(indices)
    splits["validation"] = Split(
        [(questions[i],) for i in indices[:VALID_SIZE]], [solutions[i] for i in indices[:VALID_SIZE]]
    )
    questions, solutions = load_rows(eval_source, "main", "test", ("question", "answer"))
    splits["test"] = Split([(q,) for q in questions], list(solutions))
    for name in ("validation", "test"):
        if unparsed := [s for s in splits[name].labels if not answer(s)]:
            raise HarnessError(
                f"gsm8k: {len(unparsed)} {name} answers have no '#### <answer>' line, e.g. {unparsed[0][:80]!r}"
            )
    return TaskData(
        name="gsm8k",
        splits=splits,
        num_labels=0,
        metric_fn=exact_match,
        primary="exact_match",
        report_split="test",
        generation=Generation(TEMPLATE, cfg.max_new_tokens, answer, answer),
    )
