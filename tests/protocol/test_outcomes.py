"""The protocol's view of the record store: the pick (best selection score, first on ties, never a failed
run), hand runs adopted, records left behind listed and pruned, a seeds stage with a budget of its own."""

import json

import pytest

from harness.config.compose import project_config
from harness.protocol.cells import Cell, Composer
from harness.protocol.estimate import estimate
from harness.protocol.outcomes import Outcomes, prune
from harness.protocol.spec import Protocol, Search, Suite
from harness.report.board import build_and_write
from harness.report.selection import lr_pair, select_tuned
from harness.store.records import RecordStore
from tests.protocol.written_runs import write_run


def test_pick_takes_the_best_validation_score_first_on_ties_and_never_a_failed_run(tmp_path):
    with project_config():
        check_pick(tmp_path)


def check_pick(tmp_path):
    composer = Composer([f"results_dir={tmp_path}", "model=tiny_bert"])
    protocol = Protocol(0, [0, 1], Search([-1, 0, 1], 4, 3.0), "validation", str(tmp_path), [])
    cell = Cell(Suite("tiny_bert", ["bbc_news"], ["lora"]), "lora", "bbc_news", 1e-3, 5e-3)
    store = RecordStore(tmp_path)
    outcomes = Outcomes(protocol, composer, store)
    assert outcomes.search(cell) == ([-1, 0, 1], {})
    # the initial points: 0 wins inside the grid, its upper neighbour is the better one: refine to 0.5
    for exponent, validation, test in [(-1, 0.5, 0.9), (0, 0.7, 0.1), (1, 0.6, 0.2)]:
        write_run(store, composer, cell.run(protocol, exponent, 0), validation, test)
    assert outcomes.search(cell) == ([0.5], {-1: 0.5, 0: 0.7, 1: 0.6})
    # while the 4th point runs there is no choice yet; when it fails (its score would have won) 0 is picked
    fourth = cell.run(protocol, 0.5, 0)
    assert fourth[-3:-1] == ["train.lr=0.00173", "train.head_lr=0.005"]
    write_run(store, composer, fourth, 0.99, 0.99, status="running")
    assert outcomes.final_runs(cell) == [] and select_tuned(store.load_all()[0])[0] == []
    write_run(store, composer, fourth, 0.99, 0.99, status="failed")
    assert outcomes.search(cell)[0] == []
    assert outcomes.final_runs(cell) == [cell.run(protocol, 0, 1)]
    # the leaderboard applies the same rule to the records: only the chosen lr's runs remain
    write_run(store, composer, cell.run(protocol, 0, 1), 0.72, 0.15)
    kept, chosen = select_tuned(store.load_all()[0])
    assert sorted((lr_pair(r), r["seed"]) for r in kept) == [((1e-3, 5e-3), 0), ((1e-3, 5e-3), 1)]
    assert chosen[["method", "task", "lr", "head lr", "trials", "at edge"]].values.tolist() == [
        ["lora", "bbc_news", "0.001", "0.005", 4, False]
    ]
    assert chosen["searched (lr/head lr)"].item() == "0.000333/0.005 0.001/0.005 0.00173/0.005 0.003/0.005"
    # an invalid record is listed with its reason and skipped: its point counts as not run (redone)
    path = store.path(composer.key(cell.run(protocol, 1, 0)))
    path.write_text(json.dumps(json.loads(path.read_text()) | {"config": None}))
    assert outcomes.search(cell)[0] == [1]
    assert store.problems[-1] == f"{path.name}: config: None is not of type 'object'"


