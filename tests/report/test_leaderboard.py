"""The leaderboard from fixed records equals the expected files; statistics are right."""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.report.leaderboard import build_and_write, main
from harness.report.statistics import estimate
from harness.store.identity import run_key

DATA = Path(__file__).parents[1] / "data"
BACKBONE = 22_713_216
# (method, variant, task, seed, final score, best score, adapter params[, adapter params kept at the end])
RUNS = [
    ("full", None, "bbc_news", 0, 0.97, 0.975, BACKBONE),
    ("full", None, "bbc_news", 1, 0.96, 0.97, BACKBONE),
    ("full", None, "bbc_news", 2, 0.98, 0.98, BACKBONE),
    ("full", None, "tweet_sentiment", 0, 0.80, 0.81, BACKBONE),
    ("lora", None, "bbc_news", 0, 0.95, 0.96, 73_728),
    ("lora", None, "bbc_news", 1, 0.94, 0.95, 73_728),
    ("lora", None, "tweet_sentiment", 0, 0.78, 0.79, 73_728),
    ("lora", "r16", "bbc_news", 0, 0.96, 0.96, 147_456),
    ("head", None, "bbc_news", 0, 0.50, 0.55, 0),
    ("adalora", None, "bbc_news", 0, 0.955, 0.96, 100_000, 60_000),
    ("adalora", None, "bbc_news", 1, 0.945, 0.95, 100_000, 60_000),
]


COST = {"train_seconds": 1.0, "eval_seconds": 0.5, "wall_seconds": 2.0, "steps": 10}


def record(
    method, variant, task, seed, final, best, adapter, adapter_final=None, status="success", sweep="fixture"
) -> dict:
    config = {"seed": seed, "method": {"name": method, "variant": variant}, "task": {"name": task, "source": "fixture"}}
    rec = {
        "schema_version": 1,
        "run_key": run_key(config),  # a reader refuses a record whose config hashes to another key
        "status": status,
        "error": None if status == "success" else "boom",
        "method": method,
        "variant": variant,
        "task": task,
        "model": "minilm",
        "seed": seed,
        "sweep": sweep,
        "tags": [],
        "config": config,
        "params": {
            "adapter": adapter,
            "head": 1925,
            "trainable": adapter + 1925,
            "total": BACKBONE + 1925,
            "backbone": BACKBONE,
        },
        "metrics": {
            "primary": "accuracy",
            "higher_is_better": True,
            "report_split": "test",
            "curve": [],
            "final": {"validation": {"accuracy": 0.0}, "test": {"accuracy": final}},
            "best": {"validation": {"accuracy": 0.0}, "test": {"accuracy": best}},
            "best_step": 10,
        },
        "cost": COST,
        "provenance": {},
    }
    if adapter_final is not None:
        rec["params"]["adapter_final"] = adapter_final
    return rec


