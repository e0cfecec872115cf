"""`python -m harness.leaderboard`: the leaderboard command (harness/report/leaderboard.py)."""

from harness.report.leaderboard import main

if __name__ == "__main__":
    main()
