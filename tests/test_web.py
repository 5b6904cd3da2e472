"""The web page's HTTP side, without a browser: the time series against ground truth computed
here from the intervals sent, its CSV, token roles, and the page's files (offline, packaged)."""

import csv
import io
import math
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from api.reports.render import FIELDS
from api.reports.series import FINE_WINDOW_S, MAX_FINE_POINTS, STEPS_S, complete_until_s, fine_window
from tests.conftest import BACKENDS, start_server

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "api" / "http" / "web"
NOW = time.time()
H = math.floor(NOW / 3600) * 3600 - 3600  # an hour boundary one to two hours ago
OLD_START = H - 8 * 3600 + 600  # one interval in an hour the series gives as an hourly point
USD_PER_GPU_HOUR, PUE, G_PER_KWH = 3.0, 1.5, 400.0
CONFIG = f"""
[jobs]
silence_s = 86400.0  # the job stays running: its newest buckets wait for node n2
[usd_per_gpu_hour]
default = {USD_PER_GPU_HOUR}
[datacenters.dc1]
region = "r1"
pue = {PUE}
[intensity_g_per_kwh]
r1 = {G_PER_KWH}
"""
# (start, end) of each interval, per GPU. GPU A (node n1, 400 W, half busy): short ones and
# ones longer than a 10-s bucket, one across the hour; GPU B (node n2, 250 W, busy): 6-s
# intervals that end 25 s before A's, so the newest buckets are incomplete.
A_SPANS = [(H - 100, H - 93), (H - 93, H - 80), (H - 80, H - 50), (H - 50, H - 41), (H - 41, H + 3), (H + 3, H + 10)]
A_SPANS += [(t, min(t + 9, H + 200)) for t in range(H + 10, H + 200, 9)]
B_SPANS = [(t, t + 6) for t in range(H - 60, H + 175, 6) if t + 6 <= H + 175]
GPUS = {"A": ("n1", 400.0, 0.5), "B": ("n2", 250.0, 1.0)}


def interval(gpu: str, start: float, end: float) -> dict:
    _, watts, busy = GPUS[gpu]
    return {"gpu_uuid": f"GPU-{gpu}", "gpu_index": 0, "gpu_model": "NVIDIA H100 80GB HBM3", "job": "1",
            "start_s": start, "end_s": end, "gpu_seconds": end - start, "busy_gpu_seconds": (end - start) * busy,
            "energy_j": (end - start) * watts, "energy_method": "counter"}


def network(start: float, end: float, tx: float, cnp: float, retrans: float) -> dict:
    return {"job": "1", "start_s": start, "end_s": end, "ports": 2, "seconds": end - start,
            "counters": {"tx_bytes": tx, "rx_bytes": tx / 2, "cnp_handled": cnp, "retransmits": retrans},
            "apportioned_bytes": 0.0, "peak_tx_gbps": 100.0 + cnp / 1000, "peak_rx_gbps": 50.0, "link_down_port_seconds": 0.0}


NETWORK = {  # per node: one interval in the hour before H, one after (n1 only)
    "n1": [network(H - 100, H, 1e11, 6000.0, 20.0), network(H, H + 200, 2e11, 100.0, 0.0)],
    "n2": [network(H - 60, H, 3e10, 2000.0, 0.0)],
}