def test_a_pick_on_the_edge_of_the_grid_is_flagged_with_its_gain_over_the_next_point(tmp_path):
    with project_config():
        composer = Composer([f"results_dir={tmp_path}", "model=tiny_bert"])
        protocol = Protocol(0, [0], Search([-1, 0, 1], 3, 3.0), "validation", str(tmp_path), [])
        cell = Cell(Suite("tiny_bert", ["bbc_news"], ["lora"]), "lora", "bbc_news", 1e-3, 5e-3)
        store = RecordStore(tmp_path)
        for exponent, validation in [(-1, 0.5), (0, 0.6), (1, 0.75)]:
            write_run(store, composer, cell.run(protocol, exponent, 0), validation, 0.7)
        chosen = select_tuned(store.load_all()[0])[1]
        assert chosen[["lr", "at edge"]].values.tolist() == [["0.003", True]]
        assert chosen["edge gain"].item() == pytest.approx(15.0)
        text = build_and_write(str(tmp_path), out_dir=str(tmp_path / "board"), with_plot=False)
    assert (
        "lora / bbc_news: widen the grid: lr/head lr 0.003/0.005 is at the edge of the 3 searched "
        "(0.000333/0.005 0.001/0.005 0.003/0.005); it beat the next point inward by 15.00 points on the selection split"
    ) in text


def test_records_left_behind_when_a_regenerated_record_moves_the_search_are_listed_and_pruned(tmp_path):
    with project_config():
        composer = Composer([f"results_dir={tmp_path}", "model=tiny_bert"])
        protocol = Protocol(0, [0, 1], Search([-1, 0, 1], 4, 3.0), "validation", str(tmp_path), [])
        cell = Cell(Suite("tiny_bert", ["bbc_news"], ["lora"]), "lora", "bbc_news", 1e-3, 5e-3)
        store = RecordStore(tmp_path)
        outcomes = Outcomes(protocol, composer, store)
        for exponent, validation in [(-1, 0.5), (0, 0.7), (1, 0.6), (0.5, 0.65)]:  # 0 wins inside: refined at 0.5
            write_run(store, composer, cell.run(protocol, exponent, 0), validation, 0.7)
        write_run(store, composer, cell.run(protocol, 0, 1), 0.7, 0.7)  # seed 1 at the pick
        assert outcomes.superseded([cell]) == []
        write_run(store, composer, cell.run(protocol, 1, 0), 0.9, 0.7)  # regenerated: now the upper edge wins
        assert outcomes.search(cell) == ([2], {-1: 0.5, 0: 0.7, 1: 0.9})
        left_behind = {composer.key(cell.run(protocol, 0.5, 0)), composer.key(cell.run(protocol, 0, 1))}
        assert {r["run_key"] for r in outcomes.superseded([cell])} == left_behind
        predictions = store.beside(composer.key(cell.run(protocol, 0.5, 0)), "predictions.parquet")
        predictions.write_bytes(b"x")
        lines = prune(outcomes.superseded([cell]), store)
        assert {r["run_key"] for r in store.load_all()[0]} == {
            composer.key(cell.run(protocol, j, 0)) for j in (-1, 0, 1)
        }
        assert not predictions.exists() and len(lines) == 2 and "(search point 0.5)" in " ".join(lines)


def test_the_tuning_section_is_outside_the_run_key_and_a_hand_run_is_adopted(tmp_path):
    with project_config():
        composer = Composer([f"results_dir={tmp_path}", "model=tiny_bert"])
        protocol = Protocol(0, [0], Search([0], 1, 3.0), "validation", str(tmp_path), [])
        cell = Cell(Suite("tiny_bert", ["bbc_news"], ["lora"]), "lora", "bbc_news", 1e-3, 5e-3)
        by_protocol = cell.run(protocol, 0, 0)
        by_hand = by_protocol[:-1]  # the same configuration without the protocol's tuning section
        assert composer.key(by_protocol) == composer.key(by_hand)
        store = RecordStore(tmp_path)
        write_run(store, composer, by_hand, 0.8, 0.7)
        assert "tuning" not in store.read(composer.key(by_hand))["config"]
        assert Outcomes(protocol, composer, store).search(cell) == ([], {0: 0.8})
        adopted = store.read(composer.key(by_hand))
        assert adopted["config"]["tuning"] == {"split": "validation", "search_seed": 0, "trials": 1, "exponent": 0}
        assert [r["run_key"] for r in select_tuned(store.load_all()[0])[0]] == [adopted["run_key"]]


