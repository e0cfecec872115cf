"""Convergence evidence per cell: the final score against the best (at the evaluation where validation
peaked) and what the last epoch added; a cell converged when it ends near its best and has stopped gaining."""

import pandas as pd

CONVERGENCE_SLACK = (
    1.0  # points: a final score this close to the best counts as converged even where the interval is narrower
)


def ends_near_best(frame: pd.DataFrame) -> pd.Series:
    """Per cell of a convergence frame: the final score is within `allowed` of the best (the first condition)."""
    return frame["gap"] <= frame["allowed"]


def convergence_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the final evaluation against the best one (both seed means, the best taken where the
    selection split peaked): `gap` is how much the best beats the final (in the metric's better direction),
    `allowed` the larger of the cell's interval half-width and CONVERGENCE_SLACK; `last_gain` what the last
    evaluation interval added on the selection split (seed mean). `converged`: gap ≤ allowed and a last gain
    of at most CONVERGENCE_SLACK (a curve still rising at its last evaluation has its best there, so the gap
    alone would call it converged)."""
    half_width = ((summary["high"] - summary["low"]) / 2).fillna(0.0)
    sign = summary["higher_is_better"].map(lambda higher: 1 if higher else -1)
    frame = summary[["model", "method", "task", "n"]].copy()
    frame["final"], frame["best"] = summary["mean"], summary["best_mean"]
    frame["gap"] = (summary["best_mean"] - summary["mean"]) * sign
    frame["allowed"] = half_width.clip(lower=CONVERGENCE_SLACK)
    frame["last_gain"] = summary["last_gain"] if "last_gain" in summary else float("nan")
    frame["converged"] = ends_near_best(frame) & ~(frame["last_gain"] > CONVERGENCE_SLACK)
    return frame.reset_index(drop=True)


def convergence_summary(frame: pd.DataFrame) -> str:
    """The sentence over the convergence table (`convergence_frame`)."""
    near_best = ends_near_best(frame)
    return (
        f"{int(frame['converged'].sum())} of {len(frame)} cells ({100 * frame['converged'].mean():.0f} %) converged: "
        f"they end within their interval half-width (or {CONVERGENCE_SLACK:g} point) of their best evaluation, and "
        f"their last evaluation interval added at most {CONVERGENCE_SLACK:g} point on the selection split; "
        f"{int(near_best.sum())} of {len(frame)} ({100 * near_best.mean():.0f} %) meet the first condition alone. "
        "final = the score at the last evaluation, best = the score at the evaluation where the selection split "
        "peaked, gap = best − final, last gain = the selection split's last evaluation minus the one before it (seed "
        "means; empty where a run was evaluated once)."
    )


def convergence_table(frame: pd.DataFrame, no: str) -> pd.DataFrame:
    """The convergence frame as printed: scores with 2 decimals, converged as yes / `no`."""
    shown = frame.assign(
        **{
            column: frame[column].map(lambda value: "" if pd.isna(value) else f"{value:.2f}")
            for column in ("final", "best", "gap", "allowed", "last_gain")
        }
    )
    shown["converged"] = shown["converged"].map({True: "yes", False: no})
    return shown


def convergence_section(summary: pd.DataFrame) -> list[str]:
    """The convergence evidence: how many cells ended within their interval (or 1 point) of their best."""
    frame = convergence_frame(summary)
    return [
        "## Convergence",
        "",
        convergence_summary(frame),
        "",
        convergence_table(frame, "**no**").to_markdown(index=False, disable_numparse=True),
        "",
    ]
