"""The leaderboard's figures, read back from what is drawn: the curves are the statistics computed here by
brute force (enumeration, counting), the points the tables' values; every method in its palette colour and
marker in every figure; the figures as wide as a page (7 in) or a column (3.3 in) with no text under 7 pt
and nothing cut off; one legend per figure, over no point; the names of crowded points apart; the files
PNG, PDF and SVG of the printed size."""

import itertools
import xml.etree.ElementTree as ElementTree

import matplotlib.colors
import matplotlib.image
import matplotlib.lines
import matplotlib.text
import numpy as np
import pandas as pd
import pytest

from harness.report import plots
from harness.report.palette import style

PAGE, COLUMN = 7.0, 3.3
CROWD = ["adalora", "dora", "dora_dynamic", "lora", "lora_xs", "lorta", "melora", "rac_lora", "surm"]


REFERENCE_MEANS = {"a": (60.0, 80.0), "b": (40.0, 90.0)}  # head-only's and full fine-tuning's mean per task


def normalised_runs() -> pd.DataFrame:
    """Raw scores of head-only, full fine-tuning and LoRA on two tasks, normalised by the references' means."""
    rows = []
    for method, task, scores in [
        ("head", "a", [60.0, 62.0, 58.0]),  # normalised 0, 0.1, -0.1
        ("head", "b", [37.5, 42.5]),
        ("full", "a", [80.0, 78.0, 82.0]),
        ("full", "b", [90.0, 85.0, 95.0]),
        ("lora", "a", [70.0, 78.0, 74.0, 66.0]),  # 0.5, 0.9, 0.7, 0.3; with b, half exceed τ in [0.5, 0.7)
        ("lora", "b", [50.0, 95.0]),  # 0.2, 1.1
    ]:
        floor, ceiling = REFERENCE_MEANS[task]
        rows += [
            {
                "model": "m",
                "method": method,
                "task": task,
                "score": score,
                "normalised": (score - floor) / (ceiling - floor),
            }
            for score in scores
        ]
    return pd.DataFrame(rows)


def tuned_frame() -> pd.DataFrame:
    return pd.DataFrame(
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
            {
                "model": "n",
                "method": "head",
                "task": "a",
                "search scores": [50.0, 40.0, 45.0],
                "higher_is_better": True,
            },
        ]
    )


def aggregates_frame() -> pd.DataFrame:
    rows = [
        ("m", "head", 2, 0, 0.0, -0.1, 0.1),
        ("m", "lora", 2, 70_000, 0.8, 0.6, 0.95),
        ("m", "dora", 2, 600_000, 0.7, np.nan, np.nan),
        ("m", "full", 2, 22_000_000, 1.0, 0.9, 1.1),
        ("n", "head", 1, 0, 0.0, 0.0, 0.0),
        ("n", "lora", 1, 180_000, 1.0, 0.97, 1.03),
    ]
    return pd.DataFrame(
        [
            dict(zip(["model", "method", "tasks", "adapter_params", "mean", "mean_low", "mean_high"], row))
            | {"higher_is_better": True}
            for row in rows
        ]
    )


def crowded_summary(tasks=("t",)) -> pd.DataFrame:
    """Nine methods with nearly the same count and score (the MiniLM crowd near 10^5 parameters), head-only
    and full fine-tuning."""
    rows = [(method, 80_000 + 1000 * i, 90.0 + i / 10) for i, method in enumerate(CROWD)]
    rows += [("head", 0, 70.0), ("full", 22_000_000, 91.0)]
    shift = {task: 7 * place for place, task in enumerate(tasks)}  # each task's counts its own
    return pd.DataFrame(
        [
            {
                "model": "m",
                "task": task,
                "method": method,
                "metric": "accuracy",
                "split": "test",
                "adapter_params": count + shift[task] if count else 0,
                "higher_is_better": True,
                "score": score,
                "low": score - 1.5,
                "high": score + 1.5,
            }
            for task in tasks
            for method, count, score in rows
        ]
    )


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    """Every figure, built once: those write_all draws (a page-wide one and, for pareto and profile, a
    column-wide one) and per-task figures at column width of a crowd and of points spread on one level."""
    built = {
        "tasks": plots.tasks_figure(crowded_summary(tasks=("a", "b"))),
        "tasks_column": plots.tasks_figure(crowded_summary(), COLUMN),
        "spread_column": plots.tasks_figure(spread_summary(), COLUMN),
        "pareto": plots.pareto_figure(aggregates_frame()),
        "pareto_column": plots.pareto_figure(aggregates_frame(), COLUMN),
        "profile": plots.profile_figure({"m": normalised_runs()}),
        "profile_column": plots.profile_figure({"m": normalised_runs()}, COLUMN),
        "tuning": plots.tuning_figure(tuned_frame()),
    }
    with matplotlib.rc_context(plots.RC):  # drawn as plots.save draws them
        for figure in built.values():
            figure.canvas.draw()
    yield built
    for figure in built.values():
        plots.pyplot().close(figure)


