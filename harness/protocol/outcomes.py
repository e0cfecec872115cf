"""What the record store says about a protocol's cells: each search point's score, the search's next
points, the seeds stage at the pick, the runs still to do, and the records no longer among the
protocol's runs (listed, and removed by `prune`)."""

from omegaconf import OmegaConf

from harness.protocol import lr_search
from harness.protocol.cells import Cell, Composer
from harness.protocol.spec import Protocol
from harness.report.selection import selection_score, tuning_of
from harness.store.records import RecordStore, record_label


class Outcomes:
    """The protocol's view of the record store: a run's selection score once it finished (succeeded or
    failed), else None. A finished run found under the same key without this protocol's `tuning`
    section (the same configuration run by hand, or by an earlier protocol) is adopted: the section is
    written into its record, so that the leaderboard sees it as this protocol's run."""

    def __init__(self, protocol: Protocol, composer: Composer, store: RecordStore):
        self.protocol, self.composer, self.store = protocol, composer, store

    def record(self, overrides: list[str]) -> dict | None:
        record = self.store.read(self.composer.key(overrides))
        if record is None or record["status"] not in ("success", "failed"):
            return None
        tuning = OmegaConf.to_container(self.composer(overrides).tuning)
        if tuning_of(record) != tuning:
            record["config"]["tuning"] = tuning
            self.store.write(record)
        return record

    def score(self, cell: Cell, exponent: float) -> float | None:
        record = self.record(cell.run(self.protocol, exponent, self.protocol.search_seed))
        return None if record is None else selection_score(record)

    def search(self, cell: Cell) -> tuple[list[float], dict[float, float]]:
        """The cell's search points to run next, and the scores found so far (lr_search.plan)."""
        return lr_search.plan(self.protocol.search.initial, self.protocol.search.trials, lambda j: self.score(cell, j))

    def final_runs(self, cell: Cell) -> list[list[str]]:
        """The seeds stage at the cell's pick, once its search is complete and a run succeeded: the other
        seeds, or every seed where the stage has its own overrides."""
        pending, scores = self.search(cell)
        if pending or not scores or max(scores.values()) == lr_search.FAILED:
            return []
        chosen = lr_search.best_exponent(scores)
        return [cell.run(self.protocol, chosen, seed, "seeds") for seed in cell.stage_seeds(self.protocol)]

    def unfinished(self, runs: list[list[str]]) -> list[list[str]]:
        return [
            r
            for r in runs
            if (record := self.store.read(self.composer.key(r))) is None or record["status"] != "success"
        ]

    def superseded(self, cells: list[Cell]) -> list[dict]:
        """Finished records of these cells that are no longer among the protocol's runs: a search point
        off the cell's search path or a seed at a former pick, left behind when records it chose by
        were regenerated (harness.protocol.verify --regenerate) and the search went another way. The leaderboard
        would count such a search point as a trial: `--prune` removes them."""
        current, names = set(), set()
        for cell in cells:
            pending, scores = self.search(cell)
            current |= {
                self.composer.key(cell.run(self.protocol, j, self.protocol.search_seed)) for j in [*scores, *pending]
            }
            current |= {self.composer.key(run) for run in self.final_runs(cell)}
            names.add((cell.suite.model, cell.method, cell.task))
        return [
            r
            for r in self.store.load_all()[0]
            if tuning_of(r) is not None
            and r["status"] in ("success", "failed")
            and (r["model"], record_label(r), r["task"]) in names
            and r["run_key"] not in current
        ]


def prune(records: list[dict], store: RecordStore) -> list[str]:
    """Removes these records and the files beside them (predictions, step log); one line per record."""
    lines = []
    for record in records:
        for path in store.files(record["run_key"]):
            path.unlink()
        lines.append(
            f"removed {record['run_key']}: {record['model']} {record['method']} {record['task']} seed {record['seed']} "
            f"(search point {tuning_of(record)['exponent']:g}), no longer among the protocol's runs"
        )
    return lines
