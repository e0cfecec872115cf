"""The leaderboard's static web site (harness/report/site.py), built from fixed records and, where a
browser is installed (Debian chromium + chromium-driver, selenium), driven in headless Chromium from
file:// as a reader would use it. A screenshot of each page visited is written to test-artifacts/."""

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.report.site import build_site
from tests.report.test_leaderboard import record

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PEFT_HARNESS_ARTIFACTS", ROOT / "test-artifacts"))
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
    rec["config"] = {
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
    assert "<td>0.51</td>" in convergence and "<td>0.91</td>" in convergence  # last gains: 1 % of 51 and of 91


def browser_or_skip():
    """A headless Chromium driven by selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip(
            "no headless browser here: install the Debian packages chromium and chromium-driver "
            "(scripts/setup.sh test does where it runs as root)"
        )
    options = Options()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = browser_or_skip()
    yield driver
    driver.quit()


def visit(browser, path: Path, screenshot: str):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path.as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && [...document.querySelectorAll('div.plot')]"
            ".every(div => div.data !== undefined)"
        )
    )
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / screenshot))


def method_column(browser) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#table-minilm tbody tr')]"
        ".filter(r => !r.hidden).map(r => r.dataset.method)"
    )


def test_the_index_loads_with_no_console_errors(site, browser):
    visit(browser, site / "index.html", "index.png")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    assert (ARTIFACTS / "index.png").stat().st_size > 10_000


def test_sorting_a_column_reorders_the_rows(site, browser):
    from selenium.webdriver.common.by import By

    visit(browser, site / "index.html", "index-sorted.png")
    assert method_column(browser) == ["full", "lora", "lora_xs", "head"]  # as built: most parameters first
    header = browser.find_element(By.XPATH, "//table[@id='table-minilm']//th[text()='bbc_news']")
    header.click()
    assert method_column(browser) == ["head", "lora_xs", "lora", "full"]  # ascending bbc_news score
    header.click()
    assert method_column(browser) == ["full", "lora", "lora_xs", "head"]
    browser.find_element(By.XPATH, "//table[@id='table-minilm']//th[text()='method']").click()
    assert method_column(browser) == ["full", "head", "lora", "lora_xs"]


def test_filters_leave_only_the_chosen_method_and_task(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    visit(browser, site / "index.html", "index-filtered.png")
    Select(browser.find_element(By.ID, "method-filter")).select_by_value("lora")
    assert method_column(browser) == ["lora"]
    Select(browser.find_element(By.ID, "task-filter")).select_by_value("tweet_sentiment")
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#table-minilm thead th')].filter(h => !h.hidden).map(h => h.textContent)"
    )
    assert shown == ["method", "adapter params", "% backbone", "tweet_sentiment", "normalised"]
    Select(browser.find_element(By.ID, "method-filter")).select_by_value("")
    assert len(method_column(browser)) == 4


def test_the_pareto_plot_has_one_point_per_table_row(site, browser):
    visit(browser, site / "index.html", "index-plot.png")
    points = browser.execute_script(
        "return document.getElementById('pareto-minilm').data"
        ".filter(t => t.name !== 'Pareto frontier').map(t => [t.name, ...t.x])"
    )
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#table-minilm tbody tr')]"
        ".map(r => [r.dataset.method, Number(r.cells[1].dataset.value)])"
    )
    assert sorted(points) == sorted([method, max(params, 1)] for method, params in rows)
    assert browser.execute_script("return document.querySelector('#pareto-minilm .xaxislayer-above') !== null")


def test_a_cell_link_opens_its_page_with_every_seeds_curves(site, browser):
    from selenium.webdriver.common.by import By

    visit(browser, site / "index.html", "index-before-cell.png")
    browser.find_element(By.CSS_SELECTOR, "tr[data-method='lora'] td[data-task='bbc_news'] a").click()
    assert browser.current_url.endswith("cells/minilm--lora--bbc_news.html")
    visit(browser, Path(browser.current_url.removeprefix("file://")), "cell.png")
    names = [
        browser.execute_script(f"return document.querySelectorAll('div.plot')[{i}].data.map(t => t.name)")
        for i in (0, 1)
    ]
    assert names == [
        [f"seed {s} {split} accuracy" for s in range(3) for split in ("test", "validation")],
        [f"seed {s} train loss" for s in range(3)],
    ]
    curve = browser.execute_script("return document.querySelector('div.plot').data[0].y")
    assert curve == pytest.approx([100 * 0.93 * 0.99, 100 * 0.93])
    dashes = browser.execute_script("return document.querySelector('div.plot').data.map(t => t.line.dash)")
    assert dashes == ["solid", "dot"] * 3  # the report split solid, the selection split dotted
    legend_top = browser.execute_script("return document.querySelector('div.plot .legend').getBoundingClientRect().top")
    plot_bottom = browser.execute_script(
        "return document.querySelector('div.plot .xaxislayer-above').getBoundingClientRect().bottom"
    )
    assert legend_top > plot_bottom  # the legend below the x axis, over no axis labels
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "Runs: cost and provenance" in text and "0123456789ab" in text and "Hyper-parameters" in text


def test_every_method_of_a_crowded_pareto_plot_has_its_own_colour_and_symbol():
    from types import SimpleNamespace

    from harness.report.site import pareto_figure

    methods = [f"method{i}" for i in range(25)]
    aggregates = pd.DataFrame(
        {
            "model": "m",
            "method": methods,
            "adapter_params": [1000 * (i + 1) for i in range(25)],
            "mean": [i / 25 for i in range(25)],
            "mean_low": float("nan"),
            "mean_high": float("nan"),
            "higher_is_better": True,
        }
    )
    figure = pareto_figure(SimpleNamespace(aggregates=aggregates), "m")
    points = [trace for trace in figure["data"] if trace["name"] != "Pareto frontier"]
    assert [trace["name"] for trace in points] == methods
    assert len({(trace["marker"]["color"], trace["marker"]["symbol"]) for trace in points}) == 25
    assert all(trace["error_y"]["array"] == [0] for trace in points)  # no interval: a bar of zero, not NaN
    assert figure["layout"]["legend"]["y"] < 0  # the legend under the plot, never over a label or point
