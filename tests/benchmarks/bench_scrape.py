"""The server's /metrics with 10,000 running jobs: how long one Prometheus scrape takes.

    .venv/bin/python tests/benchmarks/run.py --only scrape [--quick]

Seeds N running jobs with a day of hourly rollups each (and network rollups), then times
the scrape as the server writes it (``JobCollector.exposition``, the whole text):
the first scrape prices every job's closed hours; later ones price only the open hours.
Target: a scrape of 10,000 running jobs well inside Prometheus' default 10 s scrape timeout,
taken as at most 0.5 s once warm (DESIGN.md).
"""

from __future__ import annotations

import time

from common import CLUSTER, DATACENTER, GPU_MODEL, Section, log, new_engine, temp_database

HOURS = 24
TARGET_WARM_S = 0.5


def seed(engine, jobs: int, now_s: float) -> None:  # noqa: ANN001
    from collector.models import Job, JobHour, JobNetHour

    first_hour = int(now_s // 3600 * 3600) - (HOURS - 1) * 3600
    job_rows = [{"job_id": f"{CLUSTER}/{n}", "cluster": CLUSTER, "local_id": str(n), "account": f"acct-{n % 50}",
                 "user": f"user-{n % 400}", "state": "running", "first_seen_s": first_hour, "last_seen_s": now_s}
                for n in range(jobs)]
    with engine.begin() as conn:
        conn.execute(Job.__table__.insert(), job_rows)
        for chunk in range(0, jobs, 1000):
            hours = [{"job_id": f"{CLUSTER}/{n}", "hour_s": first_hour + h * 3600, "datacenter": DATACENTER,
                      "gpu_model": GPU_MODEL, "gpu_seconds": 8 * 3600.0, "busy_gpu_seconds": 7 * 3600.0,
                      "energy_j": 8 * 3600 * 600.0, "energy_counter_j": 8 * 3600 * 600.0}
                     for n in range(chunk, min(chunk + 1000, jobs)) for h in range(HOURS)]
            conn.execute(JobHour.__table__.insert(), hours)
            nets = [{"job_id": f"{CLUSTER}/{n}", "hour_s": first_hour + h * 3600, "node": f"node-{n}", "seconds": 3600.0,
                     "ports": 8, "tx_bytes": 1e12, "rx_bytes": 1e12, "apportioned_bytes": 0.0,
                     "peak_tx_gbps": 300.0, "peak_rx_gbps": 300.0, "link_down_port_seconds": 0.0}
                    for n in range(chunk, min(chunk + 1000, jobs)) for h in range(HOURS)]
            conn.execute(JobNetHour.__table__.insert(), nets)


def scrape_s(jobs) -> tuple[float, int]:  # noqa: ANN001
    started = time.perf_counter()
    body = jobs.exposition()  # what the server's /metrics appends for the jobs
    return time.perf_counter() - started, len(body)


def run(quick: bool = False) -> Section:
    from common import backends

    from api.accounting.rates import LedgerConfig
    from api.reports.jobmetrics import JobCollector

    section = Section("scrape")
    jobs = 2_000 if quick else 10_000
    for backend in backends():
        with temp_database(backend) as url:
            engine = new_engine(url)
            now_s = time.time()
            log(f"{backend}: seeding {jobs:,} running jobs x {HOURS} hourly rollups")
            seed(engine, jobs, now_s)
            jobs_metrics = JobCollector(engine, LedgerConfig())
            cold_s, size = scrape_s(jobs_metrics)
            warm = sorted(scrape_s(jobs_metrics)[0] for _ in range(3 if quick else 5))
            section.add(f"{backend}: first scrape, {jobs:,} jobs ({size / 1e6:.1f} MB of text)", f"{cold_s:.2f} s")
            section.add(f"{backend}: scrape once warm, {jobs:,} jobs (median)", f"{warm[len(warm) // 2]:.2f} s",
                        f"<= {TARGET_WARM_S:g} s", _verdict(warm[len(warm) // 2], jobs))
            engine.dispose()
    section.note("warm scrapes price only the open hours (this one and the last); closed hours are priced once per job")
    return section


def _verdict(seconds: float, jobs: int) -> str:
    from common import verdict_max

    return verdict_max(seconds, TARGET_WARM_S) if jobs >= 10_000 else "info (quick: fewer jobs)"


if __name__ == "__main__":
    import sys

    from run import print_table

    print_table([run(quick="--quick" in sys.argv)])
