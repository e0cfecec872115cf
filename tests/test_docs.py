"""The README and docs/ stay true: every relative link resolves (the file, and an #anchor to a heading
that exists there), and every `python -m ...` command they quote is a valid command line.

Commands are checked without running anything: `python -m harness ...` (also under torchrun) through the
same command-line checks the app runs before it loads a model (unknown choices and keys, bad values,
sweeps without -m); `python -m harness.tune|leaderboard|verify|bench ...` by their own argument parsers,
stopped right after parsing, plus the names they point at (a collection, a paper table, a model config);
`python -m pytest ...` by its markers, plugins and paths. Scripts quoted as `bash X` or `python X` must
exist. The slow variant asks the real entry points in a subprocess: Hydra commands with `--cfg job`, the
others with `--help`. And no source file cites an issue number or a design file outside the repository."""

import argparse
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

from harness.config.preflight import CONF_DIR, command_line_problems, first_values, overrides_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE_COMMAND = re.compile(r"`(python -m [^`]+)`")
SEPARATORS = {"&&", "||", "&", ";", "|"}


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def without_fences(text: str) -> str:
    """The text with fenced code blocks blanked (their lines kept, so line numbers stay right)."""
    return FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in without_fences(path.read_text()).splitlines():
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links() -> list[tuple[str, int, str]]:
    """(document, line, target) of every relative link outside code blocks."""
    found = []
    for doc in DOCS:
        for number, line in enumerate(without_fences(doc.read_text()).splitlines(), start=1):
            for target in LINK.findall(line):
                if not re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked
                    found.append((relative(doc), number, target))
    return found


def link_problem(doc: str, target: str) -> str | None:
    file_part, _, anchor = target.partition("#")
    path = (ROOT / doc).parent / file_part if file_part else ROOT / doc
    if not path.exists():
        return f"{target}: no such file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    if anchor:
        if path.suffix != ".md":
            return f"{target}: an anchor into a file that is not markdown"
        if anchor not in anchors(path):
            return f"{target}: no heading with anchor #{anchor} in {relative(path.resolve())}"
    return None


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.words)}"


def segments(words: list[str]) -> list[list[str]]:
    """A shell line's commands, split at &&, ||, &, ;, |."""
    parts, current = [], []
    for word in words:
        if word in SEPARATORS:
            parts.append(current)
            current = []
        else:
            current.append(word)
    return [part for part in [*parts, current] if part]


def shell_words(line: str) -> list[str]:
    line = re.sub(r"\$\([^)]*\)", "HOST", line)  # a command substitution is one word
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split, lexer.commenters = True, "#"
    return list(lexer)


def commands_in(doc: Path) -> list[Command]:
    """Every command of the document's ```bash blocks (continuation lines joined), and every
    `python -m ...` quoted inline."""
    text, found = doc.read_text(), []
    for match in FENCE.finditer(text):
        if match.group(1).strip() not in ("bash", "sh", "console"):
            continue
        first = text.count("\n", 0, match.start(2)) + 1
        joined, start = "", None
        for offset, line in enumerate(match.group(2).splitlines()):
            start = first + offset if start is None else start
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            for words in segments(shell_words(joined + line)):
                found.append(Command(relative(doc), start, tuple(words)))
            joined, start = "", None
    for number, line in enumerate(without_fences(text).splitlines(), start=1):
        for quoted in INLINE_COMMAND.findall(line):
            found.append(Command(relative(doc), number, tuple(shell_words(quoted))))
    return found


