"""Set each method's default lr and head lr (conf/method/<method>.yaml) to a tuning protocol's pick on the
default model and task (those of the plain default run, `python -m harness`).

    python scripts/write_method_defaults.py sweep=official [overrides...]

Reads the protocol's records (its `results_dir`), runs nothing. Only the methods whose search on the
default (model, task) is complete move; each moves only once its search centre is pinned in the protocol
(`protocol.centres`), so that the protocol's grid, and its runs' keys, stay where they were when the
default changes. The `lr:` and `head_lr:` lines of the method's YAML are rewritten in place (the rest of
the file, comments included, is kept) and noted as the protocol's pick; one line per change is printed.
"""

import argparse
import re
from pathlib import Path

from hydra import compose

from harness.config.compose import project_config
from harness.config.preflight import CONF_DIR
from harness.errors import HarnessError
from harness.protocol import lr_search
from harness.protocol.cells import Cell
from harness.protocol.outcomes import Outcomes
from harness.protocol.spec import Protocol
from harness.protocol.tune import set_up

DEFAULT_LINE = r"^({key}:\s*)[^\s#]+(\s*#.*)?$"  # `key: value  # comment`: the value and the comment replaced


def write_method_defaults(
    cells: list[Cell], protocol: Protocol, outcomes: Outcomes, conf_dir: Path, model: str, task: str
) -> list[str]:
    """Each method's default lr and head lr (<conf_dir>/method/<method>.yaml) set to the protocol's pick on
    (model, task), for the methods whose search there is complete; an error for a method whose centre is not
    pinned (protocol.centres). Returns one line per change."""
    changes = []
    for cell in cells:
        if (cell.suite.model, cell.task) != (model, task):
            continue
        if cell.method not in protocol.centres:
            raise HarnessError(
                f"{cell.method}: pin its search centre in protocol.centres before moving its default "
                f"(else the protocol's grid, and its runs' keys, would move with it)"
            )
        todo, scores = outcomes.search(cell)
        if todo or not scores or all(score == lr_search.FAILED for score in scores.values()):
            continue
        lr, head_lr = cell.values(lr_search.best_exponent(scores), protocol.search.step)
        path = conf_dir / "method" / f"{cell.method}.yaml"
        text = path.read_text()
        for key, value in (("lr", lr), ("head_lr", head_lr)):
            note = f"  # the official protocol's pick on {model}/{task} (results/official/tuning.csv)"
            text, count = re.subn(
                DEFAULT_LINE.format(key=key), lambda m: f"{m.group(1)}{value:g}{note}", text, count=1, flags=re.M
            )
            if count != 1:
                raise HarnessError(f"{path}: no '{key}:' line to update")
        path.write_text(text)
        changes.append(f"{cell.method}: lr {cell.lr:g} -> {lr:g}, head_lr {cell.head_lr:g} -> {head_lr:g}")
    return changes


def main(argv: list[str] | None = None, conf_dir: Path = CONF_DIR) -> None:
    parser = argparse.ArgumentParser(
        prog="python scripts/write_method_defaults.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("overrides", nargs="*", help="config overrides: sweep=<protocol sweep> first, then any others")
    args = parser.parse_args(argv)
    try:
        with project_config():
            _, cells, outcomes = set_up(args.overrides)
            defaults = compose("config")  # the plain default run (python -m harness): its model and task
            changes = write_method_defaults(
                cells, outcomes.protocol, outcomes, conf_dir, defaults.model.name, defaults.task.name
            )
    except HarnessError as error:
        raise SystemExit(f"error: {error}") from None
    print("\n".join(changes) or "no complete search on the default model and task yet")


if __name__ == "__main__":
    main()
