"""The leaderboard's web site (harness/report/site.py) driven in headless Chromium from file:// as a reader
would use it, at a desktop's 1400×900 and a phone's 390×844: every page fits the screen's width (wide tables
scroll in their own box), logs no error and links only to what exists; sorting, filters, the compare page.
Needs Debian's chromium and chromium-driver and selenium (skipped without them, but failed where CI=true:
scripts/setup.sh test installs them there). A screenshot of each page visited is written to test-artifacts/."""

import json
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from harness.report.site import build_site
from tests.report.test_site import RUNS, config_record, full_record, keyed

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PEFT_HARNESS_ARTIFACTS", ROOT / "test-artifacts"))
SCREENS = {"desktop": (1400, 900), "phone": (390, 844)}
pytestmark = pytest.mark.slow  # about 30 s, and as long again for every page at both widths


def tuned(rec: dict, exponent: int, lr: float, validation: float) -> dict:
    """A run of a finished two-trial learning-rate search (harness/report/selection.py)."""
    rec["config"]["train"]["lr"] = lr
    rec["config"]["tuning"] = {"split": "validation", "search_seed": 0, "trials": 2, "exponent": exponent}
    rec["metrics"]["final"]["validation"]["accuracy"] = validation
    return keyed(rec)


def fixture_records() -> list[dict]:
    """test_site's board; lora_xs's tweet_sentiment runs from a learning-rate search (the tuning page), and
    dora in two ranks on bbc_news (two rows of one method)."""
    records = []
    for method, task, seed, final, params in RUNS:
        rec = full_record(method, task, seed, final, params)
        if (method, task) == ("lora_xs", "tweet_sentiment"):
            rec = tuned(rec, 1, 1e-3, final)
        records.append(rec)
    records.append(tuned(full_record("lora_xs", "tweet_sentiment", 0, 0.30, 8_000), 0, 3e-4, 0.30))  # the loser
    records += [
        config_record("dora", r, seed, final + seed / 100) for r, final in ((4, 0.91), (16, 0.92)) for seed in range(3)
    ]
    return records


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser-site")
    (root / "results" / "runs").mkdir(parents=True)
    for rec in fixture_records():
        (root / "results" / "runs" / f"{rec['run_key']}.json").write_text(json.dumps(rec))
    (root / "papers" / "lora_glue_roberta" / "runs").mkdir(parents=True)
    return build_site(str(root / "results"), str(root / "site"), sweep="site", papers_root=root / "papers").parent


def browser_or_skip():
    """A headless Chromium driven by selenium, or a skip that says what is missing (a failure where CI=true)."""
    missing = (
        "no headless browser here: install the Debian packages chromium and chromium-driver and selenium "
        "(scripts/setup.sh test does where it runs as root)"
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if webdriver is None or not browser or not driver:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    options = Options()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = browser_or_skip()
    driver.set_window_size(*SCREENS["desktop"])
    yield driver
    driver.quit()


def visit(browser, path: Path, screenshot: str | None = None):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path.as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && [...document.querySelectorAll('div.plot')]"
            ".every(div => div.data !== undefined)"
        )
    )
    if screenshot:
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / screenshot))


def method_column(browser) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#table-minilm tbody tr')]"
        ".filter(r => !r.hidden).map(r => r.dataset.method)"
    )


def broken_links(browser) -> list[str]:
    """The page's links that lead nowhere: to a file that does not exist, or to an anchor not on the page."""
    broken = []
    for href in browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)"):
        url = urlparse(href)
        if url.scheme != "file":
            broken.append(href)  # nothing is fetched: every link stays inside the site
        elif not Path(unquote(url.path)).is_file():
            broken.append(href)
        elif url.fragment and url.path == urlparse(browser.current_url).path:
            if not browser.execute_script("return document.getElementById(arguments[0]) !== null", url.fragment):
                broken.append(href)
    return broken


