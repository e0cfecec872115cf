"""`python -m harness.bench`: the training-step benchmark's command line (harness/bench/driver.py)."""

from harness.bench.driver import main

main()
