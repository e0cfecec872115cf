"""scripts/write_method_defaults.py: a protocol's picks on the default model and task become the methods'
default lr and head lr in conf/method, only where the protocol pins the search's centre."""

import importlib.util
from pathlib import Path

import pytest

from harness.config.compose import project_config
from harness.config.preflight import CONF_DIR
from harness.errors import HarnessError
from harness.protocol.cells import Cell, Composer, plan_cells
from harness.protocol.spec import Protocol, Search, Suite, parse_protocol
from harness.store.records import RecordStore
from tests.protocol.written_runs import write_run

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "write_method_defaults.py"
spec = importlib.util.spec_from_file_location("write_method_defaults", SCRIPT)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def copy_method_configs(conf_dir, *names):
    (conf_dir / "method").mkdir()
    for name in names:
        (conf_dir / "method" / f"{name}.yaml").write_text((CONF_DIR / "method" / f"{name}.yaml").read_text())


def test_defaults_follow_the_pick_and_the_pinned_centre_keeps_the_grid(tmp_path):
    """The lr/head lr lines of conf/method/<m>.yaml become the pick on the default model and task (comments
    elsewhere kept; other cells and unfinished searches untouched); the protocol's pinned centre keeps its
    runs' overrides (and so their keys) where they were."""
    copy_method_configs(tmp_path, "lora", "head")
    suite = Suite("minilm", ["bbc_news", "tweet_sentiment"], ["lora", "head"])
    pins = ["method.lr=0.001", "method.head_lr=0.005"]
    cells = [
        Cell(suite, "lora", "bbc_news", 1e-3, 5e-3, "lr", pins),
        Cell(suite, "lora", "tweet_sentiment", 1e-3, 5e-3, "lr", pins),
        Cell(suite, "head", "bbc_news", 1e-3, 5e-3, "head_lr", pins),
    ]
    protocol = Protocol(
        0,
        [0, 1],
        Search([-1, 0, 1], 4, 3.0),
        "validation",
        str(tmp_path),
        [suite],
        {"head": "head_lr"},
        {"lora": {"lr": 1e-3, "head_lr": 5e-3}, "head": {"lr": 1e-3, "head_lr": 5e-3}},
    )
    searches = {
        ("lora", "bbc_news"): ([], {-1: 0.90, 0: 0.95, 1: 0.97, 2: 0.96}),  # pick: j = 1 → lr 3e-3
        ("lora", "tweet_sentiment"): ([], {-1: 0.99, 0: 0.5, 1: 0.5, -2: 0.5}),
        ("head", "bbc_news"): ([2], {-1: 0.5, 0: 0.6, 1: 0.7}),
    }  # unfinished: left alone
    outcomes = type("Outcomes", (), {"search": lambda self, cell: searches[(cell.method, cell.task)]})()
    changes = script.write_method_defaults(cells, protocol, outcomes, tmp_path, "minilm", "bbc_news")
    assert changes == ["lora: lr 0.001 -> 0.003, head_lr 0.005 -> 0.005"]
    text = (tmp_path / "method" / "lora.yaml").read_text()
    assert (
        "\nlr: 0.003  # the official protocol's pick on minilm/bbc_news" in text
        and "\nhead_lr: 0.005  # the official" in text
    )
    assert text.splitlines()[0] == (CONF_DIR / "method" / "lora.yaml").read_text().splitlines()[0]
    assert (tmp_path / "method" / "head.yaml").read_text() == (CONF_DIR / "method" / "head.yaml").read_text()
    assert cells[0].base_overrides()[3:5] == pins  # the grid's centre: the pinned values, whatever the YAML now says
    with pytest.raises(HarnessError, match="pin its search centre in protocol.centres"):
        script.write_method_defaults(
            cells,
            Protocol(0, [0], Search([0], 1, 3.0), "validation", "", [suite]),
            outcomes,
            tmp_path,
            "minilm",
            "bbc_news",
        )


NARROWED = [
    "sweep=official",
    "protocol.suites=[{model:minilm,tasks:[bbc_news],methods:[lora]}]",
    "protocol.search.initial=[0,1]",
    "protocol.search.trials=2",
]


def test_the_script_reads_the_protocols_records_and_rewrites_the_method_config(tmp_path, capsys):
    """Through the command line: nothing to do before the search is complete, then the pick (×3 around the
    pinned centre lr 0.001) replaces lora's default lr 0.009."""
    copy_method_configs(tmp_path, "lora")
    overrides = [*NARROWED, f"results_dir={tmp_path / 'results'}"]
    script.main(overrides, conf_dir=tmp_path)
    assert capsys.readouterr().out == "no complete search on the default model and task yet\n"
    assert (tmp_path / "method" / "lora.yaml").read_text() == (CONF_DIR / "method" / "lora.yaml").read_text()
    with project_config():
        composer = Composer(overrides)
        protocol = parse_protocol(composer([]))
        (cell,) = plan_cells(protocol, composer)
        store = RecordStore(tmp_path / "results")
        write_run(store, composer, cell.run(protocol, 0, 0), 0.8, 0.8)
    script.main(overrides, conf_dir=tmp_path)
    assert capsys.readouterr().out == "no complete search on the default model and task yet\n"
    with project_config():
        write_run(store, composer, cell.run(protocol, 1, 0), 0.9, 0.8)
    script.main(overrides, conf_dir=tmp_path)
    assert capsys.readouterr().out == "lora: lr 0.001 -> 0.003, head_lr 0.005 -> 0.005\n"
    assert (
        "\nlr: 0.003  # the official protocol's pick on minilm/bbc_news"
        in (tmp_path / "method" / "lora.yaml").read_text()
    )


def test_a_method_without_a_pinned_centre_is_refused_in_one_line(tmp_path):
    copy_method_configs(tmp_path, "lora")
    with pytest.raises(SystemExit) as exit:
        script.main([*NARROWED, "~protocol.centres", f"results_dir={tmp_path}"], conf_dir=tmp_path)
    assert str(exit.value) == (
        "error: lora: pin its search centre in protocol.centres before moving its default (else the protocol's "
        "grid, and its runs' keys, would move with it)"
    )
