"""Write the mutation-testing report from mutmut's own result files.

Run from the repository root after `mutmut run` (scripts/mutation.sh does both):

    python scripts/mutation_report.py [--output results/quality/mutation.md]
        [--survivors results/quality/survivors.txt] [--equivalents results/quality/equivalent_mutants.toml]
        [--command "..."] [--started ISO] [--wall-seconds N]

The verdicts come from mutmut itself: its per-file result files mutants/<path>.meta (read through
mutmut's SourceFileMutationData), the exit-code -> status table mutmut uses for `mutmut results`
(mutmut.stats.status_by_exit_code), and mutmut's own diff of each mutant (the diff `mutmut show NAME`
prints). Mutants declared equivalent in the equivalents file (mutant name -> reason) are subtracted
before the kill rate is computed:

    kill rate = killed / (mutants - equivalent)

so "no tests", "timeout", "suspicious", "segfault" and "not checked" count as not killed. Timeouts
are listed separately: a mutant that makes the tests hang is usually caught, but it is checked by hand
(declare it equivalent-with-reason "timeout: ..." if so) rather than counted silently.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent

# Column order of the per-file table; every mutmut status lands in exactly one column.
OTHER_STATUSES = [
    "timeout",
    "suspicious",
    "segfault",
    "no tests",
    "skipped",
    "caught by type check",
    "not checked",
    "check was interrupted by user",
]

LIMITS = """\
What mutmut {version} does not mutate (so no test is measured against it):
- code outside top-level functions and methods of top-level classes: module-level statements,
  class bodies (dataclass field defaults, class constants such as `name = "lora"`), nested classes;
- decorated functions other than @staticmethod/@classmethod: @property and @torch.no_grad() methods
  are skipped whole (listed below; moving `torch.no_grad()` into a `with` block inside the body would
  bring them under test);
- type annotations, decorators, calls to len()/isinstance(), and default values of parameters that are
  not plain names, numbers or strings;
- lines marked `# pragma: no mutate`.
Test selection: mutmut records, while running every selected test once, which mutated functions each
test calls (a trampoline around every function, not line coverage), and runs only those tests
against a function's mutants, with `-x` (first failure kills). Calls made while modules are imported or
tests are collected (the method registry, `parametrize` over METHODS) belong to no test, so a mutant
reached only there reads "no tests"."""


def load_equivalents(path: Path) -> dict[str, str]:
    """`[equivalent]` table of the TOML file: mutant name -> reason (names with dots/ǁ are quoted)."""
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text("utf-8"))
    table = data.get("equivalent", {})
    bad = [name for name, reason in table.items() if not isinstance(reason, str) or not reason.strip()]
    if bad:
        raise SystemExit(f"{path}: every equivalent mutant needs a non-empty reason: {bad}")
    return dict(table)


def mutmut_results() -> tuple[dict[str, dict[str, str]], dict[str, float], str]:
    """{source file: {mutant name: status}} from mutmut's .meta files, mutmut's estimate of the test
    seconds per file (sum over its mutants of the selected tests' durations), and mutmut's version."""
    import mutmut
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    results: dict[str, dict[str, str]] = {}
    seconds: dict[str, float] = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        results[str(path)] = {name: status_by_exit_code[code] for name, code in data.exit_code_by_key.items()}
        seconds[str(path)] = sum(data.estimated_time_of_tests_by_mutant.values())
    return results, seconds, getattr(mutmut, "__version__", "?")


def tests_by_function() -> dict[str, list[str]]:
    """mutmut's test selection (mutants/mutmut-stats.json): mangled function name -> tests that call it."""
    stats = Path("mutants/mutmut-stats.json")
    if not stats.exists():
        return {}
    return json.loads(stats.read_text("utf-8")).get("tests_by_mangled_function_name", {})


def source_line(path: str, name: str, diff: str) -> int | None:
    """Line in the source file of the first line the mutant removes (searched inside its function)."""
    removed = [line[1:].strip() for line in changed_lines(diff) if line.startswith("-")]
    if not removed:
        return None
    qualified = function_of(name).split(".")
    source = (ROOT / path).read_text("utf-8").splitlines()
    for node in ast.walk(ast.parse("\n".join(source))):
        if isinstance(node, ast.ClassDef) and len(qualified) == 2 and node.name == qualified[0]:
            nodes = [
                n
                for n in node.body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == qualified[1]
            ]
        elif isinstance(node, ast.Module) and len(qualified) == 1:
            nodes = [
                n
                for n in node.body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == qualified[0]
            ]
        else:
            continue
        for func in nodes:
            for number in range(func.lineno, func.end_lineno + 1):
                if source[number - 1].strip() == removed[0]:
                    return number
    return None


def mutant_diff(name: str, path: str) -> str:
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        return get_diff_for_mutant(name, path=path)
    except Exception:  # internal API moved: fall back to the CLI
        done = subprocess.run(["mutmut", "show", name], capture_output=True, text=True)
        return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("# "))


