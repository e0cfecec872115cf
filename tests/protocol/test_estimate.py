"""The protocol's plan and time estimate: the runs left per cell, priced at the rates measured from finished
records."""

from harness.config.compose import project_config
from harness.protocol.cells import Cell, Composer
from harness.protocol.estimate import LAUNCH_SECONDS, estimate, rates
from harness.protocol.outcomes import Outcomes
from harness.protocol.spec import Protocol, Search, Suite
from harness.store.records import RecordStore
from tests.protocol.written_runs import write_run


def test_the_plan_estimates_the_time_left_from_measured_rates(tmp_path):
    with project_config():
        composer = Composer([f"results_dir={tmp_path}", "model=tiny_bert"])
        protocol = Protocol(0, [0, 1], Search([-1, 0, 1], 4, 3.0), "validation", str(tmp_path), [])
        suite = Suite("tiny_bert", ["bbc_news"], ["lora", "head"])
        lora = Cell(suite, "lora", "bbc_news", 1e-3, 5e-3)
        head = Cell(suite, "head", "bbc_news", 1e-3, 5e-3, "head_lr")
        store = RecordStore(tmp_path)
        outcomes = Outcomes(protocol, composer, store)
        text = estimate([lora, head], protocol, outcomes, store)
        assert text.splitlines()[0] == (
            "protocol: 2 (model, method, task) cells × (4 search trials on seed 0 + 1 more seeds) "
            "= 10 runs; 10 left, estimated 0.0 h of run time (about 0.0 h wall-clock with two "
            "launchers) plus 10 runs of unknown time"
        )
        # lora's three initial points ran: 0.25 s per step, 1 s per evaluation, nothing outside (write_run's costs)
        # but the process's start
        for exponent in (-1, 0, 1):
            write_run(store, composer, lora.run(protocol, exponent, 0), 0.5 + exponent / 10, 0.5)
        lines = estimate([lora, head], protocol, outcomes, store).splitlines()
        per_run = (
            98 * 0.25 + 1 * 1.0 + LAUNCH_SECONDS
        )  # bbc_news: 1,557 training examples / 16 = 98 steps, one evaluation
        assert lines[1] == (
            f"  tiny_bert lora bbc_news (lr): 3/4 searched, 2 runs left of 98 steps and 1 evaluations: "
            f"1 min ({per_run:,.0f} s per run)"
        )
        assert lines[2].startswith(
            "  tiny_bert head bbc_news (head_lr): 0/4 searched, 5 runs left"
        )  # lora's rates stand in
        total = (2 + 5) * per_run / 3600
        assert lines[0].endswith(
            f"7 left, estimated {total:,.1f} h of run time (about {total / 2:,.1f} h wall-clock with two launchers)"
        )


def test_a_records_rates_count_each_evaluation_once_whatever_its_splits():
    curve = [
        {"step": step, "split": split, "values": {}} for step in (10, 20) for split in ("train", "validation", "test")
    ]
    record = {
        "status": "success",
        "metrics": {"curve": curve},
        "cost": {"steps": 20, "train_seconds": 10.0, "eval_seconds": 6.0, "wall_seconds": 20.0},
    }
    assert rates(record) == (0.5, 3.0, 4.0 + LAUNCH_SECONDS)
    assert rates({**record, "status": "failed"}) is None
