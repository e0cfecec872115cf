from harness.bench.driver import main

main()
