"""Sweeps and the tuning protocol: the Hydra application, plans and progress of sweeps, the protocol (search, seeds,
estimate), verification of committed records."""
