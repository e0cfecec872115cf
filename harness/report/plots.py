"""The leaderboard's figures (matplotlib), written beside its tables by `write_all`, each as PNG (200 dpi),
PDF and SVG at the physical width it is printed at, so that its font sizes are the printed ones (text 7-8 pt):

- leaderboard: per (model, task), adapter params against the score with its 95 % interval, the Pareto
  frontier drawn, full fine-tuning as a dashed line; page width (7 in), panels two to a row;
- leaderboard_pareto: per model, adapter params against the score normalised across tasks (0 = head-only,
  1 = full fine-tuning; mean with its stratified-bootstrap interval), the frontier drawn; page width, and
  leaderboard_pareto_column at column width (3.3 in), panels one to a row;
- leaderboard_profile: per model, the performance profile of each method (Agarwal et al. 2021): the
  fraction of runs whose normalised score exceeds τ, averaged over tasks, with a 95 % band, the method's
  marker where the curve falls to one half (the median); page width, and leaderboard_profile_column at
  column width;
- leaderboard_tuning (tuning protocols only): per (model, task), the expected best validation score
  against the number of tuning trials (Dodge et al. 2019), ± one standard deviation; page width.

Page-wide figures wrap their panels two to a row. Every method has the colour and marker
harness/report/palette.py gives its name, in every figure (and on the site). A figure has one legend,
below its panels, over no data. The adapter-parameter axis is symlog: head-only (no adapter parameters)
sits at x = 0, the counts (the table's adapter_params, drawn as given) on a log scale from the first
decade that holds one. On that axis each point is named beside it, over no other name or marker
(`label_points`): the names of a crowd of points stacked beside it with leader lines.
"""

import functools
import itertools
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator

from harness.report.normalised import REFERENCE_ROLES, reference_triples
from harness.report.palette import style
from harness.report.statistics import expected_max, expected_max_std, performance_profile

FULL = "full"
PROFILE_POINTS = 201
COLUMN_INCHES = 3.3
PAGE_INCHES = 7.0
PAGE_COLUMNS = 2  # panels per row at page width (one at column width)
PANEL_INCHES = 2.3  # height of a row of panels
LEGEND_ROW_INCHES = 0.17
PNG_DPI = 200
FORMATS = ("png", "pdf", "svg")
TEXT_POINTS = 8
SMALL_POINTS = 7  # ticks, legend and point names: the smallest text of any figure
MARKER_POINTS = 4.5
RC = {
    "font.size": TEXT_POINTS,
    "axes.titlesize": TEXT_POINTS,
    "axes.labelsize": TEXT_POINTS,
    "xtick.labelsize": SMALL_POINTS,
    "ytick.labelsize": SMALL_POINTS,
    "legend.fontsize": SMALL_POINTS,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "lines.linewidth": 1.0,
    "pdf.fonttype": 42,  # TrueType, not Type 3: accepted by publishers, text selectable
    "svg.hashsalt": "peft-harness",  # the same SVG for the same figure
}
METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}  # no dates: rebuilt files equal
COST_LABEL = "adapter parameters (head excluded)"
# Where a point's name may go: distances (points) from the marker's edge, tried nearest first, at 16 angles
LABEL_DISTANCES = (1, 4, 8, 14, 22, 32, 45, 60, 80, 105, 135)
LABEL_ANGLES = 16
LEADER_POINTS = 6  # names further from their marker than this get a leader line
CROWD_POINTS = 20  # markers closer than this have their names stacked in one block
LINE_PENALTY = 25  # a name over a line (frontier, full fine-tuning) costs as much as this many points further away


def pyplot():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def styled(build):
    """A figure builder run under the figures' fonts (RC); builders end by `freeze_layout`, drawing their
    figure there: every tick and text is made at its printed size."""

    @functools.wraps(build)
    def inside(*args, **kwargs):
        pyplot()  # imported before the fonts are set: a first import of pyplot would reset them
        with matplotlib.rc_context(RC):
            return build(*args, **kwargs)

    return inside


