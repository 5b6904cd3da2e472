"""Declared usage through the real server and CLI: published footprints (Llama 2's Table 2,
BLOOM's training run) from their stated inputs, idempotent re-import, honest energy sources,
release labels from import, environment and admin, and errors that name line and column."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, start_server

FIXTURES = Path(__file__).parent / "fixtures" / "declared"


def gpuledger(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def served(db_url, tmp_path, request):
    config = tmp_path / "rates.toml"
    shutil.copy(FIXTURES / request.param, config)
    server = start_server(db_url, config, tmp_path / "server.log")
    yield server
    server.process.terminate()
    server.process.wait(timeout=15)


@BACKENDS
@pytest.mark.parametrize("served", ["llama2.toml"], indirect=True)
def test_llama2_table2_from_declared_gpu_hours_alone(served):
    hostport = served.url.removeprefix("http://")  # a --server without scheme is taken as http://
    first = gpuledger("import", str(FIXTURES / "llama2.csv"), "--server", hostport)
    assert first.returncode == 0, first.stderr
    assert "4 rows: 4 added, 0 updated, 0 unchanged" in first.stdout
    again = gpuledger("import", str(FIXTURES / "llama2.csv"), "--server", served.url)
    assert "4 rows: 0 added, 0 updated, 4 unchanged" in again.stdout  # idempotent

    card = gpuledger("release", "llama-2", "--rounding", "truncate", "--server", served.url)
    assert card.returncode == 0, card.stderr
    tdp = card.stdout.split("**llama-2: tdp")[1].splitlines()
    rows = [line.split(" | ") for line in tdp if line.startswith("| meta/") or line.startswith("| Total")]
    # job, GPU-hours, power, PUE, intensity, location-based t: the paper's rows and total, to two decimals
    assert [(r[0], r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        ("| meta/llama-2-7b", "184,320", "400", "1.00", "423.5", "31.22"),
        ("| meta/llama-2-13b", "368,640", "400", "1.00", "423.5", "62.44"),
        ("| meta/llama-2-34b", "1,038,336", "350", "1.00", "423.5", "153.90"),
        ("| meta/llama-2-70b", "1,720,320", "400", "1.00", "423.5", "291.42"),
        ("| Total", "3,311,616", "", "", "", "539.00"),
    ]
    assert all(r[7] == "0.00" for r in rows)  # market-based: 100 % offset

    body = httpx.get(f"{served.url}/v1/releases/llama-2/footprint", params={"rounding": "truncate"}, timeout=30).json()
    assert body["jobs"] == ["meta/llama-2-7b", "meta/llama-2-13b", "meta/llama-2-34b", "meta/llama-2-70b"]
    assert body["energy_tdp_estimated_fraction"] == pytest.approx(1.0)
    assert (body["energy_measured_fraction"], body["energy_declared_fraction"]) == (0.0, 0.0)
    assert body["conventions"]["tdp"]["total"]["location_tco2e"] == pytest.approx(539.0009856)
    report = httpx.get(f"{served.url}/v1/jobs/meta/llama-2-34b", timeout=30).json()
    assert (report["source"], report["release"], report["gpu_hours"]) == ("declared", "llama-2", pytest.approx(1_038_336))
    assert report["energy_kwh"] == pytest.approx(1_038_336 * 0.350)  # priced like measured usage
    assert report["energy_tdp_estimated_fraction"] == pytest.approx(1.0) and report["energy_measured_fraction"] == 0.0
    assert report["rate_sources"]["pue"] == {"meta-rsc": "config"}
    assert report["rate_sources"]["usd_per_gpu_hour"] == {"NVIDIA A100-SXM4-80GB": "built-in default"}
    assert "usd_per_gpu_hour[NVIDIA A100-SXM4-80GB] = 4: built-in default" in report["defaults_used"]
    by_release = gpuledger("usage", "--group-by", "release", "--from", "2023-01-01", "--to", "2023-08-01",
                           "--format", "json", "--server", served.url)
    items = {i["group"]: i for i in json.loads(by_release.stdout)["items"]}
    assert items["llama-2"]["gpu_hours"] == pytest.approx(3_311_616)
    assert items["llama-2"]["co2e_kg"] == pytest.approx(539_000.9856)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("served", ["bloom.toml"], indirect=True)
def test_bloom_declared_energy_and_embodied_split_from_the_papers_inputs(served):
    result = gpuledger("import", str(FIXTURES / "bloom.jsonl"), "--server", served.url)
    assert result.returncode == 0, result.stderr
    body = httpx.get(f"{served.url}/v1/releases/bloom/footprint", timeout=30).json()
    assert body["energy_declared_fraction"] == pytest.approx(1.0) and body["energy_measured_fraction"] == 0.0
    (row,) = body["conventions"]["measured"]["rows"]
    # 433,196 kWh × 57 g/kWh = 24.69 t: the paper's 24.7 t of dynamic consumption
    assert round(row["location_tco2e"], 2) == 24.69 and round(row["location_tco2e"], 1) == 24.7
    assert row["power_w"] == pytest.approx(400.0)  # 433,196 kWh over 1,082,990 GPU-hours
    # embodied 11.2 t: 150 kg per GPU and 2,500 kg per 8-GPU server over 6 years at 85 % use
    assert round(row["embodied_tco2e"], 1) == 11.2
    assert round(row["embodied_gpu_tco2e"], 2) == 3.64 and round(row["embodied_server_tco2e"], 2) == 7.58
    md = gpuledger("release", "bloom", "--server", served.url).stdout
    assert "GPU energy: 100.0 % declared with imported usage." in md
    assert "| jean-zay/bloom-176b | NVIDIA A100-SXM4-80GB | 1,082,990 | 400 | 1.00 | 57 | 24.69 | - | 11.21 | 3.64 | 7.58 |" in md
    csv_text = httpx.get(f"{served.url}/v1/releases/bloom/footprint", params={"format": "csv"}, timeout=30).text
    assert csv_text.splitlines()[0].startswith("Convention,Job,GPU type,GPU-hours")
    assert "measured,jean-zay/bloom-176b,NVIDIA A100-SXM4-80GB,1082990,400,1.00,57,24.69,-,11.21,3.64,7.58" in csv_text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("served", ["llama2.toml"], indirect=True)
def test_bad_rows_name_line_column_and_value_and_store_nothing(served, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("cluster,job,gpu_model,gpu_hours,start,end\n"
                   "c,1,A100,10,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z\n"
                   "c,2,A100,ten,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z\n")
    result = gpuledger("import", str(bad), "--server", served.url)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "line 3: gpu_hours = 'ten': expected a number" in result.stderr
    assert httpx.get(f"{served.url}/v1/jobs", timeout=30).json()["total"] == 0
    bad.write_text("cluster,job,gpu_model,gpu_hours,gpus,start,end\nc,1,A100,10,8,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z\n")
    assert "line 2: give exactly one of gpu_hours or gpus" in gpuledger("import", str(bad), "--server", served.url).stderr
    bad.write_text("cluster,job,gpu,start\n")
    assert "line 1: unknown column(s) 'gpu'" in gpuledger("import", str(bad), "--server", served.url).stderr
    answer = httpx.post(f"{served.url}/v1/usage/declared", timeout=30, json={"rows": [
        {"cluster": "c", "job": "1", "gpu_model": "A100", "gpus": 8, "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}]})
    assert answer.status_code == 422 and "rows[0]: end = 2026-01-01T00:00:00+00:00 is not after start" in answer.json()["detail"]
    assert httpx.post(f"{served.url}/v1/usage/declared", json={"rows": []}, timeout=30).status_code == 422


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("served", ["llama2.toml"], indirect=True)
def test_release_from_the_environment_and_by_an_admin_and_no_mixing_with_measured_jobs(served):
    batch = {"node": "n1", "cluster": "c", "datacenter": "meta-rsc", "boot_id": "b", "seq": 0, "sent_at_s": 1.7e9,
             "jobs": [{"id": "9", "release": "r-env"}],
             "intervals": [{"gpu_uuid": "GPU-0", "gpu_index": 0, "gpu_model": "NVIDIA A100-SXM4-80GB", "job": "9",
                            "start_s": 1.7e9 - 3600, "end_s": 1.7e9, "gpu_seconds": 3600.0, "busy_gpu_seconds": 3600.0,
                            "energy_j": 3.6e6 * 0.3, "energy_method": "counter"}]}
    assert httpx.post(f"{served.url}/v1/ingest", json=batch, timeout=30).status_code == 200
    assert httpx.get(f"{served.url}/v1/releases", timeout=30).json()["items"] == [{"release": "r-env", "jobs": 1}]
    card = httpx.get(f"{served.url}/v1/releases/r-env/footprint", timeout=30).json()
    assert card["unit"] == "kg" and "Location-based (kgCO2eq)" in card["markdown"]  # 127 g is not 0.00 t
    assert card["energy_measured_fraction"] == 1.0
    assert httpx.put(f"{served.url}/v1/jobs/c/9/release", json={"release": "r-admin"}, timeout=30).status_code == 200
    assert httpx.get(f"{served.url}/v1/jobs/c/9", timeout=30).json()["release"] == "r-admin"
    earlier = batch["intervals"][0] | {"start_s": 1.7e9 - 7200, "end_s": 1.7e9 - 3600}  # the GPU's hour before: no time twice
    later = httpx.post(f"{served.url}/v1/ingest", json=batch | {"seq": 1, "intervals": [earlier]}, timeout=30)
    assert later.status_code == 200, later.text
    assert httpx.get(f"{served.url}/v1/jobs/c/9", timeout=30).json()["release"] == "r-admin"  # the admin's label is kept
    missing = httpx.get(f"{served.url}/v1/releases/r-env/footprint", timeout=30)
    assert missing.status_code == 404 and "releases: r-admin" in missing.json()["detail"]
    clash = httpx.post(f"{served.url}/v1/usage/declared", timeout=30, json={"rows": [
        {"cluster": "c", "job": "9", "gpu_model": "A100", "gpus": 8, "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}]})
    assert clash.status_code == 409 and "c/9 are measured by agents" in clash.json()["detail"]


def test_release_label_comes_from_the_jobs_environment():
    from agent.attribution import job_from_environ

    job = job_from_environ({"SLURM_JOB_ID": "77", "GPULEDGER_RELEASE": "llama-2"})
    assert job is not None and (job.job_id, job.release) == ("77", "llama-2")
    assert job_from_environ({"GPULEDGER_JOB_ID": "x"}).release is None  # type: ignore[union-attr]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("served", ["llama2.toml"], indirect=True)
def test_future_or_oversized_declared_usage_is_refused(served, tmp_path):
    future = tmp_path / "future.jsonl"
    future.write_text('{"cluster": "c", "job": "1", "gpu_model": "A100", "gpus": 8, '
                      '"start": "2026-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}\n')
    result = gpuledger("import", str(future), "--server", served.url)
    assert result.returncode == 2 and "end - start = 26663 days: expected at most 5 years in one row" in result.stderr
    rows = [{"cluster": "c", "job": str(n), "gpu_model": "A100", "gpu_hours": 1.0,
             "start": "2019-01-01T00:00:00Z", "end": "2023-12-31T00:00:00Z"} for n in range(25)]
    answer = httpx.post(f"{served.url}/v1/usage/declared", json={"rows": rows}, timeout=30)
    assert answer.status_code == 422 and "hours in all: expected at most 1,000,000 per request" in answer.json()["detail"]
    rows = [{**rows[0], "start": "2099-01-01T00:00:00Z", "end": "2099-01-02T00:00:00Z"}]
    answer = httpx.post(f"{served.url}/v1/usage/declared", json={"rows": rows}, timeout=30)
    assert answer.status_code == 422 and "rows[0]: end = 2099-01-02T00:00:00+00:00 is in the future" in answer.json()["detail"]


def test_import_straight_into_a_database_without_a_server(tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    args = ("import", str(FIXTURES / "llama2.csv"), "--db", db, "--config", str(FIXTURES / "llama2.toml"))
    first = gpuledger(*args)
    assert first.returncode == 0 and "4 rows: 4 added, 0 updated, 0 unchanged" in first.stdout, first.stderr
    assert "4 rows: 0 added, 0 updated, 4 unchanged" in gpuledger(*args).stdout
    from sqlalchemy import text

    from collector.db import make_engine

    engine = make_engine(db)
    with engine.connect() as conn:
        energy_j, estimated_j = conn.execute(text(
            "SELECT SUM(energy_j), SUM(energy_estimated_j) FROM job_hours WHERE job_id = 'meta/llama-2-34b'")).one()
    engine.dispose()
    assert energy_j == pytest.approx(1_038_336 * 350 * 3600) and estimated_j == pytest.approx(energy_j)
    missing = gpuledger("import", str(FIXTURES / "llama2.csv"), "--db", f"sqlite:///{tmp_path / 'no' / 'x.db'}")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
