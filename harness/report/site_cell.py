"""A cell's page of the site (harness/report/site.py), cells/<model>--<method>--<task>.html: every seed's
learning curves (each evaluated split's score, then the training loss), the chosen hyper-parameters and
parameter counts as key/value lists, the tuning trials, and the cost and provenance of each record.

A method run in two configs is two rows of the board, its label carrying the config keys that differ
(harness/report/frames.py `separate_settings`); `labelled_records` gives each record that same label."""

import pandas as pd

from harness.report.board import Board
from harness.report.frames import separate_settings, setting_of
from harness.report.markdown import tuning_table
from harness.report.palette import COLOURS
from harness.report.site_html import definition_list, escape, frame_table, page, plot_div, plot_layout, slug
from harness.store.records import record_label

TRAIN_KEYS = ("epochs", "max_steps", "batch_size", "schedule", "warmup_ratio", "weight_decay")


def labelled_records(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """The successful records by the (model, method label, task) of their board row: a method's runs that
    differ in more than the seed carry the differing config keys in their label, as on the board."""
    successful = [r for r in records if r["status"] == "success"]
    if not successful:
        return {}
    frame = pd.DataFrame(
        {
            "model": [r["model"] for r in successful],
            "method": [record_label(r) for r in successful],
            "task": [r["task"] for r in successful],
            "setting": [setting_of(r) for r in successful],
        }
    )
    found: dict[tuple[str, str, str], list[dict]] = {}
    for record, row in zip(successful, separate_settings(frame).itertuples()):
        found.setdefault((row.model, row.method, row.task), []).append(record)
    return found


def seed_colour(seed: int) -> str:
    return COLOURS[seed % len(COLOURS)]


def curves_figure(records: list[dict], metric: str) -> dict:
    """A line per seed and evaluated split: the metric (×100) at every evaluation (the report split solid,
    the others dotted), one colour per seed."""
    data = []
    for record in sorted(records, key=lambda r: r["seed"]):
        curve, report = record["metrics"]["curve"], record["metrics"]["report_split"]
        splits = sorted(
            {p["split"] for p in curve if p["split"] != "train" and metric in p["values"]}, key=lambda s: s != report
        )
        for split in splits:
            scores = [
                (p["step"], 100 * p["values"][metric]) for p in curve if p["split"] == split and metric in p["values"]
            ]
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": f"seed {record['seed']} {split} {metric}",
                    "line": {"color": seed_colour(record["seed"]), "dash": "solid" if split == report else "dot"},
                    "x": [s for s, _ in scores],
                    "y": [round(v, 4) for _, v in scores],
                }
            )
    layout = plot_layout(
        480, 30, 140, xaxis={"title": {"text": "optimizer step"}}, yaxis={"title": {"text": f"{metric} ×100"}}
    )
    return {"data": data, "layout": layout}


def loss_figure(records: list[dict]) -> dict:
    """A line per seed: the training loss at every logged step."""
    data = []
    for record in sorted(records, key=lambda r: r["seed"]):
        losses = [(p["step"], p["values"]["loss"]) for p in record["metrics"]["curve"] if p["split"] == "train"]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"seed {record['seed']} train loss",
                "line": {"color": seed_colour(record["seed"])},
                "x": [s for s, _ in losses],
                "y": [round(v, 5) for _, v in losses],
            }
        )
    layout = plot_layout(
        380, 30, 120, xaxis={"title": {"text": "optimizer step"}}, yaxis={"title": {"text": "train loss"}}
    )
    return {"data": data, "layout": layout}


def section(record: dict, name: str) -> dict:
    """A section of the record's config ({} where the record has none)."""
    return (record.get("config") or {}).get(name) or {}


def hyper_parameters(record: dict) -> dict:
    """The settings a reader looks for first (learning rates, the method's own keys, the budget); unset
    ones are left out by the list that shows them."""
    train, method = section(record, "train"), section(record, "method")
    return {
        "lr": train.get("lr"),
        "head lr": train.get("head_lr"),
        **{f"method.{k}": v for k, v in method.items() if k not in ("name", "lr", "head_lr")},
        **{f"train.{k}": train.get(k) for k in TRAIN_KEYS},
    }


def record_rows(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in sorted(records, key=lambda r: r["seed"]):
        metrics, cost, provenance = r["metrics"], r["cost"], r["provenance"]
        report = metrics["report_split"]
        versions = provenance.get("versions", {})
        rows.append(
            {
                "seed": r["seed"],
                "run key": r["run_key"],
                f"final {report}": f"{100 * metrics['final'][report][metrics['primary']]:.2f}",
                f"best {report}": f"{100 * metrics['best'][report][metrics['primary']]:.2f}",
                "steps": cost.get("steps"),
                "train s": cost.get("train_seconds"),
                "eval s": cost.get("eval_seconds"),
                "wall s": cost.get("wall_seconds"),
                "peak MB": cost.get("peak_memory_mb"),
                "code": f"{(provenance.get('git_sha') or '?')[:12]}{' (dirty)' if provenance.get('git_dirty') else ''}",
                "torch / transformers": f"{versions.get('torch', '?')} / {versions.get('transformers', '?')}",
                "device": provenance.get("device"),
                "started": provenance.get("started_at"),
            }
        )
    return pd.DataFrame(rows)


def cell_page(board: Board, records: list[dict], row: pd.Series, score: str, footer: str) -> str:
    """The page of one board row (`row`: its summary row; `records`: its runs; `score`: its score as the
    index shows it)."""
    model, method, task = row["model"], row["method"], row["task"]
    first = records[0]
    params = {k: v for k, v in first["params"].items() if k != "ranks_final"}
    body = [
        f'<p class="caption">{escape(row["metric"])} on {escape(row["split"])}, {board.which} evaluation: '
        f'{score}. Method: <a href="../methods/{slug(method)}.html">{escape(method)}</a>.</p>',
        plot_div(f"curves-{slug(model, method, task)}", curves_figure(records, row["metric"])),
        plot_div(f"loss-{slug(model, method, task)}", loss_figure(records)),
        "<h2>Hyper-parameters</h2>",
        definition_list(hyper_parameters(first)),
        "<h2>Parameters</h2>",
        definition_list(params),
    ]
    tuned = board.tuned[
        (board.tuned["model"] == model) & (board.tuned["method"] == method) & (board.tuned["task"] == task)
    ]
    if not tuned.empty:
        body += ["<h2>Tuning trials</h2>", frame_table(tuning_table(tuned).drop(columns=["model", "method", "task"]))]
    body += ["<h2>Runs: cost and provenance</h2>", frame_table(record_rows(records))]
    return page(f"{model} / {method} / {task}", "".join(body), 1, footer)
