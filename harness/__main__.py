from harness.protocol.app import main
from harness.fast_exit import run_then_exit

run_then_exit(main)