def send(url: str, node: str, seq: int, intervals: list[dict], net: list[dict] | None = None, headers=None, job=None) -> None:
    job = job or {"id": "1", "name": "train", "user": "alice", "account": "nlp"}
    body = {"node": node, "cluster": "c", "datacenter": "dc1", "boot_id": "b", "seq": seq, "sent_at_s": NOW,
            "jobs": [job], "intervals": intervals, "network": net or []}
    response = httpx.post(f"{url}/v1/ingest", json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


@pytest.fixture
def ledger(db_url, tmp_path):
    config = tmp_path / "rates.toml"
    config.write_text(CONFIG)
    server = start_server(db_url, config, tmp_path / "server.log")
    send(server.url, "n1", 0, [interval("A", OLD_START, OLD_START + 1200)])
    send(server.url, "n1", 1, [interval("A", s, e) for s, e in A_SPANS], NETWORK["n1"])
    send(server.url, "n2", 0, [interval("B", s, e) for s, e in B_SPANS], NETWORK["n2"])
    yield server
    server.process.terminate()
    server.process.wait(timeout=15)


def truth_buckets(step_s: int) -> list[dict]:
    """Per bucket, from the intervals sent: each GPU's seconds, energy and busy time inside it."""
    first_s, last_s = OLD_START, H + 200
    complete_s = min(max(e for _, e in A_SPANS), max(e for _, e in B_SPANS))
    spans = [("A", s, e) for s, e in A_SPANS] + [("B", s, e) for s, e in B_SPANS]
    points = []
    for bucket in range(H - 6 * 3600, H + 200, step_s):
        gpu_s = energy_j = busy_s = 0.0
        for gpu, s, e in spans:
            overlap = max(0.0, min(e, bucket + step_s) - max(s, bucket))
            gpu_s, energy_j, busy_s = gpu_s + overlap, energy_j + overlap * GPUS[gpu][1], busy_s + overlap * GPUS[gpu][2]
        if gpu_s:
            lo, hi = max(bucket, first_s), min(bucket + step_s, last_s)
            points.append({"start_s": lo, "end_s": hi, "gpu_s": gpu_s, "energy_j": energy_j, "busy_s": busy_s,
                           "incomplete": hi > complete_s})
    return points


def priced(gpu_s: float, energy_j: float) -> tuple[float, float]:
    return gpu_s / 3600 * USD_PER_GPU_HOUR, energy_j / 3.6e6 * PUE * G_PER_KWH / 1000


@BACKENDS
def test_series_matches_ground_truth_bucket_by_bucket(ledger):
    body = httpx.get(f"{ledger.url}/v1/jobs/c/1/series", params={"step_s": 10}, timeout=10).json()
    gpu, fine = body["gpu"], truth_buckets(10)
    assert (body["step_s"], body["fine_from_s"]) == (10, H - 6 * 3600)
    assert len(gpu["start_s"]) == 1 + len(fine)
    # The old hour, from the rollups: 1,200 GPU-seconds at 400 W over the 3,000 s it spans.
    assert (gpu["start_s"][0], gpu["end_s"][0], gpu["resolution_s"][0]) == (OLD_START, H - 7 * 3600, 3600)
    assert gpu["gpus"][0] == pytest.approx(0.4) and gpu["power_w"][0] == pytest.approx(160.0)
    cost, co2e = priced(1200, 1200 * 400.0)
    for i, point in enumerate(fine, start=1):
        assert (gpu["start_s"][i], gpu["end_s"][i], gpu["resolution_s"][i]) == (point["start_s"], point["end_s"], 10)
        covered_s = point["end_s"] - point["start_s"]
        if point["incomplete"]:  # node n2 has not reported this far
            assert gpu["gpus"][i] is None and gpu["power_w"][i] is None
        else:
            assert gpu["gpus"][i] == pytest.approx(point["gpu_s"] / covered_s, rel=1e-9), i
            assert gpu["power_w"][i] == pytest.approx(point["energy_j"] / covered_s, rel=1e-9), i
        assert gpu["utilization_pct"][i] == pytest.approx(100 * point["busy_s"] / point["gpu_s"], rel=1e-9)
        bucket_cost, bucket_co2e = priced(point["gpu_s"], point["energy_j"])
        cost, co2e = cost + bucket_cost, co2e + bucket_co2e
        assert gpu["cost_usd"][i] == pytest.approx(bucket_cost, rel=1e-9)
        assert gpu["cumulative_cost_usd"][i] == pytest.approx(cost, rel=1e-9)
        assert gpu["cumulative_co2e_kg"][i] == pytest.approx(co2e, rel=1e-9)
    assert sum(p["incomplete"] for p in fine) == 3  # the buckets ending after H + 175
    report = httpx.get(f"{ledger.url}/v1/jobs/c/1", timeout=10).json()
    assert gpu["cumulative_cost_usd"][-1] == pytest.approx(report["cost_usd"], rel=1e-12)
    assert gpu["cumulative_co2e_kg"][-1] == pytest.approx(report["co2e_kg"], rel=1e-12)
    assert (body["budget_usd"], body["forecast"]) == (None, None)  # no progress reported, no end known


@BACKENDS
def test_series_network_by_hour_and_the_verdict_in_the_list(ledger):
    body = httpx.get(f"{ledger.url}/v1/jobs/c/1/series", timeout=10).json()
    assert body["step_s"] == 60  # chosen: 6 h and 200 s of fine buckets in at most MAX_FINE_POINTS
    assert body["gpu"]["cumulative_cost_usd"][-1] == pytest.approx(
        httpx.get(f"{ledger.url}/v1/jobs/c/1", timeout=10).json()["cost_usd"], rel=1e-12)
    net = body["network"]
    assert (net["start_s"], net["end_s"]) == ([H - 3600, H], [H, H + 200])
    # Hour 1: n1 100 s and n2 60 s; 130 GB sent in the 100 s the longer node spans.
    assert net["job_tx_gbps"] == pytest.approx([130e9 * 8 / 1e9 / 100, 200e9 * 8 / 1e9 / 200])
    assert net["job_rx_gbps"] == pytest.approx([65e9 * 8 / 1e9 / 100, 100e9 * 8 / 1e9 / 200])
    assert net["cnp_handled_per_s"] == pytest.approx([8000 / 160, 100 / 200])
    assert net["retransmits_per_gb"] == pytest.approx([20 / 130, 0.0])
    assert net["node_peak_tx_gbps"] == pytest.approx([106.0, 100.1])
    assert net["congestion"] == ["moderate", "none"]
    (job,) = httpx.get(f"{ledger.url}/v1/jobs", timeout=10).json()["items"]
    assert job["network_congestion"] == "none"  # 8,100 CNPs in 360 node-seconds, 20 retransmissions in 330 GB
    assert httpx.get(f"{ledger.url}/v1/jobs/c/1", timeout=10).json()["network_congestion"] == "none"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_csv_downloads_and_refusals(ledger):
    url = ledger.url
    series = httpx.get(f"{url}/v1/jobs/c/1/series.csv", params={"step_s": 30}, timeout=10)
    assert series.status_code == 200 and series.headers["content-type"].startswith("text/csv")
    assert series.headers["content-disposition"] == 'attachment; filename="c_1-series.csv"'
    rows = list(csv.DictReader(io.StringIO(series.text)))
    as_json = httpx.get(f"{url}/v1/jobs/c/1/series", params={"step_s": 30}, timeout=10).json()["gpu"]
    assert len(rows) == len(as_json["start_s"]) and rows[0]["start_at"].startswith("20")
    assert float(rows[-1]["cumulative_cost_usd"]) == pytest.approx(as_json["cumulative_cost_usd"][-1])
    report = httpx.get(f"{url}/v1/jobs/c/1/report.csv", timeout=10)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(report.text)))
    cli = subprocess.run([sys.executable, "-m", "api.cli.main", "report", "c/1", "--format", "csv", "--server", url],
                         capture_output=True, text=True, timeout=60)
    (expected,) = list(csv.DictReader(io.StringIO(cli.stdout)))
    assert list(row) == list(FIELDS) and {k: v for k, v in row.items() if k != "as_of"} == {
        k: v for k, v in expected.items() if k != "as_of"}
    bad = httpx.get(f"{url}/v1/jobs/c/1/series", params={"step_s": 7}, timeout=10)
    assert bad.status_code == 422 and "step_s = 7" in bad.json()["detail"]
    for path in ("/v1/jobs/c/404/series", "/v1/jobs/c/404/series.csv", "/v1/jobs/c/404/report.csv"):
        missing = httpx.get(f"{url}{path}", timeout=10)
        assert missing.status_code == 404 and "'c/404' not found" in missing.json()["detail"], path


