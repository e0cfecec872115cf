"""`python -m harness.tune`: the tuning protocol (harness/protocol/tune.py)."""

from harness.protocol.tune import main

if __name__ == "__main__":
    main()
