"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright.

The demo runs (server and simulated agents, as `make demo` starts them); the page must list
its jobs and update them in place, filter and sort, draw every chart of a job with data, give
its downloads, and log no console error. A server that requires tokens shows a reader only
its account. Screenshots of the pages go to $GPULEDGER_ARTIFACTS (default tests/artifacts/).
Without Chromium or Playwright these tests are skipped, except in CI (`CI` set), where they fail.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.reports.render import FIELDS
from tests.conftest import free_port, start_server

CHROMIUM = os.environ.get("GPULEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("GPULEDGER_ARTIFACTS", Path(__file__).parent / "artifacts"))
POLL_S = 5  # the page's REFRESH_MS
EXPECTED_REFUSALS = ("status of 401", "status of 403", "status of 404")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need {reason} in CI")
    pytest.skip(f"no browser: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _unavailable(f"Chromium at {CHROMIUM} (apt-get install chromium, or set GPULEDGER_CHROMIUM)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Console:
    """What the page logged as an error, and the exceptions it threw."""

    def __init__(self, page) -> None:  # noqa: ANN001
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def unexpected(self, allowed: tuple[str, ...] = ()) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in allowed)]


@pytest.fixture
def page(browser):  # noqa: ANN001, ANN201
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.console = Console(tab)
    yield tab
    context.close()


