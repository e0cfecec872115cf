"""One run from composed config to written record (docs/design.md).

`execute_run` keeps the record's life cycle: take the run key's lock (or leave the run to the process
that holds it), skip if a success record exists, write `running`, fine-tune, write `success`,
`failed` with the error, or `interrupted` (SIGINT/SIGTERM; re-raised). `fine_tune` is the work in
between, in three stages: `set_up` (settings, data, model, method), `train` (harness/engine/train.py, which
continues from the run's checkpoint if an earlier attempt left one: harness/engine/checkpoint.py) and
`assemble` (the record's metrics, counts, predictions and cost).
"""

import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from harness.config.sections import LoggerConfig, RunSettings, parse_section, parse_settings
from harness.engine import distributed
from harness.engine.checkpoint import Checkpointer
from harness.engine.compiled import compile_forward, refuse_compile
from harness.engine.device import autocast_dtype, device_name, make_deterministic, pick_device
from harness.engine.loggers import NullLogger, build_logger, mend_runs_table
from harness.engine.memory import read_peak, reset_peak
from harness.engine.recompute import recompute_activations, refuse_method
from harness.engine.train import Outcome, train
from harness.errors import HarnessError, Interrupted, SignalGate, one_line
from harness.models.storage import frozen_bytes, resolve_storage, store_frozen_base, train_in_fp32
from harness.store.files import ensure_writable
from harness.store.identity import SEMANTIC_SECTIONS, Identity, identify
from harness.store.provenance import provenance, utc_now
from harness.store.records import RecordStore, new_record, reported_adapter_params, reported_score
from methods import METHODS, Method, build_method, parse_method_config
from optimizers import optimizer_rule
from tasks import TaskData, load_task
from tasks.pixels import PixelSplit
from tasks.tokenize import encode_cached


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_inputs(task, run, cache_dir) -> tuple[dict, int, int]:
    """Every split as the model's input (token ids, or pixels at the model's size), the number of
    tokenization cache hits and the padding id."""
    if task.is_image != run.model.is_image:
        kinds = {True: "an image", False: "a text"}
        raise HarnessError(
            f"task '{task.name}' is {kinds[task.is_image]} task but model '{run.model.name}' is "
            f"{kinds[run.model.is_image]} model; choose a model of the task's kind"
        )
    if task.is_generative and run.model.kind != "decoder":
        raise HarnessError(
            f"task '{task.name}' is generative (the model writes its answer) but model '{run.model.name}' "
            f"is of kind '{run.model.kind}'; choose a decoder (model.kind: decoder, e.g. model=smollm2_135m)"
        )
    if task.is_image:
        model = run.model
        return (
            {
                name: PixelSplit.from_split(split, model.image_size, model.channels, model.mean, model.std)
                for name, split in task.splits.items()
            },
            0,
            0,
        )
    from harness.models import load_tokenizer, max_positions

    tokenizer = load_tokenizer(run.model, cache_dir)
    positions = max_positions(run.model, cache_dir)
    if positions is not None and run.task.max_length > positions:
        raise HarnessError(
            f"task.max_length={run.task.max_length} exceeds the {positions} positions of model "
            f"'{run.model.name}'; allowed: 2 to {positions}"
        )
    encoded, cache_hits = {}, 0
    for name, split in task.splits.items():
        encoded[name], hit = encode_cached(
            task.name, name, split, tokenizer, run.task.max_length, task.is_regression, cache_dir, task.generation
        )
        cache_hits += hit
    return encoded, cache_hits, tokenizer.pad_token_id or 0


