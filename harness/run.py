"""One run from composed config to written record (design.md §2).

`execute_run` keeps the record's life cycle: skip if a success record exists, write `running`,
fine-tune, write `success` or `failed` with the error. `fine_tune` is the work in between.
"""
import hashlib
import random
import sys
import time

import numpy as np
import torch
from omegaconf import DictConfig

from harness.device import autocast_dtype, device_name, make_deterministic, pick_device
from harness.errors import HarnessError, one_line
from harness.loggers import build_logger
from harness.memory import read_peak, reset_peak
from harness.per_task import effective_config
from harness.provenance import provenance, utc_now
from harness.records import RecordStore, new_record, reported_adapter_params, resolved_config, run_key
from harness.schema import LoggerConfig, parse_section, parse_settings
from harness.train import train
from methods import build_method, parse_method_config
from tasks import load_task
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
        raise HarnessError(f"task '{task.name}' is {kinds[task.is_image]} task but model '{run.model.name}' is "
                           f"{kinds[run.model.is_image]} model; choose a model of the task's kind")
    if task.is_image:
        model = run.model
        return {name: PixelSplit.from_split(split, model.image_size, model.channels, model.mean, model.std)
                for name, split in task.splits.items()}, 0, 0
    from harness.models import load_tokenizer

    tokenizer = load_tokenizer(run.model)
    encoded, cache_hits = {}, 0
    for name, split in task.splits.items():
        encoded[name], hit = encode_cached(task.name, name, split, tokenizer, run.task.max_length,
                                           task.is_regression, cache_dir)
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


def fine_tune(cfg: DictConfig, record: dict, logger) -> None:
    """Train and evaluate; fills record['params'|'metrics'|'cost'|'provenance']."""
    wall_started = time.perf_counter()
    run = parse_settings(cfg)
    parse_method_config(cfg.method)  # every config error surfaces before any loading
    if run.threads:
        torch.set_num_threads(run.threads)
    if cfg.get("deterministic"):
        make_deterministic()
    device = pick_device(run.train.device, cfg.get("job_index"))
    dtype = autocast_dtype(run.train.precision, device)
    record["provenance"] = {**provenance(device_name(device)), "deterministic": bool(cfg.get("deterministic"))}

    from harness.models import load_model  # transformers import: only when running

    task = load_task(run.task)
    encoded, cache_hits, pad_id = model_inputs(task, run, cfg.get("cache_dir"))
    seed_everything(run.seed)
    model = load_model(run.model, task.num_labels)
    method = build_method(model, cfg.method, run.model.head_modules)
    model.to(device)
    initial_counts = method.param_counts()
    record["params"] = initial_counts

    reset_peak(device)
    outcome = train(model, method, task, encoded, run, device, dtype, pad_id, logger,
                    progress=bool(cfg.get("progress", True)))
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
        record["params"] = {**initial_counts, "adapter_final": method.param_counts()["adapter"], "ranks_final": allocation}
    record["params"]["trainable_sha256"] = trainable_checksum(method)
    record["cost"] = {
        "train_seconds": round(outcome.train_seconds, 3),
        "eval_seconds": round(outcome.eval_seconds, 3),
        "wall_seconds": round(time.perf_counter() - wall_started, 3),
        "steps": outcome.steps,
        "examples_per_second": round(outcome.examples / max(outcome.train_seconds, 1e-9), 2),
        "seconds_per_step": round(outcome.train_seconds / max(outcome.steps, 1), 4),
        "tokenize_cache_hits": cache_hits,
        **{k: round(v, 1) for k, v in read_peak(device).items()},
    }


def summary_line(record: dict) -> str:
    head = f"{record['method']} | {record['task']} | {record['model']} | seed {record['seed']}"
    if record["status"] != "success":
        return f"{head} | {record['status'].upper()}: {record['error']}"
    params, metrics, cost = record["params"], record["metrics"], record["cost"]
    split, primary = metrics["report_split"], metrics["primary"]
    adapter = reported_adapter_params(params)
    share = 100 * adapter / max(params["backbone"], 1)
    score = 100 * metrics["final"][split][primary]
    return (f"{head} | adapter params {adapter:,} ({share:.2f}% of backbone) | "
            f"{split} {primary} {score:.2f} | {cost['wall_seconds']:.1f} s")


def execute_run(cfg: DictConfig) -> dict:
    """Run one composed config unless it already succeeded; the record is returned either way."""
    cfg, problem = effective_config(cfg)
    config = resolved_config(cfg)
    key = run_key(config)
    store = RecordStore(cfg.results_dir)
    store.ensure_writable()
    previous = store.read(key)
    if previous is not None and previous["status"] == "success":
        print(f"skip {key}: already succeeded ({summary_line(previous)})", file=sys.stderr)
        return previous
    record = new_record(config, key)
    logger = build_logger(parse_section(LoggerConfig, cfg.logger, "logger"), cfg.results_dir)
    store.write(record)
    try:
        if problem is not None:
            raise problem
        logger.start(record)
        fine_tune(cfg, record, logger)
        record["status"] = "success"
    except BaseException as error:  # interrupted runs are recorded as failed too, then re-raised
        record["status"], record["error"] = "failed", one_line(error)
        if not isinstance(error, Exception):
            raise
        if not isinstance(error, HarnessError):  # unexpected: keep the traceback for debugging
            import traceback

            record["traceback"] = traceback.format_exc()
    finally:
        record["provenance"]["ended_at"] = utc_now()
        store.write(record)
        logger.finish(record)
        print(summary_line(record), file=sys.stderr if record["status"] != "success" else sys.stdout)
    return record