def module_and_arguments(words: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """`python -m M args` → (M, args); `torchrun ... -m harness args` (also under srun) → ("harness", args).
    A trailing `...` (any further overrides) is left out; `python -m ...` alone names no command."""
    words = list(words)
    if words[-1] == "...":
        words = words[:-1]
    if words[:2] == ["python", "-m"] and len(words) > 2:
        return words[2], words[3:]
    if "torchrun" in words and "-m" in words[words.index("torchrun") :]:
        at = words.index("-m", words.index("torchrun"))
        return words[at + 1], words[at + 2 :]
    return None


def all_commands() -> list[Command]:
    return [command for doc in DOCS for command in commands_in(doc)]


def python_commands() -> list[Command]:
    return [command for command in all_commands() if module_and_arguments(command.words)]


class Parsed(Exception):
    """Raised right after an argument parser succeeded: the command stops before doing anything."""

    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def parsed_arguments(main, arguments: list[str], monkeypatch, capsys) -> argparse.Namespace:
    """The namespace `main(arguments)` parses; fails with the parser's message where it refuses them."""
    for name in ("parse_args", "parse_intermixed_args"):
        original = getattr(argparse.ArgumentParser, name)

        def parse_then_stop(parser, args=None, namespace=None, original=original):
            raise Parsed(original(parser, args, namespace))

        monkeypatch.setattr(argparse.ArgumentParser, name, parse_then_stop)
    try:
        main(arguments)
    except Parsed as parsed:
        return parsed.namespace
    except SystemExit as exit:
        pytest.fail(f"refused (exit {exit.code}): {capsys.readouterr().err.strip()}")
    pytest.fail("the command parsed no arguments: it would have run")


def check_tune(arguments, monkeypatch, capsys):
    from harness.protocol.tune import main

    namespace = parsed_arguments(main, arguments, monkeypatch, capsys)
    assert command_line_problems(namespace.overrides) == []


def check_leaderboard(arguments, monkeypatch, capsys):
    from harness.report.leaderboard import main

    namespace = parsed_arguments(main, arguments, monkeypatch, capsys)
    if namespace.paper:
        assert (ROOT / "results" / "reference" / f"{namespace.paper}.csv").is_file(), namespace.paper


def check_verify(arguments, monkeypatch, capsys):
    from harness.protocol.verify import main

    namespace = parsed_arguments(main, arguments, monkeypatch, capsys)
    collection = Path(namespace.collection)
    assert (ROOT / "results" / collection / "runs").is_dir() or (collection / "runs").is_dir(), collection


def check_bench(arguments, monkeypatch, capsys):
    from harness.bench.driver import main

    namespace = parsed_arguments(main, arguments, monkeypatch, capsys)
    assert namespace.model == "roberta_base_random" or (CONF_DIR / "model" / f"{namespace.model}.yaml").is_file()


def check_pytest(arguments, monkeypatch, capsys):
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    markers = {marker.split(":")[0] for marker in settings["markers"]}
    words = iter(arguments)
    for word in words:
        if word == "-m":
            assert set(re.findall(r"\w+", next(words))) - {"not", "and", "or"} <= markers
        elif word == "-n":
            assert importlib.util.find_spec("xdist"), "-n needs pytest-xdist"
            next(words)
        elif not word.startswith("-"):
            assert (ROOT / word.split("::")[0]).exists(), word


def check_clean_items(arguments, monkeypatch, capsys):
    from harness.store.clean_items import main

    assert parsed_arguments(main, arguments, monkeypatch, capsys).tasks


CHECKS = {
    "harness.store.clean_items": check_clean_items,
    "harness.tune": check_tune,
    "harness.leaderboard": check_leaderboard,
    "harness.verify": check_verify,
    "harness.bench": check_bench,
    "pytest": check_pytest,
}


def test_the_docs_are_found():
    names = {path.name for path in DOCS}
    assert {"README.md", "design.md", "glossary.md", "protocol.md", "statistics.md", "scale-out.md"} <= names
    assert len(python_commands()) >= 20  # the extraction finds the quoted commands


def test_readme_is_an_index_of_at_most_200_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("doc, line, target", links(), ids=lambda value: str(value))
def test_relative_link_resolves(doc, line, target):
    assert link_problem(doc, target) is None, f"{doc}:{line}: {link_problem(doc, target)}"


SOURCE_PATH = re.compile(r"(?<![\w/.-])((?:harness|methods|tasks|tests|scripts|conf|docs)/[\w./-]*\w)(?![\w<])")


def example_files(text: str) -> set[str]:
    """The files a document writes out as a worked example: code blocks headed ```python methods/x.py."""
    return {match.group(1).split()[1] for match in FENCE.finditer(text) if len(match.group(1).split()) == 2}


def test_every_source_path_named_in_the_docs_exists():
    """Files and folders of the source named in prose (`harness/engine/train.py`, `conf/sweep/`) exist:
    a module moved or renamed shows here. Outputs (results/...), placeholders (`<name>`) and the files of
    a document's own worked example aside."""
    missing = [
        f"{relative(doc)}:{number}: {path}"
        for doc in DOCS
        for number, line in enumerate(doc.read_text().splitlines(), start=1)
        for path in SOURCE_PATH.findall(line)
        if not (ROOT / path).exists()
        and not (doc.parent / path).exists()
        and path not in example_files(doc.read_text())
    ]
    assert missing == []


def test_every_doc_is_linked_from_the_readme():
    readme_targets = {target.partition("#")[0] for doc, _, target in links() if doc == "README.md"}
    assert {relative(path) for path in DOCS[1:]} <= readme_targets


@pytest.mark.parametrize("command", all_commands(), ids=str)
def test_quoted_script_exists(command):
    words = command.words
    if words[0] in ("bash", "python") and len(words) > 1 and re.search(r"\.(sh|py)$", words[1]):
        assert (ROOT / words[1]).is_file(), f"{command}: no such script"


@pytest.mark.parametrize("command", python_commands(), ids=str)
def test_quoted_command_is_valid(command, monkeypatch, capsys):
    module, arguments = module_and_arguments(command.words)
    assert module == "harness" or module in CHECKS, f"{command}: no check for `python -m {module}` here: add one"
    if module == "harness":
        assert command_line_problems(arguments) == [], str(command)
    else:
        CHECKS[module](arguments, monkeypatch, capsys)


def test_a_wrong_command_is_caught(monkeypatch, capsys):
    """The checks are not vacuous: a misspelt choice, an unknown flag and a missing collection fail."""
    assert command_line_problems(["method=dorra"]) != []
    with pytest.raises(pytest.fail.Exception, match="refused"):
        check_leaderboard(["--stat", "mode"], monkeypatch, capsys)
    with pytest.raises(AssertionError):
        check_verify(["no_such_collection", "--sample", "1"], monkeypatch, capsys)
    assert link_problem("README.md", "docs/design.md#no-such-heading") is not None
    assert OUTSIDE_CITATION.search("(issue 16, item 3)") and OUTSIDE_CITATION.search("see design.md §2")
    assert not OUTSIDE_CITATION.search("see docs/design.md")


OUTSIDE_CITATION = re.compile(r"\bissue \d+|(?<![\w/])design\.md")


def test_no_source_file_cites_an_issue_or_a_design_file_outside_the_repository():
    """Docstrings and comments say things in the project's own words, or point into docs/."""
    sources = [
        path
        for folder in ("harness", "methods", "tasks", "scripts", "tests", "conf")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".sh", ".yaml", ".json", ".toml") and path != Path(__file__).resolve()
    ]
    citing = [
        f"{relative(path)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if OUTSIDE_CITATION.search(line.lower())
    ]
    assert citing == []


