"""Paper experiments (per-task tables, dry-run plans) and the tuning protocol (grids, pick, multiruns)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose

from harness.config.compose import project_config
from harness.config.per_task import apply_per_task
from harness.engine.run import execute_run
from harness.errors import HarnessError
from harness.protocol.cells import Cell, Composer, plan_cells
from harness.protocol.launch import as_multiruns, multirun_groups
from harness.protocol.outcomes import Outcomes, prune
from harness.protocol.plan import main as plan
from harness.protocol.progress import planned_keys
from harness.protocol.spec import Protocol, Search, Suite, parse_protocol
from harness.report.selection import lr_pair, select_tuned
from harness.store.identity import resolved_config, run_key
from harness.store.records import RecordStore
from tasks.glue import GLUE_TASKS
from tests.conftest import QUICK
from tests.protocol.written_runs import write_run

ROOT = Path(__file__).resolve().parents[2]


def composed(*overrides: str):
    with project_config():
        return apply_per_task(compose("config", overrides=list(overrides)))


@pytest.mark.parametrize(
    "method,task,expected",
    [
        (
            "adalora_glue/adalora-0.3M",
            "rte",
            {
                "train.lr": 1.2e-3,
                "train.head_lr": 1.2e-3,
                "train.epochs": 50,
                "train.batch_size": 32,
                "method.t_init": 600,
                "method.delta_t": 1,
                "method.t_final": 1800,
                "method.orth_reg": 0.3,
                "method.target_r": 2,
            },
        ),
        (
            "adalora_glue/adalora-1.2M",
            "cola",
            {
                "train.lr": 5e-4,
                "train.epochs": 25,
                "method.orth_reg": 0.5,
                "method.t_final": 3500,
                "method.target_r": 8,
                "method.r": 12,
            },
        ),
        (
            "adalora_glue/lora-r2",
            "stsb",
            {"train.lr": 2.2e-3, "train.epochs": 25, "method.r": 2, "method.variant": "r2"},
        ),
        ("full", "mnli", {"train.lr": 2e-5, "train.head_lr": 2e-5, "train.epochs": 7}),
    ],
)
def test_adalora_experiment_gives_each_method_and_task_the_papers_values(method, task, expected):
    cfg = composed("experiment=adalora_glue_debertav3_base", f"method={method}", f"task={task}")
    from omegaconf import OmegaConf

    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected
    assert cfg.model.name == "deberta_v3_base" and cfg.sweep == "adalora_glue_debertav3_base"


def test_lora_experiment_table9_values_apply_to_lora_only():
    lora = composed("experiment=lora_glue_roberta_base", "method=lora", "task=cola")
    full = composed("experiment=lora_glue_roberta_base", "method=full", "task=cola")
    assert (lora.train.batch_size, lora.train.epochs, lora.train.lr, lora.train.head_lr) == (32, 80, 4e-4, 4e-4)
    assert (lora.method.r, lora.method.alpha, list(lora.method.targets)) == (8, 8, ["query", "value"])
    assert (full.train.batch_size, full.train.epochs, full.train.lr) == (32, 10, 2e-5)
    large = composed("experiment=lora_glue_roberta_large", "method=lora", "task=rte")
    assert (large.train.batch_size, large.train.epochs, large.train.lr, large.method.alpha, large.task.max_length) == (
        8,
        20,
        4e-4,
        16,
        512,
    )


def test_per_task_values_are_in_the_record_and_the_run_key_but_the_table_is_not(make_config, capsys):
    cfg = make_config(
        "+per_task={bbc_news:{train:{lr:0.0123}},lora/bbc_news:{method:{r:2}},head/bbc_news:{method:{r:3}}}"
    )
    record = execute_run(cfg)
    assert record["status"] == "success"
    assert record["config"]["train"]["lr"] == 0.0123 and record["config"]["method"]["r"] == 2
    same = make_config("train.lr=0.0123", "method.r=2")
    assert record["run_key"] == run_key(resolved_config(same))
    # the tuning protocol, the dry-run listing and sweep progress key the run as the run does
    table = "+per_task={bbc_news:{train:{lr:0.0123}},lora/bbc_news:{method:{r:2}},head/bbc_news:{method:{r:3}}}"
    with project_config():
        assert Composer([f"results_dir={cfg.results_dir}", *QUICK]).key([table]) == record["run_key"]
        assert planned_keys([*QUICK, table]) == [record["run_key"]]
    plan([*QUICK, table, f"results_dir={cfg.results_dir}"])
    assert f"#0: {record['run_key']} success" in capsys.readouterr().out


@pytest.mark.parametrize(
    "table,message",
    [
        ("{bbc_newz:{train:{lr:1}}}", "per_task entry 'bbc_newz' names no task (or method/task); tasks: bbc_news, "),
        ("{lorra/bbc_news:{train:{lr:1}}}", "per_task entry 'lorra/bbc_news' names no task"),
        ("{bbc_news:{train:{lrr:1}}}", "per_task.bbc_news: unknown key 'train.lrr'"),
    ],
)
def test_bad_per_task_tables_are_one_line_errors(make_config, table, message):
    with pytest.raises(HarnessError) as error:
        apply_per_task(make_config(f"+per_task={table}"))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_dry_run_lists_every_run_with_its_steps_and_the_device_hours(capsys):
    plan(["experiment=adalora_glue_debertav3_base", "task=rte,mrpc", "seed=0", "--dry-run", "--steps-per-second", "4"])
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if line.startswith("#")]
    assert len(runs) == 5 * 2  # five methods × two tasks × one seed
    rte = next(line for line in runs if "adalora[0.3M] rte deberta_v3_base seed 0" in line)
    assert "lr 0.0012 batch 32 epochs 50 steps 3900" in rte  # 50 × ceil(2,490 / 32)
    steps = 5 * (50 * math.ceil(GLUE_TASKS["rte"].train_size / 32) + 30 * math.ceil(GLUE_TASKS["mrpc"].train_size / 32))
    assert lines[-1] == (
        f"10 runs, 10 to do: {steps:,} optimizer steps = {steps / 4 / 3600:,.1f} device-hours at 4 "
        "steps/s (training only, evaluation not counted)"
    )


def test_the_decoder_plan_counts_steps_from_the_recipes_approximate_size_and_says_so(capsys):
    plan(["experiment=dora_commonsense_llama3_8b", "--dry-run", "--steps-per-second", "2"])
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if line.startswith("#")]
    steps = 3 * math.ceil(170_000 / 16)  # 3 epochs of the recipe's approximate 170,000 at batch 16
    assert [run.split()[4] for run in runs] == ["lora[r32]", "dora[r16]", "dora[r32]"]
    assert all(f"llama3_8b seed 0 lr 0.0001 batch 16 epochs 3 steps ~{steps}" in run for run in runs)
    assert lines[-1] == (
        f"3 runs, 3 to do: {3 * steps:,} optimizer steps = {3 * steps / 2 / 3600:,.1f} device-hours at 2 steps/s "
        "(training only, evaluation not counted); 3 runs (~) from a hub dataset's approximate size, not loadable here"
    )


def test_search_points_scale_the_axis_the_method_searches():
    suite = Suite("tiny_bert", ["bbc_news"], ["lora"])
    lora, head, full = (
        Cell(suite, m, "bbc_news", lr, head_lr, axis)
        for m, lr, head_lr, axis in [
            ("lora", 1e-3, 5e-3, "lr"),
            ("head", 1e-3, 5e-3, "head_lr"),
            ("full", 5e-5, 5e-5, "tied"),
        ]
    )
    assert [lora.values(j, 3.0) for j in (-1, 0, 0.5, 2)] == [
        (3.33e-4, 5e-3),
        (1e-3, 5e-3),
        (1.73e-3, 5e-3),
        (9e-3, 5e-3),
    ]
    assert head.values(-1, 3.0) == (1e-3, 1.67e-3) and full.values(1, 3.0) == (1.5e-4, 1.5e-4)


@pytest.mark.parametrize("sweep, cells", [("official", 30), ("official_peft", 30), ("official_decoder", 22)])
def test_the_official_plans_set_each_key_once_per_run_and_group_into_multiruns(sweep, cells):
    """Pinned centres and a suite's own lr overrides (EfficientNet's full fine-tuning) never both reach a run:
    a key given twice would make the multirun grouping fail. Every run of every official suite composes."""
    with project_config():
        composer = Composer([f"sweep={sweep}"])
        protocol = parse_protocol(composer([]))
        planned = plan_cells(protocol, composer)
        runs = [
            list(run)
            for run in dict.fromkeys(
                tuple(cell.run(protocol, j, seed, stage))
                for cell in planned
                for j in (-1, 0, 1)
                for seed in (0, 1)
                for stage in ("search", "seeds")
            )
        ]
        assert len(runs) == 6 * sum(
            2 if cell.seeds_stage else 1 for cell in planned
        )  # a stage without overrides: the search's runs
        composed = [composer(run) for run in runs[::60]]  # a run of every fifth cell: composing is the slow part
    assert len(planned) == cells and all(cfg.sweep == sweep for cfg in composed)
    for run in runs:
        keys = [override.split("=", 1)[0] for override in run]
        assert len(keys) == len(set(keys)), run
    covered = [r for _, group in multirun_groups(runs) for r in group]
    assert sorted(map(tuple, covered)) == sorted(map(tuple, runs))


def test_flag_notes_are_texts_under_model_names():
    with project_config():
        composer = Composer(["sweep=official"])
        assert sorted(parse_protocol(composer([])).flag_notes) == [
            "efficientnet_lite0",
            "minilm",
        ]  # the committed notes
        protocol = parse_protocol(composer(["protocol.flag_notes.minilm='Budget capped.'"]))
        assert protocol.flag_notes["minilm"] == "Budget capped."
        narrowed = parse_protocol(composer(["protocol.suites=[{model:tiny_bert,tasks:[bbc_news],methods:[lora]}]"]))
        assert sorted(narrowed.flag_notes) == ["efficientnet_lite0", "minilm"]  # kept, unused: no error
        for override, named in (
            ("+protocol.flag_notes.minlm='x'", "minlm"),
            ("protocol.flag_notes.minilm=[a]", "minilm"),
        ):
            with pytest.raises(
                HarnessError,
                match=rf"^protocol.flag_notes: {named}: not a text under a model's name; "
                r"models: .*efficientnet_lite0.*, minilm, .*tiny_bert",
            ):
                parse_protocol(composer([override]))


def test_runs_become_hydra_multiruns_that_cover_exactly_them():
    product = [[f"task={t}", f"train.lr={lr}", "train.head_lr=5"] for t in "ab" for lr in (1, 2)]
    assert as_multiruns(product) == [["task=a,b", "train.lr=1,2", "train.head_lr=5"]]
    tied = [[f"task={t}", f"train.lr={lr}", f"train.head_lr={lr}"] for t in "ab" for lr in (1, 2)]
    assert as_multiruns(tied) == [
        ["task=a,b", "train.lr=1", "train.head_lr=1"],
        ["task=a,b", "train.lr=2", "train.head_lr=2"],
    ]


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
    from harness.report.board import build_and_write

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


@pytest.mark.slow
def test_protocol_end_to_end_searches_picks_runs_seeds_and_writes_the_leaderboard(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PEFT_HARNESS_CACHE": str(tmp_path / "cache")}
    overrides = [
        "sweep=official",
        f"results_dir={tmp_path / 'results'}",
        f"protocol.leaderboard={tmp_path / 'board'}",
        "protocol.suites=[{model:tiny_bert,tasks:[bbc_news],methods:[head,lora]}]",
        "protocol.seeds=[0,1]",
        "protocol.search.trials=4",
        "task.limit_train=32",
        "task.limit_eval=16",
        "train.max_steps=2",
        "train.batch_size=8",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "harness.tune", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json")]
    assert all(r["status"] == "success" and r["sweep"] == "official" and r["config"]["tuning"] for r in records)
    for method in ("head", "lora"):
        runs = [r for r in records if r["method"] == method]
        search = sorted((r for r in runs if r["seed"] == 0), key=lambda r: r["config"]["tuning"]["exponent"])
        assert len(search) == 4 and len(runs) == 5  # 4 search points on seed 0, then seed 1 at the chosen one
        best = max(search, key=lambda r: r["metrics"]["final"]["validation"]["accuracy"])  # max: smallest on ties
        (seed1,) = [r for r in runs if r["seed"] == 1]
        assert lr_pair(seed1) == lr_pair(best)
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "(n=2)" in board and "(n=3)" not in board and "## Tuned learning rates" in board
    again = subprocess.run(
        [sys.executable, "-m", "harness.tune", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0 and "$ python" not in again.stdout  # all done: nothing launched
    assert (tmp_path / "board" / "leaderboard.md").read_text() == board


def test_the_plan_estimates_the_time_left_from_measured_rates(tmp_path):
    from harness.protocol.estimate import LAUNCH_SECONDS, estimate

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
    from harness.protocol.estimate import LAUNCH_SECONDS, rates

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


def test_a_seeds_stage_with_a_longer_budget_runs_every_seed_and_only_its_runs_are_results(tmp_path):
    from harness.protocol.estimate import estimate

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
