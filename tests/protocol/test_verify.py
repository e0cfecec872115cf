"""`python -m harness.verify`: committed records re-run from their own config reproduce, a record that no
longer does (a changed metric, checksum or key) fails with exit status 1, and `--regenerate` replaces it
by its rerun."""

import json

import pytest

from harness.engine.run import execute_run
from harness.protocol.verify import compare, main, provenance_here, sample_records
from harness.store.records import RecordStore


@pytest.fixture
def collection(make_config, tmp_path):
    """A collection of two real tiny runs (seeds 0 and 1)."""
    for seed in (0, 1):
        execute_run(make_config(f"seed={seed}", f"results_dir={tmp_path / 'collection'}"))
    return tmp_path / "collection"


def test_records_made_by_this_code_reproduce_exactly(collection, capsys):
    main([str(collection), "--sample", "2"])
    out = capsys.readouterr().out
    assert out.count("ok  ") == 2 and "FAIL" not in out
    assert out.count("trained-weights checksum: matches") == 2
    assert json.loads(out.strip().splitlines()[-1]) == {
        "collection": str(collection),
        "verified": 2,
        "failed": 0,
        "regenerated": 0,
        "tolerance": 0.0,
    }


def test_a_record_that_no_longer_reproduces_fails(collection, capsys):
    store = RecordStore(collection)
    (record,) = [r for r in store.load_all()[0] if r["seed"] == 0]
    record["metrics"]["final"]["test"]["accuracy"] += 0.0625  # as if the code had changed since
    record["params"]["trainable_sha256"] = "0" * 64
    store.write(record)
    with pytest.raises(SystemExit) as stop:
        main([str(collection), "--sample", "2"])
    assert stop.value.code == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == 1 and "(Δ -6.2500)  BEYOND TOLERANCE" in out and "checksum: DIFFERS" in out
    with pytest.raises(SystemExit):  # within a tolerance of 7 points the metric passes, the checksum still fails
        main([str(collection), "--sample", "2", "--tolerance", "7"])


def test_regenerate_replaces_a_stale_record_and_its_predictions_by_the_rerun(collection, capsys):
    store = RecordStore(collection)
    (original,) = [r for r in store.load_all()[0] if r["seed"] == 0]
    predictions = store.beside(original["run_key"], "predictions.parquet")
    fresh_predictions = predictions.read_bytes()
    stale = json.loads(json.dumps(original))
    stale["metrics"]["final"]["test"]["accuracy"] += 0.0625
    stale["params"]["trainable_sha256"] = "0" * 64
    store.write(stale)
    predictions.write_bytes(b"stale")
    main([str(collection), "--all", "--regenerate"])  # exit status 0: the stale record was replaced
    out = capsys.readouterr().out
    assert out.count("REGENERATED") == 1 and out.count("ok  ") == 1 and "1 record(s) regenerated" in out
    assert json.loads(out.strip().splitlines()[-2])["regenerated"] == 1
    replaced = store.read(original["run_key"])
    assert replaced["metrics"] == original["metrics"]
    assert replaced["params"]["trainable_sha256"] == original["params"]["trainable_sha256"]
    assert replaced["config"]["results_dir"] == original["config"]["results_dir"]  # not the scratch folder
    assert predictions.read_bytes() == fresh_predictions
    main([str(collection), "--all"])  # now it reproduces
    assert "FAIL" not in capsys.readouterr().out


def test_records_are_chosen_by_key_or_field_and_bad_choices_are_one_line(collection, capsys):
    records = RecordStore(collection).load_all()[0]
    seed_one = next(r["run_key"] for r in records if r["seed"] == 1)
    main([str(collection), "--keys", seed_one])
    out = capsys.readouterr().out
    assert out.count("ok  ") == 1 and f"ok   {seed_one} " in out
    main([str(collection), "--all", "--where", "seed=1"])
    out = capsys.readouterr().out
    assert out.count("ok  ") == 1 and f"ok   {seed_one} " in out
    with pytest.raises(SystemExit, match=r"^error: --keys: no successful record nokey in the collection$"):
        main([str(collection), "--keys", "nokey"])
    with pytest.raises(SystemExit, match=r"^error: --where 'seed': expected FIELD=VALUE"):
        main([str(collection), "--all", "--where", "seed"])
    with pytest.raises(SystemExit, match=r"has no successful record to verify with seed=7$"):
        main([str(collection), "--all", "--where", "seed=7"])