def trainable_checksum(method) -> str:
    """SHA-256 of the names and bytes of everything the method learned (`Method.state_tensors`: the
    trained parameters, and masks, folded weights, trained BatchNorm statistics): equal checksums,
    equal learned state."""
    digest = hashlib.sha256()
    for name, tensor in sorted(method.state_tensors().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Setup:
    """What a run trains: the validated settings, device and precision, the task's encoded splits, and
    the model with its method applied."""

    run: RunSettings
    device: torch.device
    dtype: torch.dtype | None
    task: TaskData
    encoded: dict
    cache_hits: int
    pad_id: int
    model: torch.nn.Module
    method: Method
    wall_started: float


def fine_tune(cfg: DictConfig, record: dict, logger, store: RecordStore) -> None:
    """Train and evaluate in three stages (setup, training, record assembly); fills
    record['params'|'metrics'|'cost'|'provenance'|'predictions'] (and 'adapter' with save_adapter=true),
    the files they name written beside the record."""
    setup = set_up(cfg, record)
    reset_peak(setup.device)
    outcome = run_training(setup, logger, store, record["run_key"], progress=bool(cfg.get("progress", True)))
    assemble(record, setup, outcome, store, save_adapter=bool(cfg.get("save_adapter")))


def run_training(setup: "Setup", logger, store: RecordStore, key: str, progress: bool) -> Outcome:
    """The training stage, continuing from the run's checkpoint where an earlier attempt left one."""
    checkpointer = Checkpointer(setup.run.operational.checkpoint, store.beside(key, "checkpoint.pt"))
    return train(
        setup.model,
        setup.method,
        setup.task,
        setup.encoded,
        setup.run,
        setup.device,
        setup.dtype,
        setup.pad_id,
        logger,
        progress=progress,
        checkpointer=checkpointer,
        run_key=key,
    )


def set_up(cfg: DictConfig, record: dict) -> Setup:
    """Settings checked (every config error before any loading), device, data, model and method;
    record['provenance'] and record['params'] (the counts at the start) filled."""
    wall_started = time.perf_counter()
    run = parse_settings(cfg)
    if run.operational.threads:
        torch.set_num_threads(run.operational.threads)
    if cfg.get("deterministic"):
        make_deterministic()
    processes = distributed.world()[1]
    if run.train.grad_accum % processes:
        raise HarnessError(
            f"train.grad_accum={run.train.grad_accum} must be a multiple of the run's {processes} processes (each "
            f"accumulates grad_accum / {processes} micro-batches); allowed: {processes}, {2 * processes}, ..."
        )
    device = distributed.set_up(pick_device(run.train.device, cfg.get("job_index")))
    capabilities = METHODS[cfg.method.name].declared(parse_method_config(cfg.method))
    precision = run.train.precision
    storage = resolve_storage(
        run.model, precision, autocast_dtype(precision, device), device, cfg.method.name, capabilities
    )
    record["provenance"] = {
        **provenance(device_name(device)),
        "deterministic": bool(cfg.get("deterministic")),
        "processes": processes,
        **({"sharding": "fsdp"} if cfg.get("fsdp") else {}),
        **storage.describe(),
    }

    from harness.models import load_model  # transformers import: only when running

    if cfg.get("cache_dir"):
        ensure_writable(Path(cfg.cache_dir), "cache_dir")
    task = load_task(run.task)
    encoded, cache_hits, pad_id = model_inputs(task, run, cfg.get("cache_dir"))
    seed_everything(run.seed)
    if run.train.gradient_checkpointing:
        refuse_method(cfg.method.name, capabilities)
    if run.train.compile:
        refuse_compile(bool(cfg.get("fsdp")), processes)
    model = load_model(run.model, task.num_labels, cfg.get("cache_dir"))
    head_modules = [] if task.is_generative else run.model.head_modules
    store_frozen_base(model, storage, head_modules, run.model.name)
    if run.train.gradient_checkpointing:
        recompute_activations(model, run.model.name)
    if task.is_generative and not capabilities.generative_ok:
        raise HarnessError(
            f"method '{cfg.method.name}' trains a fresh task head, and generative task '{task.name}' has none (the "
            f"model writes its answer with its pretrained LM head); choose an adapter method or full"
        )
    method = build_method(model, cfg.method, head_modules)
    train_in_fp32(model)
    optimizer_rule(run.optimizer).prepare(method)  # what it holds fixed is not counted as trained (LoRA-FA's A)
    if cfg.get("fsdp"):  # the frozen backbone sharded over the ranks (harness/engine/sharding.py)
        from harness.engine.sharding import shard

        shard(method, device)
    else:
        model.to(device)
    if run.train.compile:
        compile_forward(model)
    record["params"] = method.param_counts()
    return Setup(run, device, storage.autocast, task, encoded, cache_hits, pad_id, model, method, wall_started)


def assemble(record: dict, setup: Setup, outcome: Outcome, store: RecordStore, save_adapter: bool) -> None:
    """The record's metrics, final counts, checksum, predictions file, kept adapter and cost; a run
    without a finite reported score fails here."""
    task, method = setup.task, setup.method
    record["metrics"] = {
        "primary": task.primary,
        "higher_is_better": task.higher_is_better,
        "report_split": task.report_split,
        "curve": outcome.curve,
        "final": outcome.final,
        "best": outcome.best,
        "best_step": outcome.best_step,
    }
    allocation = method.allocation()
    if allocation is not None:  # methods that reallocate a rank budget during training
        record["params"] = {
            **record["params"],
            "adapter_final": method.param_counts()["adapter"],
            "ranks_final": allocation,
        }
    record["params"]["trainable_sha256"] = trainable_checksum(method)
    for which in ("final", "best"):
        score = reported_score(record, which)
        if not math.isfinite(score):
            raise HarnessError(
                f"{task.report_split} {task.primary} is {score} at the {which} evaluation; "
                f"a run without a finite score counts as failed"
            )
    from harness.store.predictions import write_predictions

    record["predictions"] = write_predictions(
        store.beside(record["run_key"], "predictions.parquet"), task, setup.encoded, outcome
    )
    if save_adapter:
        from harness.store.adapter import save_adapter as write_adapter

        record["adapter"] = write_adapter(store.beside(record["run_key"], "adapter.safetensors"), method)
    record["cost"] = {
        "train_seconds": round(outcome.train_seconds, 3),
        "eval_seconds": round(outcome.eval_seconds, 3),
        "init_seconds": round(outcome.init_seconds, 3),
        "wall_seconds": round(time.perf_counter() - setup.wall_started, 3),
        "steps": outcome.steps,
        "examples_per_second": round(outcome.examples / max(outcome.train_seconds, 1e-9), 2),
        "seconds_per_step": round(outcome.train_seconds / max(outcome.steps, 1), 4),
        "tokenize_cache_hits": setup.cache_hits,
        "frozen_weight_mb": round(frozen_bytes(setup.model) / 2**20, 1),
        **{k: round(v, 1) for k, v in read_peak(setup.device).items()},
        **({"resumed_from_step": outcome.resumed_from_step} if outcome.resumed_from_step is not None else {}),
    }


def run_head(record: dict) -> str:
    """Which run a record is, as the summary lines start."""
    return f"{record['method']} | {record['task']} | {record['model']} | seed {record['seed']}"


def summary_line(record: dict, store: RecordStore) -> str:
    """The run's one line: what it is, its counts and score (or its error), its run key and record file."""
    head, where = run_head(record), f"run {record['run_key']} → {store.path(record['run_key'])}"
    if record["status"] != "success":
        return f"{head} | {record['status'].upper()}: {record['error']} | {where}"
    params, metrics, cost = record["params"], record["metrics"], record["cost"]
    adapter = reported_adapter_params(params)
    share = 100 * adapter / max(params["backbone"], 1)
    return (
        f"{head} | adapter params {adapter:,} ({share:.2f}% of backbone) | "
        f"{metrics['report_split']} {metrics['primary']} {100 * reported_score(record):.2f} | "
        f"{cost['wall_seconds']:.1f} s | {where}"
    )


def execute_run(cfg: DictConfig) -> dict | None:
    """Run one composed config unless it already succeeded (its record is returned) or another
    process holds its lock (one line, and None: that process trains it)."""
    from filelock import Timeout

    run = identify(cfg)
    store = RecordStore(run.cfg.results_dir)
    if not distributed.is_main():
        return follow(run, store)
    store.ensure_writable()
    store.refuse_folders(run.key)
    lock = store.lock(run.key)
    try:
        lock.acquire()
    except Timeout:
        distributed.agree(False)
        print(f"skip {run.key}: another process is training this run (it holds {lock.lock_file})", file=sys.stderr)
        return None
    try:
        return execute_locked(run, store)
    finally:
        lock.release()


def peer_failure(store: RecordStore, key: str) -> str | None:
    """The error another rank of a data-parallel run wrote before it exited, if one did."""
    failed = sorted(store.runs_dir.glob(f"{key}.rank*.error"))
    return failed[0].read_text().strip() if failed else None


def follow(run: Identity, store: RecordStore) -> None:
    """A data-parallel run's rank > 0 (harness/engine/distributed.py): trains beside rank 0 when it runs the
    run, writing nothing; a failure is written beside the record for rank 0, then raised."""
    if not distributed.agree(None):
        return None
    try:
        if run.problem is not None:
            raise run.problem
        run_training(set_up(run.cfg, new_record(run.config, run.key)), NullLogger(), store, run.key, progress=False)
    except Exception as error:
        store.beside(run.key, f"rank{distributed.world()[0]}.error").write_text(
            f"rank {distributed.world()[0]}: {one_line(error)}\n"
        )
        wait_for_main(store, run.key)  # rank 0 meets the same config error and records it, or records this one
        raise
    return None


def wait_for_main(store: RecordStore, key: str, seconds: float = 30.0) -> None:
    """Until rank 0's record of `key` is final (or `seconds` pass: rank 0 is then stuck in a collective,
    and torchrun stops it when this rank exits)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record = store.read(key)
        if record is not None and record["status"] != "running":
            return
        time.sleep(0.2)


def execute_locked(run: Identity, store: RecordStore) -> dict:
    """The record's life cycle, with the run key's lock held and SIGINT/SIGTERM behind a SignalGate: they
    interrupt the run while it computes and wait while its record and views are written, so that the
    record, runs.csv and the exit status agree whenever a signal lands (harness/errors.py)."""
    with SignalGate() as gate:
        gate.run = f"{run_head(new_record(run.config, run.key))} ({run.key})"
        try:
            store.refuse_newer(run.key)  # a record of a newer harness is never overwritten
        except HarnessError:
            distributed.agree(False)  # the other ranks of a data-parallel run leave with rank 0
            raise
        previous = store.read(run.key)
        for problem in store.problems:
            print(f"note: {problem}; the run is done again", file=sys.stderr)
        redo = previous is None or previous["status"] != "success" or bool(run.cfg.get("rerun"))
        if not distributed.agree(redo):
            line = f"skip {run.key}: already succeeded ({summary_line(previous, store)}){ignored(previous, run)}"
            print(line, file=sys.stderr)
            gate.finished = "success"
            mend_runs_table(previous, parse_section(LoggerConfig, run.cfg.logger, "logger"), run.cfg.results_dir)
            return previous
        for stale in store.runs_dir.glob(f"{run.key}.rank*.error"):  # an earlier attempt's
            stale.unlink()
        return attempt(run, store, gate)


# operational keys that say how this command goes, not what a run keeps: never reported as ignored by a skip
THIS_COMMAND = (
    "results_dir",
    "cache_dir",
    "progress",
    "threads",
    "job_index",
    "rerun",
    "protocol",
    "tuning",
    "per_task",
)


def leaves(value, prefix: str) -> dict:
    """A config value as dotted key → scalar."""
    if isinstance(value, dict):
        return {key: leaf for name, part in value.items() for key, leaf in leaves(part, f"{prefix}.{name}").items()}
    return {prefix: value}


def ignored(previous: dict, run: Identity) -> str:
    """What a skip leaves undone: the operational keys whose value differs from the finished run's record
    (a logger, save_adapter, checkpointing...), and how to apply them; '' where none differ."""
    names = [name for name in run.config if name not in SEMANTIC_SECTIONS and name not in THIS_COMMAND]
    before, now = (
        {k: v for name in names for k, v in leaves(c.get(name), name).items()} for c in (previous["config"], run.config)
    )
    changed = [
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key in {**before, **now}
        if (value := now.get(key)) != before.get(key) or (key in now) != (key in before)
    ]
    if not changed:
        return ""
    return (
        f"; {', '.join(changed)} differ from its record and are not applied to a finished run: "
        "add rerun=true to do it again with them"
    )


def attempt(run: Identity, store: RecordStore, gate: SignalGate) -> dict:
    """One attempt at the run: `running`, then the run's computing (the only place a signal interrupts),
    then the final record and its views, written in `finish`."""
    record = new_record(run.config, run.key)
    logger = NullLogger()  # until the logger's own config is checked
    try:
        logger = build_logger(parse_section(LoggerConfig, run.cfg.logger, "logger"), run.cfg.results_dir)
        store.write(record)
        with gate.open():
            if run.problem is not None:
                raise run.problem
            logger.start(record)
            fine_tune(run.cfg, record, logger, store)
        record["status"] = "success"
    except (Interrupted, KeyboardInterrupt) as error:  # recorded, then re-raised: the process exits 130/143
        record["status"], record["error"] = (
            "interrupted",
            str(error) if isinstance(error, Interrupted) else "interrupted by SIGINT",
        )
        if (failure := peer_failure(store, run.key)) is not None:  # torchrun stopped this rank because another failed
            record["status"], record["error"] = "failed", failure
        error.run = gate.run  # for the one line harness.protocol.app prints
        raise
    except Exception as error:
        failure = peer_failure(store, run.key)
        if failure is None and distributed.lost_peer(error):  # a rank was killed or pre-empted: resumable, like a kill
            record["status"], record["error"] = "interrupted", f"another rank of this run stopped: {one_line(error)}"
            return record
        own = (
            isinstance(error, HarnessError) or failure is None
        )  # a config error is rank 0's own; a collective's is an echo
        record["status"], record["error"] = "failed", one_line(error) if own else failure
        if not isinstance(error, HarnessError):  # unexpected: keep the traceback for debugging
            import traceback

            record["traceback"] = traceback.format_exc()
    finally:
        finish(record, store, logger, gate)
    return record


def finish(record: dict, store: RecordStore, logger, gate: SignalGate) -> None:
    """The record made final, then its views (runs.csv, W&B) and the summary line. A signal that lands
    here waits (the gate holds it) until all of them are written. A view that fails leaves the final
    record standing: one error line, which fails the command where the run succeeded."""
    key = record["run_key"]
    if record["status"] in ("success", "failed"):  # an interrupted or killed run keeps its checkpoint
        store.beside(key, "checkpoint.pt").unlink(missing_ok=True)
    record["provenance"]["ended_at"] = utc_now()
    store.write(record)
    gate.finished = record["status"]
    try:
        logger.finish(record)
        view_error = None
    except Exception as error:
        view_error = (
            f"the record {store.path(key)} is final ({record['status']}), but its logger failed: {one_line(error)}"
        )
    if record["status"] != "interrupted":
        print(summary_line(record, store), file=sys.stderr if record["status"] != "success" else sys.stdout, flush=True)
    if view_error is not None:
        if record["status"] != "success":  # the run's failure or interruption is what the command reports
            print(f"error: {view_error}", file=sys.stderr)
        else:
            raise HarnessError(view_error)