def width_of(name: str) -> float:
    return COLUMN if name.endswith("_column") else PAGE


def spread_summary() -> pd.DataFrame:
    """Points a little further apart than a crowd, on one level: names cannot all go beside them."""
    summary = crowded_summary().sort_values("adapter_params")
    counts = [0] + [round(10 ** (3 + 0.4 * i)) for i in range(len(summary) - 1)]
    return summary.assign(adapter_params=counts, score=90.0, low=89.5, high=90.5)


def drawn_points(axis) -> dict[str, tuple[float, float]]:
    """Each method's point in a cost panel, as drawn (data coordinates)."""
    return {
        container.get_label(): (container.lines[0].get_xdata()[0], container.lines[0].get_ydata()[0])
        for container in axis.containers
    }


def styles_drawn(figure) -> dict[str, set]:
    """method → the (colour, marker) pairs it is drawn with anywhere in a figure: points, curves, legend."""
    drawn = [(container.get_label(), container.lines[0]) for axis in figure.axes for container in axis.containers]
    drawn += [(line.get_label(), line) for axis in figure.axes for line in axis.get_lines()]
    drawn += legend_markers(figure.legends[0], figure.canvas.get_renderer())
    seen = {}
    for label, line in drawn:
        if not label.startswith("_") and label not in ("full fine-tuning", "Pareto frontier"):
            seen.setdefault(label, set()).add((matplotlib.colors.to_hex(line.get_color()), line.get_marker()))
    return seen


def legend_markers(legend, renderer) -> list[tuple[str, object]]:
    """(label, marker line) for each marker the legend draws: the label is the nearest text right of it."""
    texts = [(text.get_text(), text.get_window_extent(renderer)) for text in legend.get_texts()]
    pairs = []
    for line in legend.findobj(matplotlib.lines.Line2D):
        if str(line.get_marker()).lower() in ("none", "", "_"):  # no marker, or an interval bar's cap
            continue
        x, y = line.get_transform().transform(line.get_xydata()).mean(axis=0)
        beside = [(box.x0 - x, label) for label, box in texts if box.x0 > x and box.y0 <= y <= box.y1]
        pairs.append((min(beside)[1], line))
    return pairs


def boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_profile_curves_are_the_fraction_of_runs_above_each_threshold_averaged_over_tasks(figures):
    runs = normalised_runs()
    (axis,) = figures["profile"].axes
    curves = {line.get_label(): line for line in axis.get_lines()}
    assert set(curves) == {"full", "head", "lora"}
    thresholds = curves["lora"].get_xdata()
    assert thresholds[0] == pytest.approx(-0.1) and thresholds[-1] == pytest.approx(1.1)
    for method, line in curves.items():
        by_task = [runs[(runs["method"] == method) & (runs["task"] == task)]["normalised"].tolist() for task in "ab"]
        expected = [np.mean([sum(v > tau for v in values) / len(values) for values in by_task]) for tau in thresholds]
        assert line.get_ydata() == pytest.approx(expected)
        half = next(i for i, fraction in enumerate(expected) if fraction <= 0.5)  # the median run's score
        assert line.get_markevery() == [half]
    assert len(axis.collections) == 3  # a band per method


