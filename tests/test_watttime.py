"""WattTime feeds the accounting series with its average rate (co2_aoer) and a separate
marginal series (co2_moer) that only the what-if reads: through a real `gpuledger server`
fetching from a local server that replays WattTime's documented shapes, and a real
`gpuledger agent --simulate` pushing the job."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.accounting.marginal import marginal_co2e
from api.accounting.pricing import UsageRow
from api.accounting.rates import LedgerConfig
from collector.db import make_engine
from collector.models import GridIntensity, GridMarginalIntensity
from tests.conftest import start_server, wait_for_job
from tests.replay_server import RecordedRequest, ReplayServer

LB = 0.45359237  # g/kWh per lb/MWh
AOER_LBS, MOER_LBS = 800.0, 1500.0


def test_marginal_co2e_covers_only_hours_with_a_value() -> None:
    config = LedgerConfig.model_validate({"datacenters": {"d": {"region": "r", "pue": 1.5}}})
    rows = [UsageRow(3600 * h, "d", "H100", 3600.0, 3600.0, 3.6e6, 3.6e6) for h in (10, 11)]  # 1 kWh each
    assert marginal_co2e(rows, config, {("r", 36000): 600.0}) == {
        "marginal_co2e_kg": pytest.approx(1.5 * 600 / 1000), "marginal_hourly_fraction": 0.5}
    assert marginal_co2e(rows, config, {}) == {"marginal_co2e_kg": None, "marginal_hourly_fraction": 0.0}
    assert marginal_co2e([], config, {}) == {"marginal_co2e_kg": None, "marginal_hourly_fraction": None}


def watttime_historical(request: RecordedRequest) -> tuple[int, dict[str, Any]]:
    """Hourly points over the asked range, in WattTime's v3 shape, for the asked signal; the
    average rate's newest hour built from imputed data."""
    if request.headers.get("authorization") != "Bearer wt-token":
        return 401, {"error": "bad token"}
    signal = request.query["signal_type"][0]
    start = datetime.fromisoformat(request.query["start"][0].replace("Z", "+00:00")).timestamp()
    end = datetime.fromisoformat(request.query["end"][0].replace("Z", "+00:00")).timestamp()
    hours = range(int(start // 3600 * 3600), int(end) + 1, 3600)
    value = {"co2_aoer": AOER_LBS, "co2_moer": MOER_LBS}[signal]
    data = [{"point_time": datetime.fromtimestamp(h, UTC).isoformat(), "value": value,
             "imputed_data_used": signal == "co2_aoer" and h == hours[-1]} for h in hours]
    meta = {"data_point_period_seconds": 3600, "region": request.query["region"][0], "warnings": [],
            "signal_type": signal, "model": {"date": "2023-03-01"}, "units": "lbs_co2_per_mwh"}
    return 200, {"data": data, "meta": meta}


SPEC = """
seed = 3
cluster = "wt"
datacenter = "dc-w"
[[nodes]]
name = "n0"
gpu_count = 2
model = "NVIDIA H100 80GB HBM3"
idle_w = 70.0
busy_w = 650.0
tdp_w = 700.0
[[jobs]]
id = "5"
nodes = ["n0"]
gpus = [0, 1]
start_s = 0
utilization = 0.7
"""


def test_e2e_watttime_job_priced_with_aoer_and_marginal_in_whatif(db_url: str, tmp_path: Path) -> None:
    replay = ReplayServer({("GET", "/login"): (200, {"token": "wt-token"}),
                           ("GET", "/v3/historical"): watttime_historical}).start()
    config = tmp_path / "server.toml"
    config.write_text(f"""
[usd_per_gpu_hour]
default = 4.0
[datacenters.dc-w]
region = "caiso"
pue = 1.2
[intensity_g_per_kwh]
caiso = 100.0
[[intensity_providers]]
kind = "watttime"
region = "caiso"
zone = "CAISO_NORTH"
username = "ada"
password = "pw"
base_url = "{replay.url}"
""")
    server = start_server(db_url, config, tmp_path / "server.log")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    try:
        agent = subprocess.Popen(
            [sys.executable, "-m", "api.cli.main", "agent", "--simulate", str(spec), "--node", "n0",
             "--collector", server.url, "--interval", "0.5", "--push-interval", "1",
             "--sim-epoch", str(math.floor(time.time()) - 30), "--metrics-port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_job(server.url, "wt/5")
        time.sleep(2)
        agent.terminate()
        assert agent.wait(timeout=30) == 0
        deadline = time.monotonic() + 30
        while True:  # the server fetches at start, in the background
            whatif = httpx.get(f"{server.url}/v1/jobs/wt/5/whatif", timeout=10).json()
            if whatif["actual"]["marginal_co2e_kg"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        report = httpx.get(f"{server.url}/v1/jobs/wt/5", timeout=10).json()
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
        replay.stop()

    asked = {r.query["signal_type"][0]: r.query for r in replay.log("GET", "/v3/historical")}
    assert set(asked) == {"co2_aoer", "co2_moer"} and asked["co2_aoer"]["include_imputed_marker"] == ["true"]
    facility_kwh = report["facility_energy_kwh"]
    assert facility_kwh > 0
    # Accounting: the average rate, every hour from the hourly series (not the static 100 g/kWh).
    assert report["rates"]["grid_intensity_g_per_kwh"] == {"caiso": pytest.approx(AOER_LBS * LB, rel=1e-12)}
    assert report["rates"]["intensity_hourly_fraction"] == {"caiso": 1.0}
    assert report["co2e_kg"] == pytest.approx(facility_kwh * AOER_LBS * LB / 1000, rel=1e-9)
    # What-if: the same energy at the marginal rate, kept apart from the accounted CO2e.
    actual = whatif["actual"]
    assert actual["co2e_kg"] == pytest.approx(report["co2e_kg"], rel=1e-12)
    assert actual["marginal_co2e_kg"] == pytest.approx(facility_kwh * MOER_LBS * LB / 1000, rel=1e-9)
    assert actual["marginal_hourly_fraction"] == 1.0

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            average = conn.execute(select(GridIntensity.__table__).order_by(GridIntensity.__table__.c.hour_s)).all()
            marginal = conn.execute(select(GridMarginalIntensity.__table__)).all()
    finally:
        engine.dispose()
    assert {round(row.g_per_kwh, 6) for row in average} == {round(AOER_LBS * LB, 6)}
    assert {round(row.g_per_kwh, 6) for row in marginal} == {round(MOER_LBS * LB, 6)}
    assert [row.estimated for row in average][-1] is True and not any(row.estimated for row in average[:-1])
    assert all(row.source == "watttime" for row in (*average, *marginal))
