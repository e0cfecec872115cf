"""`python -m harness.verify <collection> [--sample N | --all | --keys K...] [--where FIELD=VALUE...]
[--seed S] [--max-seconds T] [--tolerance PP] [--regenerate]`: do committed records still reproduce?

A collection is a folder of curated records (`results/<name>`, e.g. official, rac_lora_mnist; or a
path). N of its successful records (a seeded random sample, among the records this machine must
reproduce bit for bit where there are any), or all of them, or the named run keys
(`--where model=efficientnet_lite0` keeps to records whose field has that value; `--max-seconds` to
records whose run took at most T seconds) are run again from their own resolved config, in a scratch
results folder, and compared with what they say: the run key (the config still means the same run), the primary metric
on every evaluated split at the final and the best evaluation, and the trained-weights checksum
(`params.trainable_sha256`) where the record has one and was made with the same torch and transformers
versions, on the same device and, on a CPU, with the same instruction set (harness/store/provenance.py);
otherwise the checksum is reported as not comparable. A run on CPU is deterministic, so a record made by
the current code on the same libraries and kind of CPU reproduces exactly (on another kind, its metrics
to within rounding: a few items of a small test set may flip). Each chosen record's predictions file is
checked against the SHA-256 the record names. Every record of the collection is read as every reader reads
it (harness/store/records.py): a record left out or in doubt (invalid, misnamed, a config that hashes to
another key, a newer schema) or a predictions file missing or changed is one warning line. The exit status
is 1 when a metric differs by more than `--tolerance` points ×100 (default 0: exact), a comparable checksum
or the run key differs, a chosen record's predictions file is missing or changed, or the collection has a
warning; else 0. `--regenerate` replaces each failing record whose rerun succeeded under the same run key,
with the files beside it (predictions), by the rerun's, and then exits 0 unless a rerun failed or changed
key or a warning remains; rebuild the collection's tables afterwards (its protocol or experiment command,
which reuses every record).
"""

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.store.files import atomic_write
from harness.store.provenance import cpu_kind, library_versions
from harness.store.records import RecordStore, predictions_problem

COMPARED_LIBRARIES = ("torch", "transformers")


def collection_dir(name: str) -> Path:
    path = Path(name)
    return path if (path / "runs").is_dir() else Path("results") / name


def eligible_records(records: list[dict], max_seconds: float | None, where: dict[str, str]) -> list[dict]:
    """The successful records within the time limit whose fields have the `where` values (compared as
    text, so seed=2 matches), by run key (so that a sample does not depend on the order of the files)."""
    return sorted(
        (
            r
            for r in records
            if r["status"] == "success"
            and (max_seconds is None or r["cost"]["wall_seconds"] <= max_seconds)
            and all(str(r.get(field)) == value for field, value in where.items())
        ),
        key=lambda r: r["run_key"],
    )


def provenance_here(record: dict) -> dict:
    """What a rerun of `record` on this machine would record as its provenance's libraries, device and CPU."""
    from harness.engine.device import device_name, pick_device

    device = device_name(pick_device(((record.get("config") or {}).get("train") or {}).get("device", "auto")))
    return {"versions": library_versions(), "device": device, "cpu": cpu_kind()}


def sample_records(
    records: list[dict], count: int, seed: int, max_seconds: float | None, where: dict[str, str] | None = None
) -> list[dict]:
    """A seeded random sample of the collection's eligible records, drawn among those this machine must
    reproduce bit for bit (`made_elsewhere` is None: a change in the code's numbers shows) where there
    are any, else among all (then only their metrics are compared, within the tolerance)."""
    eligible = eligible_records(records, max_seconds, where or {})
    exact = [r for r in eligible if made_elsewhere(r["provenance"], provenance_here(r)) is None]
    return random.Random(seed).sample(exact or eligible, min(count, len(exact or eligible)))


def named_records(records: list[dict], keys: list[str]) -> list[dict]:
    """The successful records of these run keys; an unknown key is a one-line error."""
    by_key = {r["run_key"]: r for r in records if r["status"] == "success"}
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        raise HarnessError(f"--keys: no successful record {', '.join(unknown)} in the collection")
    return [by_key[key] for key in keys]