@pytest.mark.parametrize("screen", SCREENS)
def test_every_page_fits_the_screen_logs_no_errors_and_links_only_to_what_exists(site, browser, screen):
    browser.set_window_size(*SCREENS[screen])
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 22  # index, convergence, tuning, compare, 1 paper, methods/index and 6 methods, 10 cells
    problems = []
    try:
        for page in pages:
            name = str(page.relative_to(site))
            visit(browser, page, f"{screen}-{name.replace('/', '_')}.png" if "--" not in name else None)
            width, inner = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            if width > inner:
                problems.append(f"{name}: {width} px wide on a {inner} px screen")
            problems += [f"{name}: {e['message']}" for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            problems += [f"{name}: broken link {href}" for href in broken_links(browser)]
            problems += [
                f"{name}: the legend of {plot} overlaps its x axis's title" for plot in legends_over_axes(browser)
            ]
    finally:
        browser.set_window_size(*SCREENS["desktop"])
    assert problems == []


def test_the_index_fits_a_phone_and_its_wide_table_scrolls_in_its_own_box(site, browser):
    browser.set_window_size(*SCREENS["phone"])
    try:
        visit(browser, site / "index.html", "index-phone.png")
        page_width, inner, table_box, table = browser.execute_script(
            "const t = document.getElementById('table-minilm');"
            "return [document.documentElement.scrollWidth, window.innerWidth, t.parentElement.clientWidth, "
            "t.scrollWidth]"
        )
        assert page_width <= inner and table_box <= inner < table  # the table is wider; its box is not
        assert (
            browser.execute_script(
                "return getComputedStyle(document.getElementById('table-minilm').parentElement).overflowX"
            )
            == "auto"
        )
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        browser.set_window_size(*SCREENS["desktop"])


def legends_over_axes(browser) -> list[str]:
    """The page's plots whose legend starts above the bottom of their x axis's title."""
    return browser.execute_script(
        "return [...document.querySelectorAll('div.plot')].filter(p => p.querySelector('.legend') && "
        "p.querySelector('.legend').getBoundingClientRect().top < "
        "p.querySelector('.g-xtitle').getBoundingClientRect().bottom).map(p => p.id)"
    )


def after_content(browser, header) -> str:
    return browser.execute_script("return getComputedStyle(arguments[0], '::after').content", header)


def test_sorting_a_column_reorders_the_rows_with_arrows_unlike_the_significance_marks(site, browser):
    from selenium.webdriver.common.by import By

    visit(browser, site / "index.html", "index-sorted.png")
    dora4, dora16 = "dora (method.r=4)", "dora (method.r=16)"
    assert method_column(browser) == ["full", "lora", dora16, "lora_xs", dora4, "head"]  # most parameters first
    header = browser.find_element(By.XPATH, "//table[@id='table-minilm']//th[text()='bbc_news']")
    assert after_content(browser, header) == '" ⇅"'
    header.click()
    assert method_column(browser) == ["head", "lora_xs", dora4, dora16, "lora", "full"]  # ascending bbc_news
    assert after_content(browser, header) == '" ↑"'
    header.click()
    assert method_column(browser) == ["full", "lora", dora16, dora4, "lora_xs", "head"]
    assert after_content(browser, header) == '" ↓"'
    browser.find_element(By.XPATH, "//table[@id='table-minilm']//th[text()='method']").click()
    assert method_column(browser) == [dora16, dora4, "full", "head", "lora", "lora_xs"]


def test_the_convergence_and_tuning_tables_sort_and_link_to_cells(site, browser):
    from selenium.webdriver.common.by import By

    visit(browser, site / "convergence.html")
    column = "return [...document.querySelectorAll('table.sortable tbody tr')].map(r => r.cells[{}].textContent)"
    headers = browser.execute_script(
        "return [...document.querySelectorAll('table.sortable th')].map(h => h.textContent)"
    )
    final = headers.index("final")
    browser.find_elements(By.CSS_SELECTOR, "table.sortable th")[final].click()
    values = [float(v) for v in browser.execute_script(column.format(final))]
    assert values == sorted(values) and len(values) == 10
    visit(browser, site / "tuning.html")
    browser.find_element(By.LINK_TEXT, "tweet_sentiment").click()
    assert browser.current_url.endswith("cells/minilm--lora_xs--tweet_sentiment.html")
    assert "Tuning trials" in browser.find_element(By.TAG_NAME, "main").text


def test_filters_leave_only_the_chosen_method_and_task(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    visit(browser, site / "index.html", "index-filtered.png")
    Select(browser.find_element(By.ID, "method-filter")).select_by_value("lora")
    assert method_column(browser) == ["lora"]
    Select(browser.find_element(By.ID, "task-filter")).select_by_value("tweet_sentiment")
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#table-minilm thead th')].filter(h => !h.hidden)"
        ".map(h => h.innerText.replace(/\\s+/g, ' ').replace(/ [⇅↑↓]$/, '').trim())"
    )
    assert shown == [
        "method",
        "adapter params",
        "% backbone",
        "tweet_sentiment",
        "Δ full tweet_sentiment",
        "Δ lora tweet_sentiment",
        "normalised",
    ]
    Select(browser.find_element(By.ID, "method-filter")).select_by_value("")
    assert len(method_column(browser)) == 6


def test_the_pareto_plot_has_one_point_per_method_across_tasks(site, browser):
    visit(browser, site / "index.html", "index-plot.png")
    points = browser.execute_script(
        "return document.getElementById('pareto-minilm').data"
        ".filter(t => t.name !== 'Pareto frontier').map(t => [t.name, ...t.x])"
    )
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#table-minilm tbody tr')]"
        ".filter(r => r.cells[r.cells.length - 1].dataset.value !== undefined)"
        ".map(r => [r.dataset.method, Number(r.cells[1].dataset.value)])"
    )
    assert sorted(points) == sorted([method, max(params, 1)] for method, params in rows)
    assert browser.execute_script("return document.querySelector('#pareto-minilm .xaxislayer-above') !== null")


