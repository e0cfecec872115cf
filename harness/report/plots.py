"""The leaderboard's figures (PNG, matplotlib), written beside its tables by `write_all`:

- leaderboard.png: per (model, task), adapter params (log) against the score with its 95 % interval,
  the Pareto frontier drawn, full fine-tuning as a dashed line; each method its own colour and marker, named
  in a legend below the panel (labels beside the points overlap where methods have similar counts);
- leaderboard_pareto.png: per model, adapter params (log) against the score normalised across tasks
  (0 = head-only, 1 = full fine-tuning; mean with its stratified-bootstrap interval), the frontier drawn;
- leaderboard_profile.png: per model, the performance profile of each method (Agarwal et al. 2021):
  the fraction of runs whose normalised score exceeds τ, averaged over tasks, with a 95 % band;
- leaderboard_tuning.png (tuning protocols only): per (model, task), the expected best validation score
  against the number of tuning trials (Dodge et al. 2019), ± one standard deviation.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.normalised import per_task_lists
from harness.report.statistics import expected_max, expected_max_std, performance_profile

FULL = "full"
PROFILE_POINTS = 201
MARKERS = "osD^PXv*hpd"  # 11 markers against method_colors' 20 colours: the first 220 methods each get their own pair
LEGEND_COLUMNS = 3
LEGEND_ROW_INCHES = 0.22


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_colors(methods) -> dict[str, tuple]:
    """A colour per method, the same in every panel and figure: tab20's ten dark shades, then its light ones."""
    palette = pyplot().get_cmap("tab20").colors
    ordered = [palette[i] for i in range(0, 20, 2)] + [palette[i] for i in range(1, 20, 2)]
    return {method: ordered[i % len(ordered)] for i, method in enumerate(sorted(set(methods)))}


def method_markers(methods) -> dict[str, str]:
    """A marker per method, the same in every panel and figure (with its colour, it tells close points apart)."""
    return {method: MARKERS[i % len(MARKERS)] for i, method in enumerate(sorted(set(methods)))}


def pareto_frontier(part: pd.DataFrame, score: str = "score") -> pd.DataFrame:
    """The cells no other cell beats with fewer (or as many) adapter parameters, by ascending count."""
    sign = 1 if part["higher_is_better"].iloc[0] else -1
    ordered = part.assign(_key=-sign * part[score]).sort_values(["adapter_params", "_key"])
    best, keep = -np.inf, []
    for index, row in ordered.iterrows():
        if sign * row[score] > best:
            best, keep = sign * row[score], keep + [index]
    return ordered.loc[keep].drop(columns="_key")


def panels(count: int, width: float = 5.0, height: float = 4.0):
    plt = pyplot()
    figure, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return plt, figure, axes[0]


def cost_panels(count: int, methods):
    """Panels for `cost_axis`, tall enough for a legend of every method (and the two lines) below each."""
    rows = -(-(len(set(methods)) + 2) // LEGEND_COLUMNS)
    return panels(count, height=4.0 + LEGEND_ROW_INCHES * rows)


def save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def finish(axis, xlabel: str, ylabel: str, title: str | None = None, legend_below: bool = False) -> None:
    """Labels, title, grid and legend of a panel (inside it, or below it, never over a point)."""
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    axis.grid(alpha=0.3)
    if legend_below:
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=LEGEND_COLUMNS, frameon=False)
    else:
        axis.legend(fontsize=7, loc="best")


def cost_axis(
    axis, part: pd.DataFrame, score: str, low: str, high: str, label: str, colors: dict, markers: dict
) -> None:
    """One panel of adapter params (log) against a score with interval bars and the Pareto frontier."""
    for row in part.sort_values("method").itertuples():
        x, y = max(row.adapter_params, 1), getattr(row, score)
        bottom, top = getattr(row, low), getattr(row, high)
        bars = [[0.0], [0.0]] if pd.isna(bottom) else [[y - bottom], [top - y]]
        axis.errorbar(x, y, yerr=bars, fmt=markers[row.method], capsize=3, color=colors[row.method], label=row.method)
        if row.method == FULL:
            axis.axhline(y, linestyle="--", color="grey", linewidth=1, label="full fine-tuning")
    frontier = pareto_frontier(part, score)
    axis.plot(
        [max(x, 1) for x in frontier["adapter_params"]],
        frontier[score],
        color="black",
        linewidth=1,
        alpha=0.5,
        drawstyle="steps-post",
        label="Pareto frontier",
    )
    axis.set_xscale("log")
    finish(axis, "trainable adapter parameters (log; head excluded)", label, legend_below=True)


