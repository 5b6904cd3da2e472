"""Budgets, forecasts, conventions, what-if, showback, /metrics and hourly intensity, over HTTP."""

import math
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from api.accounting.rates import IntensityProvider
from api.intensity.feeds import refresh
from tests.conftest import BACKENDS, start_server
from tests.replay_server import ReplayServer

NOW = time.time()
HOUR = math.floor(NOW / 3600) * 3600 - 3 * 3600  # three whole hours ago
CONFIG = """
[datacenters.dc1]
region = "r1"
pue = 1.5
[intensity_g_per_kwh]
r1 = 400.0
r2 = 100.0
"""


def send(url: str, seq: int, job: dict | None, start: float, seconds: float = 3600.0, watts: float = 500.0, node="n1"):
    body = {"node": node, "cluster": "c", "datacenter": "dc1", "boot_id": "b", "seq": seq, "sent_at_s": NOW,
            "jobs": [job] if job else [],
            "intervals": [{"gpu_uuid": f"GPU-{seq}", "gpu_index": 0, "gpu_model": "NVIDIA H100 80GB HBM3",
                           "job": job["id"] if job else None, "start_s": start, "end_s": start + seconds,
                           "gpu_seconds": seconds, "busy_gpu_seconds": seconds, "energy_j": watts * seconds,
                           "energy_method": "counter"}]}
    assert httpx.post(f"{url}/v1/ingest", json=body, timeout=10).status_code == 200


@pytest.fixture
def ledger(db_url, tmp_path):
    config = tmp_path / "rates.toml"
    config.write_text(CONFIG)
    server = start_server(db_url, config, tmp_path / "server.log")
    send(server.url, 0, {"id": "1", "account": "nlp", "user": "alice", "budget_usd": 5.0}, HOUR)
    send(server.url, 1, {"id": "1"}, HOUR + 3600)
    send(server.url, 2, {"id": "2", "account": "cv", "user": "bob"}, HOUR, node="n2")
    send(server.url, 3, None, HOUR, watts=100.0, node="n3")
    yield server
    server.process.terminate()
    server.process.wait(timeout=15)


