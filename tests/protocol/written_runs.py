"""A protocol run's record written as if the run had finished (its scores given), without running it."""

from harness.store.identity import identify
from harness.store.records import new_record


def write_run(store, composer, overrides, validation, test, status="success"):
    """The record of the run `overrides` (composed by `composer`) in `store`: validation and test accuracy as given."""
    identity = identify(composer(overrides))
    scores = {"validation": {"accuracy": validation}, "test": {"accuracy": test}}
    store.write(
        new_record(identity.config, identity.key)
        | {
            "status": status,
            "error": None if status == "success" else "boom",
            "params": {"adapter": 1, "head": 1, "trainable": 2, "total": 3, "backbone": 2},
            "cost": {"train_seconds": 1.0, "eval_seconds": 1.0, "wall_seconds": 2.0, "steps": 4},
            "metrics": {
                "primary": "accuracy",
                "higher_is_better": True,
                "report_split": "test",
                "curve": [],
                "final": scores,
                "best": scores,
                "best_step": 4,
            },
        }
    )
