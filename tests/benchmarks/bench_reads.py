"""Benchmark 3, reads: GET /v1/jobs/{job_id} latency with 100,000 jobs stored.

Stored with Core bulk inserts (jobs, job_hours, job_gpus): 100,000 ended jobs of 1-6 hours
on 1-8 GPUs each, plus one running job of 2,048 GPUs x 35 days (840 hourly rollups, one
datacenter and GPU model; 2,048 job_gpus rows; ~1.72 M GPU-hours). Then one
``gpuledger server`` and a client process: sequential (one client) and 50 concurrent
clients (closed loop, asyncio + httpx) for the long job and for a one-hour job.
Targets: p50 <= 5 ms, p99 <= 25 ms under 50 clients; long/short <= 2.

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
)

LONG_JOB = f"{CLUSTER}/7000001"
LONG_GPUS, LONG_DAYS = 2048, 35
TARGET_P50_MS, TARGET_P99_MS, TARGET_RATIO = 5.0, 25.0, 2.0
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


def _measure(section: Section, server: Server, backend: str, label: str, job_id: str, concurrency: int,
             seconds: float) -> dict:
    path = f"/v1/jobs/{quote(job_id, safe='/')}"
    cpu0 = server.cpu_s()
    res = run_client(["get", server.url, path, "--concurrency", str(concurrency), "--seconds", str(seconds)])
    cpu = server.cpu_s() - cpu0
    res["rps"] = res["requests"] / res["wall_s"]
    res["cpu_ms_per_req"] = cpu / max(res["requests"], 1) * 1e3
    who = "1 client" if concurrency == 1 else f"{concurrency} clients"
    if concurrency == 1:
        section.add(f"GET job {backend}, {label}, {who}", f"p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms")
    else:
        section.add(f"GET job {backend}, {label}, {who}, p50", f"{res['p50_ms']:.1f} ms",
                    f"<= {TARGET_P50_MS:g} ms", verdict_max(res["p50_ms"], TARGET_P50_MS))
        section.add(f"GET job {backend}, {label}, {who}, p99", f"{res['p99_ms']:.1f} ms",
                    f"<= {TARGET_P99_MS:g} ms", verdict_max(res["p99_ms"], TARGET_P99_MS))
    if res["errors"]:
        alive = "running" if server.process.poll() is None else f"exited {server.process.returncode}"
        section.note(f"{backend} {label} {who}: {res['errors']} failed requests, first: {res['first_error']}; server "
                     f"{alive}; its log ends: {server.log_path.read_text()[-300:]!r}")
    section.note(f"{backend} {label} {who}: {res['requests']:,} requests in {res['wall_s']:.1f} s = {res['rps']:,.0f}/s, "
                 f"mean {res['mean_ms']:.1f} ms, server CPU {res['cpu_ms_per_req']:.2f} ms/request, {res['errors']} errors")
    return res


def run(quick: bool = False) -> Section:
    import httpx

    section = Section("reads")
    jobs = 10_000 if quick else 100_000
    seq_s, conc_s = (1.0, 2.0) if quick else (4.0, 20.0)
    for backend in backends():
        with temp_database(backend) as url, tempfile.TemporaryDirectory(prefix="bench_reads_") as tmp:
            engine = new_engine(url)
            log(f"reads [{backend}]: storing {jobs:,} jobs + the 2,048-GPU x 35-day job ...")
            t = time.perf_counter()
            short_job, hour_rows = populate(engine, jobs)
            engine.dispose()
            log(f"reads [{backend}]: stored in {time.perf_counter() - t:.1f} s ({hour_rows:,} job_hours rows)")
            with Server(url, Path(tmp) / "server.log") as server:
                long_report = httpx.get(f"{server.url}/v1/jobs/{LONG_JOB}", timeout=30).json()
                expected = LONG_GPUS * LONG_DAYS * 24
                if abs(long_report["gpu_hours"] - expected) > 1e-6 * expected or long_report["gpus"] != LONG_GPUS:
                    section.note(f"{backend}: WARNING long job report {long_report['gpu_hours']} GPU-hours, "
                                 f"{long_report['gpus']} GPUs; expected {expected}, {LONG_GPUS}")
                results = {}
                for label, job_id in (("long 2048 GPU x 35 d", LONG_JOB), ("one-hour 8 GPU", short_job)):
                    for concurrency, seconds in ((1, seq_s), (CONCURRENCY, conc_s)):
                        log(f"reads [{backend}]: {label}, {concurrency} client(s), {seconds:g} s ...")
                        results[(label, concurrency)] = _measure(section, server, backend, label, job_id,
                                                                 concurrency, seconds)
            long50, short50 = results[("long 2048 GPU x 35 d", CONCURRENCY)], results[("one-hour 8 GPU", CONCURRENCY)]
            long1, short1 = results[("long 2048 GPU x 35 d", 1)], results[("one-hour 8 GPU", 1)]
            ratio50 = long50["p50_ms"] / short50["p50_ms"]
            section.add(f"GET job {backend}, long/short p50, {CONCURRENCY} clients", f"{ratio50:.2f}",
                        f"<= {TARGET_RATIO:g}", verdict_max(ratio50, TARGET_RATIO))
            section.add(f"GET job {backend}, long/short p50, 1 client", f"{long1['p50_ms'] / short1['p50_ms']:.2f}",
                        f"<= {TARGET_RATIO:g}", verdict_max(long1["p50_ms"] / short1["p50_ms"], TARGET_RATIO))
            for label, res in (("long", long50), ("one-hour", short50)):
                little_ms = CONCURRENCY / res["rps"] * 1e3
                section.note(
                    f"{backend} {label}, {CONCURRENCY} clients: what bounds it is one Python process's throughput "
                    f"({res['rps']:,.0f} req/s at {res['cpu_ms_per_req']:.2f} ms server CPU per request, with the "
                    f"client process and the database sharing the 2 cores): by Little's law latency = clients / "
                    f"throughput = {little_ms:.0f} ms, measured mean {res['mean_ms']:.0f} ms; this is queueing, the "
                    f"single-client figures are the service time")
    return section


if __name__ == "__main__":
    from run import print_table

    print_table([run(quick="--quick" in sys.argv)])
