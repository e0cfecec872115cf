"""The leaderboard's figures: readable PNGs with a panel per (model, task) or model, whose curves are the
statistics computed here by brute force (enumeration, counting), not by the code under test."""

import itertools

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from harness.report import plots

DPI_PIXELS = 120  # plots.save writes at 120 dpi; a panel is 5 (profiles: 6) × 4 inches


@pytest.fixture
def figures(monkeypatch):
    """Every figure plots.save writes, kept open for inspection (and still written)."""
    kept = []

    def keep(plt, figure, path):
        figure.tight_layout()  # as plots.save lays a figure out
        figure.savefig(path, dpi=DPI_PIXELS)
        kept.append(figure)

    monkeypatch.setattr(plots, "save", keep)
    yield kept
    for figure in kept:
        plots.pyplot().close(figure)


def normalised_runs() -> pd.DataFrame:
    rows = []
    for method, task, values in [
        ("head", "a", [0.0, 0.1, -0.1]),
        ("head", "b", [0.0, 0.05]),
        ("lora", "a", [0.5, 0.9, 0.7]),
        ("lora", "b", [0.2, 1.1]),
    ]:
        rows += [{"model": "m", "method": method, "task": task, "normalised": value} for value in values]
    return pd.DataFrame(rows)


def test_profile_curves_are_the_fraction_of_runs_above_each_threshold_averaged_over_tasks(tmp_path, figures):
    runs = normalised_runs()
    plots.plot_profiles({"m": runs}, tmp_path / "profile.png")
    image = matplotlib.image.imread(tmp_path / "profile.png")
    assert image.shape[:2] == (4 * DPI_PIXELS, 6 * DPI_PIXELS)
    (axis,) = figures[0].axes
    curves = {line.get_label(): line for line in axis.get_lines()}
    assert set(curves) == {"head", "lora"}
    thresholds = curves["lora"].get_xdata()
    assert thresholds[0] == pytest.approx(-0.1) and thresholds[-1] == pytest.approx(1.1)
    for method, line in curves.items():
        by_task = [runs[(runs["method"] == method) & (runs["task"] == task)]["normalised"].tolist() for task in "ab"]
        expected = [np.mean([sum(v > tau for v in values) / len(values) for values in by_task]) for tau in thresholds]
        assert line.get_ydata() == pytest.approx(expected)
    assert len(axis.collections) == 2  # a band per method


def test_tuning_curves_are_the_expected_best_of_k_trials_by_enumeration(tmp_path, figures):
    tuned = pd.DataFrame(
        [
            {
                "model": "m",
                "method": "lora",
                "task": "a",
                "search scores": [70.0, 90.0, 80.0],
                "higher_is_better": True,
            },
            {
                "model": "m",
                "method": "full",
                "task": "a",
                "search scores": [60.0, 85.0, 65.0],
                "higher_is_better": True,
            },
            {"model": "m", "method": "lora", "task": "b", "search scores": [0.3, 0.1, 0.2], "higher_is_better": False},
        ]
    )
    plots.plot_tuning(tuned, tmp_path / "tuning.png")
    assert matplotlib.image.imread(tmp_path / "tuning.png").shape[:2] == (4 * DPI_PIXELS, 2 * 5 * DPI_PIXELS)
    first, second = figures[0].axes
    for axis, rows in ((first, tuned[tuned["task"] == "a"]), (second, tuned[tuned["task"] == "b"])):
        curves = {line.get_label(): line for line in axis.get_lines()}
        assert set(curves) == set(rows["method"])
        for _, row in rows.iterrows():
            best = max if row["higher_is_better"] else min
            scores = row["search scores"]
            expected = [np.mean([best(draw) for draw in itertools.product(scores, repeat=k)]) for k in (1, 2, 3)]
            assert curves[row["method"]].get_xdata().tolist() == [1, 2, 3]
            assert curves[row["method"]].get_ydata() == pytest.approx(expected)