def test_fine_window_follows_the_job_and_the_retention():
    young = {"first_seen_s": NOW - 600, "last_seen_s": NOW}
    window = fine_window(young, NOW, raw_days=30)
    assert window.fine_from_s == math.floor((NOW - 600) / 3600) * 3600 and window.step_s == STEPS_S[0]
    long = {"first_seen_s": NOW - 30 * 86400, "last_seen_s": NOW}
    window = fine_window(long, NOW, raw_days=30)
    assert window.fine_from_s == math.floor((NOW - FINE_WINDOW_S) / 3600) * 3600
    assert (NOW - window.fine_from_s) / window.step_s <= MAX_FINE_POINTS
    pruned = {"first_seen_s": NOW - 60 * 86400, "last_seen_s": NOW - 40 * 86400}
    assert fine_window(pruned, NOW, raw_days=30).fine_from_s is None  # raw intervals gone: hourly only
    assert fine_window(young, NOW, raw_days=30, step_s=900).step_s == 900
    ended = {**young, "job_id": "c/1", "state": "ended"}
    assert complete_until_s(None, ended, fine_window(young, NOW, raw_days=30)) == NOW  # no node to wait for


def gpuledger(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pages_open_data_by_token_role(db_url, tmp_path):
    server = start_server(db_url, None, tmp_path / "server.log", None, "--require-auth")
    try:
        node = gpuledger("token", "create", "--node", "n1", "--db", db_url)
        nlp = gpuledger("token", "create", "--role", "reader", "--account", "nlp", "--db", db_url)
        auth = {"Authorization": f"Bearer {node}"}
        send(server.url, "n1", 0, [interval("A", H, H + 60)], headers=auth)
        send(server.url, "n1", 1, [{**interval("B", H, H + 60), "job": "2"}], headers=auth,
             job={"id": "2", "user": "bob", "account": "cv"})
        for path in ("/", "/jobs/c/1", "/static/jobs.js", "/static/job.js", "/static/vendor/uplot/uPlot.iife.min.js"):
            assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path  # no token needed
        assert httpx.get(f"{server.url}/v1/jobs/c/1/series", timeout=10).status_code == 401
        reader = {"Authorization": f"Bearer {nlp}"}
        mine = httpx.get(f"{server.url}/v1/jobs/c/1/series", headers=reader, timeout=10)
        assert mine.status_code == 200 and set(mine.json()["gpu"]["gpus"]) == {1.0}
        for path in ("/v1/jobs/c/2/series", "/v1/jobs/c/2/series.csv", "/v1/jobs/c/2/report.csv"):
            assert httpx.get(f"{server.url}{path}", headers=reader, timeout=10).status_code == 404, path
        listed = httpx.get(f"{server.url}/v1/jobs", headers=reader, timeout=10).json()["items"]
        assert [j["job_id"] for j in listed] == ["c/1"]
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)


