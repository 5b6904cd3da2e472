"""Reports over HTTP: listing, filters, pagination, the arithmetic, the report command."""

import csv
import io
import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import BACKENDS

NOW = time.time()


def post(url: str, node: str, seq: int, job: dict | None, gpu_seconds: float, energy_j: float, start: float, model="NVIDIA H100 80GB HBM3"):
    body = {
        "node": node, "cluster": "c", "datacenter": "default", "boot_id": "b", "seq": seq, "sent_at_s": NOW,
        "jobs": [job] if job else [],
        "intervals": [{
            "gpu_uuid": f"GPU-{node}-{seq}", "gpu_index": 0, "gpu_model": model, "job": job["id"] if job else None,
            "start_s": start, "end_s": start + gpu_seconds, "gpu_seconds": gpu_seconds,
            "busy_gpu_seconds": gpu_seconds / 2, "energy_j": energy_j, "energy_method": "counter",
        }],
    }
    response = httpx.post(f"{url}/v1/ingest", json=body, timeout=10)
    assert response.status_code == 200, response.text


@pytest.fixture
def loaded(server):
    jobs = [
        {"id": "1", "name": "a", "user": "alice", "account": "nlp"},
        {"id": "2", "name": "b", "user": "bob", "account": "cv"},
        {"id": "3", "name": "c", "user": "alice", "account": "cv"},
    ]
    for seq, job in enumerate(jobs):
        post(server.url, "n1", seq, job, 600.0, 600.0 * 400, NOW - 3000 + seq * 100)
    post(server.url, "n2", 0, jobs[0], 1200.0, 1200.0 * 300, NOW - 2000, model="NVIDIA A100-SXM4-80GB")
    return server


@BACKENDS
def test_list_is_newest_first_filtered_and_paginated(loaded):
    url = loaded.url
    page = httpx.get(f"{url}/v1/jobs").json()
    assert [j["job_id"] for j in page["items"]] == ["c/3", "c/2", "c/1"]
    assert page["total"] == 3
    assert [j["job_id"] for j in httpx.get(f"{url}/v1/jobs", params={"user": "alice"}).json()["items"]] == ["c/3", "c/1"]
    assert [j["job_id"] for j in httpx.get(f"{url}/v1/jobs", params={"account": "cv"}).json()["items"]] == ["c/3", "c/2"]
    second = httpx.get(f"{url}/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert ([j["job_id"] for j in second["items"]], second["total"]) == (["c/1"], 3)
    assert httpx.get(f"{url}/v1/jobs", params={"state": "ended"}).json()["total"] == 0
    bad = httpx.get(f"{url}/v1/jobs", params={"state": "paused"})
    assert bad.status_code == 422 and "state = 'paused'" in bad.json()["detail"]


@BACKENDS
def test_report_applies_default_rates_per_model(loaded):
    report = httpx.get(f"{loaded.url}/v1/jobs/c/1").json()
    # 600 s on an H100 at 400 W and 1200 s on an A100 at 300 W, default rates.
    assert report["gpu_hours"] == pytest.approx(0.5)
    assert report["energy_kwh"] == pytest.approx((600 * 400 + 1200 * 300) / 3.6e6)
    assert report["cost_usd"] == pytest.approx(600 / 3600 * 6.0 + 1200 / 3600 * 4.0)
    assert report["facility_energy_kwh"] == pytest.approx(report["energy_kwh"] * 1.56)
    assert report["co2e_kg"] == pytest.approx(report["energy_kwh"] * 1.56 * 475 / 1000)
    assert report["embodied_co2e_kg"] == pytest.approx(0.5 * 0.0103)
    assert (report["nodes"], report["gpus"], report["state"]) == (2, 2, "running")
    assert report["rates"]["usd_per_gpu_hour"] == {"NVIDIA A100-SXM4-80GB": 4.0, "NVIDIA H100 80GB HBM3": 6.0}
    assert sum(part["gpu_hours"] for part in report["breakdown"]) == pytest.approx(0.5)


@BACKENDS
def test_unknown_job_is_404_with_a_hint(server):
    response = httpx.get(f"{server.url}/v1/jobs/1234")
    assert response.status_code == 404
    assert response.json()["detail"] == "job_id '1234' not found; job ids are cluster-scoped: <cluster>/<job id>"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_report_command_prints_table_json_and_csv(loaded):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "api.cli.main", "report", *args, "--server", loaded.url],
                              capture_output=True, text=True, timeout=60)

    as_json = json.loads(run("c/2", "--format", "json").stdout)
    assert as_json["job_id"] == "c/2" and as_json["gpu_hours"] == pytest.approx(600 / 3600)
    (row,) = list(csv.DictReader(io.StringIO(run("c/2", "--format", "csv").stdout)))
    assert float(row["gpu_hours"]) == pytest.approx(600 / 3600) and row["user"] == "bob"
    table = run("c/2").stdout
    assert "cost_usd" in table and "usd_per_gpu_hour[NVIDIA H100 80GB HBM3] = 6.0" in table
    missing = run("c/99")
    assert missing.returncode == 2 and "404: job_id 'c/99' not found" in missing.stderr
    assert run("c/2", "--format", "xml").returncode == 2


def test_report_command_without_server_says_so():
    result = subprocess.run([sys.executable, "-m", "api.cli.main", "report", "c/1", "--server", "http://127.0.0.1:9"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot reach the server at http://127.0.0.1:9" in result.stderr


def test_bad_config_names_the_field_and_value(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[datacenters.dc1]\npue = 0.5\n")
    result = subprocess.run([sys.executable, "-m", "api.cli.main", "server", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "datacenters.dc1.pue = 0.5" in result.stderr


def test_polls_get_304_until_the_job_changes(loaded):
    url = loaded.url
    for path in ("/v1/jobs/c/1", "/v1/series/c%2F1", "/v1/jobs/c/1/series", "/v1/jobs?limit=10"):  # series: canonical, former
        first = httpx.get(f"{url}{path}")
        tag = first.headers["ETag"]
        assert first.status_code == 200 and tag.startswith('"') and first.headers["Cache-Control"] == "no-cache"
        same = httpx.get(f"{url}{path}", headers={"If-None-Match": f'"other", W/{tag}'})
        assert (same.status_code, same.content, same.headers["ETag"]) == (304, b"", tag)
        assert httpx.get(f"{url}{path}", headers={"If-None-Match": '"other"'}).status_code == 200
    tags = {path: httpx.get(f"{url}{path}").headers["ETag"] for path in ("/v1/jobs/c/1", "/v1/jobs/c/2")}
    post(url, "n3", 0, {"id": "1", "name": "a", "user": "alice", "account": "nlp"}, 60.0, 60.0 * 500, NOW - 100)
    changed = httpx.get(f"{url}/v1/jobs/c/1", headers={"If-None-Match": tags["/v1/jobs/c/1"]})
    assert changed.status_code == 200 and changed.headers["ETag"] != tags["/v1/jobs/c/1"]
    assert changed.json()["gpus"] == 3
    assert httpx.get(f"{url}/v1/jobs/c/2", headers={"If-None-Match": tags["/v1/jobs/c/2"]}).status_code == 304
