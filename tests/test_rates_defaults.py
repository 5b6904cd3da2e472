"""No silent defaults, through the real server and CLI: the footprint at the configured PUE,
strict config types, every rate's source, built-in defaults named at start-up and in reports,
what-if refusing unknown regions, and the finance exports (/v1/usage.csv, `gpuledger usage`,
the /metrics counters)."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import start_server

NOW = time.time()
HOUR = math.floor(NOW / 3600) * 3600 - 3 * 3600
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def gpuledger(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True, timeout=120)


def send(url: str, seq: int, job: dict | None, start: float, energy_j: float, model: str = "NVIDIA H100 80GB HBM3",
         node: str = "n1") -> None:
    body = {"node": node, "cluster": "c", "datacenter": "dc1", "boot_id": "b", "seq": seq, "sent_at_s": NOW,
            "jobs": [job] if job else [],
            "intervals": [{"gpu_uuid": f"GPU-{node}", "gpu_index": 0, "gpu_model": model, "job": job["id"] if job else None,
                           "start_s": start, "end_s": start + 3600, "gpu_seconds": 3600.0, "busy_gpu_seconds": 1800.0,
                           "energy_j": energy_j, "energy_method": "counter"}]}
    response = httpx.post(f"{url}/v1/ingest", json=body, timeout=30)
    assert response.status_code == 200, response.text


@pytest.fixture
def serve(db_url, tmp_path):
    servers = []

    def start(config_text: str):
        config = tmp_path / "rates.toml"
        config.write_text(config_text)
        log = tmp_path / f"server{len(servers)}.log"
        servers.append(start_server(db_url, config, log))
        return servers[-1], log

    yield start
    for server in servers:
        server.process.terminate()
        server.process.wait(timeout=15)


@SQLITE
def test_footprint_uses_the_configured_pue_one_and_never_recomputes_it_below_one(serve):
    server, _ = serve('[datacenters.dc1]\nregion = "r1"\npue = 1.0\n[intensity_g_per_kwh]\nr1 = 400.0\n')
    for seq, energy_j in enumerate((1617225.51, 2249630.383, 2047093.279)):
        send(server.url, seq, {"id": "1"}, HOUR + seq * 3600, energy_j)
    report = httpx.get(f"{server.url}/v1/jobs/c/1", timeout=30).json()
    (part,) = report["breakdown"]
    # Priced hour by hour, rounding made this ratio fall just below 1.0, which the footprint used to
    # recompute as a PUE (a 500); summed in SQL first it is exact, and the footprint must not care.
    assert part["facility_energy_kwh"] / part["energy_kwh"] <= 1.0
    for convention in ("tdp", "measured"):
        answer = httpx.get(f"{server.url}/v1/jobs/c/1/footprint", params={"convention": convention}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["rows"][0]["pue"] == 1.0
    tdp = httpx.get(f"{server.url}/v1/jobs/c/1/footprint", params={"convention": "tdp"}, timeout=30).json()
    assert tdp["rows"][0]["location_tco2e"] == pytest.approx(3 * 0.7 * 400 / 1e6)  # 3 GPU-h × 700 W × 400 g
    # 840 g: stated as 0.84 kg, not as 0.00 t
    assert tdp["unit"] == "kg" and "Location-based (kgCO2eq)" in tdp["markdown"] and "| 400 | 0.84 |" in tdp["markdown"]


def test_config_types_are_strict_and_name_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[tdp_w]\nA100 = "400"\n')
    result = gpuledger("server", "--config", str(config), "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "tdp_w.A100 = '400': Input should be a valid number (a TOML string; write tdp_w.A100 = 400 without quotes)" in result.stderr
    assert not (tmp_path / "x.db").exists()


@SQLITE
def test_defaults_are_named_at_start_up_and_in_the_report_and_unknown_regions_refused(serve, db_url):
    config = ('[datacenters.dc1]\nregion = "atlantis"\npue = 1.2\nmarket_g_per_kwh = 50.0\n[usd_per_gpu_hour]\nH100 = 2.0\n'
              "[embodied.H100]\nmanufacturing_kg = 150.0\nserver_kg = 2500.0\nlifetime_years = 6\nutilization = 0.85\n")
    server, log = serve(config)
    assert "warning: region 'atlantis' (datacenter 'dc1'): no [intensity_g_per_kwh] entry" in log.read_text()
    send(server.url, 0, {"id": "1", "account": "nlp"}, HOUR, 3.6e6)  # 1 kWh
    send(server.url, 1, {"id": "2", "account": "cv"}, HOUR, 3.6e6, model="Acme X9 accelerator", node="n2")
    send(server.url, 2, None, HOUR, 0.36e6, node="n3")  # idle GPU: 0.1 kWh
    report = httpx.get(f"{server.url}/v1/jobs/c/2", timeout=30).json()
    assert report["rate_sources"]["usd_per_gpu_hour"] == {"Acme X9 accelerator": "built-in default"}
    assert report["rate_sources"]["pue"] == {"dc1": "config"}
    assert report["rate_sources"]["grid_intensity_g_per_kwh"] == {"atlantis": "built-in default"}
    assert "grid_intensity_g_per_kwh[atlantis] = 475: built-in default" in report["defaults_used"]
    assert report["embodied_gpu_co2e_kg"] + report["embodied_server_co2e_kg"] == pytest.approx(report["embodied_co2e_kg"])
    footprint = httpx.get(f"{server.url}/v1/jobs/c/2/footprint", params={"convention": "tdp"}, timeout=30).json()
    assert "tdp_w[Acme X9 accelerator] = 700: built-in default" in footprint["defaults_used"]
    fr = httpx.get(f"{server.url}/v1/jobs/c/1/whatif", params={"region": "FR"}, timeout=30).json()
    assert fr["whatif"]["rates"]["grid_intensity_g_per_kwh"] == {"FR": 56.0}
    unknown = httpx.get(f"{server.url}/v1/jobs/c/1/whatif", params={"region": "atlantiss"}, timeout=30)
    assert unknown.status_code == 422
    assert unknown.json()["detail"].startswith("region = 'atlantiss' is unknown: expected one of atlantis, or an ISO country code")

    window = {"from": datetime.fromtimestamp(HOUR, UTC).isoformat(), "to": datetime.fromtimestamp(NOW, UTC).isoformat()}
    exported = httpx.get(f"{server.url}/v1/usage.csv", params={**window, "group_by": "account", "period": "day"}, timeout=30)
    rows = {r["account"]: r for r in csv.DictReader(io.StringIO(exported.text))}
    assert set(rows) == {"nlp", "cv", "(unallocated)", "(total)"}
    day = datetime.fromtimestamp(HOUR, UTC).strftime("%Y-%m-%d")
    assert rows["nlp"]["period"] == day and float(rows["nlp"]["cost_usd"]) == 2.0
    assert float(rows["nlp"]["co2e_kg"]) == pytest.approx(1.2 * 475 / 1000)
    assert float(rows["nlp"]["market_co2e_kg"]) == pytest.approx(1.2 * 50 / 1000)
    assert float(rows["nlp"]["embodied_co2e_kg"]) == pytest.approx(462.5 / (6 * 8760 * 0.85))  # BLOOM's inputs
    assert float(rows["(unallocated)"]["energy_kwh"]) == pytest.approx(0.1)
    assert float(rows["(total)"]["gpu_hours"]) == 3.0
    table = gpuledger("usage", "--from", window["from"], "--group-by", "account", "--period", "month", "--server", server.url)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["account", "period", "GPU-h", "kWh", "facility", "kWh", "USD",
                                                    "kg", "CO2e", "loc", "kg", "CO2e", "mkt", "kg", "CO2e", "emb"]
    assert "(unallocated)" in table.stdout and "(total)" in table.stdout
    as_json = json.loads(gpuledger("usage", "--from", window["from"], "--format", "json", "--server", server.url).stdout)
    assert as_json["total"]["market_co2e_kg"] == pytest.approx(2.1 * 1.2 * 50 / 1000)
    bad = gpuledger("usage", "--group-by", "team", "--server", server.url)
    assert bad.returncode == 2 and "--group-by 'team': expected account, user, cluster, job, release" in bad.stderr

    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert 'gpuledger_job_market_co2e_grams_total{account="nlp",cluster="c",job_id="c/1"} 60.0' in metrics
    assert 'gpuledger_job_embodied_co2e_grams_total{account="nlp",cluster="c",job_id="c/1"} 10.352314441758' in metrics
    printed = gpuledger("report", "c/1", "--server", server.url).stdout
    # the rate to its precision, with its source (it printed 0.010352314441758438)
    assert "embodied_kg_per_gpu_hour[NVIDIA H100 80GB HBM3] = 0.01035 (config)" in printed
    assert "grid_intensity_g_per_kwh[atlantis] = 475.0 (built-in default)" in printed

    server.process.terminate()
    server.process.wait(timeout=15)
    _, second_log = serve(config)
    assert ("warning: GPU model 'Acme X9 accelerator' falls back to built-in defaults: tdp_w = 700 W, "
            "usd_per_gpu_hour = 4 USD, embodied_kg_per_gpu_hour = 0.0103 kg") in second_log.read_text()
