"""`python -m harness.verify`: do committed records still reproduce? (harness/protocol/verify.py)"""

from harness.protocol.verify import main

if __name__ == "__main__":
    main()