@pytest.fixture
def results(tmp_path) -> Path:
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    for spec in RUNS:
        rec = record(*spec)
        (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    failed = record("lora", None, "bbc_news", 5, 0.0, 0.0, 73_728, status="failed")
    other = record("full", None, "bbc_news", 9, 0.10, 0.1, BACKBONE, sweep="other")
    for rec in (failed, other):
        (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    return tmp_path / "results"


def test_markdown_equals_the_expected_file(results):
    text = build_and_write(str(results), sweep="fixture")
    assert text == (DATA / "expected_leaderboard.md").read_text()
    assert (results / "leaderboard.md").read_text() == text
    assert (results / "leaderboard.png").stat().st_size > 10_000
    assert "\\begin{tabular}" in (results / "leaderboard.tex").read_text()


def test_a_sweep_caption_heads_its_leaderboard_as_one_paragraph(results, make_config, monkeypatch, tmp_path, capsys):
    import harness.report.board
    from harness.protocol.callbacks import LeaderboardCallback

    plain = build_and_write(str(results), sweep="fixture", with_plot=False)
    captioned = build_and_write(str(results), sweep="fixture", with_plot=False, sweep_caption="One seed,\n60 steps.")
    assert captioned == plain.replace("# Leaderboard\n\n", "# Leaderboard\n\nOne seed, 60 steps.\n\n", 1)
    demo = make_config("sweep=demo", quick=False)
    assert demo.caption.startswith(  # the caption states the budget the config runs
        f"Demo sweep: a smoke test of every text method, not a comparison. One seed, {demo.train.max_steps} steps "
        f"of batch {demo.train.batch_size}"
    )
    assert (
        f"at {demo.task.max_length} tokens" in demo.caption and f"on {demo.task.limit_eval} validation" in demo.caption
    )
    given = {}
    monkeypatch.setattr(harness.report.board, "build_and_write", lambda *args, **kwargs: given.update(kwargs) or "")
    config = OmegaConf.merge(OmegaConf.to_container(demo), {"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    LeaderboardCallback().on_multirun_end(config)
    assert given["sweep_caption"] == demo.caption and given["sweep"] == "demo"
    assert f"leaderboard: {tmp_path / 'sweep' / 'leaderboard.md'} (with .csv, .tex and plots beside it)\n" in (
        capsys.readouterr().out
    )  # the sweep says where its leaderboard went


def test_csv_statistics(results):
    build_and_write(str(results), sweep="fixture", with_plot=False)
    table = pd.read_csv(results / "leaderboard.csv").set_index(["method", "task"])
    lora = table.loc[("lora", "bbc_news")]
    assert (
        lora["n"] == 2
        and lora["mean"] == pytest.approx(94.5)
        and lora["std"] == pytest.approx(math.sqrt(0.5), abs=1e-4)
    )
    assert lora["diff_full"] == pytest.approx(-2.0)  # paired on the seeds both have: 95 − 97, 94 − 96
    assert math.isnan(lora["p_full"]) and lora["mark_full"] == "≈"  # no spread in two equal differences: no test
    assert lora["pct_backbone"] == pytest.approx(100 * 73_728 / BACKBONE, abs=1e-4)
    assert table.loc[("full", "bbc_news")]["n"] == 3  # the failed run and the other sweep are not counted
    assert table.loc[("lora[r16]", "bbc_news")]["mean"] == pytest.approx(96.0)
    adalora = table.loc[("adalora", "bbc_news")]  # pruned budget: the kept count is reported
    assert adalora["adapter_params"] == 60_000 and adalora["adapter_params_initial"] == 100_000
    assert adalora["pct_backbone"] == pytest.approx(100 * 60_000 / BACKBONE, abs=1e-4)


def test_median_and_best_options(results, capsys):
    main(
        [
            "--results-dir",
            str(results),
            "--sweep",
            "fixture",
            "--stat",
            "median",
            "--which",
            "best",
            "--no-plot",
            "--out",
            str(results),
        ]
    )
    table = pd.read_csv(results / "leaderboard.csv").set_index(["method", "task"])
    assert table.loc[("full", "bbc_news")]["median"] == pytest.approx(97.5)
    assert "**97.50** (n=3)" in capsys.readouterr().out


def test_corrupt_record_is_reported_and_not_counted(results):
    (results / "runs" / "broken.json").write_text('{"schema_version": 1, "run_key"')
    text = build_and_write(str(results), sweep="fixture", with_plot=False)
    assert "## Skipped record files" in text and "broken.json: unreadable" in text
    assert "**97.00** [94.52, 99.48] (n=3)" in text  # mean ± t(2)·sd/√3


def test_a_copy_under_a_stale_key_is_reported_and_counted_once(results):
    """A resumed sweep redoes a run whose record carries a key from an older key scheme: the two
    records of that run count once (the one under the config's current key)."""
    config = {"method": {"name": "full"}, "task": {"name": "bbc_news"}, "seed": 3}
    current = record("full", None, "bbc_news", 3, 0.90, 0.90, BACKBONE) | {"config": config, "run_key": run_key(config)}
    stale = current | {"run_key": "0123456789ab"}
    for rec in (current, stale):
        (results / "runs" / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    text = build_and_write(str(results), sweep="fixture", with_plot=False)
    assert f"0123456789ab.json: the same run as {run_key(config)}.json" in text.split("## Skipped record files")[1]
    assert "95.25 [89.53, 100.00] (n=4)" in text  # 97, 96, 98 and 90 once (n=5 if counted twice); capped at 100


def test_no_runs_gives_an_empty_board(tmp_path):
    assert "No successful runs yet." in build_and_write(str(tmp_path / "empty"))


def test_runs_that_differ_in_more_than_the_seed_are_separate_rows(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed, lr, score in ((0, 1e-3, 0.9), (1, 1e-3, 0.8), (0, 1e-4, 0.5)):
        rec = record("lora", None, "bbc_news", seed, score, score, 73_728)
        rec["config"] = {"seed": seed, "logger": {"name": "csv"}, "train": {"lr": lr}}
        rec["run_key"] = run_key(rec["config"])
        (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    text = build_and_write(str(tmp_path), with_plot=False)
    assert "| lora (train.lr=0.001)  |" in text and "85.00** [21.47, 100.00] (n=2)" in text
    assert "| lora (train.lr=0.0001) |" in text and "50.00 (n=1)" in text


def test_paper_view_puts_published_numbers_beside_ours(results, tmp_path, capsys):
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "fixture.csv").write_text(
        "paper,table,model,method,variant,params,task,metric,split,value,stat,which,protocol,source\n"
        "P,T1,minilm,lora,,73728,bbc_news,accuracy,,95.0,mean,final,mean of 5,paper p. 3\n"
        "P,T1,minilm,lora,r16,,bbc_news,accuracy,,97.5,mean,final,,paper p. 3\n"
        "P,T1,minilm,dora,,,bbc_news,accuracy,,96.0,mean,final,,paper p. 3\n"
        "P,T1,minilm,lora,r16,,bbc_news,macro_f1,,90.0,mean,final,,paper p. 3\n"
        "P,T2,minilm,full,,,bbc_news,accuracy,,97.0,median,best,median of 5 best epoch,paper p. 4\n"
        "P,T2,minilm,full,,,bbc_news,accuracy,validation,50.0,mean,final,other split,paper p. 4\n"
        "P,T2,roberta_base,full,,,bbc_news,accuracy,,90.0,mean,final,other model,paper p. 4\n"
    )
    from harness.report.paper import paper_markdown

    text = paper_markdown("fixture", str(results), reference)
    table = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")][1:]
    rows = {(cells[1], cells[3], cells[6]): cells[2:] for cells in table if cells[0] == "minilm"}
    assert rows["lora", "accuracy", "95.0"] == [
        "bbc_news",
        "accuracy",
        "73,728",
        "73,728",
        "95.0",
        "94.50 ± 0.71 (n=2)",
        "-0.50",
    ]
    assert rows["lora[r16]", "accuracy", "97.5"][3:] == ["147,456", "97.5", "96.00 (n=1)", "-1.50"]
    assert rows["dora", "accuracy", "96.0"][3:] == ["—", "96.0", "no runs", "—"]
    assert rows["lora[r16]", "macro_f1", "90.0"][5:] == ["no runs", "—"]  # matched per metric: these runs recorded none
    # the table's own rule: median over seeds of the best evaluation (0.975, 0.97, 0.98 -> 97.5)
    assert rows["full", "accuracy", "97.0"][5:] == ["97.50 (median, n=3)", "+0.50"]
    # a row on another split is matched on that split's values (validation 0.0 here), not the report split's
    assert rows["full", "accuracy (validation)", "50.0"][5:] == ["0.00 ± 0.00 (n=3)", "-50.00"]
    assert [cells[:2] + cells[7:] for cells in table if cells[0] == "roberta_base"] == [
        ["roberta_base", "full", "no runs", "—"]
    ]
    with pytest.raises(HarnessError, match="no published table 'missing'; available: fixture"):
        paper_markdown("missing", str(results), reference)


def write_predictions(runs: Path, rec: dict, correct: np.ndarray) -> None:
    """A prediction file beside `rec` (test split, final step 10): label 0 and prediction 0 where correct."""
    path = runs / f"{rec['run_key']}.predictions.parquet"
    pd.DataFrame(
        {
            "split": "test",
            "step": 10,
            "example_id": [f"ex{i}" for i in range(len(correct))],
            "label": 0,
            "prediction": np.where(correct, 0, 1),
        }
    ).to_parquet(path)
    rec["predictions"] = {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "steps": {"final": 10, "best": 10},
    }
    rec["metrics"]["final"]["test"]["accuracy"] = float(correct.mean())


def test_intervals_and_marks_from_predictions(tmp_path):
    """Three seeds × 400 items: LoRA answers 90 % of the items, full fine-tuning 70 %: the cells'
    intervals cover seeds and items, and LoRA's win over full fine-tuning is significant (▲)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    rng = np.random.default_rng(0)
    matrices = {"full": rng.random((3, 400)) < 0.7, "lora": rng.random((3, 400)) < 0.9}
    for method, matrix in matrices.items():
        for seed, correct in enumerate(matrix):
            rec = record(method, None, "bbc_news", seed, 0.0, 0.0, 73_728)
            write_predictions(runs, rec, correct)
            (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    build_and_write(str(tmp_path), out_dir=str(tmp_path / "out"), with_plot=False)
    table = pd.read_csv(tmp_path / "out" / "leaderboard.csv").set_index("method")
    lora = table.loc["lora"]
    expected = estimate(per_item=100.0 * matrices["lora"])
    assert lora["items"] == 400 and (lora["low"], lora["high"]) == pytest.approx(
        (expected.low, expected.high), abs=1e-4
    )
    difference = estimate(per_item=100.0 * (matrices["lora"].astype(float) - matrices["full"]))
    assert (lora["diff_full"], lora["diff_low_full"], lora["diff_high_full"]) == pytest.approx(
        (difference.mean, difference.low, difference.high), abs=1e-4
    )  # the CSV keeps 4 decimals
    assert lora["mark_full"] == "▲" and table.loc["full"]["mark_lora"] == "▼" and lora["p_better_full"] == 1.0
    assert lora["best"] == "best" and pd.isna(table.loc["full"]["best"])  # full is not tied with the best
    assert "\\textbf{" in (tmp_path / "out" / "leaderboard.tex").read_text()
    assert "test items" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_sanity_flags_name_what_is_wrong(results):
    runs = results / "runs"
    for seed, (final, best) in enumerate([(0.40, 0.40), (0.41, 0.41), (0.42, 0.42)]):  # full FT far below head-only
        rec = record("full", None, "digits", seed, final, best, BACKBONE)
        (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
        rec = record("head", None, "digits", seed, 0.80 + seed / 100, 0.80 + seed / 100, 0)
        (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
        rec = record("lora", None, "digits", seed, 0.90, 0.90, 73_728)  # validation still climbing 3 points at its end
        rec["metrics"]["curve"] = [
            {"step": step, "split": "validation", "values": {"accuracy": value}}
            for step, value in ((10, 0.85), (20, 0.87), (30, 0.90))
        ]
        (runs / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    text = build_and_write(str(results), sweep="fixture", with_plot=False)
    assert (
        "lora / digits: not converged: final 90.00 vs best 90.00, its last evaluation interval still added 3.00 points"
    ) in text
    assert (
        "digits: reference under-trained: full fine-tuning 41.00 is below head-only 81.00 beyond both intervals" in text
    )
    assert "head / bbc_news: not converged: final 50.00 vs best 55.00" in text
    assert "lora / bbc_news: 2 seeds, fewer than the 3 of other cells" in text
    explained = build_and_write(
        str(results), sweep="fixture", with_plot=False, flag_notes={"minilm": "The budget\n  is capped."}
    )
    flag_block = text.split("Sanity flags:\n\n", 1)[1].split("\n\n", 1)[0]
    assert explained == text.replace(
        flag_block + "\n\n", flag_block + "\n\nWhy these flags stand: The budget is capped.\n\n", 1
    )
    assert build_and_write(str(results), sweep="fixture", with_plot=False, flag_notes={"gpt2": "Elsewhere."}) == text


def test_pareto_frontier_keeps_cells_nothing_cheaper_beats():
    from harness.report.plots import pareto_frontier

    part = pd.DataFrame(
        {
            "method": ["head", "lora_xs", "lora", "dora", "full"],
            "adapter_params": [0, 6_000, 70_000, 600_000, 22_000_000],
            "score": [80.0, 92.0, 91.0, 95.0, 94.0],
            "higher_is_better": True,
        }
    )
    assert list(pareto_frontier(part)["method"]) == ["head", "lora_xs", "dora"]


def test_the_default_output_is_scratch_and_the_official_leaderboard_is_never_overwritten(
    results, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    official = tmp_path / "results" / "leaderboard.md"
    official.write_text("official")
    main(["--results-dir", str(results), "--sweep", "fixture", "--no-plot"])
    assert "**97.00** [94.52, 99.48] (n=3)" in (tmp_path / "results" / "scratch" / "leaderboard.md").read_text()
    for out in ("results", "./results/", str(tmp_path / "results")):
        with pytest.raises(
            SystemExit, match=r"holds the official leaderboard, written only by `python -m harness.tune sweep=official`"
        ):
            main(["--results-dir", str(results), "--out", out])
    assert official.read_text() == "official"


def test_the_paper_view_reads_the_committed_reference_tables_and_collection(tmp_path, capsys):
    main(["--paper", "rac_lora_mnist", "--out", str(tmp_path)])
    text = (tmp_path / "paper_rac_lora_mnist.md").read_text()
    assert text.startswith("# RAC-LoRA (Malinovsky et al. 2024), Table 3: published vs ours")
    assert (
        "| mlp_mnist | full             | mnist5k_upper | accuracy | —                | 54,725          | 98.0 " in text
    )
    assert "no runs" not in text


def test_convergence_frame_measures_the_gap_in_the_better_direction():
    from harness.report.convergence import convergence_frame, convergence_summary

    summary = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "method": ["a", "b", "c", "d"],
            "task": ["t"] * 4,
            "n": [5] * 4,
            "higher_is_better": [True, True, False, True],
            "mean": [90.0, 90.0, 10.0, 90.0],
            "best_mean": [92.0, 91.0, 7.0, 93.0],
            "low": [87.0, 89.8, 9.0, float("nan")],
            "high": [93.0, 90.2, 11.0, float("nan")],
        }
    )
    frame = convergence_frame(summary).set_index("method")
    # a: gap 2 within half-width 3; b: gap 1 within the 1-point slack (half-width 0.2);
    # c: lower is better, best 7 beats final 10 by 3 > max(1, 1); d: no interval, gap 3 > 1
    assert frame["gap"].tolist() == [2.0, 1.0, 3.0, 3.0]
    assert frame["allowed"].tolist() == [3.0, 1.0, 1.0, 1.0]
    assert frame["converged"].tolist() == [True, True, False, False]
    # a curve still rising at its end has its best there (gap 0): its last gain says it has not converged
    rising = convergence_frame(summary.assign(best_mean=summary["mean"], last_gain=[0.5, 1.0, 1.5, float("nan")]))
    assert rising["gap"].tolist() == [0.0] * 4 and rising["converged"].tolist() == [True, True, False, True]
    # the sentence counts both rules: c fails the last gain alone, so it is near its best but not converged
    assert convergence_summary(rising).startswith("3 of 4 cells (75 %) converged: ")
    assert "; 4 of 4 (100 %) meet the first condition alone." in convergence_summary(rising)
    assert "; 2 of 4 (50 %) meet the first condition alone." in convergence_summary(convergence_frame(summary))


@pytest.mark.parametrize(
    "higher, values, gain",
    [
        (True, {"validation": [0.50, 0.70, 0.74], "test": [0.1, 0.2, 0.9]}, 4.0),  # validation's last step, not test's
        (False, {"validation": [3.0, 2.5, 2.0]}, 50.0),  # lower is better: a drop is a gain
        (True, {"test": [0.60, 0.58]}, -2.0),  # no validation: the report split
        (True, {"validation": [0.9]}, None),  # evaluated once: none
    ],
)
def test_last_gain_is_the_selection_splits_last_evaluation_interval(higher, values, gain):
    from harness.report.frames import last_gain

    curve = [
        {"step": 10 * (i + 1), "split": split, "values": {"m": value, "loss": 0.0}}
        for split, series in values.items()
        for i, value in enumerate(series)
    ][::-1]  # order of the steps, not the list
    found = last_gain({"curve": curve, "higher_is_better": higher}, "m", "test")
    assert math.isnan(found) if gain is None else found == pytest.approx(gain)


def test_a_value_that_rounds_to_zero_prints_as_zero_never_minus_zero():
    from harness.report.markdown import with_interval

    assert with_interval(-0.0001, -0.024, 0.026, 3) == "0.000 [-0.024, 0.026]"  # head-only's normalised score
    assert with_interval(-0.0006, float("nan"), float("nan"), 3) == "-0.001"


def test_a_results_folder_that_does_not_exist_is_refused_and_nothing_is_written(tmp_path):
    missing, out = tmp_path / "no_such_results", tmp_path / "out"
    with pytest.raises(SystemExit, match=r"--results-dir .*no_such_results does not exist; give a results folder"):
        main(["--results-dir", str(missing), "--out", str(out)])
    assert not missing.exists() and not out.exists()
