"""The significance rules of harness/report/cells.py on hand-made runs without predictions, where each paired
comparison is scipy's paired t-test over seeds: one Holm family per model of its distinct pairs, one rule
for the marks and the bold; and the one adapter-params value per method row (frames, Markdown, across tasks)."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.report.frames import summary_frame
from harness.report.markdown import wide_table
from harness.report.normalised import across_tasks_frame

SCORES = {  # per method, 5 seeds' scores on task "t"
    "full": [80.0, 80.5, 79.5, 80.2, 79.8],
    "lora": [80.1, 80.9, 79.2, 80.0, 79.6],
    "noisy": [84.0, 76.0, 88.0, 78.0, 86.0],  # the best mean, and seeds far apart
    "worse": [77.1, 77.4, 76.6, 77.3, 76.9],  # three points under full fine-tuning on every seed
    "slightly": [79.1, 80.3, 78.0, 79.9, 79.0],  # under full fine-tuning by 0.74 points, seeds apart
}


def runs(scores: dict, model: str = "m", task: str = "t", params: dict | None = None) -> pd.DataFrame:
    """A runs frame (harness/report/frames.py's columns) of one model and task, no per-item scores."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "method": method,
                "task": task,
                "seed": seed,
                "metric": "accuracy",
                "split": "test",
                "higher_is_better": True,
                "score": score,
                "best_score": score,
                "last_gain": 0.0,
                "items": None,
                "clean_items": "",
                "items_lost": "",
                "adapter_params": (params or {}).get((method, task), [1000] * 5)[seed],
                "adapter_params_initial": 2000,
                "backbone_params": 10**6,
            }
            for method, values in scores.items()
            for seed, score in enumerate(values)
        ]
    )


def hand_holm(scores: dict) -> dict[frozenset, float]:
    """Every unordered pair once, scipy's paired t-test, Holm's step-down adjustment written out."""
    raw = {
        frozenset((a, b)): stats.ttest_rel(scores[a], scores[b]).pvalue for a, b in itertools.combinations(scores, 2)
    }
    ordered = sorted(raw, key=raw.get)
    adjusted, running = {}, 0.0
    for rank, pair in enumerate(ordered):
        running = max(running, (len(ordered) - rank) * raw[pair])
        adjusted[pair] = min(running, 1.0)
    return adjusted


def test_holm_family_counts_each_pair_once_per_model():
    other = {method: [s + 0.3 * (i % 2) * (method == "lora") for i, s in enumerate(v)] for method, v in SCORES.items()}
    summary = summary_frame(pd.concat([runs(SCORES), runs(other, model="m2")], ignore_index=True)).set_index(
        ["model", "method"]
    )
    for model, scores in (("m", SCORES), ("m2", other)):
        expected = hand_holm(scores)  # 10 pairs: full−lora and lora−full are one
        for method in scores:
            for reference in ("full", "lora"):
                got = summary.loc[(model, method), f"p_holm_{reference}"]
                if method == reference:
                    assert np.isnan(got)
                else:
                    assert got == pytest.approx(expected[frozenset((method, reference))], rel=1e-9)
    assert summary.loc[("m", "full"), "p_holm_lora"] == summary.loc[("m", "lora"), "p_holm_full"]


def test_marks_and_bold_follow_one_holm_adjusted_test():
    summary = summary_frame(runs(SCORES)).set_index("method")
    adjusted, means = hand_holm(SCORES), {method: np.mean(v) for method, v in SCORES.items()}
    best = max(means, key=means.get)
    for method in SCORES:
        beaten = any(
            p < 0.05 and means[method] < means[other]
            for pair, p in adjusted.items()
            if method in pair
            for other in pair - {method}
        )
        assert summary.loc[method, "best"] == ("best" if method == best else "" if beaten else "tied")
        for reference in ("full", "lora"):
            if method != reference:
                p = adjusted[frozenset((method, reference))]
                expected = "≈" if p >= 0.05 else "▲" if means[method] > means[reference] else "▼"
                assert summary.loc[method, f"mark_{reference}"] == expected
    assert summary.loc["noisy", "best"] == "best"
    # significantly under full fine-tuning: marked ▼ and not bold, though not shown to differ from the noisy best
    assert summary.loc["worse", "mark_full"] == "▼" and summary.loc["worse", "best"] == ""
    assert adjusted[frozenset(("worse", "noisy"))] >= 0.05
    # under full fine-tuning by an unadjusted test (p < 0.05) but not after Holm: ≈ and bold, one rule
    assert stats.ttest_rel(SCORES["slightly"], SCORES["full"]).pvalue < 0.05
    assert summary.loc["slightly", "mark_full"] == "≈" and summary.loc["slightly", "best"] == "tied"


def test_a_methods_adapter_params_are_the_median_over_its_runs_everywhere():
    """AdaLoRA-like: the kept count varies by seed and task; the cell shows its runs' median, the method's
    row (Markdown table, across tasks) the median over all its runs."""
    kept = {("adalora", "t"): [100, 110, 120, 130, 140], ("adalora", "u"): [200, 210, 220, 230, 240]}
    scores = {method: SCORES[method] for method in ("full", "lora")} | {"head": [60.0, 61, 59, 60.5, 59.5]}
    scores["adalora"] = SCORES["slightly"]
    frame = pd.concat([runs(scores, task=task, params=kept) for task in ("t", "u")], ignore_index=True)
    summary = summary_frame(frame)
    adalora = summary[summary["method"] == "adalora"].set_index("task")
    assert (adalora.loc["t", "adapter_params"], adalora.loc["u", "adapter_params"]) == (120, 220)
    median = int(np.median(kept[("adalora", "t")] + kept[("adalora", "u")]))  # 170
    row = wide_table(summary, "m", "mean").set_index("method").loc["adalora"]
    assert row["adapter params"] == f"{median:,} (of 2,000)"
    assert row["% backbone"] == f"{100 * median / 10**6:.3f}"
    aggregates = across_tasks_frame(frame, summary, "m").set_index("method")
    assert aggregates.loc["adalora", "adapter_params"] == median
