"""The tuning protocol's search over one learning rate on a log grid, sequential and of a fixed size.

A search point is an exponent j: the value searched is default × step^j. The search starts with the
`initial` exponents (e.g. −1, 0, 1), then adds one point at a time until it holds `trials` points:
- while the best point so far is the largest (smallest) one searched, the next lies one step beyond
  it (the grid is extended in the winning direction, so a pick on the edge of the first grid is not
  final);
- once the best point is inside, the next halves the step between it and its better neighbour (the
  grid is refined where the optimum lies).
Every method gets the same number of trials, so the tuning budget is equal and visible; a pick that is
still on the edge after the last trial is flagged by the leaderboard ("widen the grid"). Failed runs
count as searched and never win. Ties go to the smaller exponent (the first in grid order).
"""

from collections.abc import Mapping, Sequence

from harness.report.selection import FAILED, best_exponent  # the selection rule, which the leaderboard applies too

__all__ = ["FAILED", "best_exponent", "next_exponent", "plan"]


def next_exponent(scores: Mapping[float, float]) -> float:
    """The next point of a search whose points so far scored `scores` (higher is better; FAILED for a
    failed run): one step beyond an edge that wins, else the midpoint towards the better neighbour."""
    best = best_exponent(scores)
    tried = sorted(scores)
    if best == tried[-1]:
        return best + 1
    if best == tried[0]:
        return best - 1
    position = tried.index(best)
    below, above = tried[position - 1], tried[position + 1]  # adjacent: nothing between them has run
    return (best + (above if scores[above] > scores[below] else below)) / 2  # ties: towards the smaller


def plan(initial: Sequence[float], trials: int, results) -> tuple[list[float], dict[float, float]]:
    """Walks a search: `results(j)` gives the score of point j (higher is better, FAILED for a failed
    run) or None while it has not run. Returns the points to run next (the initial points not run yet,
    or the one adaptive point; empty when the search is complete) and the scores found so far."""
    scores, pending = {}, []
    for j in initial:
        score = results(j)
        if score is None:
            pending.append(j)
        else:
            scores[j] = score
    if pending:
        return pending, scores
    while len(scores) < trials:
        j = next_exponent(scores)
        score = results(j)
        if score is None:
            return [j], scores
        scores[j] = score
    return [], scores