def parse_where(pairs: list[str]) -> dict[str, str]:
    where = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise HarnessError(f"--where {pair!r}: expected FIELD=VALUE, e.g. model=efficientnet_lite0 or seed=2")
        where[field] = value
    return where


def primary_scores(record: dict) -> dict[str, float]:
    """'final/test' → score ×100 of the primary metric, for every evaluated split at the final and best evaluation."""
    metrics = record["metrics"]
    return {
        f"{which}/{split}": 100 * values[metrics["primary"]]
        for which in ("final", "best")
        for split, values in (metrics.get(which) or {}).items()
    }


def made_elsewhere(recorded: dict, here: dict) -> str | None:
    """Why a run with provenance `here` need not give the bits of one with provenance `recorded`
    (other torch or transformers, another device, another CPU instruction set, or a record that does not
    name its CPU), or None where it must."""
    versions, mine = recorded.get("versions", {}), here.get("versions", {})
    if any(versions.get(name) != mine.get(name) for name in COMPARED_LIBRARIES):
        return "recorded with " + ", ".join(f"{n} {versions.get(n)}" for n in COMPARED_LIBRARIES)
    if recorded.get("device") != here.get("device"):
        return f"recorded on {recorded.get('device')}, rerun on {here.get('device')}"
    if "cpu" not in recorded:
        return "the record does not name its CPU: made before records did"
    if recorded["cpu"].get("capability") != here["cpu"].get("capability"):
        return (
            f"recorded on a CPU with {recorded['cpu'].get('capability')} kernels, rerun on one with "
            f"{here['cpu'].get('capability')}"
        )
    return None


def compare(old: dict, new: dict, tolerance: float) -> tuple[bool, list[str]]:
    """Whether the rerun `new` reproduces `old`, and one line per compared quantity."""
    lines, ok = [], True
    if new["run_key"] != old["run_key"]:
        ok = False
        lines.append(f"run key {new['run_key']} != {old['run_key']}: the config no longer means the same run")
    if new["status"] != "success":
        return False, [*lines, f"rerun {new['status']}: {new.get('error')}"]
    before, after = primary_scores(old), primary_scores(new)
    for key in before:
        difference = after.get(key, float("nan")) - before[key]
        within = abs(difference) <= tolerance
        ok &= within
        lines.append(
            f"{key} {old['metrics']['primary']}: {before[key]:.2f} → {after.get(key, float('nan')):.2f} "
            f"(Δ {difference:+.4f}){'' if within else '  BEYOND TOLERANCE'}"
        )
    recorded = old["params"].get("trainable_sha256")
    elsewhere = made_elsewhere(old["provenance"], new["provenance"])
    if recorded is None:
        lines.append("trained-weights checksum: not in the record")
    elif elsewhere:
        lines.append(f"trained-weights checksum: not comparable ({elsewhere})")
    else:
        match = new["params"]["trainable_sha256"] == recorded
        ok &= match
        lines.append(f"trained-weights checksum: {'matches' if match else 'DIFFERS'}")
    return ok, lines


def predictions_line(record: dict, runs_dir: Path) -> tuple[bool, str]:
    """Whether the record's predictions file is intact (or it names none), and the line that says so."""
    if not record.get("predictions"):
        return True, "predictions: not in the record"
    problem = predictions_problem(record["predictions"], runs_dir)
    return problem is None, "predictions: sha256 matches the record's" if problem is None else f"predictions: {problem}"


def rerun(record: dict, scratch: Path) -> dict:
    """The record's run done again from its resolved config, into `scratch`."""
    from harness.engine.run import execute_run

    config = OmegaConf.create(record["config"])
    config.results_dir, config.progress = str(scratch), False  # not part of the run key
    return execute_run(config)


