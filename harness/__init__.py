"""peft-harness. The wings, each importing only those below it: protocol (sweeps, tuning) > report, bench >
engine (one run) > store (records) > config > methods, tasks, models > the kernel (errors, checks, assets, fast
exit)."""
