"""The protocol's tuning table, `<results_dir>/tuning.csv`: every cell's search points with their values
and selection scores, the pick marked."""

from pathlib import Path

import pandas as pd

from harness.protocol import lr_search
from harness.protocol.cells import Cell
from harness.protocol.outcomes import Outcomes
from harness.protocol.spec import Protocol


def write_tuning_table(cells: list[Cell], protocol: Protocol, outcomes: Outcomes, results_dir: Path) -> None:
    """<results_dir>/tuning.csv: per cell, every search point with its values and selection score, the pick marked."""
    rows = []
    for cell in cells:
        _, scores = outcomes.search(cell)
        chosen = lr_search.best_exponent(scores) if scores else None
        for exponent, score in sorted(scores.items()):
            lr, head_lr = cell.values(exponent, protocol.search.step)
            rows.append(
                {
                    "model": cell.suite.model,
                    "method": cell.method,
                    "task": cell.task,
                    "axis": cell.axis,
                    "exponent": exponent,
                    "lr": lr,
                    "head_lr": head_lr,
                    "select_score": None if score == lr_search.FAILED else score,
                    "chosen": exponent == chosen,
                }
            )
    results_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(results_dir / "tuning.csv", index=False)