def changed_lines(diff: str) -> list[str]:
    return [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def function_of(name: str) -> str:
    """methods.lora.xǁLoRALinearǁforward__mutmut_3 -> LoRALinear.forward; methods.inject.x_f__mutmut_1 -> f"""
    local = name.rpartition(".")[2].rpartition("__mutmut_")[0]
    if local.startswith("xǁ"):
        _, cls, func = local.split("ǁ")
        return f"{cls}.{func}"
    return local[2:] if local.startswith("x_") else local


def unmutated_functions(path: str) -> list[str]:
    """Functions/methods mutmut skips because of a decorator (other than staticmethod/classmethod)."""
    tree = ast.parse((ROOT / path).read_text("utf-8"))
    skipped = []

    def decorated(node: ast.AST) -> str | None:
        names = [ast.unparse(d) for d in node.decorator_list]
        if not names or names in (["staticmethod"], ["classmethod"]):
            return None
        return ", ".join("@" + n for n in names)

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and decorated(node):
            skipped.append(f"{node.name} ({decorated(node)})")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and decorated(item):
                    skipped.append(f"{node.name}.{item.name} ({decorated(item)})")
    return skipped


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/quality/mutation.md")
    parser.add_argument(
        "--survivors",
        default="results/quality/survivors.txt",
        help="plain-text list of every mutant not killed, with its full diff",
    )
    parser.add_argument("--equivalents", default="results/quality/equivalent_mutants.toml")
    parser.add_argument("--command", default="bash scripts/mutation.sh")
    parser.add_argument("--started", default=None, help="ISO time the run started")
    parser.add_argument("--wall-seconds", type=float, default=None, help="wall time of `mutmut run`")
    parser.add_argument("--note", action="append", default=[], help="extra line for the header (repeatable)")
    args = parser.parse_args()

    os.chdir(ROOT)  # mutmut's config and mutants/ are read relative to the cwd
    sys.path.insert(0, str(ROOT))
    if not Path("mutants").is_dir():
        raise SystemExit("no mutants/ folder: run `bash scripts/mutation.sh` (or `mutmut run`) first")

    results, seconds, version = mutmut_results()
    selection = tests_by_function()
    equivalents = load_equivalents(ROOT / args.equivalents)
    all_names = {name for by_name in results.values() for name in by_name}
    stale = sorted(set(equivalents) - all_names)
    killed_but_declared = sorted(
        n for by_name in results.values() for n, s in by_name.items() if s == "killed" and n in equivalents
    )

    rows, totals = [], Counter()
    not_killed: list[tuple[str, str, str]] = []  # (file, name, status)
    for path in sorted(results):
        statuses = results[path]
        count = Counter(statuses.values())
        equivalent = sum(1 for n, s in statuses.items() if n in equivalents and s != "killed")
        row = Counter(
            mutants=len(statuses),
            killed=count["killed"],
            survived=count["survived"],
            equivalent=equivalent,
            **{s: count[s] for s in OTHER_STATUSES},
        )
        row["test seconds (est.)"] = round(seconds.get(path, 0.0))
        rows.append((path, row))
        totals.update(row)
        not_killed += [(path, n, s) for n, s in sorted(statuses.items()) if s != "killed"]

    def rate(row: Counter) -> str:
        tested = row["mutants"] - row["equivalent"]
        return f"{100 * row['killed'] / tested:.1f} %" if tested else "—"

    others = [s for s in OTHER_STATUSES if totals[s]]
    head = ["file", "mutants", "killed", "survived", *others, "equivalent", "test seconds (est.)", "kill rate"]
    lines = []
    started = args.started or datetime.now(timezone.utc).isoformat(timespec="seconds")
    wall = f"{args.wall_seconds / 60:.1f} min ({args.wall_seconds:.0f} s)" if args.wall_seconds else "not given"
    lines += [
        "# Mutation testing: methods/ and optimizers/ against their tests",
        "",
        f"- Command: `{args.command}` (mutmut {version}; config in `pyproject.toml` `[tool.mutmut]`)",
        f"- Run started: {started}; wall time of `mutmut run`: {wall}",
        f"- Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "- test seconds (est.): mutmut's worst-case estimate per file, the sum over its mutants of the "
        "durations of the tests selected for each (killed mutants stop at the first failing test).",
        "- Kill rate = killed / (mutants − equivalent); timeout, suspicious, no tests and not checked count "
        "as not killed. Equivalent mutants are declared in "
        f"`{args.equivalents}` (mutant name → reason).",
        *[f"- {note}" for note in args.note],
        "",
        "## Per file",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for path, row in rows:
        lines.append("| " + " | ".join([f"`{path}`", *(str(row[h]) for h in head[1:-1]), rate(row)]) + " |")
    lines.append(
        "| " + " | ".join(["**total**", *(f"**{totals[h]}**" for h in head[1:-1]), f"**{rate(totals)}**"]) + " |"
    )
    lines.append("")
    if stale or killed_but_declared:
        lines += ["## Equivalents file needs attention", ""]
        lines += [f"- `{n}`: declared equivalent but no such mutant (renamed/removed?)" for n in stale]
        lines += [f"- `{n}`: declared equivalent but killed (remove it)" for n in killed_but_declared]
        lines.append("")

    lines += ["## Limits", "", "```", LIMITS.format(version=version), "```", ""]
    skipped = {path: unmutated_functions(path) for path, _ in rows}
    skipped = {p: s for p, s in skipped.items() if s}
    if skipped:
        lines += ["Functions skipped whole because of a decorator:", ""]
        lines += [f"- `{p}`: " + ", ".join(f"`{s}`" for s in funcs) for p, funcs in skipped.items()]
        lines.append("")

    # Survivors (and every other mutant that was not killed), one table per file.
    by_function = defaultdict(Counter)
    for path, name, _status in not_killed:
        if name not in equivalents:
            by_function[path][function_of(name)] += 1
    lines += ["## Not killed, per function (excluding declared equivalents)", ""]
    for path in sorted(by_function):
        funcs = ", ".join(f"`{f}` {n}" for f, n in by_function[path].most_common())
        lines.append(f"- `{path}`: {funcs}")
    lines += [
        "",
        "## Surviving mutants",
        "",
        f"Every mutant not killed, with the mutated lines (full diffs: `{args.survivors}`, or "
        '`mutmut show NAME`). To declare one equivalent, add `"NAME" = "reason"` under '
        f"`[equivalent]` in `{args.equivalents}` and rerun the report.",
        "",
    ]
    blocks = []
    for path in sorted({p for p, _, _ in not_killed}):
        lines += [f"### `{path}`", "", "| mutant | status | change | equivalent: reason |", "|---|---|---|---|"]
        for p, name, status in not_killed:
            if p != path:
                continue
            diff = mutant_diff(name, path)
            change = "<br>".join(
                f"`{md_cell(line.strip()[:1] + ' ' + line[1:].strip())[:160]}`" for line in changed_lines(diff)[:6]
            )
            reason = md_cell(equivalents.get(name, ""))
            where = source_line(path, name, diff)
            lines.append(
                f"| `{name.rpartition('.')[2]}` | {status} | {f'L{where} ' if where else ''}{change} | {reason} |"
            )
            line = source_line(path, name, diff)
            tests = selection.get(name.rpartition("__mutmut_")[0], [])
            per_file = Counter(t.split("::")[0] for t in tests)
            blocks.append(
                "\n".join(
                    [
                        "=" * 100,
                        f"name: {name}",
                        f"file: {path}",
                        f"line: {line if line else '?'}",
                        f"function: {function_of(name)}",
                        f"status: {status}",
                        f"equivalent: {equivalents.get(name, '')}",
                        f"tests: {len(tests)} (" + ", ".join(f"{f} {n}" for f, n in sorted(per_file.items())) + ")",
                        "diff:",
                        diff,
                        "",
                    ]
                )
            )
        lines.append("")

    output = ROOT / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines).rstrip() + "\n", "utf-8")
    survivors = ROOT / args.survivors
    survivors.parent.mkdir(parents=True, exist_ok=True)
    survivors.write_text(
        f"# mutants not killed: {len(not_killed)} ("
        + ", ".join(f"{s} {totals[s]}" for s in ["survived", *others])
        + f"); run started {started}\n"
        "# one block per mutant: name, file, line (of the first removed line), function, status, equivalent\n"
        "# (reason if declared), tests (how many mutmut ran against it; all passed for a survivor, per file),\n"
        "# then mutmut's unified diff of the function (what `mutmut show NAME` prints)\n" + "".join(blocks),
        "utf-8",
    )
    print(
        f"wrote {output} and {survivors}: "
        f"{totals['mutants']} mutants, {totals['killed']} killed, {totals['survived']} survived, "
        f"kill rate {rate(totals)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