def plot_tasks(summary: pd.DataFrame, path: Path) -> None:
    """leaderboard.png: one panel per (model, task)."""
    keys = summary[["model", "task"]].drop_duplicates().sort_values(["model", "task"]).values.tolist()
    plt, figure, axes = cost_panels(len(keys), summary["method"])
    colors, markers = method_colors(summary["method"]), method_markers(summary["method"])
    for axis, (model, task) in zip(axes, keys):
        part = summary[(summary["model"] == model) & (summary["task"] == task)]
        cost_axis(
            axis,
            part,
            "score",
            "low",
            "high",
            f"{part['metric'].iloc[0]} ×100 ({part['split'].iloc[0]})",
            colors,
            markers,
        )
        axis.set_title(f"{model} / {task}")
    save(plt, figure, path)


def plot_pareto(aggregates: pd.DataFrame, path: Path) -> None:
    """leaderboard_pareto.png: one panel per model, the normalised mean over tasks."""
    models = sorted(aggregates["model"].unique())
    plt, figure, axes = cost_panels(len(models), aggregates["method"])
    colors, markers = method_colors(aggregates["method"]), method_markers(aggregates["method"])
    for axis, model in zip(axes, models):
        part = aggregates[aggregates["model"] == model]
        cost_axis(
            axis,
            part,
            "mean",
            "mean_low",
            "mean_high",
            "normalised score (0 = head-only, 1 = full FT)",
            colors,
            markers,
        )
        axis.set_title(f"{model}: mean over {part['tasks'].iloc[0]} task(s), 95 % interval")
    save(plt, figure, path)


def plot_profiles(normalised: dict[str, pd.DataFrame], path: Path) -> None:
    """leaderboard_profile.png: one panel per model, one curve with its band per method."""
    models = [model for model, part in sorted(normalised.items()) if not part.empty]
    plt, figure, axes = panels(len(models), width=6.0)
    colors = method_colors(pd.concat([normalised[model]["method"] for model in models]))
    for axis, model in zip(axes, models):
        part = normalised[model]
        tasks = sorted(part["task"].unique())
        values = part["normalised"].to_numpy()
        thresholds = np.linspace(min(values.min(), 0.0), max(values.max(), 1.0), PROFILE_POINTS)
        for method, group in part.groupby("method"):
            per_task = per_task_lists(group, tasks)
            if any(len(runs) == 0 for runs in per_task):
                continue
            profile, low, high = performance_profile(per_task, thresholds)
            axis.plot(thresholds, profile, label=method, linewidth=1.2, color=colors[method])
            if not np.isnan(low).all():
                axis.fill_between(thresholds, low, high, color=colors[method], alpha=0.12, linewidth=0)
        finish(
            axis,
            "normalised score τ (0 = head-only, 1 = full fine-tuning)",
            "fraction of runs with score > τ",
            f"{model}: performance profile over {len(tasks)} task(s), 95 % band",
        )
    save(plt, figure, path)


def plot_tuning(tuned: pd.DataFrame, path: Path) -> None:
    """leaderboard_tuning.png: one panel per (model, task), a curve per method over 1..trials."""
    keys = tuned[["model", "task"]].drop_duplicates().sort_values(["model", "task"]).values.tolist()
    plt, figure, axes = panels(len(keys))
    colors = method_colors(tuned["method"])
    for axis, (model, task) in zip(axes, keys):
        for _, row in tuned[(tuned["model"] == model) & (tuned["task"] == task)].iterrows():
            scores, higher = row["search scores"], row["higher_is_better"]
            trials = np.arange(1, len(scores) + 1)
            mean = np.array([expected_max(scores, k, higher) for k in trials])
            spread = np.array([expected_max_std(scores, k, higher) for k in trials])
            color = colors[row["method"]]
            axis.plot(trials, mean, marker="o", markersize=3, label=row["method"], linewidth=1.2, color=color)
            axis.fill_between(trials, mean - spread, mean + spread, color=color, alpha=0.08, linewidth=0)
        axis.xaxis.get_major_locator().set_params(integer=True)
        finish(
            axis,
            "tuning trials (grid points drawn with replacement)",
            "expected best validation score ×100",
            f"{model} / {task}: expected max ± 1 sd",
        )
    save(plt, figure, path)


def write_all(
    out: Path, summary: pd.DataFrame, aggregates: pd.DataFrame, normalised: dict[str, pd.DataFrame], tuned: pd.DataFrame
) -> list[Path]:
    """Writes every figure there is data for; returns their paths."""
    written = [out / "leaderboard.png"]
    plot_tasks(summary, written[-1])
    if not aggregates.empty:
        written.append(out / "leaderboard_pareto.png")
        plot_pareto(aggregates, written[-1])
        written.append(out / "leaderboard_profile.png")
        plot_profiles(normalised, written[-1])
    if not tuned.empty:
        written.append(out / "leaderboard_tuning.png")
        plot_tuning(tuned, written[-1])
    return written