def test_a_seeds_stage_with_a_longer_budget_runs_every_seed_and_only_its_runs_are_results(tmp_path):
    with project_config():
        composer = Composer([f"results_dir={tmp_path}", "model=tiny_bert"])
        protocol = Protocol(0, [0, 1], Search([0], 1, 3.0), "validation", str(tmp_path), [])
        suite = Suite(
            "tiny_bert",
            ["bbc_news"],
            ["lora"],
            task_overrides={"bbc_news": ["train.epochs=2"]},
            seeds_overrides={"bbc_news": ["train.epochs=4"]},
        )
        cell = Cell(suite, "lora", "bbc_news", 1e-3, 5e-3)
        store = RecordStore(tmp_path)
        outcomes = Outcomes(protocol, composer, store)
        search, seeds_stage = cell.run(protocol, 0, 0), cell.run(protocol, 0, 0, "seeds")
        assert "train.epochs=2" in search and "train.epochs=4" not in search
        assert "train.epochs=4" in seeds_stage and "train.epochs=2" not in seeds_stage  # replaced, not given twice
        assert composer(seeds_stage).tuning.stage == "seeds" and "stage" not in composer(search).tuning
        assert composer.key(seeds_stage) != composer.key(search)
        assert estimate([cell], protocol, outcomes, store).splitlines() == [
            "protocol: 1 (model, method, task) cells × (1 search trials on seed 0 + 2 seeds with overrides of their "
            "own) = 3 runs; 3 left, estimated 0.0 h of run time (about 0.0 h wall-clock with two launchers) plus 3 "
            "runs of unknown "
            "time",
            "  tiny_bert lora bbc_news (lr): 0/1 searched, 3 runs left of 196 steps and 2 evaluations / 392 steps and "
            "4 evaluations (search / seeds stage): time unknown (no finished run of this model and task yet)",
        ]
        write_run(store, composer, search, 0.8, 0.7)
        # its rates (write_run: 0.25 s per step, 1 s per evaluation, 8 s to launch) priced at each stage's length
        assert estimate([cell], protocol, outcomes, store).splitlines()[1] == (
            "  tiny_bert lora bbc_news (lr): 1/1 searched, 2 runs left of 196 steps and 2 evaluations / 392 steps and "
            "4 evaluations (search / seeds stage): 4 min (59 / 110 s per run)"
        )
        former_seed = cell.run(protocol, 0, 1)  # seed 1 at the search's budget, as a protocol without the stage ran it
        write_run(store, composer, former_seed, 0.8, 0.7)
        # every seed, the search's included, runs again at the longer budget; the search is not redone
        assert outcomes.search(cell) == ([], {0: 0.8})
        assert outcomes.final_runs(cell) == [cell.run(protocol, 0, 0, "seeds"), cell.run(protocol, 0, 1, "seeds")]
        assert [r["run_key"] for r in outcomes.superseded([cell])] == [composer.key(former_seed)]
        prune(outcomes.superseded([cell]), store)
        assert [r["seed"] for r in select_tuned(store.load_all()[0])[0]] == [0]  # no seeds-stage run yet: the search's
        for seed, test in ((0, 0.9), (1, 0.95)):
            write_run(store, composer, cell.run(protocol, 0, seed, "seeds"), 0.85, test)
        kept, chosen = select_tuned(store.load_all()[0])
        assert sorted((r["seed"], r["metrics"]["final"]["test"]["accuracy"]) for r in kept) == [(0, 0.9), (1, 0.95)]
        assert chosen[["trials", "chosen on"]].values.tolist() == [
            [1, "validation accuracy 80.00 (seed 0)"]
        ]  # the search's run
        assert outcomes.unfinished(outcomes.final_runs(cell)) == [] and outcomes.superseded([cell]) == []