def pareto_frontier(part: pd.DataFrame, score: str = "score") -> pd.DataFrame:
    """The cells no other cell beats with fewer (or as many) adapter parameters, by ascending count."""
    sign = 1 if part["higher_is_better"].iloc[0] else -1
    ordered = part.assign(_key=-sign * part[score]).sort_values(["adapter_params", "_key"])
    best, keep = -np.inf, []
    for index, row in ordered.iterrows():
        if sign * row[score] > best:
            best, keep = sign * row[score], keep + [index]
    return ordered.loc[keep].drop(columns="_key")


def grid(count: int, width: float, legend_lines: int):
    """A figure `width` inches wide with `count` panels (two to a row at page width, one at column width)
    and room below them for a legend of `legend_lines` rows; returns it and its panels."""
    columns = 1 if width <= COLUMN_INCHES else min(count, PAGE_COLUMNS)
    rows = -(-count // columns)
    height = rows * PANEL_INCHES + legend_lines * LEGEND_ROW_INCHES + 0.1
    figure = pyplot().figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for spare in axes[count:]:
        spare.remove()
    return figure, axes[:count]


def legend_rows(entries: int, width: float) -> int:
    """A first guess of the legend's rows (`shared_legend` measures the real ones), for the figure's height."""
    columns = 3 if width <= COLUMN_INCHES else 6
    return -(-entries // columns)


def shared_legend(figure, axes) -> None:
    """One legend for the whole figure, below its panels: every label once, methods in alphabetical order
    then the lines; in as few rows as fit the figure's width, filled evenly."""
    handles = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    lines = [label for label in ("full fine-tuning", "Pareto frontier") if label in handles]
    labels = sorted(set(handles) - set(lines)) + lines
    renderer = figure.canvas.get_renderer()
    for rows in range(1, len(labels) + 1):
        legend = figure.legend(
            [handles[label] for label in labels],
            labels,
            loc="outside lower center",
            ncol=-(-len(labels) // rows),
            frameon=False,
            columnspacing=1.0,
            handletextpad=0.4,
            handlelength=1.6,
        )
        if legend.get_window_extent(renderer).width <= figure.bbox.width - 4 or rows == len(labels):
            return
        legend.remove()


def cost_axis(axis, part: pd.DataFrame, score: str, low: str, high: str, label: str) -> None:
    """One panel of adapter params (symlog, head-only at 0) against a score with interval bars and the
    Pareto frontier."""
    for row in part.sort_values("method").itertuples():
        x, y = row.adapter_params, getattr(row, score)
        bottom, top = getattr(row, low), getattr(row, high)
        bars = [[0.0], [0.0]] if pd.isna(bottom) else [[y - bottom], [top - y]]
        look = style(row.method)
        axis.errorbar(
            x,
            y,
            yerr=bars,
            marker=look.marker,
            linestyle="none",
            markersize=MARKER_POINTS,
            capsize=1.5,
            elinewidth=0.7,
            capthick=0.7,
            color=look.colour,
            label=row.method,
            zorder=3,
        )
        if row.method == FULL:
            axis.axhline(y, linestyle="--", color="grey", linewidth=0.8, label="full fine-tuning", zorder=1)
    frontier = pareto_frontier(part, score)
    axis.plot(
        frontier["adapter_params"],
        frontier[score],
        color="black",
        linewidth=0.8,
        alpha=0.5,
        drawstyle="steps-post",
        label="Pareto frontier",
        zorder=2,
    )
    symlog_axis(axis, part["adapter_params"])
    axis.set_xlabel(COST_LABEL)
    axis.set_ylabel(label)
    grid_and_ticks(axis)


def grid_and_ticks(axis) -> None:
    """A light grid, and tick labels at SMALL_POINTS however late matplotlib makes a tick (RC is only the
    style of the figure while it is built and saved)."""
    axis.grid(alpha=0.3)
    axis.tick_params(labelsize=SMALL_POINTS)


def symlog_axis(axis, counts: pd.Series) -> None:
    """Symlog x: linear from 0 up to the first decade that holds a count, log above it; ticks at 0 and at
    each decade from there (minor ticks at its multiples)."""
    positive = counts[counts > 0]
    first = int(np.floor(np.log10(positive.min()))) if len(positive) else 0
    last = int(np.ceil(np.log10(positive.max()))) if len(positive) else 1
    axis.set_xscale("symlog", linthresh=10.0**first, linscale=0.5)
    decades = 10.0 ** np.arange(first, last + 1)
    axis.xaxis.set_major_locator(FixedLocator([0.0, *decades]))
    axis.xaxis.set_minor_locator(FixedLocator([step * decade for decade in decades for step in range(2, 10)]))
    axis.set_xlim(-0.25 * 10.0**first, axis.get_xlim()[1])


def freeze_layout(figure) -> None:
    """Lays the figure out once and keeps it so: point names are then placed against final positions, and
    saving it three times does not lay it out again."""
    figure.canvas.draw()
    figure.set_layout_engine("none")


def markers_of(axis) -> list[tuple[str, np.ndarray, float]]:
    """Each point of a cost panel: its method, its display position and its marker's radius (pixels)."""
    scale = axis.figure.dpi / 72
    points = []
    for container in axis.containers:
        line = container.lines[0]
        data = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
        points.append((container.get_label(), axis.transData.transform(data)[0], line.get_markersize() * scale / 2))
    return points


def obstacles(axis) -> tuple[list, list, list]:
    """The display boxes, (x0, y0, x1, y1), of a cost panel's markers, interval bars and lines."""
    scale = axis.figure.dpi / 72
    markers = [(x - radius, y - radius, x + radius, y + radius) for _, (x, y), radius in markers_of(axis)]
    bars = []
    for container in axis.containers:
        for collection in container.lines[2]:
            for segment in collection.get_segments():
                (x0, y0), (x1, y1) = axis.transData.transform(np.asarray(segment, float))
                bars.append((min(x0, x1) - 2 * scale, min(y0, y1), max(x0, x1) + 2 * scale, max(y0, y1)))
    lines = []
    for line in axis.get_lines():
        if line.get_label() in ("full fine-tuning", "Pareto frontier"):
            lines += segments_of(line)
    return markers, bars, lines


def segments_of(line) -> list:
    """The boxes of a line's straight pieces (a step line's risers and treads) in display coordinates."""
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    transform = line.get_transform()
    if line.get_drawstyle() == "steps-post":
        x, y = np.repeat(x, 2)[1:], np.repeat(y, 2)[:-1]
    points = transform.transform(np.column_stack([x, y]))
    return [
        (min(a[0], b[0]), min(a[1], b[1]) - 1, max(a[0], b[0]), max(a[1], b[1]) + 1)
        for a, b in zip(points[:-1], points[1:])
    ]


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_points(axis) -> None:
    """Names each point of a cost panel beside it. Points closer than CROWD_POINTS to one another form a
    crowd, whose names are stacked in one block, top to bottom as its points are, beside the crowd (left or
    right); a lone point's name may go anywhere around it. The block goes where `place_block` finds room;
    the largest crowds choose first; where the interval bars leave no room, a block may cover them (at a
    cost, as a line); a crowd with no room beside it has its points named one by one. A leader line joins a
    name to its marker when it lies more than LEADER_POINTS away."""
    renderer = axis.figure.canvas.get_renderer()
    scale = axis.figure.dpi / 72
    markers, bars, lines = obstacles(axis)
    names, leaders = [], []
    strict, relaxed = (markers + bars, lines, names, leaders), (markers, lines + bars, names, leaders)
    frame = axis.get_window_extent(renderer)
    inside = (frame.x0 + 1, frame.y0 + 1, frame.x1 - 1, frame.y1 - 1)
    points = markers_of(axis)
    anchors = {c.get_label(): (c.lines[0].get_xdata()[0], c.lines[0].get_ydata()[0]) for c in axis.containers}
    queue = crowds([xy for _, xy, _ in points], CROWD_POINTS * scale)
    while queue:
        members = sorted((points[i] for i in queue[0]), key=lambda point: -point[1][1])
        sizes = [name_size(axis, name, renderer) for name, _, _ in members]
        row = max(height for _, height in sizes) + scale  # a point between rows
        size = (max(width for width, _ in sizes) + 2 * scale, row * len(members))
        rows = place_block(members, size, inside, strict, scale) or place_block(members, size, inside, relaxed, scale)
        if rows is None and len(queue[0]) > 1:  # no room beside the crowd: its points are named one by one
            queue = [[i] for i in queue[0]] + queue[1:]
            continue
        queue = queue[1:]
        for (name, xy, radius), (box, text_at, side, leader) in zip(members, rows or []):
            names.append(box)
            if leader is not None:
                leaders.append(leader)
            name_point(axis, name, anchors[name], text_at - xy, side, radius if leader is not None else None)


def crowds(points: list, reach: float) -> list[list[int]]:
    """The points grouped by single linkage at distance `reach` (indices), largest groups first."""
    group = list(range(len(points)))
    for i, j in itertools.combinations(range(len(points)), 2):
        if np.hypot(*(points[i] - points[j])) < reach:
            old, new = group[j], group[i]
            group = [new if g == old else g for g in group]
    members = [[i for i in range(len(points)) if group[i] == g] for g in dict.fromkeys(group)]
    return sorted(members, key=lambda crowd: (-len(crowd), min(points[i][0] for i in crowd)))


def name_size(axis, name: str, renderer) -> tuple[float, float]:
    """The display width and height of a name at the point names' font size."""
    probe = axis.text(0, 0, name, fontsize=SMALL_POINTS)
    extent = probe.get_window_extent(renderer)
    probe.remove()
    return extent.width, extent.height


def place_block(members, size, inside, taken, scale):
    """The cheapest place for a block of names of `size` (width, height) beside its points `members`
    ((name, display xy, marker radius), top to bottom), of those inside the panel whose box covers no
    marker, interval bar, name or leader line and whose leader lines cross no name: cost = distance
    (points) + LINE_PENALTY for each line the block covers and for each marker, bar, line or leader line a
    leader crosses. `taken`: the boxes of the data (markers, bars), of the lines, of the names placed, and the
    leader lines drawn. Returns each member's (name box, text position, side, leader line or None), or None
    where there is no such place."""
    data, lines, names, leaders = taken
    width, height = size
    centre = np.mean([xy for _, xy, _ in members], axis=0)
    reach = max(np.hypot(*(xy - centre)) + radius for _, xy, radius in members)
    angles = [2 * np.pi * step / LABEL_ANGLES for step in range(LABEL_ANGLES)]
    if len(members) > 1:  # beside the crowd, so that each leader line reaches its own row
        angles = [angle for angle in angles if abs(np.cos(angle)) >= 0.5]
    best = None
    for distance in LABEL_DISTANCES:
        for angle in angles:
            middle = centre + [
                np.cos(angle) * (reach + distance * scale + width / 2),
                np.sin(angle) * (reach + distance * scale + height / 2),
            ]
            box = (middle[0] - width / 2, middle[1] - height / 2, middle[0] + width / 2, middle[1] + height / 2)
            within = inside[0] <= box[0] and box[2] <= inside[2] and inside[1] <= box[1] and box[3] <= inside[3]
            if not within or any(overlap(box, other) for other in data + names):
                continue
            if any(crosses_box(*leader, box) for leader in leaders):
                continue
            rows = block_rows(members, box, middle[0] > centre[0], scale)
            drawn = [(xy, row[3]) for (_, xy, _), row in zip(members, rows) if row[3] is not None]
            if any(crosses_box(*leader, other) for _, leader in drawn for other in names):
                continue
            crossed = sum(
                crosses_box(*leader, other) for xy, leader in drawn for other in data if not inside_box(xy, other)
            )
            crossed += sum(segments_cross(*leader, *other) for _, leader in drawn for other in leaders)
            crossed += sum(crosses_box(*leader, other) for _, leader in drawn for other in lines)
            cost = distance + LINE_PENALTY * (crossed + sum(overlap(box, other) for other in lines))
            if best is None or cost < best[0]:
                best = (cost, rows)
        if best is not None and best[0] <= distance:
            break
    return None if best is None else best[1]


def block_rows(members, box, right: bool, scale) -> list:
    """Each member's row of a block: (name box, text position, side, leader line or None). A lone name is
    centred in its box ("center"); a crowd's names are aligned on the block's side facing the crowd, where
    their leader lines end ("left": the block lies right of the crowd)."""
    if len(members) == 1:
        (_, xy, radius), middle = members[0], np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        far = gap(xy, box) > radius + LEADER_POINTS * scale
        return [(box, middle, "center", leader_of(xy, radius, middle) if far else None)]
    row = (box[3] - box[1]) / len(members)
    rows = []
    for place, (_, xy, radius) in enumerate(members):
        top = box[3] - row * place
        line = (box[0], top - row, box[2], top)
        edge = np.array([box[0] if right else box[2], top - row / 2])
        leader = leader_of(xy, radius, edge) if gap(xy, line) > radius + LEADER_POINTS * scale else None
        rows.append((line, edge + [scale if right else -scale, 0], "left" if right else "right", leader))
    return rows


def gap(point, box) -> float:
    """The distance from a point to the nearest point of a box (0 inside it)."""
    return np.hypot(max(box[0] - point[0], 0, point[0] - box[2]), max(box[1] - point[1], 0, point[1] - box[3]))


def name_point(axis, name: str, point, offset, side: str, leader_shrink: float | None) -> None:
    """Writes a point's name `offset` (display) from the point (data coordinates), aligned on `side` ("left",
    "right", "center"), with a leader line from that side to the marker unless `leader_shrink` (the
    marker's radius, pixels) is None."""
    scale = axis.figure.dpi / 72
    arrow = None
    if leader_shrink is not None:
        start = {"left": (0.0, 0.5), "right": (1.0, 0.5), "center": (0.5, 0.5)}[side]
        arrow = {
            "arrowstyle": "-",
            "color": "0.45",
            "linewidth": 0.5,
            "relpos": start,
            "shrinkA": 0,
            "shrinkB": leader_shrink / scale,
        }
    note = axis.annotate(
        name,
        xy=point,
        xytext=offset / scale,
        textcoords="offset points",
        ha=side,
        va="center",
        fontsize=SMALL_POINTS,
        arrowprops=arrow,
        zorder=4,
    )
    note.set_in_layout(False)


def inside_box(point, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def leader_of(xy, radius, end) -> tuple[np.ndarray, np.ndarray]:
    """The leader line from a marker's edge to `end`."""
    direction = (end - xy) / np.hypot(*(end - xy))
    return xy + direction * (radius + 1), np.asarray(end, float)


def crosses_box(start, end, box) -> bool:
    """Whether the segment meets the box (Liang-Barsky clipping)."""
    low, high = 0.0, 1.0
    step = end - start
    for along, room in (
        (-step[0], start[0] - box[0]),
        (step[0], box[2] - start[0]),
        (-step[1], start[1] - box[1]),
        (step[1], box[3] - start[1]),
    ):
        if along == 0:
            if room < 0:
                return False
            continue
        if along < 0:
            low = max(low, room / along)
        else:
            high = min(high, room / along)
        if low > high:
            return False
    return True


def segments_cross(a, b, c, d) -> bool:
    """Whether segments ab and cd cross (strictly)."""

    def turn(p, q, r):
        return np.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    return turn(a, b, c) * turn(a, b, d) < 0 and turn(c, d, a) * turn(c, d, b) < 0


@styled
def tasks_figure(summary: pd.DataFrame, width: float = PAGE_INCHES):
    """leaderboard: one panel per (model, task)."""
    keys = summary[["model", "task"]].drop_duplicates().sort_values(["model", "task"]).values.tolist()
    figure, axes = grid(len(keys), width, legend_rows(summary["method"].nunique() + 2, width))
    for axis, (model, task) in zip(axes, keys):
        part = summary[(summary["model"] == model) & (summary["task"] == task)]
        cost_axis(axis, part, "score", "low", "high", f"{part['metric'].iloc[0]} ×100 ({part['split'].iloc[0]})")
        axis.set_title(f"{model} / {task}")
    return labelled(figure, axes)


@styled
def pareto_figure(aggregates: pd.DataFrame, width: float = PAGE_INCHES):
    """leaderboard_pareto: one panel per model, the normalised mean over tasks."""
    models = sorted(aggregates["model"].unique())
    figure, axes = grid(len(models), width, legend_rows(aggregates["method"].nunique() + 2, width))
    for axis, model in zip(axes, models):
        part = aggregates[aggregates["model"] == model]
        cost_axis(
            axis, part, "mean", "mean_low", "mean_high", "normalised score, 95 % interval\n(0 = head-only, 1 = full FT)"
        )
        axis.set_title(f"{model} (mean of {part['tasks'].iloc[0]} tasks)")
    return labelled(figure, axes)


def labelled(figure, axes):
    """The cost figure with its legend, laid out, then its points named."""
    shared_legend(figure, axes)
    freeze_layout(figure)
    for axis in axes:
        label_points(axis)
    return figure


@styled
def profile_figure(normalised: dict[str, pd.DataFrame], width: float = PAGE_INCHES):
    """leaderboard_profile: one panel per model, one curve with its band per method."""
    models = [model for model, part in sorted(normalised.items()) if not part.empty]
    methods = pd.concat([normalised[model]["method"] for model in models]).nunique()
    figure, axes = grid(len(models), width, legend_rows(methods, width))
    for axis, model in zip(axes, models):
        part = normalised[model]
        tasks = sorted(part["task"].unique())
        values = part["normalised"].to_numpy()
        thresholds = np.linspace(min(values.min(), 0.0), max(values.max(), 1.0), PROFILE_POINTS)
        for method in sorted(part["method"].unique()):
            per_task = reference_triples(part, method)
            if per_task is None:
                continue
            profile, low, high = performance_profile(per_task, thresholds, REFERENCE_ROLES.get(method))
            look = style(method)
            axis.plot(
                thresholds,
                profile,
                label=method,
                color=look.colour,
                marker=look.marker,
                markersize=MARKER_POINTS - 1,
                markevery=[int(np.argmax(profile <= 0.5))],  # where half the runs score less: the median
            )
            if not np.isnan(low).all():
                axis.fill_between(thresholds, low, high, color=look.colour, alpha=0.12, linewidth=0)
        axis.set_xlabel("normalised score τ (0 = head-only, 1 = full FT)")
        axis.set_ylabel("fraction of runs with score > τ")
        axis.set_title(f"{model}: {len(tasks)} task(s), 95 % band")
        grid_and_ticks(axis)
    shared_legend(figure, axes)
    freeze_layout(figure)
    return figure


@styled
def tuning_figure(tuned: pd.DataFrame, width: float = PAGE_INCHES):
    """leaderboard_tuning: one panel per (model, task), a curve per method over 1..trials."""
    keys = tuned[["model", "task"]].drop_duplicates().sort_values(["model", "task"]).values.tolist()
    figure, axes = grid(len(keys), width, legend_rows(tuned["method"].nunique(), width))
    for axis, (model, task) in zip(axes, keys):
        for _, row in tuned[(tuned["model"] == model) & (tuned["task"] == task)].sort_values("method").iterrows():
            scores, higher = row["search scores"], row["higher_is_better"]
            trials = np.arange(1, len(scores) + 1)
            mean = np.array([expected_max(scores, k, higher) for k in trials])
            spread = np.array([expected_max_std(scores, k, higher) for k in trials])
            look = style(row["method"])
            axis.plot(
                trials, mean, marker=look.marker, markersize=MARKER_POINTS - 1, label=row["method"], color=look.colour
            )
            axis.fill_between(trials, mean - spread, mean + spread, color=look.colour, alpha=0.08, linewidth=0)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_xlabel("tuning trials (drawn with replacement)")
        axis.set_ylabel("expected best validation ×100")
        axis.set_title(f"{model} / {task}: expected max ± 1 sd")
        grid_and_ticks(axis)
    shared_legend(figure, axes)
    freeze_layout(figure)
    return figure


def save(figure, stem: Path) -> list[Path]:
    """Writes a figure as stem.png, .pdf and .svg (under the figures' fonts), closes it; returns the paths."""
    paths = [stem.with_name(f"{stem.name}.{kind}") for kind in FORMATS]
    with matplotlib.rc_context(RC):
        for path, kind in zip(paths, FORMATS):
            figure.savefig(path, dpi=PNG_DPI, metadata=METADATA[kind])
    pyplot().close(figure)
    return paths


def write_all(
    out: Path, summary: pd.DataFrame, aggregates: pd.DataFrame, normalised: dict[str, pd.DataFrame], tuned: pd.DataFrame
) -> list[Path]:
    """Writes every figure there is data for (module docstring); returns their paths."""
    written = save(tasks_figure(summary), out / "leaderboard")
    if not aggregates.empty:
        for suffix, width in (("", PAGE_INCHES), ("_column", COLUMN_INCHES)):
            written += save(pareto_figure(aggregates, width), out / f"leaderboard_pareto{suffix}")
            written += save(profile_figure(normalised, width), out / f"leaderboard_profile{suffix}")
    if not tuned.empty:
        written += save(tuning_figure(tuned), out / "leaderboard_tuning")
    return written
