"""Clean evaluation items: every packaged task's committed clean-items file is what its data gives, and
no clean item's content occurs twice in the task (counted here from the raw texts and image bytes)."""

import json
from collections import Counter

import numpy as np
import pytest

from harness.config.sections import TaskConfig
from harness.store.clean_items import CLEAN_ITEMS_DIR, applies, clean_items, main, survey, survey_task
from harness.store.predictions import example_ids
from tasks import load_task
from tasks.base import ImageSplit, Split

# loads of 20 s (tweets) and 55 s (70,000 images) on a cold cache; the tweets' twin and the images: -m exhaustive
SLOW_TO_LOAD = {
    "tweet_sentiment": pytest.mark.slow,
    "tweet_sentiment_instruct": pytest.mark.exhaustive,
    "fashion_mnist": pytest.mark.exhaustive,
}
PACKAGED = sorted(path.stem for path in CLEAN_ITEMS_DIR.glob("*.json"))
TASKS = [pytest.param(name, marks=SLOW_TO_LOAD[name]) if name in SLOW_TO_LOAD else name for name in PACKAGED]


def raw_contents(split) -> list:
    if isinstance(split, ImageSplit):
        return [image.tobytes() for image in split.images]
    return list(split.texts)


def test_every_packaged_task_has_a_clean_items_file():
    assert PACKAGED == sorted(
        [
            "bbc_news",
            "bbc_news_instruct",
            "digits",
            "fashion_mnist",
            "mnist5k",
            "mnist5k_lower",
            "mnist5k_upper",
            "tweet_sentiment",
            "tweet_sentiment_instruct",
        ]
    )


@pytest.mark.parametrize("name", TASKS)
def test_no_clean_item_occurs_twice_in_the_task_and_the_file_is_current(name):
    splits = load_task(TaskConfig(name=name)).splits
    committed = json.loads((CLEAN_ITEMS_DIR / f"{name}.json").read_text())
    assert survey_task(name) == committed  # the fixed set still matches the data it was made from
    everywhere = Counter(item for split in splits.values() for item in raw_contents(split))
    clean = clean_items(name)
    for split_name, split in splits.items():
        if split_name == "train":
            continue
        kept = [clean.keeps(i) for i in example_ids(split)]
        contents = raw_contents(split)
        assert all(everywhere[c] == 1 for c, keep in zip(contents, kept) if keep)
        assert all(everywhere[c] > 1 for c, keep in zip(contents, kept) if not keep)
        counts = committed["splits"][split_name]
        assert counts["items"] == len(split) and counts["excluded"] == kept.count(False)


@pytest.mark.slow
def test_tweet_sentiment_exclusions_match_the_audit():
    """The audit's counts: 87 repeated test rows beyond each text's first, 25 texts (105 test rows) also
    in validation; all of them left out, with the test rows whose text is in training."""
    splits = load_task(TaskConfig(name="tweet_sentiment")).splits
    test, validation, train = (Counter(splits[s].texts) for s in ("test", "validation", "train"))
    assert sum(test.values()) - len(test) == 87
    shared = set(test) & set(validation)
    assert len(shared) == 25 and sum(test[t] for t in shared) == 105
    in_train = sum(count for text, count in test.items() if text in train)
    leaving = sum(count for text, count in test.items() if count > 1 or text in validation or text in train)
    assert clean_items("tweet_sentiment").splits["test"]["excluded"] == leaving and in_train == 160


def test_the_survey_counts_repeats_and_other_splits_of_a_small_task():
    splits = {
        "train": Split([("a",), ("b",), ("b",)], [0, 1, 1]),
        "validation": Split([("c",), ("a",)], [0, 0]),
        "test": Split([("d",), ("d",), ("e",), ("c",)], [1, 1, 0, 0]),
    }
    result = survey("toy", splits)
    assert result["splits"]["test"] | {"clean_digest": None} == {
        "items": 4,
        "excluded": 3,
        "repeats": 2,
        "in_other_splits": 1,
        "clean_digest": None,
    }
    assert result["splits"]["validation"]["excluded"] == 2  # c (in test) and a (in train)
    assert set(result["excluded"]) == {i.split("~")[0] for i in example_ids(splits["test"])[:2]} | {
        example_ids(splits["validation"])[0],
        example_ids(splits["validation"])[1],
    }


def test_image_repeats_are_found_by_their_bytes():
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    images[2] = 1
    splits = {"train": ImageSplit(images[:1], [0]), "test": ImageSplit(images, [0, 0, 1])}
    assert survey("images", splits)["splits"]["test"]["excluded"] == 2


def test_repeats_of_an_excluded_content_are_excluded_whatever_their_suffix():
    clean = clean_items("bbc_news")
    content = next(iter(clean.excluded))
    assert not clean.keeps(content) and not clean.keeps(f"{content}~2") and clean.keeps("0" * 16)


def test_the_set_applies_to_the_packaged_data_only():
    assert applies({"name": "bbc_news", "source": None}) is clean_items("bbc_news")
    assert applies({"name": "bbc_news", "source": "/data/bbc"}) is None
    assert applies({"name": "sst2"}) is None  # hub data: not surveyed here


def test_an_unknown_task_is_refused_with_the_allowed_names(capsys):
    with pytest.raises(SystemExit, match=r"unknown task\(s\) \['bbc'\]; allowed: \[.*'bbc_news'"):
        main(["bbc"])