def screenshot(page, name: str) -> Path:  # noqa: ANN001
    page.wait_for_timeout(1500)  # past the highlight of values that just changed
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, browser) -> Iterator[str]:  # noqa: ANN001
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = tmp_path_factory.mktemp("demo")
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "demo", "--port", str(port), "--workdir", str(workdir / "demo"), "--metrics-port", "0"],
        stdout=(workdir / "demo.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                jobs = {j["job_id"]: j for j in httpx.get(f"{url}/v1/jobs", timeout=5).json()["items"]}
                if all(jobs.get(f"demo/100{n}", {}).get("gpu_hours", 0) > 0 for n in (1, 2, 4)):
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (workdir / "demo.log").read_text()
            time.sleep(0.5)
        else:
            raise AssertionError(f"the demo's jobs did not appear: {(workdir / 'demo.log').read_text()}")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def rows(page) -> list[dict[str, str]]:  # noqa: ANN001
    return page.eval_on_selector_all("#jobs tbody tr", """trs => trs.map(tr => Object.fromEntries(
        [...tr.querySelectorAll('td')].map(td => [td.dataset.col, td.querySelector('a')?.textContent ?? td.textContent])))""")


def wait_polls(page, selector: str, at_least: int) -> None:  # noqa: ANN001
    # Functions, not expressions: Playwright evaluates an expression with eval(), which the page's CSP refuses.
    page.wait_for_function(f"() => Number(document.querySelector('{selector}').dataset.polls) >= {at_least}",
                           timeout=(POLL_S * 3 + 10) * 1000)


def polls(page, selector: str) -> int:  # noqa: ANN001
    return int(page.eval_on_selector(selector, "e => e.dataset.polls"))


def test_jobs_appear_and_update_in_place(demo, page):
    page.goto(f"{demo}/")
    wait_polls(page, "#jobs", 1)
    table = {r["job_id"]: r for r in rows(page)}
    assert {"demo/1001", "demo/1002", "demo/1004", "demo/unallocated"} <= set(table)
    assert table["demo/1001"]["user"] == "alice" and table["demo/1001"]["gpus"] == "16"
    assert table["demo/1004"]["network_congestion"] == "heavy"  # 5,000 CNPs/s in the demo's spec
    assert table["demo/1001"]["network_congestion"] == "moderate"
    assert table["demo/1001"]["budget"] in ("within", "forecast over", "over budget")
    states = [r["state"] for r in rows(page)]
    assert states == sorted(states, key=lambda s: s != "running"), states  # running first
    page.evaluate("""() => { window.sameDocument = true;
        document.querySelector('tr[data-job-id="demo/1001"]').dataset.mark = 'kept'; }""")
    before = float(table["demo/1001"]["gpu_hours"])
    wait_polls(page, "#jobs", polls(page, "#jobs") + 1)
    after = {r["job_id"]: r for r in rows(page)}["demo/1001"]
    assert float(after["gpu_hours"]) > before, "GPU-hours did not grow between two polls"
    assert page.evaluate("""() => window.sameDocument === true
        && document.querySelector('tr[data-job-id="demo/1001"]').dataset.mark === 'kept'"""), "the page reloaded or rebuilt the row"
    screenshot(page, "jobs-page.png")
    assert page.console.unexpected() == []


def test_filters_and_sort(demo, page):
    page.goto(f"{demo}/")
    wait_polls(page, "#jobs", 1)

    def shown() -> set[str]:
        wait_polls(page, "#jobs", polls(page, "#jobs") + 1)  # a filter change polls at once
        return {r["job_id"] for r in rows(page)}

    page.select_option("#filter-user", "alice")
    assert shown() == {"demo/1001"} and "user=alice" in page.url
    page.select_option("#filter-user", "")
    page.select_option("#filter-account", "vision")
    assert shown() == {"demo/1002", "demo/1004"}
    page.select_option("#filter-account", "")
    for state in ("running", "ended"):
        page.select_option("#filter-state", state)
        truth = {j["job_id"] for j in httpx.get(f"{demo}/v1/jobs", params={"state": state}, timeout=5).json()["items"]}
        listed = shown()
        assert listed <= truth | {"demo/1003"} and truth - {"demo/1003"} <= listed  # 1003 ends mid-test
        assert all(r["state"] == state for r in rows(page))
    assert page.is_visible("#empty") == (not rows(page))
    page.select_option("#filter-state", "running")
    shown()
    page.click("th[data-col='cost_usd'] button")
    assert page.get_attribute("th[data-col='cost_usd']", "aria-sort") == "descending"
    costs = [float(r["cost_usd"].strip("$").replace(",", "")) for r in rows(page)]
    assert costs == sorted(costs, reverse=True) and len(costs) >= 4
    page.click("th[data-col='user'] button")
    page.click("th[data-col='user'] button")
    assert page.get_attribute("th[data-col='user']", "aria-sort") == "ascending"
    users = [r["user"] for r in rows(page) if r["user"] != "–"]
    assert users == sorted(users) and "sort=user" in page.url and "dir=asc" in page.url
    assert page.console.unexpected() == []


def test_job_page_draws_every_chart_with_data(demo, page):
    page.goto(f"{demo}/jobs/demo/1001")
    wait_polls(page, "#job", 1)
    # The forecast needs the training loop's progress, which the demo reports every 10 s.
    page.wait_for_function("""() => JSON.parse(document.querySelector('#chart-cost').dataset.points || '{}')
        ['Forecast cost ($)'] > 0""", timeout=60_000)
    charts = page.eval_on_selector_all(".chart", """els => Object.fromEntries(els.map(e =>
        [e.id, {points: JSON.parse(e.dataset.points), canvas: !!e.querySelector('canvas')}]))""")
    assert set(charts) == {"chart-power", "chart-cost", "chart-network", "chart-congestion"}
    for name, chart in charts.items():
        assert chart["canvas"] and chart["points"] and all(n > 0 for n in chart["points"].values()), (name, chart)
    assert charts["chart-power"]["points"]["GPU power (kW)"] >= 2
    assert page.text_content("#job-id") == "demo/1001" and page.text_content("#job-name") == "llama-70b-pretrain"
    card = page.eval_on_selector_all("#model-card tbody tr", "trs => trs.map(tr => tr.cells[0].textContent)")
    assert card == ["measured", "tdp"]
    assert "Price per GPU-hour" in page.text_content("#rates") and "$6.00" in page.text_content("#rates")
    assert "moderate" in page.text_content("#network")
    screenshot(page, "job-page.png")

    def download(kind: str) -> str:
        with page.expect_download() as info:
            page.click(f"button[data-download='{kind}']")
        return Path(info.value.path()).read_text()

    (report,) = list(csv.DictReader(io.StringIO(download("report-csv"))))
    assert list(report) == list(FIELDS) and report["job_id"] == "demo/1001" and float(report["gpu_hours"]) > 0
    assert json.loads(download("report-json"))["job_id"] == "demo/1001"
    series = list(csv.DictReader(io.StringIO(download("series-csv"))))
    assert series and float(series[-1]["cumulative_cost_usd"]) > 0
    assert json.loads(download("series-json"))["gpu"]["power_w"]
    assert page.console.unexpected() == []


@pytest.fixture
def narrow(browser):  # noqa: ANN001, ANN201
    context = browser.new_context(viewport={"width": 800, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.console = Console(tab)
    yield tab
    context.close()


def _number(text: str) -> float:
    return float(text.strip().strip("$").replace(",", "")) if text.strip() not in ("", "–") else 0.0


def test_jobs_table_fits_800_px_with_a_totals_row(demo, narrow):
    narrow.goto(f"{demo}/")
    wait_polls(narrow, "#jobs", 1)
    layout = narrow.evaluate("""() => {
        const wrap = document.querySelector('.table-wrap');
        const heads = [...document.querySelectorAll('#jobs thead th')].filter(th => th.offsetParent !== null);
        return {scroll: wrap.scrollWidth, client: wrap.clientWidth, viewport: window.innerWidth,
                visible: heads.map(th => th.dataset.col), right: Math.max(...heads.map(th => th.getBoundingClientRect().right))};
    }""")
    assert layout["scroll"] <= layout["client"] and layout["right"] <= layout["viewport"], layout  # nothing cut off
    assert layout["visible"] == ["job_id", "state", "gpus", "started_at", "gpu_hours", "energy_kwh", "cost_usd",
                                 "co2e_kg", "network_congestion", "budget"]
    narrow_line = narrow.text_content('tr[data-job-id="demo/1001"] td[data-col="job_id"] .narrow')
    assert narrow_line.startswith("alice · ")  # user and account moved under the job id
    snapshot = narrow.evaluate("""() => ({
        rows: [...document.querySelectorAll('#jobs tbody tr')].map(tr => Object.fromEntries(
            [...tr.querySelectorAll('td')].map(td => [td.dataset.col, td.textContent]))),
        total: Object.fromEntries([...document.querySelectorAll('#jobs-total td')].map(td => [td.dataset.col, td.textContent])),
    })""")
    assert snapshot["total"]["job_id"] == f"Total ({len(snapshot['rows'])} jobs)"
    assert int(snapshot["total"]["gpus"]) == sum(int(r["gpus"]) for r in snapshot["rows"])
    for column in ("gpu_hours", "energy_kwh", "cost_usd", "co2e_kg"):
        shown = sum(_number(r[column]) for r in snapshot["rows"])
        # each shown value is rounded (to the cent, or 3 decimals): their sum may differ by that much a row
        assert _number(snapshot["total"][column]) == pytest.approx(shown, abs=0.006 * len(snapshot["rows"])), column
    screenshot(narrow, "jobs-page-800.png")
    assert narrow.console.unexpected() == []


def test_job_page_shows_a_failing_panels_error_and_the_rest(demo, narrow):
    narrow.route("**/footprint/*?convention=tdp", lambda route: route.fulfill(
        status=500, content_type="application/json", body=json.dumps({"detail": "footprint exploded"})))
    narrow.goto(f"{demo}/jobs/demo/1001")
    wait_polls(narrow, "#job", 1)
    assert "The server answered 500: footprint exploded" in narrow.text_content("#model-card .panel-error")
    assert narrow.is_hidden("#message")
    assert "GPU-hours" in narrow.text_content("#stats") and "Price per GPU-hour" in narrow.text_content("#rates")
    narrow.wait_for_function("() => !!document.querySelector('#chart-power canvas')", timeout=30_000)
    screenshot(narrow, "job-page-800-panel-error.png")
    narrow.unroute("**/footprint/*?convention=tdp")
    wait_polls(narrow, "#job", polls(narrow, "#job") + 1)
    assert narrow.get_attribute("#model-card", "data-unit") == "kg"  # a demo job is far below a tonne
    headers = narrow.eval_on_selector_all("#model-card th", "ths => ths.map(th => th.textContent)")
    assert "Location-based (kgCO₂e)" in headers and "Embodied servers (kgCO₂e)" in headers
    rates = narrow.text_content("#rates")
    assert "0.0103" in rates and "0.010300000" not in rates and "config" in rates
    assert narrow.console.unexpected(allowed=("status of 500",)) == []


def gpuledger(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_reader_token_sees_only_its_account(browser, page, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'auth.db'}"
    server = start_server(db_url, None, tmp_path / "server.log", None, "--require-auth")
    try:
        node = {"Authorization": f"Bearer {gpuledger('token', 'create', '--node', 'n1', '--db', db_url)}"}
        reader = gpuledger("token", "create", "--role", "reader", "--account", "nlp", "--db", db_url)
        now = time.time()
        for seq, (job, account) in enumerate((("1", "nlp"), ("2", "cv"), ("3", "nlp"))):
            body = {"node": "n1", "cluster": "c", "datacenter": "dc", "boot_id": "b", "seq": seq, "sent_at_s": now,
                    "jobs": [{"id": job, "user": f"u{job}", "account": account}],
                    "intervals": [{"gpu_uuid": f"GPU-{job}", "gpu_index": int(job), "gpu_model": "NVIDIA H100 80GB HBM3",
                                   "job": job, "start_s": now - 120, "end_s": now - 60, "gpu_seconds": 60.0,
                                   "busy_gpu_seconds": 30.0, "energy_j": 24000.0, "energy_method": "counter"}]}
            assert httpx.post(f"{server.url}/v1/ingest", json=body, headers=node, timeout=10).status_code == 200
        page.goto(f"{server.url}/")
        page.wait_for_selector("#auth:not([hidden])")
        assert "needs a token" in page.text_content("#auth") and rows(page) == []
        screenshot(page, "jobs-page-token.png")
        page.fill("#token-input", reader)
        page.click("#auth button[type=submit]")
        wait_polls(page, "#jobs", 1)
        assert {r["job_id"] for r in rows(page)} == {"c/1", "c/3"}
        page.reload()  # the token is kept in the browser
        wait_polls(page, "#jobs", 1)
        assert {r["job_id"] for r in rows(page)} == {"c/1", "c/3"} and page.is_hidden("#auth")
        page.goto(f"{server.url}/?account=cv")
        page.wait_for_selector("#message:not([hidden])")
        assert "Not allowed with this token" in page.text_content("#message") and "scoped to account 'nlp'" in page.text_content("#message")
        page.goto(f"{server.url}/jobs/c/2")
        page.wait_for_selector("#message:not([hidden])")
        assert "not found" in page.text_content("#message")
        page.goto(f"{server.url}/jobs/c/1")
        wait_polls(page, "#job", 1)
        assert page.is_hidden("#message")
        assert page.console.unexpected(allowed=EXPECTED_REFUSALS) == []
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)


def test_kubernetes_job_page_shows_namespace_and_pods(browser, page, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'k8s.db'}"
    server = start_server(db_url, None, tmp_path / "server.log")
    try:
        now = time.time()
        pods = [f"llama-ft-worker-{i}" for i in range(6)]
        for seq, node in enumerate(("n1", "n2")):
            mine = pods[:3] if node == "n1" else pods[3:]
            body = {"node": node, "cluster": "k8s", "datacenter": "dc", "boot_id": "b", "seq": seq, "sent_at_s": now,
                    "jobs": [{"id": "team-nlp/llama-ft", "name": "llama-ft", "account": "nlp", "namespace": "team-nlp", "pods": mine}],
                    "intervals": [{"gpu_uuid": f"GPU-{node}", "gpu_index": 0, "gpu_model": "NVIDIA H100 80GB HBM3",
                                   "job": "team-nlp/llama-ft", "start_s": now - 120, "end_s": now - 60, "gpu_seconds": 60.0,
                                   "busy_gpu_seconds": 30.0, "energy_j": 24000.0, "energy_method": "counter"}]}
            assert httpx.post(f"{server.url}/v1/ingest", json=body, timeout=10).status_code == 200
        page.goto(f"{server.url}/jobs/k8s/team-nlp/llama-ft")
        wait_polls(page, "#job", 1)
        meta = page.text_content("#job-meta")
        assert "account nlp" in meta and "namespace team-nlp" in meta
        assert "pods llama-ft-worker-0, llama-ft-worker-1, llama-ft-worker-2, llama-ft-worker-3, … (6)" in meta
        assert "\n".join(pods) in page.eval_on_selector_all("#job-meta span[title]", "spans => spans.map(s => s.title)")
        screenshot(page, "job-page-kubernetes.png")
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)


def test_links_to_jobs_whose_ids_look_like_paths(browser, page, tmp_path):
    """Ids such as `series`, `j1/series` and `../x`: the list links each to its own page, whose
    report, charts and model card load (the id percent-encoded whole in every request)."""
    db_url = f"sqlite:///{tmp_path / 'ids.db'}"
    server = start_server(db_url, None, tmp_path / "server.log")
    ids = ["series", "j1/series", "../x"]
    try:
        now = time.time()
        body = {"node": "n1", "cluster": "c", "datacenter": "dc", "boot_id": "b", "seq": 0, "sent_at_s": now,
                "jobs": [{"id": job, "name": f"name of {job}"} for job in ids],
                "intervals": [{"gpu_uuid": f"GPU-{n}", "gpu_index": n, "gpu_model": "NVIDIA H100 80GB HBM3", "job": job,
                               "start_s": now - 120, "end_s": now - 60, "gpu_seconds": 60.0, "busy_gpu_seconds": 30.0,
                               "energy_j": 24000.0, "energy_method": "counter"} for n, job in enumerate(ids)]}
        assert httpx.post(f"{server.url}/v1/ingest", json=body, timeout=10).status_code == 200
        page.goto(f"{server.url}/")
        wait_polls(page, "#jobs", 1)
        hrefs = dict(page.eval_on_selector_all("#jobs a", "els => els.map(e => [e.textContent, e.getAttribute('href')])"))
        assert hrefs == {"c/series": "/jobs/c%2Fseries", "c/j1/series": "/jobs/c%2Fj1%2Fseries", "c/../x": "/jobs/c%2F..%2Fx"}
        for job in ids:
            page.goto(f"{server.url}{hrefs[f'c/{job}']}")
            wait_polls(page, "#job", 1)
            assert page.text_content("#job-id") == f"c/{job}" and page.text_content("#job-name") == f"name of {job}"
            assert page.is_hidden("#message")
        assert page.console.unexpected() == []
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