def test_page_is_self_contained_and_strict():
    """Works offline: every script, style and link is the server's own; no inline script."""
    for page in (WEB / "pages").glob("*.html"):
        html = page.read_text()
        refs = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert refs and all(ref.startswith("/") or ref == "data:," for ref in refs), (page.name, refs)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{page.name}: inline script"
        assert "style=" not in html
    for script in (WEB / "static").glob("*.js"):
        assert not re.search(r"https?://", script.read_text()), f"{script.name} names a remote URL"
        assert "innerHTML" not in script.read_text(), f"{script.name}: values go in as text, never as HTML"
    vendored = WEB / "static" / "vendor" / "uplot"
    banner = (vendored / "uPlot.iife.min.js").read_text()[:80]
    version = re.search(r"\(v(\d+\.\d+\.\d+)\)", banner).group(1)
    assert f"uPlot {version}" in (vendored / "README.md").read_text()
    assert "MIT License" in (vendored / "LICENSE").read_text()


def test_every_web_file_is_package_data():
    """A non-editable install serves the page too: pyproject's package-data covers every file."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["api.http.web"]
    files = {p.relative_to(WEB) for p in WEB.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"}
    covered = {p.relative_to(WEB) for pattern in patterns for p in WEB.glob(pattern) if p.is_file()}
    assert files and files <= covered, sorted(map(str, files - covered))