def test_headings_give_githubs_anchors():
    assert slug("Every PEFT tuner: `method=peft/<tuner>`") == "every-peft-tuner-methodpefttuner"
    assert slug("Papers' tables") == "papers-tables"
    assert slug("A cell's interval") == "a-cells-interval"


def subprocess_arguments(module: str, arguments: list[str]) -> list[str]:
    """What the slow test runs: a Hydra command prints its composed job config (one run: each sweep at its
    first value, flags such as -m and --dry-run left out), the other commands their help."""
    if module != "harness":
        return [sys.executable, "-m", module, "--help"]
    return [sys.executable, "-m", "harness", *first_values(overrides_of(arguments)), "--cfg", "job"]


def distinct_checks() -> list[str]:
    """What the quoted `python -m` commands run, each once, as `module arguments...` after the interpreter (the
    commands of one module other than harness share its --help)."""
    return sorted(
        {
            shlex.join(subprocess_arguments(module, arguments)[1:])
            for module, arguments in map(module_and_arguments, (command.words for command in python_commands()))
        }
    )


# Runs the checks one after another in one interpreter (importing torch once, not once per command), each as
# `python -m` would (runpy, Hydra's global state cleared between them; the os._exit that ends `python -m harness`
# raises SystemExit instead), and prints each one's exit status and output.
RUN_EACH = """
import contextlib, io, json, os, runpy, shlex, sys
from hydra.core.global_hydra import GlobalHydra


def leave(status):
    raise SystemExit(status)


os._exit = leave

for check in json.loads(sys.argv[1]):
    _, module, *arguments = shlex.split(check)
    sys.argv, output = [module, *arguments], io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    GlobalHydra.instance().clear()
    print(json.dumps([check, status, output.getvalue()[-2000:]]), file=sys.__stdout__, flush=True)
"""


@pytest.mark.slow
def test_quoted_commands_run_their_entry_points():
    checks = distinct_checks()
    done = subprocess.run(
        [sys.executable, "-c", RUN_EACH, json.dumps(checks)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ran = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('["-m ')]
    assert [check for check, *_ in ran] == checks
    assert [(check, status, output) for check, status, output in ran if status != 0] == []