def test_tuning_curves_are_the_expected_best_of_k_trials_by_enumeration(figures):
    tuned = tuned_frame()
    panels = figures["tuning"].axes  # one per (model, task), in that order
    keys = [("m", "a"), ("m", "b"), ("n", "a")]
    assert [axis.get_title() for axis in panels] == [f"{model} / {task}: expected max ± 1 sd" for model, task in keys]
    for axis, (model, task) in zip(panels, keys, strict=True):
        rows = tuned[(tuned["model"] == model) & (tuned["task"] == task)]
        curves = {line.get_label(): line for line in axis.get_lines()}
        assert set(curves) == set(rows["method"])
        for _, row in rows.iterrows():
            best = max if row["higher_is_better"] else min
            scores = row["search scores"]
            expected = [np.mean([best(draw) for draw in itertools.product(scores, repeat=k)]) for k in (1, 2, 3)]
            assert curves[row["method"]].get_xdata().tolist() == [1, 2, 3]
            assert curves[row["method"]].get_ydata() == pytest.approx(expected)


def test_pareto_points_are_the_tables_with_head_only_at_zero_on_a_symlog_axis(figures):
    aggregates = aggregates_frame()
    axis, other = figures["pareto"].axes
    assert axis.get_title() == "m (mean of 2 tasks)" and other.get_title() == "n (mean of 1 tasks)"
    for panel, model in ((axis, "m"), (other, "n")):
        part = aggregates[aggregates["model"] == model]
        assert drawn_points(panel) == {row.method: (row.adapter_params, row.mean) for row in part.itertuples()}
        assert panel.get_xscale() == "symlog"
        zero = panel.transData.transform([[0, 0]])[0][0]
        frame = panel.get_window_extent()
        assert frame.x0 < zero < frame.x1  # head-only is drawn, inside the panel
        assert panel.get_xticks()[0] == 0 and panel.get_xticklabels()[0].get_text() == "$\\mathdefault{0}$"
    frontier = next(line for line in axis.get_lines() if line.get_label() == "Pareto frontier")
    assert frontier.get_xdata().tolist() == [0, 70_000, 22_000_000] and frontier.get_ydata().tolist() == [0.0, 0.8, 1.0]
    bars = {container.get_label(): container for container in axis.containers}
    lora_low, lora_high = bars["lora"].lines[2][0].get_segments()[0][:, 1]
    assert (lora_low, lora_high) == pytest.approx((0.6, 0.95))
    dora_low, dora_high = bars["dora"].lines[2][0].get_segments()[0][:, 1]
    assert dora_low == dora_high == pytest.approx(0.7)  # no interval: no bar


def test_task_points_are_the_tables_counts_and_scores(figures):
    """The count drawn is the table's adapter_params (a cell's median over its runs), not recomputed."""
    summary = crowded_summary(tasks=("a", "b"))
    for axis, task in zip(figures["tasks"].axes, "ab", strict=True):
        part = summary[summary["task"] == task]
        assert axis.get_title() == f"m / {task}"
        assert drawn_points(axis) == {row.method: (row.adapter_params, row.score) for row in part.itertuples()}


def test_figures_are_printed_size_with_text_of_at_least_7_points_inside_them(figures):
    for name, figure in figures.items():
        width = width_of(name)
        assert figure.get_size_inches()[0] == pytest.approx(width)
        columns = {round(axis.get_position().x0, 3) for axis in figure.axes}
        assert len(columns) == (1 if width == COLUMN else min(2, len(figure.axes)))  # panels wrap in a grid
        texts = [text for text in figure.findobj(matplotlib.text.Text) if text.get_text() and text.get_visible()]
        assert texts and min(text.get_fontsize() for text in texts) >= 7
        drawn = figure.get_tightbbox(figure.canvas.get_renderer())
        height = figure.get_size_inches()[1]
        assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01