def get(url: str, path: str, **params) -> dict:
    response = httpx.get(f"{url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@BACKENDS
def test_budget_from_the_environment_progress_and_forecast(ledger):
    budget = get(ledger.url, "/v1/jobs/c/1")["budget"]
    # 2 GPU-h of H100 at the default $6: $12 spent over 2 h, over the $5 budget from the environment
    assert (budget["budget_usd"], budget["spend_usd_per_hour"], budget["over_budget"]) == (5.0, 6.0, True)
    assert budget["forecast_method"] == "observed_rate"
    assert httpx.put(f"{ledger.url}/v1/jobs/c/1/budget", json={"usd": 100.0}, timeout=10).status_code == 200
    end = datetime.fromtimestamp(HOUR + 4 * 3600, UTC).isoformat()
    assert httpx.post(f"{ledger.url}/v1/jobs/c/1/progress", json={"expected_end_at": end}, timeout=10).status_code == 200
    budget = get(ledger.url, "/v1/jobs/c/1")["budget"]
    assert budget["forecast_method"] == "declared_end"
    assert budget["forecast_cost_usd"] == pytest.approx(24.0)  # 2 more hours at $6/h
    assert (budget["over_budget"], budget["forecast_over_budget"]) == (False, False)
    bad = httpx.post(f"{ledger.url}/v1/jobs/c/1/progress", json={"steps_done": -1}, timeout=10)
    assert bad.status_code == 422 and "steps_done = -1" in bad.json()["detail"]
    assert httpx.put(f"{ledger.url}/v1/jobs/c/404/budget", json={"usd": 1}, timeout=10).status_code == 404


@BACKENDS
def test_footprint_conventions_and_model_card(ledger):
    tdp = get(ledger.url, "/v1/jobs/c/1/footprint", convention="tdp")
    (row,) = tdp["rows"]
    # 2 GPU-h × 700 W TDP = 1.4 kWh × PUE 1.5 × 400 g/kWh = 840 g
    assert (row["power_w"], row["energy_kwh"], row["pue"], row["intensity_g_per_kwh"]) == (700.0, 1.4, 1.5, 400.0)
    assert row["location_tco2e"] == pytest.approx(840e-6)
    measured = get(ledger.url, "/v1/jobs/c/1/footprint", convention="measured")["rows"][0]
    assert measured["power_w"] == pytest.approx(500.0) and measured["location_tco2e"] == pytest.approx(600e-6)
    md = subprocess.run([sys.executable, "-m", "api.cli.main", "report", "c/1", "--convention", "tdp", "--server", ledger.url],
                        capture_output=True, text=True, timeout=60)
    assert md.returncode == 0, md.stderr
    assert "| GPU type | GPU-hours | Power (W) | PUE |" in md.stdout and "NVIDIA H100 80GB HBM3" in md.stdout
    assert httpx.get(f"{ledger.url}/v1/jobs/c/1/footprint", params={"convention": "guess"}).status_code == 422


@BACKENDS
def test_whatif_prices_the_same_energy_elsewhere(ledger):
    answer = get(ledger.url, "/v1/jobs/c/1/whatif", region="r2", pue=1.1)
    assert answer["actual"]["co2e_kg"] == pytest.approx(1.0 * 1.5 * 400 / 1000)
    assert answer["whatif"]["co2e_kg"] == pytest.approx(1.0 * 1.1 * 100 / 1000)
    assert answer["whatif"]["rates"]["grid_intensity_g_per_kwh"] == {"r2": 100.0}
    # No marginal (WattTime co2_moer) series stored: no marginal figure, never an average in its place.
    assert (answer["actual"]["marginal_co2e_kg"], answer["actual"]["marginal_hourly_fraction"]) == (None, 0.0)
    assert answer["marginal_co2e_kg_change"] is None


@BACKENDS
def test_showback_by_account_includes_idle_capacity(ledger):
    usage = get(ledger.url, "/v1/usage", group_by="account",
                **{"from": datetime.fromtimestamp(HOUR, UTC).isoformat(), "to": datetime.fromtimestamp(NOW, UTC).isoformat()})
    groups = {item["group"]: item for item in usage["items"]}
    assert set(groups) == {"nlp", "cv", "(unallocated)"}
    assert (groups["nlp"]["gpu_hours"], groups["cv"]["gpu_hours"], groups["(unallocated)"]["gpu_hours"]) == (2.0, 1.0, 1.0)
    assert groups["(unallocated)"]["energy_kwh"] == pytest.approx(0.1)
    assert usage["total"]["cost_usd"] == pytest.approx(4 * 6.0)
    one_hour = get(ledger.url, "/v1/usage", group_by="user", **{"from": datetime.fromtimestamp(HOUR + 3600, UTC).isoformat()})
    assert {i["group"]: i["gpu_hours"] for i in one_hour["items"]} == {"alice": 1.0}


@BACKENDS
def test_metrics_show_jobs_over_budget(ledger):
    text = httpx.get(f"{ledger.url}/metrics", timeout=10).text
    assert 'gpuledger_job_over_budget{account="nlp",cluster="c",job_id="c/1"} 1.0' in text
    assert 'gpuledger_job_budget_dollars{account="nlp",cluster="c",job_id="c/1"} 5.0' in text
    budget_lines = [line for line in text.splitlines() if "budget" in line and not line.startswith("#")]
    assert budget_lines and not [line for line in budget_lines if 'job_id="c/2"' in line]  # no budget, no budget series


@BACKENDS
def test_imported_hourly_intensity_is_used_and_disclosed(ledger, db_url, tmp_path):
    csv = tmp_path / "r1.csv"
    first = datetime.fromtimestamp(HOUR, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    csv.write_text(f"region,start,end,g_per_kwh\nr1,{first},,200\n")
    result = subprocess.run([sys.executable, "-m", "api.cli.main", "intensity", "import", str(csv), "--db", db_url],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "1 points -> 1 region-hours stored (r1)" in result.stdout, result.stderr
    report = get(ledger.url, "/v1/jobs/c/1")
    # 0.5 kWh × PUE 1.5 each hour: hour 1 at 200 g/kWh (imported), hour 2 at the static 400
    assert report["co2e_kg"] == pytest.approx(0.75 * (200 + 400) / 1000)
    assert report["rates"]["intensity_hourly_fraction"] == {"r1": pytest.approx(0.5)}
    bad = tmp_path / "bad.csv"
    bad.write_text("region,start,end,g_per_kwh\nr1,yesterday,,200\n")
    rejected = subprocess.run([sys.executable, "-m", "api.cli.main", "intensity", "import", str(bad), "--db", db_url],
                              capture_output=True, text=True, timeout=60)
    assert rejected.returncode == 2 and "line 2" in rejected.stderr and "'yesterday'" in rejected.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_provider_feed_fills_the_series_and_a_failure_keeps_it(engine):
    def point(hour_s: int, value: float) -> dict:
        stamp = datetime.fromtimestamp(hour_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return {"zone": "DE", "carbonIntensity": value, "datetime": stamp, "updatedAt": stamp,
                "emissionFactorType": "lifecycle", "isEstimated": False}

    history = {"zone": "DE", "history": [point(HOUR, 350.0), point(HOUR + 3600, 250.0)]}
    with ReplayServer({("GET", "/v3/carbon-intensity/history"): (200, history)}) as maps:
        provider = IntensityProvider(kind="electricitymaps", region="de", zone="DE", token="t0k", base_url=maps.url)
        assert refresh(engine, provider) == 2
        assert maps.last("GET", "/v3/carbon-intensity/history").headers["auth-token"] == "t0k"
    with ReplayServer({("GET", "/v3/carbon-intensity/history"): (401, {"error": "bad token"})}) as maps:
        provider = IntensityProvider(kind="electricitymaps", region="de", zone="DE", token="old", base_url=maps.url)
        assert refresh(engine, provider) == 0
    from api.queries.jobs import hourly_intensity

    assert hourly_intensity(engine, {"de"}, HOUR, HOUR + 3600) == {("de", HOUR): 350.0, ("de", HOUR + 3600): 250.0}