def test_pareto_panel_per_model_with_interval_bars_and_the_frontier(tmp_path, figures):
    aggregates = pd.DataFrame(
        [
            {
                "model": "m",
                "method": "head",
                "tasks": 2,
                "adapter_params": 0,
                "higher_is_better": True,
                "mean": 0.0,
                "mean_low": -0.1,
                "mean_high": 0.1,
            },
            {
                "model": "m",
                "method": "lora",
                "tasks": 2,
                "adapter_params": 70_000,
                "higher_is_better": True,
                "mean": 0.8,
                "mean_low": 0.6,
                "mean_high": 0.95,
            },
            {
                "model": "m",
                "method": "dora",
                "tasks": 2,
                "adapter_params": 600_000,
                "higher_is_better": True,
                "mean": 0.7,
                "mean_low": np.nan,
                "mean_high": np.nan,
            },
            {
                "model": "m",
                "method": "full",
                "tasks": 2,
                "adapter_params": 22_000_000,
                "higher_is_better": True,
                "mean": 1.0,
                "mean_low": 0.9,
                "mean_high": 1.1,
            },
            {
                "model": "n",
                "method": "head",
                "tasks": 1,
                "adapter_params": 0,
                "higher_is_better": True,
                "mean": 0.0,
                "mean_low": 0.0,
                "mean_high": 0.0,
            },
        ]
    )
    plots.plot_pareto(aggregates, tmp_path / "pareto.png")
    height, width = matplotlib.image.imread(tmp_path / "pareto.png").shape[:2]
    assert width == 2 * 5 * DPI_PIXELS and height > 4 * DPI_PIXELS  # taller than a plain panel: room for the legend
    axis = figures[0].axes[0]
    assert axis.get_xscale() == "log" and axis.get_title() == "m: mean over 2 task(s), 95 % interval"
    frontier = next(line for line in axis.get_lines() if line.get_label() == "Pareto frontier")
    assert frontier.get_xdata().tolist() == [1, 70_000, 22_000_000] and frontier.get_ydata().tolist() == [0.0, 0.8, 1.0]
    bars = {container.get_label(): container for container in axis.containers}
    assert sorted(bars) == ["dora", "full", "head", "lora"]
    lora_low, lora_high = bars["lora"].lines[2][0].get_segments()[0][:, 1]
    assert (lora_low, lora_high) == pytest.approx((0.6, 0.95))
    dora_low, dora_high = bars["dora"].lines[2][0].get_segments()[0][:, 1]
    assert dora_low == dora_high == pytest.approx(0.7)  # no interval: no bar


def test_cost_panels_name_each_method_by_colour_and_marker_in_a_legend_below_the_axis(tmp_path, figures):
    """Methods with similar counts sit on top of each other: labels beside the points would overlap, so each
    method has its own colour and marker, named in a legend that lies below the axis and inside the figure."""
    methods = [
        "adalora",
        "dora",
        "dora_dynamic",
        "full",
        "head",
        "lora",
        "lora_xs",
        "lorta",
        "melora",
        "rac_lora",
        "surm",
    ]
    summary = pd.DataFrame(
        [
            {
                "model": "m",
                "task": "t",
                "method": method,
                "metric": "accuracy",
                "split": "test",
                "adapter_params": 80_000 + i,
                "higher_is_better": True,
                "score": 90.0 + i / 10,
                "low": 89.0,
                "high": 92.0,
            }
            for i, method in enumerate(methods)
        ]
    )
    plots.plot_tasks(summary, tmp_path / "tasks.png")
    figure = figures[0]
    (axis,) = figure.axes
    assert not axis.texts  # no labels beside the points
    styles = {
        container.get_label(): (container.lines[0].get_marker(), container.lines[0].get_color())
        for container in axis.containers
    }
    assert sorted(styles) == methods
    assert (
        len({marker for marker, _ in styles.values()}) == len({color for _, color in styles.values()}) == len(methods)
    )
    legend = axis.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["full fine-tuning", "Pareto frontier", *methods]
    renderer = figure.canvas.get_renderer()
    box, axis_box = legend.get_window_extent(renderer), axis.get_window_extent(renderer)
    label_box = axis.xaxis.label.get_window_extent(renderer)
    assert box.y1 <= label_box.y0 and box.y1 <= axis_box.y0  # below the axis and its label, over no point
    assert 0 <= box.x0 and box.x1 <= figure.bbox.x1 and 0 <= box.y0  # inside the figure: nothing cut off
