"""`python -m harness.leaderboard`: the leaderboard command, kept at its documented place; the
reporting code lives in harness/report/ (leaderboard.py, paper.py, cells.py, normalised.py, statistics.py,
plots.py)."""
from harness.report.leaderboard import main

if __name__ == "__main__":
    main()