def regenerate(collection: Path, scratch: Path, old: dict) -> list[str]:
    """Replaces the collection's files of record `old` (its record and every file beside it) by the
    rerun's in `scratch`, the record last; the new record keeps the old one's results_dir and progress
    (outside the run key), not the scratch folder's. Returns the names written."""
    key, target = old["run_key"], RecordStore(collection)
    source = RecordStore(scratch)
    beside = {path.name: path for path in source.files(key) if path.suffix != ".json"}
    for name, path in sorted(beside.items()):
        atomic_write(
            target.runs_dir / name, lambda temporary, path=path: shutil.copyfile(path, temporary), "the collection"
        )
    record = source.read(key)
    record["config"].update(
        {name: old["config"][name] for name in ("results_dir", "progress") if name in old["config"]}
    )
    target.write(record)
    for stale in target.files(key):
        if stale.suffix != ".json" and stale.name not in beside:
            stale.unlink()
    return sorted([*beside, target.path(key).name])


def positive_count(text: str) -> int:
    """--sample's type: a whole number of records, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip():
        raise argparse.ArgumentTypeError(f"must be a whole number of records, at least 1; got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """--max-seconds's type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0; got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.verify", description=__doc__.split("\n")[0])
    parser.add_argument("collection", help="results/<name> (a folder with runs/), or a path")
    chosen_by = parser.add_mutually_exclusive_group()
    chosen_by.add_argument("--sample", type=positive_count, default=3, help="records to re-run (default 3)")
    chosen_by.add_argument("--all", action="store_true", help="every eligible record")
    chosen_by.add_argument("--keys", nargs="+", metavar="KEY", help="these run keys")
    parser.add_argument(
        "--where",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="only records whose field has this value (model, method, task, seed, ...)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    parser.add_argument(
        "--max-seconds", type=positive_seconds, default=None, help="only records whose run took at most this long"
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.0, help="allowed metric difference, points ×100 (default 0)"
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="replace each failing record (same run key, rerun succeeded) and its files by the rerun's",
    )
    args = parser.parse_args(argv)
    try:
        verify(args)
    except HarnessError as error:
        raise SystemExit(f"error: {error}") from None


def verify(args: argparse.Namespace) -> None:
    folder = collection_dir(args.collection)
    if not (folder / "runs").is_dir():
        raise SystemExit(
            f"error: no collection at {folder} (a folder with runs/ inside); give results/<name> or a path"
        )
    store = RecordStore(folder)
    records, problems = store.load_all()
    for problem in problems:
        print(f"warning: record {problem}", file=sys.stderr)
    where = parse_where(args.where)
    if args.keys:
        chosen = named_records(records, args.keys)
    elif args.all:
        chosen = eligible_records(records, args.max_seconds, where)
    else:
        chosen = sample_records(records, args.sample, args.seed, args.max_seconds, where)
    if not chosen:
        raise HarnessError(
            f"{folder} has no successful record to verify"
            + (f" that took at most {args.max_seconds:g} s" if args.max_seconds else "")
            + "".join(f" with {field}={value}" for field, value in where.items())
        )
    failures, regenerated = 0, 0
    with tempfile.TemporaryDirectory() as scratch:
        for record in chosen:
            new = rerun(record, Path(scratch))
            ok, lines = compare(record, new, args.tolerance)
            intact, line = predictions_line(record, store.runs_dir)
            ok, lines = ok and intact, [*lines, line]
            replace = not ok and args.regenerate and new["status"] == "success" and new["run_key"] == record["run_key"]
            failures += not ok and not replace
            regenerated += replace
            status = "ok  " if ok else "REGENERATED" if replace else "FAIL"
            print(f"{status} {record['run_key']} {record['method']} {record['task']} seed {record['seed']}", flush=True)
            for line in lines:
                print(f"     {line}")
            if replace:
                print(f"     replaced: {', '.join(regenerate(folder, Path(scratch), record))}", flush=True)
    if regenerated:  # a regenerated record's predictions are the rerun's
        problems = store.load_all()[1]
    print(
        json.dumps(
            {
                "collection": str(folder),
                "verified": len(chosen),
                "failed": failures,
                "regenerated": regenerated,
                "tolerance": args.tolerance,
            }
        )
    )
    if regenerated:
        print(f"{regenerated} record(s) regenerated: rebuild {folder}'s tables (its protocol or experiment command)")
    if problems:
        print(f"{len(problems)} warning(s): every reader of {folder} leaves out or doubts these files", file=sys.stderr)
    if failures or problems:
        sys.exit(1)
