"""Sanity flags under each model's table (reference under-trained, grid edge, not converged, fewer seeds),
and the protocol's notes on the flags it could not clear."""

import pandas as pd

from harness.report.convergence import CONVERGENCE_SLACK, convergence_frame


def flags(summary: pd.DataFrame, model: str, tuned: pd.DataFrame) -> list[str]:
    """Sanity flags of one model's table: an under-trained reference, a tuned value at the edge of its
    grid, fewer seeds than the table's other cells, a final score far below the cell's best."""
    part, found = summary[summary["model"] == model], []
    cells = part.set_index(["method", "task"])
    for task in sorted(part["task"].unique()):
        if ("full", task) in cells.index and ("head", task) in cells.index:
            full, head = cells.loc[("full", task)], cells.loc[("head", task)]
            worse = full["high"] < head["low"] if full["higher_is_better"] else full["low"] > head["high"]
            if worse:
                found.append(
                    f"{task}: reference under-trained: full fine-tuning {full['mean']:.2f} is below head-only "
                    f"{head['mean']:.2f} beyond both intervals"
                )
    most = part["n"].max()
    for row in part.itertuples():
        if row.n < most:
            found.append(
                f"{row.method} / {row.task}: {row.n} seed{'s' if row.n > 1 else ''}, fewer than the {most} of other "
                "cells"
            )
    for row in convergence_frame(part).itertuples():
        if not row.converged:
            rising = (
                f", its last evaluation interval still added {row.last_gain:.2f} points"
                if row.last_gain > CONVERGENCE_SLACK
                else ""
            )
            found.append(
                f"{row.method} / {row.task}: not converged: final {row.final:.2f} vs best {row.best:.2f}{rising}"
            )
    for _, row in tuned[tuned["model"] == model].iterrows() if not tuned.empty else []:
        if row["at edge"] and row["trials"] > 1:
            gain = (
                ""
                if pd.isna(row["edge gain"])
                else f"; it beat the next point inward by {row['edge gain']:.2f} points on the selection split"
            )
            found.append(
                f"{row['method']} / {row['task']}: widen the grid: lr/head lr {row['lr']}/{row['head lr']} is at "
                f"the edge of the {row['trials']} searched ({row['searched (lr/head lr)']}){gain}"
            )
    return found


def flag_note(flag_notes: dict[str, str] | None, model: str) -> str | None:
    """The protocol's explanation of the flags of `model`'s table that it could not clear (`protocol.flag_notes`),
    as one paragraph; None where it gives none."""
    note = (flag_notes or {}).get(model)
    return f"Why these flags stand: {' '.join(note.split())}" if note else None
