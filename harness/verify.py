"""`python -m harness.verify <collection> [--sample N] [--seed S] [--max-seconds T] [--tolerance PP]`:
do committed records still reproduce?

A collection is a folder of curated records (`results/<name>`, e.g. official, rac_lora_mnist; or a
path). N of its successful records (a seeded random sample; `--max-seconds` keeps to records whose
run took at most T seconds) are run again from their own resolved config, in a scratch results folder,
and compared with what they say: the run key (the config still means the same run), the primary metric
on every evaluated split at the final and the best evaluation, and the trained-weights checksum
(`params.trainable_sha256`) where the record has one and was made with the same torch and transformers
versions (otherwise the checksum is reported as not comparable). A run on CPU is deterministic, so a
record made by the current code on the same libraries reproduces exactly; the exit status is 1 when a
metric differs by more than `--tolerance` points ×100 (default 0: exact) or a comparable checksum or
the run key differs, else 0. Regenerate a collection that fails (its protocol or experiment command).
"""
import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from harness.provenance import library_versions
from harness.records import RecordStore

COMPARED_LIBRARIES = ("torch", "transformers")


def collection_dir(name: str) -> Path:
    path = Path(name)
    return path if (path / "runs").is_dir() else Path("results") / name


def sample_records(records: list[dict], count: int, seed: int, max_seconds: float | None) -> list[dict]:
    """A seeded random sample of the collection's successful records (by run key, so it does not
    depend on the order the files are listed in)."""
    eligible = sorted((r for r in records if r["status"] == "success"
                       and (max_seconds is None or r["cost"]["wall_seconds"] <= max_seconds)), key=lambda r: r["run_key"])
    return random.Random(seed).sample(eligible, min(count, len(eligible)))


def primary_scores(record: dict) -> dict[str, float]:
    """'final/test' → score ×100 of the primary metric, for every evaluated split at the final and best evaluation."""
    metrics = record["metrics"]
    return {f"{which}/{split}": 100 * values[metrics["primary"]]
            for which in ("final", "best") for split, values in (metrics.get(which) or {}).items()}


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
        lines.append(f"{key} {old['metrics']['primary']}: {before[key]:.2f} → {after.get(key, float('nan')):.2f} "
                     f"(Δ {difference:+.4f}){'' if within else '  BEYOND TOLERANCE'}")
    recorded = old["params"].get("trainable_sha256")
    versions = old["provenance"].get("versions", {})
    same_libraries = all(versions.get(name) == library_versions().get(name) for name in COMPARED_LIBRARIES)
    if recorded is None:
        lines.append("trained-weights checksum: not in the record")
    elif not same_libraries:
        lines.append("trained-weights checksum: not comparable (recorded with "
                     + ", ".join(f"{n} {versions.get(n)}" for n in COMPARED_LIBRARIES) + ")")
    else:
        match = new["params"]["trainable_sha256"] == recorded
        ok &= match
        lines.append(f"trained-weights checksum: {'matches' if match else 'DIFFERS'}")
    return ok, lines


def rerun(record: dict, scratch: Path) -> dict:
    """The record's run done again from its resolved config, into `scratch`."""
    from harness.run import execute_run

    config = OmegaConf.create(record["config"])
    config.results_dir, config.progress = str(scratch), False  # not part of the run key
    return execute_run(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.verify", description=__doc__.split("\n")[0])
    parser.add_argument("collection", help="results/<name> (a folder with runs/), or a path")
    parser.add_argument("--sample", type=int, default=3, help="records to re-run (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    parser.add_argument("--max-seconds", type=float, default=None, help="only records whose run took at most this long")
    parser.add_argument("--tolerance", type=float, default=0.0, help="allowed metric difference, points ×100 (default 0)")
    args = parser.parse_args(argv)
    folder = collection_dir(args.collection)
    if not (folder / "runs").is_dir():
        raise SystemExit(f"error: no collection at {folder} (a folder with runs/ inside); give results/<name> or a path")
    records, problems = RecordStore(folder).load_all()
    for problem in problems:
        print(f"warning: record {problem}", file=sys.stderr)
    chosen = sample_records(records, args.sample, args.seed, args.max_seconds)
    if not chosen:
        raise SystemExit(f"error: {folder} has no successful record to verify" +
                         (f" that took at most {args.max_seconds:g} s" if args.max_seconds else ""))
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        for record in chosen:
            new = rerun(record, Path(scratch))
            ok, lines = compare(record, new, args.tolerance)
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {record['run_key']} {record['method']} {record['task']} seed {record['seed']}")
            for line in lines:
                print(f"     {line}")
    print(json.dumps({"collection": str(folder), "verified": len(chosen), "failed": failures, "tolerance": args.tolerance}))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
