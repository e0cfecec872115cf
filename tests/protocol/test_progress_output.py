"""What the command line shows while it works: the first line before torch is imported,
Ctrl-C during the imports, the bar's "evaluating <split> k/n", validation score and ETA with evaluation,
a duplicate run key counted once; `harness.tune --dry-run`'s progress and its composition per cell."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from hydra import compose
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from harness.__main__ import NOT_STARTED
from harness.config.compose import project_config
from harness.engine.evaluate import predict
from harness.engine.train import BarStatus, Plan, evaluations_after, time_left
from harness.protocol.announce import first_line
from harness.protocol.cells import Composer, plan_cells
from harness.protocol.plan import shared_keys
from harness.protocol.progress import PLAN_FILE, Counter, write_plan
from harness.protocol.spec import parse_protocol
from harness.protocol.tune import main as tune
from harness.store.identity import identify

ROOT = Path(__file__).resolve().parents[2]

# `python -m harness` with a stand-in application (harness.protocol.app) that reports what it found imported
FAKE_APP = textwrap.dedent(
    """
    import runpy, sys, types
    app = types.ModuleType("harness.protocol.app")
    def main():
        print("main: torch imported" if "torch" in sys.modules else "main: torch not imported", file=sys.stderr)
        if sys.argv[-1] == "interrupt=yes":
            raise KeyboardInterrupt
    app.main = main
    sys.modules["harness.protocol.app"] = app
    sys.argv = ["harness", *sys.argv[1:]]
    runpy.run_module("harness", run_name="__main__")
    """
)


def fake_harness(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", FAKE_APP, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_first_line_says_what_runs_and_where_before_torch_is_imported():
    done = fake_harness("method=full", "seed=3", "results_dir=/tmp/elsewhere")
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "peft-harness: 1 run (full | bbc_news | minilm | seed 3) → /tmp/elsewhere/runs/; "
        "loading torch and the config ...",
        "main: torch not imported",
    ]


def test_the_real_first_line_comes_before_any_torch_module_is_imported(tmp_path):
    done = subprocess.run(  # seed=0,1 without -m: refused after the config (and torch) loaded
        [sys.executable, "-X", "importtime", "-m", "harness", "seed=0,1", f"results_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("peft-harness: 2 runs (seed=0,1) → "))
    torch_imported = next(n for n, line in enumerate(lines) if re.search(r"\|\s+torch(\.|$)", line))
    assert first < torch_imported and done.returncode == 2


def test_the_first_line_counts_a_sweeps_runs_and_names_an_experiments_folder():
    assert first_line(["-m", "method=lora,full", "seed=0,1,2"]) == (
        "peft-harness: 6 runs (method=lora,full × seed=0,1,2) → results/runs/; loading torch and the config ..."
    )
    assert first_line([]) == (
        "peft-harness: 1 run (lora | bbc_news | minilm | seed 0) → results/runs/; loading torch and the config ..."
    )
    assert first_line(["experiment=rac_lora_mnist", "seed=0,1"]) == (
        "peft-harness: the runs of experiment=rac_lora_mnist × seed=0,1 → results/rac_lora_mnist/runs/; "
        "loading torch and the config ..."
    )
    assert first_line(["-m", "method=glob(*)"]) == (
        "peft-harness: a sweep (method=glob(*)) → results/runs/; loading torch and the config ..."
    )
    for quiet in (["--cfg", "job"], ["--help"], ["seed=0", "--dry-run"], ["seed=["], ["method=dorra"]):
        assert first_line(quiet) is None


def test_ctrl_c_before_a_run_is_one_line_and_exit_130():
    done = fake_harness("interrupt=yes")
    assert done.returncode == 130
    assert (
        done.stderr.splitlines()[-1]
        == NOT_STARTED
        == ("interrupted by SIGINT before any run started; nothing recorded")
    )
    assert "Traceback" not in done.stderr


def test_sigint_inside_import_torch_is_one_line_and_records_nothing(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-m", "harness", f"results_dir={tmp_path}"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # as a terminal starts it: a shell's background job (`... &`, a CI script run so) inherits SIGINT ignored,
        # and Python then installs no KeyboardInterrupt handler of its own
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first = child.stderr.readline()
    assert first.startswith("peft-harness: 1 run (lora | bbc_news | minilm | seed 0)")
    child.send_signal(signal.SIGINT)  # the application's own handler is installed seconds later, after torch
    rest = child.stderr.read()
    assert child.wait(timeout=60) == 130
    assert rest.splitlines() == [NOT_STARTED]
    assert not (tmp_path / "runs").exists()


def test_the_bar_says_evaluating_split_k_of_n_then_shows_the_validation_score():
    bar = tqdm(total=10, file=io.StringIO(), mininterval=0)
    status = BarStatus(bar)
    status.parts["loss"] = "loss 0.6931"
    status.batches_of("validation")(3, 12)
    assert bar.postfix == "loss 0.6931, evaluating validation 3/12"
    status.parts["score"] = "validation accuracy 81.25"
    status.show()
    assert bar.postfix == "loss 0.6931, validation accuracy 81.25"
    assert BarStatus(tqdm(total=1, disable=True)).batches_of("validation") is None  # no bar, no per-batch report


class Split:
    """Four examples in the evaluation order [3, 2, 1, 0]; a batch is their indices as a tensor."""

    def __len__(self):
        return 4

    def eval_order(self):
        return [3, 2, 1, 0]

    def batch(self, indices, pad_id):
        return {"x": torch.tensor(indices, dtype=torch.float32)[:, None], "labels": torch.zeros(len(indices))}


class Model(torch.nn.Module):
    def forward(self, x):
        return type("Out", (), {"logits": torch.cat([x, -x], dim=1)})()


def test_evaluation_reports_each_batch_k_of_n():
    reported = []
    outputs = predict(Model(), Split(), 3, 0, torch.device("cpu"), None, lambda k, n: reported.append((k, n)))
    assert reported == [(1, 2), (2, 2)]
    assert np.array_equal(outputs[:, 0], [0, 1, 2, 3])


def test_the_eta_adds_the_evaluations_left_at_their_measured_seconds():
    plan = Plan(total_steps=100, steps_per_epoch=25, eval_every=25, warmup_steps=0)
    assert [evaluations_after(step, plan) for step in (0, 10, 25, 99, 100)] == [4, 4, 3, 1, 0]
    odd = Plan(total_steps=10, steps_per_epoch=4, eval_every=4, warmup_steps=0)  # evaluations at 4, 8 and 10
    assert [evaluations_after(step, odd) for step in (0, 4, 8, 9, 10)] == [3, 2, 1, 1, 0]
    # 90 steps × 0.5 s + 4 evaluations × 4 s = 61 s
    assert time_left(10, plan, 0.5, 4.0) == "ETA 01:01"
    assert time_left(10, plan, 0.5, None) == "ETA 00:45 + 4 evaluations"  # none measured yet: counted, not timed
    assert time_left(100, plan, 0.5, None) == "ETA 00:00"


def test_a_run_key_given_twice_is_planned_once_and_said_so(tmp_path, capsys):
    runs = [["results_dir=x", "seed=0"], ["results_dir=x", "seed=0"], ["results_dir=x", "seed=1"]]
    once = "seed=0,0: 2 runs with the same run key k0; counted once"
    assert shared_keys(runs, ["k0", "k0", "k1"], ["seed"]) == [once]
    config = OmegaConf.create(
        {
            "results_dir": str(tmp_path),
            "logger": {"use": {"csv": True}},
            "hydra": {
                "overrides": {"task": ["seed=0,0", "model=tiny_bert"]},
                "sweep": {"dir": str(tmp_path / "sweep")},
            },
        }
    )
    with project_config():
        write_plan(config)
    plan = json.loads((tmp_path / "sweep" / PLAN_FILE).read_text())
    assert len(plan["keys"]) == 1 and plan["done_before"] == [] and plan["runs_table"] is True
    assert capsys.readouterr().err.splitlines() == [
        f"seed=0,0: 2 runs with the same run key {plan['keys'][0]}; counted once",
        f"[sweep plan] 1 run, 0 already succeeded → {tmp_path / 'runs'}/",
    ]


def test_a_counter_shows_k_of_n_and_the_seconds_at_the_end():
    stream = io.StringIO()
    counter = Counter("cells composed", every=0.0, stream=stream)
    for done in (1, 2, 3):
        counter(done, 3)
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["cells composed 1/3", "cells composed 2/3"]
    assert lines[2].startswith("cells composed 3/3 (") and lines[2].endswith(" s)")
    quiet = io.StringIO()
    counter = Counter("cells composed", every=60.0, stream=quiet)
    counter(1, 3), counter(2, 3)
    assert quiet.getvalue() == ""  # not a terminal: a line at most every minute, then the end


SMALL_PROTOCOL = ["sweep=official", "protocol.suites=[{model:tiny_bert,tasks:[bbc_news],methods:[head,lora]}]"]


def test_tune_dry_run_shows_its_progress_and_the_plan(tmp_path, capsys):
    tune(["--dry-run", *SMALL_PROTOCOL, f"results_dir={tmp_path}"])
    out, err = capsys.readouterr()
    assert [line.split(" (")[0] for line in err.splitlines()] == [
        "cells composed 2/2",
        "cells' runs keyed and their records read 2/2",
    ]
    assert out.splitlines()[0].startswith("protocol: 2 (model, method, task) cells × (4 search trials on seed 0")
    assert not (tmp_path / "runs").exists()


def test_runs_derived_from_their_cells_composition_equal_hydras_own():
    with project_config():
        composer = Composer([SMALL_PROTOCOL[0]])
        protocol = parse_protocol(composer(SMALL_PROTOCOL[1:]))
        (cell, _) = plan_cells(protocol, Composer(SMALL_PROTOCOL))
        for run in (cell.run(protocol, 1, 0), cell.run(protocol, -1, 3, "seeds")):
            ours, hydras = composer(run), compose("config", overrides=[SMALL_PROTOCOL[0], *run])
            assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydras)
            assert identify(ours).key == identify(hydras).key
