"""The leaderboard's static web site (harness/report/site.py), built from fixed records: its pages as HTML
(tests/report/test_site_browser.py drives them in headless Chromium)."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.report.site import build_site
from harness.store.identity import run_key
from tests.report.test_leaderboard import record

BACKBONE = 22_713_216
# (method, task, seed, final test accuracy, adapter params)
RUNS = [
    (method, task, seed, score + seed / 100, params)
    for method, params, scores in [
        ("full", BACKBONE, (0.95, 0.70)),
        ("head", 0, (0.80, 0.60)),
        ("lora", 73_728, (0.93, 0.68)),
        ("lora_xs", 8_000, (0.90, 0.66)),
    ]
    for task, score in zip(("bbc_news", "tweet_sentiment"), scores)
    for seed in range(3)
]


def full_record(method, task, seed, final, params) -> dict:
    """A record as a run writes it: config, learning curve, cost and provenance."""
    rec = record(method, None, task, seed, final, final, params, sweep="site")
    rec["config"] |= {
        "train": {
            "lr": 1e-3,
            "head_lr": 5e-3,
            "epochs": 2,
            "max_steps": None,
            "batch_size": 16,
            "schedule": "linear",
            "warmup_ratio": 0.06,
            "weight_decay": 0.0,
        },
        "method": {"name": method, "lr": 1e-3, "head_lr": 5e-3, "r": 8},
    }
    rec["metrics"]["curve"] = [
        {"step": step, "epoch": step / 10, "split": split, "values": values}
        for step, fraction in ((10, 0.99), (20, 1.0))
        for split, values in (
            ("train", {"loss": 1.0 / step}),
            ("validation", {"accuracy": final * fraction}),
            ("test", {"accuracy": final * fraction}),
        )
    ]
    rec["provenance"] = {
        "git_sha": "0123456789abcdef",
        "git_dirty": False,
        "device": "cpu",
        "versions": {"torch": "2.13.0+cpu", "transformers": "5.23.0"},
        "started_at": "2026-11-30T10:00:00+00:00",
    }
    rec["cost"] = {**rec["cost"], "peak_memory_mb": 1200.0}
    return keyed(rec)


def keyed(rec: dict) -> dict:
    """The record under its config's run key (a reader refuses a record whose config hashes to another key)."""
    rec["run_key"] = run_key(rec["config"])
    return rec


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("site") / "results"
    (results / "runs").mkdir(parents=True)
    for spec in RUNS:
        rec = full_record(*spec)
        (results / "runs" / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    return build_site(str(results), str(results.parent / "site"), sweep="site").parent


def test_the_site_is_static_html_readable_without_javascript(site):
    index = (site / "index.html").read_text()
    assert index.count('<tr data-method="') == 4  # one table row per method, in plain HTML
    assert "<strong>96.00</strong> [" in index  # full FT's bbc_news mean with its interval, bold as the best
    assert re.findall(r'<script src="([^"]+)"', index) == ["assets/plotly.min.js", "assets/site.js"]  # nothing fetched
    assert "http://" not in index and "https://" not in index
    assert "git " in index and "peft-harness" in index  # the footer: version, sha, build time
    assert index.count("Sanity flags: none.") == 1 and "sweep-caption" not in index  # one model, nothing flagged
    assert sorted(p.name for p in (site / "cells").iterdir()) == sorted(
        f"minilm--{m}--{t}.html" for m in ("full", "head", "lora", "lora_xs") for t in ("bbc_news", "tweet_sentiment")
    )
    assert (site / "data" / "leaderboard.csv").read_text().startswith("model,method,task,")
    assert (site / "assets" / "plotly.min.js").stat().st_size > 1_000_000
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert size < 10_000_000


def test_the_index_shows_the_sweep_caption_each_models_sanity_flags_and_the_convergence_page(tmp_path):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    for method, score in (("full", 0.50), ("head", 0.90)):  # full fine-tuning below head-only: a flag
        for seed in range(3):
            rec = full_record(method, "bbc_news", seed, score + seed / 100, BACKBONE if method == "full" else 0)
            (results / "runs" / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    site = build_site(
        str(results),
        str(tmp_path / "site"),
        sweep="site",
        sweep_caption="One seed,\n  60 steps.",
        flag_notes={"minilm": "Head-only\n  is <tuned> longer."},
    ).parent
    index = (site / "index.html").read_text()
    assert '<p class="sweep-caption">One seed, 60 steps.</p>' in index
    assert (
        "<li>bbc_news: reference under-trained: full fine-tuning 51.00 is below head-only 91.00 beyond both intervals"
        '</li></ul><p class="flag-note">Why these flags stand: Head-only is &lt;tuned&gt; longer.</p></div>'
    ) in index
    assert '<a href="convergence.html">convergence</a>' in index
    convergence = (site / "convergence.html").read_text()
    assert "2 of 2 cells (100 %) converged" in convergence and convergence.count("<td>yes</td>") == 2
    assert ">0.51</td>" in convergence and ">0.91</td>" in convergence  # last gains: 1 % of 51 and of 91


def write_records(results: Path, records: list[dict]) -> None:
    (results / "runs").mkdir(parents=True, exist_ok=True)
    for rec in records:
        (results / "runs" / f"{rec['run_key']}.json").write_text(json.dumps(rec))


def config_record(method: str, r: int, seed: int, final: float) -> dict:
    """A run of `method` with rank `r` (two ranks of one method: two rows of the board)."""
    rec = full_record(method, "bbc_news", seed, final, 1000 * r)
    rec["config"]["method"]["r"] = r
    return keyed(rec)


def test_a_method_run_in_two_configs_gets_a_row_and_a_cell_page_per_config(tmp_path):
    results = tmp_path / "results"
    write_records(
        results, [config_record("lora", r, seed, 0.80 + r / 100 + seed / 1000) for r in (4, 8) for seed in range(2)]
    )
    site = build_site(str(results), str(tmp_path / "site"), sweep="site").parent
    pages = {p.name: p.read_text() for p in (site / "cells").iterdir()}
    assert sorted(pages) == ["minilm--lora_method.r_4_--bbc_news.html", "minilm--lora_method.r_8_--bbc_news.html"]
    for r in (4, 8):
        text = pages[f"minilm--lora_method.r_{r}_--bbc_news.html"]
        assert f"<dt>method.r</dt><dd>{r}</dd>" in text  # each page shows its own config's runs
        assert f"<title>minilm / lora (method.r={r}) / bbc_news</title>" in text
        assert f"{100 * (0.80 + r / 100 + 0.0005):.2f}" in text  # the mean of its two seeds
    index = (site / "index.html").read_text()
    assert index.count('<tr data-method="lora (method.r=') == 2
    assert sorted(p.name for p in (site / "methods").iterdir()) == [
        "index.html",
        "lora_method.r_4_.html",
        "lora_method.r_8_.html",
    ]


def test_hyper_parameters_are_a_key_value_list_without_unset_values(site):
    text = (site / "cells" / "minilm--lora--bbc_news.html").read_text()
    listed = re.search(r"<h2>Hyper-parameters</h2>(<dl.*?</dl>)", text).group(1)
    assert re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", listed) == [
        ("lr", "0.001"),
        ("head lr", "0.005"),
        ("method.r", "8"),
        ("train.epochs", "2"),
        ("train.batch_size", "16"),
        ("train.schedule", "linear"),
        ("train.warmup_ratio", "0.06"),
        ("train.weight_decay", "0.0"),
    ]  # max_steps is None in the config: left out
    for page in [*site.rglob("*.html")]:
        visible = re.sub(r"<script.*?</script>", "", page.read_text(), flags=re.S)
        assert not re.search(r">\s*(NaN|nan|None)\s*<", visible), page.name


def delta_cells(index: str, method: str) -> list[str]:
    row = re.search(rf'<tr data-method="{re.escape(method)}">(.*?)</tr>', index).group(1)
    return re.findall(r'<td[^>]*class="delta"[^>]*>(.*?)</td>', row)


def test_the_model_table_shows_delta_full_and_delta_lora_with_their_marks(site):
    index = (site / "index.html").read_text()
    head = re.search(r'<table class="board sortable" id="table-minilm"><thead><tr>(.*?)</tr>', index).group(1)
    headers = [re.sub(r"<[^>]+>", " ", h).split() for h in re.findall(r"<th[^>]*>(.*?)</th>", head)]
    assert headers == [
        ["method"],
        ["adapter", "params"],
        ["%", "backbone"],
        ["bbc_news"],
        ["Δ", "full", "bbc_news"],
        ["Δ", "lora", "bbc_news"],
        ["tweet_sentiment"],
        ["Δ", "full", "tweet_sentiment"],
        ["Δ", "lora", "tweet_sentiment"],
        ["normalised"],
    ]
    # lora_xs − full per seed: 90 − 95 on bbc_news and 66 − 70 on tweet_sentiment, the same on every seed
    # (no spread: no test, ≈); − lora: 90 − 93, 66 − 68; full − lora: +2 on both
    shown = [re.sub(r"<[^>]+>", "", cell) for cell in delta_cells(index, "lora_xs")]
    assert shown == ["-5.00 ≈", "-3.00 ≈", "-4.00 ≈", "-2.00 ≈"]
    assert [re.sub(r"<[^>]+>", "", cell) for cell in delta_cells(index, "full")] == ["—", "+2.00 ≈", "—", "+2.00 ≈"]


def noisy_record(method: str, seed: int, final: float) -> dict:
    return full_record(method, "bbc_news", seed, final, BACKBONE if method == "full" else 1000)


def test_the_compare_page_holds_the_paired_difference_of_every_pair_as_scipy_computes_it(tmp_path):
    scores = {"full": [0.90, 0.93, 0.91, 0.95], "lora": [0.89, 0.90, 0.91, 0.92], "dora": [0.88, 0.92, 0.90, 0.90]}
    write_records(
        tmp_path / "results", [noisy_record(m, s, v) for m, values in scores.items() for s, v in enumerate(values)]
    )
    site = build_site(str(tmp_path / "results"), str(tmp_path / "site"), sweep="site").parent
    page = (site / "compare.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" data-compare="pairs">(.*?)</script>', page).group(1))
    assert data["methods"] == ["dora", "full", "lora"]
    assert sorted(data["pairs"]) == ["dora\tfull", "dora\tlora", "full\tlora"]
    for pair, rows in data["pairs"].items():
        first, second = pair.split("\t")
        a, b = 100 * np.array(scores[first]), 100 * np.array(scores[second])
        test = stats.ttest_rel(a, b)  # no predictions: the paired t-test over seeds
        interval = test.confidence_interval(0.95)
        [row] = rows
        assert row["model"] == "minilm" and row["task"] == "bbc_news"
        assert row["first"] == pytest.approx(a.mean(), abs=1e-4) and row["second"] == pytest.approx(b.mean(), abs=1e-4)
        assert row["diff"] == pytest.approx((a - b).mean(), abs=1e-4)
        assert (row["diff_low"], row["diff_high"]) == pytest.approx((interval.low, interval.high), abs=1e-4)
        assert row["p"] == pytest.approx(test.pvalue, abs=1e-4)
        assert row["mark"] == ("≈" if test.pvalue >= 0.05 else "▲" if a.mean() > b.mean() else "▼")
    assert 'id="compare-first"' in page and 'id="compare-second"' in page


def test_method_pages_link_their_cells_and_show_their_cost(site):
    text = (site / "methods" / "lora.html").read_text()
    assert re.findall(r'<a href="(\.\./cells/[^"]+)">', text) == [
        "../cells/minilm--lora--bbc_news.html",
        "../cells/minilm--lora--tweet_sentiment.html",
    ]
    row = re.search(r"<tr><td[^>]*><a[^>]*>bbc_news</a></td>(.*?)</tr>", text).group(1)
    cells = [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
    # score, n, Δ full, Δ lora, adapter params, % backbone, train s, wall s, peak MB (the records' cost)
    assert cells == ["94.00 [91.52, 96.48]", "3", "-2.00\u00a0≈", "—", "73,728", "0.325", "1.0", "2.0", "1200.0"]
    sorted_by = [float(v) for v in re.findall(r'<td data-value="([^"]+)"', row)]
    assert sorted_by == [94.0, 3, -2.0, 73728, 0.325, 1.0, 2.0, 1200.0]  # scores and Δ sort by their number
    assert '<a href="methods/lora.html">lora</a>' in (site / "index.html").read_text()


def test_the_index_links_the_tables_for_download_and_the_other_pages(site):
    index = (site / "index.html").read_text()
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex", "leaderboard_across_tasks.csv"):
        assert f'<a href="data/{name}" download>{name}</a>' in index
        assert (site / "data" / name).stat().st_size > 100
    assert (site / "data" / "leaderboard.md").read_text().startswith("# Leaderboard")
    assert "\\begin{tabular}" in (site / "data" / "leaderboard.tex").read_text()
    for target in ("methods/index.html", "compare.html", "convergence.html"):
        assert f'<a href="{target}">' in index and (site / target).is_file()


def test_convergence_rows_link_to_their_cells_and_sort(site):
    text = (site / "convergence.html").read_text()
    assert '<table class="sortable">' in text
    links = re.findall(r'<a href="(cells/[^"]+)">', text)
    assert sorted(links) == sorted(f"cells/{p.name}" for p in (site / "cells").iterdir())


def test_published_tables_are_linked_from_the_index_and_the_pages_of_their_methods(tmp_path):
    write_records(tmp_path / "results", [noisy_record("lora", s, 0.9) for s in range(2)])
    (tmp_path / "papers" / "lora_glue_roberta" / "runs").mkdir(parents=True)  # a paper's sweep, no runs yet
    site = build_site(
        str(tmp_path / "results"), str(tmp_path / "site"), sweep="site", papers_root=tmp_path / "papers"
    ).parent
    assert '<a href="papers/lora_glue_roberta.html">paper: lora_glue_roberta</a>' in (site / "index.html").read_text()
    assert (
        '<a href="../papers/lora_glue_roberta.html">lora_glue_roberta</a>'
        in (site / "methods" / "lora.html").read_text()
    )
    assert "no runs" in (site / "papers" / "lora_glue_roberta.html").read_text()


def test_the_pareto_plot_gives_each_method_its_colour_and_symbol_of_the_figures():
    from types import SimpleNamespace

    from harness.report.palette import KNOWN, MARKERS
    from harness.report.site_index import pareto_figure

    methods = [*KNOWN, "lora (method.r=4)", "unknown_method"]
    aggregates = pd.DataFrame(
        {
            "model": "m",
            "method": methods,
            "adapter_params": [1000 * (i + 1) for i in range(len(methods))],
            "mean": [i / 25 for i in range(len(methods))],
            "mean_low": float("nan"),
            "mean_high": float("nan"),
            "higher_is_better": True,
        }
    )
    figure = pareto_figure(SimpleNamespace(aggregates=aggregates), "m")
    points = {trace["name"]: trace for trace in figure["data"] if trace["name"] != "Pareto frontier"}
    assert list(points) == methods
    assert len({(t["marker"]["color"], t["marker"]["symbol"]) for t in points.values()}) == len(methods)
    assert points["full"]["marker"] == {"size": 9, "symbol": "circle", "color": "#1f77b4"}  # tab10's first
    lora, variant = points["lora"]["marker"], points["lora (method.r=4)"]["marker"]
    assert variant["color"] == lora["color"] and variant["symbol"] != lora["symbol"]  # lora's colour, its own mark
    assert all(t["marker"]["symbol"] in MARKERS.values() for t in points.values())
    assert all(trace["error_y"]["array"] == [0] for trace in points.values())  # no interval: a bar of zero, not NaN
    assert figure["layout"]["legend"]["y"] < 0  # the legend under the plot, never over a label or point


def test_a_site_without_successful_runs_says_so_on_every_page(tmp_path):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    site = build_site(str(tmp_path / "results"), str(tmp_path / "site"), sweep="site").parent
    assert "No successful runs yet." in (site / "index.html").read_text()
    assert "No successful runs yet." in (site / "methods" / "index.html").read_text()
    assert "Fewer than two methods: nothing to compare." in (site / "compare.html").read_text()
    assert sorted(p.name for p in (site / "data").iterdir()) == ["leaderboard.md"]


def test_head_only_sits_at_the_axis_place_labelled_0_and_hovers_its_true_count():
    from types import SimpleNamespace

    from harness.report.site_index import pareto_figure

    aggregates = pd.DataFrame(
        {
            "model": "m",
            "method": ["head", "lora", "full"],
            "adapter_params": [0, 73_728, BACKBONE],
            "mean": [0.0, 0.9, 1.0],
            "mean_low": float("nan"),
            "mean_high": float("nan"),
            "higher_is_better": True,
        }
    )
    figure = pareto_figure(SimpleNamespace(aggregates=aggregates), "m")
    head = next(trace for trace in figure["data"] if trace["name"] == "head")
    axis = figure["layout"]["xaxis"]
    assert head["x"] == [1] and head["customdata"] == [0] and "%{customdata:,}" in head["hovertemplate"]
    assert axis["tickvals"][:2] == [1, 10] and axis["ticktext"][0] == "0" and axis["tickvals"][-1] >= BACKBONE


def test_a_methods_adapter_params_are_its_median_over_runs_as_in_the_tables(tmp_path):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    for task, seed, kept in (("bbc_news", 0, 60_000), ("bbc_news", 1, 61_000), ("tweet_sentiment", 0, 70_000)):
        rec = full_record("adalora", task, seed, 0.9, 100_000)
        rec["params"]["adapter_final"] = kept
        (results / "runs" / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    site = build_site(str(results), str(tmp_path / "site"), sweep="site").parent
    row = re.search(r'<tr data-method="adalora">(.*?)</tr>', (site / "index.html").read_text()).group(1)
    assert ">61,000<" in row  # the median of 60,000, 61,000 and 70,000 (the maximum was shown before)
    assert "61000" in (site / "methods" / "index.html").read_text().replace(",", "")


def test_the_index_says_which_items_were_scored_where_a_clean_items_set_left_some_out(tmp_path):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    for seed in range(2):
        rec = full_record("lora", "bbc_news", seed, 0.9, 73_728)
        rec["config"]["task"] = {"name": "bbc_news", "source": None}
        keyed(rec)
        (results / "runs" / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    site = build_site(str(results), str(tmp_path / "site"), sweep="site").parent
    index = (site / "index.html").read_text()
    # these records kept no predictions: the index says their scores are over every item
    assert "bbc_news test: recorded scores over every item (no usable per-item predictions to rescore)" in index


def optimizer_record(method: str, optimizer: str | None, seed: int, final: float) -> dict:
    """A run of `method` trained by `optimizer` (None: a record from before the optimizer axis, AdamW)."""
    rec = full_record(method, "bbc_news", seed, final, 1000)
    if optimizer is not None:
        rec["optimizer"] = optimizer
        rec["config"]["optimizer"] = {"name": optimizer, "betas": [0.9, 0.999], "eps": 1e-8, "lr_ratio": 16.0}
    return keyed(rec)


def test_a_method_trained_by_another_optimizer_is_a_row_and_a_page_of_its_own_compared_with_lora(tmp_path):
    results = tmp_path / "results"
    write_records(
        results,
        [
            *(optimizer_record("full", None, seed, 0.95) for seed in range(3)),
            *(optimizer_record("lora", None, seed, 0.90 + seed / 100) for seed in range(3)),
            *(optimizer_record("lora", "loraplus", seed, 0.92 + seed / 100) for seed in range(3)),
        ],
    )
    site = build_site(str(results), str(tmp_path / "site"), sweep="site").parent
    assert sorted(p.name for p in (site / "cells").iterdir()) == [
        "minilm--full--bbc_news.html",
        "minilm--lora--bbc_news.html",
        "minilm--lora_loraplus--bbc_news.html",
    ]
    index = (site / "index.html").read_text()
    assert '<tr data-method="lora+loraplus">' in index and '<tr data-method="lora">' in index
    # against full: 92 − 95 + seed/100 − 0; against lora (AdamW): +2 on every seed (no spread: ≈)
    assert [re.sub(r"<[^>]+>", "", cell) for cell in delta_cells(index, "lora+loraplus")] == ["-2.00 ≈", "+2.00 ≈"]
    page = (site / "cells" / "minilm--lora_loraplus--bbc_news.html").read_text()
    assert "<title>minilm / lora+loraplus / bbc_news</title>" in page
