from harness.fast_exit import run_then_exit
from harness.protocol.app import main

run_then_exit(main)