def test_a_cell_link_opens_its_page_with_every_seeds_curves(site, browser):
    from selenium.webdriver.common.by import By

    visit(browser, site / "index.html")
    browser.find_element(By.CSS_SELECTOR, "tr[data-method='lora'] td[data-task='bbc_news'] a").click()
    assert browser.current_url.endswith("cells/minilm--lora--bbc_news.html")
    visit(browser, Path(unquote(urlparse(browser.current_url).path)), "cell.png")
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
    assert legends_over_axes(browser) == []  # the legends below the x axis and its title
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "Runs: cost and provenance" in text and "0123456789ab" in text and "Hyper-parameters" in text


def compare_rows(browser) -> list[list[str]]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#compare-result tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent))"
    )


def test_the_compare_page_shows_the_pair_picked_either_way_round(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    visit(browser, site / "compare.html", "compare.png")
    first, second = (Select(browser.find_element(By.ID, i)) for i in ("compare-first", "compare-second"))
    first.select_by_value("lora")
    second.select_by_value("full")
    # lora − full: 93 − 95 and 68 − 70 on every seed (no spread: the interval is the point, ≈); P(first better)
    # over the 9 pairs of a lora seed (93, 94, 95) and a full seed (95, 96, 97): no win, one tie = 0.5 / 9
    assert compare_rows(browser) == [
        ["minilm", "bbc_news", "94.00", "96.00", "-2.00 [-2.00, -2.00] ≈", "—", "0.06"],
        ["minilm", "tweet_sentiment", "69.00", "71.00", "-2.00 [-2.00, -2.00] ≈", "—", "0.06"],
    ]
    first.select_by_value("full")
    second.select_by_value("lora")
    assert compare_rows(browser) == [
        ["minilm", "bbc_news", "96.00", "94.00", "+2.00 [+2.00, +2.00] ≈", "—", "0.94"],
        ["minilm", "tweet_sentiment", "71.00", "69.00", "+2.00 [+2.00, +2.00] ≈", "—", "0.94"],
    ]
    second.select_by_value(dora := "dora (method.r=4)")
    assert [row[:2] for row in compare_rows(browser)] == [["minilm", "bbc_news"]]  # dora ran bbc_news only
    assert browser.find_element(By.XPATH, f"//th[text()='{dora}']")


def test_a_method_page_links_the_compare_page_with_the_pair_picked(site, browser):
    from selenium.webdriver.common.by import By

    visit(browser, site / "methods" / "lora.html")
    compare_with = browser.find_element(By.XPATH, "//h2[text()='Compare with']/following-sibling::p[1]")
    assert compare_with.text == "dora (method.r=16) · dora (method.r=4) · full · head · lora_xs"
    compare_with.find_element(By.LINK_TEXT, "dora (method.r=4)").click()
    picked = [browser.find_element(By.ID, i).get_attribute("value") for i in ("compare-first", "compare-second")]
    assert picked == ["lora", "dora (method.r=4)"]
    # lora − dora r=4 on bbc_news, the one task both ran: 93 − 91 on every seed; P(lora better) over the 9 pairs
    # of (93, 94, 95) against (91, 92, 93): 8 wins and one tie, 8.5 / 9
    assert compare_rows(browser) == [["minilm", "bbc_news", "94.00", "92.00", "+2.00 [+2.00, +2.00] ≈", "—", "0.94"]]