def test_one_legend_per_figure_below_the_panels_over_no_point(figures):
    for figure in figures.values():
        assert len(figure.legends) == 1 and all(axis.get_legend() is None for axis in figure.axes)
        renderer = figure.canvas.get_renderer()
        legend = figure.legends[0].get_window_extent(renderer)
        assert 0 <= legend.x0 and legend.x1 <= figure.bbox.x1 and 0 <= legend.y0
        for axis in figure.axes:
            assert legend.y1 <= axis.get_window_extent(renderer).y0  # below every panel
            vertices = [line.get_xydata() for line in axis.get_lines()]
            for xy in axis.transData.transform(np.concatenate(vertices)):
                assert not legend.contains(*xy)


def test_every_method_has_its_palette_colour_and_marker_in_every_figure(figures):
    seen = {}
    for figure in figures.values():
        for method, pairs in styles_drawn(figure).items():
            seen.setdefault(method, set()).update(pairs)
    assert {"head", "lora", "full", "dora", *CROWD} <= set(seen)
    for method, pairs in seen.items():
        assert pairs == {(style(method).colour, style(method).marker)}, method


@pytest.mark.parametrize("name", ["tasks", "tasks_column", "spread_column", "pareto", "pareto_column"])
def test_crowded_points_are_named_apart_beside_their_own_points(name, figures):
    for axis in figures[name].axes:
        assert_named_apart(axis)


def assert_named_apart(axis) -> None:
    """Every point of a cost panel is named, at its own point, in the panel, the names over no other name
    and no point."""
    renderer = axis.figure.canvas.get_renderer()
    names = {text.get_text(): text for text in axis.texts}
    points = drawn_points(axis)
    assert sorted(names) == sorted(points) and len(names) == len(axis.texts)
    for method, text in names.items():
        assert text.xy == pytest.approx(points[method])  # named at its own point (by a leader line if away)
    # the names' own boxes (an annotation's window extent would include its leader line)
    boxes = {method: matplotlib.text.Text.get_window_extent(text, renderer) for method, text in names.items()}
    frame = axis.get_window_extent(renderer)
    for (first, a), (second, b) in itertools.combinations(boxes.items(), 2):
        assert not boxes_overlap(a, b), (first, second)
    for box in boxes.values():
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        for x, y in axis.transData.transform(list(points.values())):
            assert not box.contains(x, y)  # over no point


def assert_files_of_width(stem, width: float) -> None:
    """stem.pdf, .svg and .png are valid files of that physical width (PDF and SVG in points, PNG at 200 dpi)."""
    pdf = stem.with_name(f"{stem.name}.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"%%EOF" in pdf[-32:]
    box = [float(value) for value in pdf.split(b"/MediaBox [")[1].split(b"]")[0].split()]
    assert box[2] - box[0] == pytest.approx(width * 72)
    svg = ElementTree.parse(stem.with_name(f"{stem.name}.svg")).getroot()
    assert svg.tag.endswith("svg") and float(svg.get("width").removesuffix("pt")) == pytest.approx(width * 72)
    assert matplotlib.image.imread(stem.with_name(f"{stem.name}.png")).shape[1] == round(width * 200)


@pytest.mark.parametrize("width", [PAGE, COLUMN])
def test_save_writes_png_pdf_and_svg_at_the_printed_width(width, tmp_path):
    written = plots.save(plots.profile_figure({"m": normalised_runs()}, width), tmp_path / "profile")
    assert [path.name for path in written] == ["profile.png", "profile.pdf", "profile.svg"]
    assert_files_of_width(tmp_path / "profile", width)


@pytest.mark.slow
def test_write_all_writes_every_figure_at_its_width(tmp_path):
    written = plots.write_all(tmp_path, crowded_summary(), aggregates_frame(), {"m": normalised_runs()}, tuned_frame())
    stems = ["leaderboard", "leaderboard_pareto", "leaderboard_profile"]
    stems += ["leaderboard_pareto_column", "leaderboard_profile_column", "leaderboard_tuning"]
    assert sorted(path.name for path in written) == sorted(
        f"{s}.{kind}" for s in stems for kind in ("png", "pdf", "svg")
    )
    for stem in stems:
        assert_files_of_width(tmp_path / stem, COLUMN if stem.endswith("_column") else PAGE)