def test_checksums_are_compared_only_on_the_same_libraries_device_and_cpu_and_the_key_must_match():
    here = {
        "versions": {"torch": "2.13.0", "transformers": "5.0"},
        "device": "cpu",
        "cpu": {"name": "x", "capability": "AVX2"},
    }
    old = {
        "run_key": "a",
        "status": "success",
        "metrics": {"primary": "accuracy", "final": {"test": {"accuracy": 0.5}}},
        "params": {"trainable_sha256": "x"},
        "provenance": here,
    }
    new = {**old, "params": {"trainable_sha256": "y"}}
    ok, lines = compare(old, new, 0.0)
    assert not ok and lines[-1] == "trained-weights checksum: DIFFERS"
    elsewhere = [
        ({**here, "versions": {"torch": "1.0", "transformers": "4.0"}}, "recorded with torch 1.0, transformers 4.0"),
        ({**here, "device": "NVIDIA H200"}, "recorded on NVIDIA H200, rerun on cpu"),
        (
            {**here, "cpu": {"name": "y", "capability": "AVX512"}},
            "recorded on a CPU with AVX512 kernels, rerun on one with AVX2",
        ),
        (
            {key: value for key, value in here.items() if key != "cpu"},
            "the record does not name its CPU: made before records did",
        ),
    ]
    for provenance, why in elsewhere:
        ok, lines = compare({**old, "provenance": provenance}, new, 0.0)
        assert ok and lines[-1] == f"trained-weights checksum: not comparable ({why})"
    ok, lines = compare(old, {**new, "run_key": "b"}, 0.0)
    assert not ok and lines[0] == "run key b != a: the config no longer means the same run"
    ok, lines = compare(old, {**new, "status": "failed", "error": "boom"}, 0.0)
    assert not ok and lines[-1] == "rerun failed: boom"


def test_a_sample_is_drawn_among_the_records_this_machine_must_reproduce_bit_for_bit():
    here = provenance_here({})
    other = {**here, "cpu": {"name": "elsewhere", "capability": "NOT" + here["cpu"]["capability"]}}
    records = [
        {
            "run_key": f"k{i}",
            "status": "success",
            "cost": {"wall_seconds": 1.0},
            "provenance": here if i in (2, 5) else other,
        }
        for i in range(8)
    ]
    assert {r["run_key"] for r in sample_records(records, 5, seed=0, max_seconds=None)} == {"k2", "k5"}
    made_elsewhere_only = [r for r in records if r["provenance"] is other]
    assert len(sample_records(made_elsewhere_only, 5, seed=0, max_seconds=None)) == 5  # none exact: drawn among all


def test_the_sample_is_seeded_successful_and_within_the_time_limit():
    records = [
        {
            "run_key": f"k{i}",
            "status": "success" if i != 3 else "failed",
            "cost": {"wall_seconds": 10.0 * i},
            "provenance": {},
        }
        for i in range(10)
    ]
    first = sample_records(records, 4, seed=1, max_seconds=None)
    assert first == sample_records(list(reversed(records)), 4, seed=1, max_seconds=None)
    assert len(first) == 4 and all(r["status"] == "success" for r in first)
    assert {r["run_key"] for r in sample_records(records, 10, seed=0, max_seconds=25)} == {"k0", "k1", "k2"}


def test_an_unknown_collection_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"error: no collection at .*nowhere \(a folder with runs/ inside\)"):
        main([str(tmp_path / "nowhere")])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--sample=-1"], "argument --sample: must be a whole number of records, at least 1; got '-1'"),
        (["--sample=0"], "argument --sample: must be a whole number of records, at least 1; got '0'"),
        (["--sample=1.5"], "argument --sample: must be a whole number of records, at least 1; got '1.5'"),
        (["--max-seconds=0"], "argument --max-seconds: must be a number of seconds above 0; got '0'"),
        (["--max-seconds=nan"], "argument --max-seconds: must be a number of seconds above 0; got 'nan'"),
    ],
)
def test_a_bad_count_or_limit_is_refused_in_one_line_before_anything_is_read(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["results/official", *arguments])
    assert exit.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
