"""The protocol's sequential log-grid search (harness/protocol/lr_search.py): extended while the pick is on an
edge, refined once it is inside, always exactly `trials` points."""

import pytest

from harness.protocol.lr_search import FAILED, best_exponent, next_exponent, plan


def run_search(curve, initial=(-1, 0, 1), trials=5):
    """Runs a whole search against a score curve; returns the points in the order they ran."""
    done: dict[float, float] = {}
    order = []
    while True:
        pending, scores = plan(initial, trials, lambda j: done.get(j))
        assert scores == {j: done[j] for j in scores}
        if not pending:
            return order, scores
        for j in pending:
            done[j] = curve(j)
            order.append(j)


def test_an_optimum_far_above_the_first_grid_is_followed_by_extensions():
    order, scores = run_search(lambda j: -abs(j - 2.6))
    assert order == [-1, 0, 1, 2, 3]
    assert best_exponent(scores) == 3  # still the edge after the last trial: the leaderboard flags it


def test_an_optimum_below_the_first_grid_extends_downwards_then_refines():
    order, _ = run_search(lambda j: -abs(j + 1.4))
    assert order == [-1, 0, 1, -2, -1.5]  # −2 loses to −1: the optimum is inside; halve towards −2


def test_an_inner_optimum_is_refined_towards_the_better_neighbour():
    order, scores = run_search(lambda j: -abs(j - 0.3))
    assert order == [-1, 0, 1, 0.5, 0.25]
    assert best_exponent(scores) == 0.25
    assert len(scores) == 5


def test_every_search_has_exactly_the_trials_asked_for():
    for optimum in (-4, -0.7, 0, 0.2, 3.3, 9):
        order, scores = run_search(lambda j: -((j - optimum) ** 2), trials=7)
        assert len(order) == len(set(order)) == len(scores) == 7


def test_failed_runs_never_win_and_an_all_failed_start_steps_down():
    assert best_exponent({-1: FAILED, 0: 0.5, 1: FAILED}) == 0
    assert next_exponent({-1: FAILED, 0: FAILED, 1: FAILED}) == -2
    order, _ = run_search(lambda j: FAILED if j > -1 else 1.0 + j / 10)
    assert order == [-1, 0, 1, -2, -1.5]


def test_ties_go_to_the_smaller_exponent_and_refinement_looks_below_first():
    assert best_exponent({0: 0.7, 1: 0.7, -1: 0.2}) == 0
    assert next_exponent({-1: 0.5, 0: 0.9, 1: 0.5}) == -0.5
    assert next_exponent({-1: 0.5, -0.5: 0.6, 0: 0.9, 1: 0.5}) == -0.25


def test_a_resumed_search_recomputes_its_next_point_from_the_finished_ones():
    done = {-1: 0.2, 0: 0.8, 1: 0.6}
    assert plan((-1, 0, 1), 5, done.get) == ([0.5], done)
    assert plan((-1, 0, 1), 5, {-1: 0.2, 1: 0.6}.get) == ([0], {-1: 0.2, 1: 0.6})
    assert plan((-1, 0, 1), 3, done.get) == ([], done)


@pytest.mark.parametrize("scores, expected", [({0: 1.0, 1: 2.0}, 2), ({0: 2.0, 1: 1.0}, -1)])
def test_two_point_grids_extend_from_the_winning_edge(scores, expected):
    assert next_exponent(scores) == expected
