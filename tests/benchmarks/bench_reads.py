"""Benchmark 3, reads: job reports and the job list with 100,000 jobs stored.

Stored with Core bulk inserts (jobs, job_hours, job_gpus): 100,000 ended jobs of 1-6 hours
on 1-8 GPUs each, plus one running job of 2,048 GPUs x 35 days (840 hourly rollups, one
datacenter and GPU model; 2,048 job_gpus rows; ~1.72 M GPU-hours). Then one
``gpuledger server`` and a client process (``loadgen.py``): the long and a one-hour job's
report from one client (server CPU per request: long/short <= 1.5); a mix of 90 % one-hour
jobs and 10 % the long one from 50 connections (>= 800 reports/s) and open loop at
200 requests/s (p99 <= 25 ms); ``/v1/jobs?limit=100`` from one client (p99 <= 25 ms).

    python tests/benchmarks/bench_reads.py [--quick]
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CLUSTER,
    GPU_MODEL,
    Section,
    Server,
    backends,
    log,
    new_engine,
    node_name,
    run_client,
    temp_database,
    verdict_max,
    verdict_min,
)

LONG_JOB = f"{CLUSTER}/7000001"
LONG_GPUS, LONG_DAYS = 2048, 35
TARGET_P99_MS, TARGET_RATIO, TARGET_RPS, OPEN_RATE = 25.0, 1.5, 800.0, 200.0
CONCURRENCY = 50
MODELS = (GPU_MODEL, "NVIDIA A100-SXM4-80GB")
DATACENTERS = ("dc-east", "dc-west")
CHUNK = 20_000


def _hour_values(gpus: int, util: float, watts: float) -> dict[str, float]:
    gpu_s = gpus * 3600.0
    energy = gpu_s * watts
    return {"gpu_seconds": gpu_s, "busy_gpu_seconds": gpu_s * util, "energy_j": energy, "energy_counter_j": energy * 0.999}


def populate(engine, jobs: int) -> tuple[str, int]:  # noqa: ANN001
    """Store ``jobs`` short jobs and the long one; returns (a one-hour job's id, job_hours rows)."""
    from collector.models import ENDED, RUNNING, Job, JobGpu, JobHour

    jobs_t, hours_t, gpus_t = Job.__table__, JobHour.__table__, JobGpu.__table__
    now = time.time()
    first_hour = math.floor((now - 120 * 86400) / 3600) * 3600
    job_rows, hour_rows, gpu_rows = [], [], []
    one_hour_job = None
    hours_stored = 0

    def flush(conn, force: bool = False) -> None:  # noqa: ANN001
        nonlocal hours_stored
        for table, rows in ((jobs_t, job_rows), (hours_t, hour_rows), (gpus_t, gpu_rows)):
            if rows and (force or len(rows) >= CHUNK):
                conn.execute(table.insert(), rows)
                if table is hours_t:
                    hours_stored += len(rows)
                rows.clear()

    with engine.begin() as conn:
        for n in range(jobs):
            job_id = f"{CLUSTER}/{1_000_000 + n}"
            hours = 1 + n % 6
            gpus = (1, 2, 4, 8)[n // 6 % 4]
            start = first_hour + n * 97.0  # 100k jobs over ~112 days
            hour0 = math.floor(start / 3600) * 3600
            dc, model = DATACENTERS[n % 2], MODELS[n // 3 % 2]
            if one_hour_job is None and hours == 1 and gpus == 8:
                one_hour_job = job_id
            job_rows.append({"job_id": job_id, "cluster": CLUSTER, "local_id": str(1_000_000 + n),
                             "name": f"job-{n % 5000}", "user": f"user{n % 300}", "account": f"acct{n % 40}",
                             "state": ENDED, "first_seen_s": start, "last_seen_s": start + hours * 3600,
                             "ended_s": start + hours * 3600})
            util, watts = 0.5 + 0.4 * (n % 7) / 6, 300.0 + 40 * (n % 9)
            for h in range(hours):
                hour_rows.append({"job_id": job_id, "hour_s": hour0 + 3600 * h, "datacenter": dc, "gpu_model": model,
                                  **_hour_values(gpus, util, watts)})
            node = n % 4096
            for g in range(gpus):
                gpu_rows.append({"job_id": job_id, "node": node_name(node + g // 8),
                                 "gpu_uuid": f"GPU-{node + g // 8:08x}-{g % 8:04x}-4e2b-9a61-5c1b9e3a7f0d"})
            flush(conn)
            if n and n % 25_000 == 0:
                log(f"reads: stored {n:,} jobs ...")
        # The long job: 2,048 GPUs (256 nodes x 8) for 35 days, still running.
        long_hours = LONG_DAYS * 24
        long_start = math.floor((now - long_hours * 3600) / 3600) * 3600
        job_rows.append({"job_id": LONG_JOB, "cluster": CLUSTER, "local_id": LONG_JOB.split("/")[1],
                         "name": "llm-405b-pretrain", "user": "alice", "account": "nlp", "state": RUNNING,
                         "first_seen_s": long_start, "last_seen_s": now - 5, "ended_s": None})
        for h in range(long_hours):
            hour_rows.append({"job_id": LONG_JOB, "hour_s": long_start + 3600 * h, "datacenter": DATACENTERS[0],
                              "gpu_model": GPU_MODEL, **_hour_values(LONG_GPUS, 0.93, 640.0 + 10 * math.sin(h))})
        for g in range(LONG_GPUS):
            gpu_rows.append({"job_id": LONG_JOB, "node": node_name(50_000 + g // 8),
                             "gpu_uuid": f"GPU-{50_000 + g // 8:08x}-{g % 8:04x}-4e2b-9a61-5c1b9e3a7f0d"})
        flush(conn, force=True)
    if engine.dialect.name == "postgresql":  # statistics as autovacuum would have them
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            from sqlalchemy import text

            conn.execute(text("ANALYZE"))
    assert one_hour_job is not None
    return one_hour_job, hours_stored


def _get(server: Server, path: str, *args: str) -> dict:
    """One loadgen run against ``path``, with the server's CPU per request over it."""
    cpu0 = server.cpu_s()
    res = run_client(["get", server.url, path, *args])
    res["cpu_ms_per_req"] = (server.cpu_s() - cpu0) / max(res["requests"], 1) * 1e3
    res["rps"] = res["requests"] / res["wall_s"]
    if res["errors"]:
        log(f"reads: {path} {' '.join(args)}: {res['errors']} failed requests, first: {res['first_error']}")
    return res


def _measure(section: Section, server: Server, backend: str, short_job: str, seq_s: float, conc_s: float) -> None:
    long_path, short_path = (f"/v1/jobs/{quote(j, safe='/')}" for j in (LONG_JOB, short_job))
    single = {label: _get(server, path, "--seconds", str(seq_s)) for label, path in (("long", long_path), ("short", short_path))}
    for label, res in single.items():
        section.note(f"{backend} {label} job report, 1 client: p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                     f"server CPU {res['cpu_ms_per_req']:.2f} ms/request")
    ratio = single["long"]["cpu_ms_per_req"] / single["short"]["cpu_ms_per_req"]
    section.add(f"report CPU long/short server {backend}", f"{ratio:.2f} ({single['long']['cpu_ms_per_req']:.2f} / "
                f"{single['short']['cpu_ms_per_req']:.2f} ms)", f"<= {TARGET_RATIO:g}", verdict_max(ratio, TARGET_RATIO))
    mix = ("--alt-path", long_path, "--alt-every", "10")  # 90 % short jobs, 10 % the long one
    closed = _get(server, short_path, "--concurrency", str(CONCURRENCY), "--seconds", str(conc_s), *mix)
    section.add(f"reports/s, {CONCURRENCY} connections {backend}", f"{closed['rps']:,.0f} (p99 {closed['p99_ms']:.0f} ms)",
                f">= {TARGET_RPS:g}", verdict_min(closed["rps"], TARGET_RPS))
    opened = _get(server, short_path, "--rate", str(OPEN_RATE), "--concurrency", str(CONCURRENCY), "--seconds",
                  str(conc_s), *mix)
    section.add(f"p99 at {OPEN_RATE:g} req/s open loop {backend}", f"{opened['p99_ms']:.1f} ms (p50 {opened['p50_ms']:.1f})",
                f"<= {TARGET_P99_MS:g} ms", verdict_max(opened["p99_ms"], TARGET_P99_MS))
    for what, res in (("50 connections", closed), ("open loop", opened)):
        if res["errors"]:
            section.note(f"{backend} {what}: {res['errors']} of {res['requests'] + res['errors']} requests failed, "
                         f"first: {res['first_error']}")
    listed = _get(server, "/v1/jobs?limit=100", "--seconds", str(seq_s))
    section.add(f"/v1/jobs?limit=100 p99 {backend}", f"{listed['p99_ms']:.1f} ms (p50 {listed['p50_ms']:.1f}, "
                f"CPU {listed['cpu_ms_per_req']:.2f} ms)", f"<= {TARGET_P99_MS:g} ms", verdict_max(listed["p99_ms"], TARGET_P99_MS))


def in_process_cpu(url: str, short_job: str, requests: int) -> dict[str, float]:
    """CPU ms per report of each job, the app called in this process (no sockets, no other
    process's scheduling in the figure): the steadiest long/short ratio on a loaded machine."""
    from fastapi.testclient import TestClient

    from api.accounting.rates import LedgerConfig
    from api.http.app import create_app

    engine = new_engine(url)
    result = {}
    with TestClient(create_app(engine, LedgerConfig(), scheduler=False)) as client:
        for label, job_id in (("short", short_job), ("long", LONG_JOB), ("short again", short_job)):
            path = f"/v1/jobs/{quote(job_id, safe='/')}"
            for _ in range(20):
                client.get(path)
            started = time.process_time()
            for _ in range(requests):
                assert client.get(path).status_code == 200
            result[label] = (time.process_time() - started) / requests * 1e3
    engine.dispose()
    return result


def run(quick: bool = False) -> Section:
    import httpx

    section = Section("reads")
    jobs = 10_000 if quick else 100_000
    seq_s, conc_s = (2.0, 3.0) if quick else (5.0, 10.0)
    for backend in backends():
        with temp_database(backend) as url, tempfile.TemporaryDirectory(prefix="bench_reads_") as tmp:
            engine = new_engine(url)
            log(f"reads [{backend}]: storing {jobs:,} jobs + the 2,048-GPU x 35-day job ...")
            t = time.perf_counter()
            short_job, hour_rows = populate(engine, jobs)
            engine.dispose()
            log(f"reads [{backend}]: stored in {time.perf_counter() - t:.1f} s ({hour_rows:,} job_hours rows)")
            cpu = in_process_cpu(url, short_job, 100 if quick else 300)
            short_ms = (cpu["short"] + cpu["short again"]) / 2
            section.add(f"report CPU long/short in-process {backend}", f"{cpu['long'] / short_ms:.2f} ({cpu['long']:.2f} / "
                        f"{short_ms:.2f} ms)", f"<= {TARGET_RATIO:g}", verdict_max(cpu["long"] / short_ms, TARGET_RATIO))
            with Server(url, Path(tmp) / "server.log") as server:
                long_report = httpx.get(f"{server.url}/v1/jobs/{LONG_JOB}", timeout=30).json()
                expected = LONG_GPUS * LONG_DAYS * 24
                if abs(long_report["gpu_hours"] - expected) > 1e-6 * expected or long_report["gpus"] != LONG_GPUS:
                    section.note(f"{backend}: WARNING long job report {long_report['gpu_hours']} GPU-hours, "
                                 f"{long_report['gpus']} GPUs; expected {expected}, {LONG_GPUS}")
                _measure(section, server, backend, short_job, seq_s, conc_s)
    section.note("one server process; the load generator and the database share the machine's cores with it and with "
                 "other work: compare the ratios, measured in the same run, more than the absolute figures")
    return section


if __name__ == "__main__":
    from run import print_table

    print_table([run(quick="--quick" in sys.argv)])
