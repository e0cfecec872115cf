"""Generative tasks: a decoder LM writes the answer after a prompt, scored by exact match.

A generative task's splits hold one text per example (the part of the prompt that may be cut to fit
`max_length`) and its answer as the label: the text the model learns to write (a label word, or a
worked solution). `Generation` says how the text becomes a prompt (`template`, with `{text}`), how many
tokens the model may write (`max_new_tokens`), and how an answer is read from what it wrote
(`extract`) and from a label (`reference`); exact match compares the two. Encoding, the chat template
and the answer-only loss: tasks/prompting.py; batched greedy generation: harness/engine/generate.py.

The offline instruction tasks (`bbc_news_instruct`, `tweet_sentiment_instruct`) are the packaged
classification tasks with the same splits and examples, asked as a question whose answer is the label
word. Hub recipes: tasks/gsm8k.py (MetaMathQA → GSM8K) and tasks/commonsense.py (commonsense-170k → the
eight commonsense test sets).
"""

import numpy as np

from tasks import bbc_news, tweet_sentiment
from tasks.base import Generation, Split, TaskData


def exact_match(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    return {
        "exact_match": float(np.mean(np.asarray(predictions, dtype=object) == np.asarray(references, dtype=object)))
    }


def label_word(text: str) -> str:
    """The first line of `text`, lower-cased, without surrounding blanks, quotes and final punctuation."""
    lines = text.strip().splitlines()
    return lines[0].strip().strip("\"'`*").rstrip(".!").strip().lower() if lines else ""


def by_text(read):
    """An extraction that reads the text alone, the same in every split."""
    return lambda text, split: read(text)


def instruction_task(name: str, classification: TaskData, question: str, max_new_tokens: int) -> TaskData:
    """`classification` (same splits, same examples) asked as `question`, answered by the label word."""
    words = classification.label_names
    template = question.format(choices=", ".join(words)) + "\n\n{text}\n\nAnswer with one word."
    splits = {
        name: Split(split.texts, [words[label] for label in split.labels])
        for name, split in classification.splits.items()
    }
    return TaskData(
        name=name,
        splits=splits,
        num_labels=0,
        metric_fn=exact_match,
        primary="exact_match",
        report_split=classification.report_split,
        label_names=words,
        generation=Generation(template, max_new_tokens, by_text(label_word), by_text(label_word)),
    )


def load_bbc_news_instruct(cfg) -> TaskData:
    return instruction_task(
        "bbc_news_instruct",
        bbc_news.load(cfg),
        "Which topic is this BBC news article about: {choices}?",
        cfg.max_new_tokens,
    )


def load_tweet_sentiment_instruct(cfg) -> TaskData:
    return instruction_task(
        "tweet_sentiment_instruct",
        tweet_sentiment.load(cfg),
        "Is the sentiment of this tweet {choices}?",
        cfg.max_new_tokens,
    )


INSTRUCTION_TASKS = {
    "bbc_news_instruct": load_bbc_news_instruct,
    "tweet_sentiment_instruct": load_tweet_sentiment_instruct,
}
