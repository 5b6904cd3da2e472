"""Benchmark 4, storage: database bytes per GPU-day, raw and rolled up, on both backends.

Raw: a GPU-day is 8,640 gpu_intervals rows (one per 10 s push) plus its share of the
batch identities (ingested_batches: one row per node and push = 1,080 per GPU-day on an
8-GPU node). Rolled up: job_hours keeps 24 rows per (job, datacenter, GPU model) and day,
whatever the number of GPUs, so a one-GPU job costs 24 rows per GPU-day and an N-GPU job
24/N. Rows are bulk-inserted (Core) with the values the collector writes, then measured:
SQLite through the dbstat virtual table (pages of each table and index), PostgreSQL with
pg_total_relation_size (heap, indexes, TOAST, FSM/VM) after VACUUM. No target in
DESIGN.md; the figures size the raw retention period (``[retention] raw_days``).

    python tests/benchmarks/bench_storage.py [--quick]
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CLUSTER,
    DATACENTER,
    GPU_MODEL,
    GPUS_PER_NODE,
    Section,
    backends,
    base_time,
    interval_rows,
    log,
    new_engine,
    node_batch,
    temp_database,
)

INTERVALS_PER_GPU_DAY = 8640
BATCHES_PER_GPU_DAY = INTERVALS_PER_GPU_DAY / GPUS_PER_NODE
FLEET_GPUS = 16_384
TABLES = ("gpu_intervals", "ingested_batches", "job_hours", "jobs", "job_gpus")


def table_bytes(engine) -> dict[str, int]:  # noqa: ANN001
    """Bytes of each table, its indexes included."""
    from sqlalchemy import text

    sizes: dict[str, int] = {}
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            indexes = {row[0]: row[1] for row in conn.execute(text("SELECT name, tbl_name FROM sqlite_schema WHERE type='index'"))}
            for name, size in conn.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")):
                owner = indexes.get(name, name)
                sizes[owner] = sizes.get(owner, 0) + int(size)
        return {t: sizes.get(t, 0) for t in TABLES}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM"))
        for t in TABLES:
            sizes[t] = conn.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar_one()
    return sizes


def fill(engine, node_days: float, job_days: int) -> dict[str, int]:  # noqa: ANN001
    """Bulk-insert ``node_days`` of one node's raw data and ``job_days`` of rollups; rows per table."""
    from collector.models import ENDED, GpuInterval, IngestedBatch, Job, JobGpu, JobHour

    batches = int(node_days * BATCHES_PER_GPU_DAY)
    start = base_time(back_s=node_days * 86400 + 600)
    boot = str(uuid.uuid4())  # the agent's boot id is a UUID
    counts = dict.fromkeys(TABLES, 0)
    with engine.begin() as conn:
        intervals, identities = [], []
        for seq in range(batches):
            batch = node_batch(0, seq, start + seq * 10.0, boot_id=boot)
            intervals += interval_rows(batch)
            identities.append({"node": batch["node"], "boot_id": boot, "seq": seq,
                               "received_at_s": batch["sent_at_s"] + 0.05, "interval_count": len(batch["intervals"])})
            if len(intervals) >= 20_000 or seq == batches - 1:
                conn.execute(GpuInterval.__table__.insert(), intervals)
                conn.execute(IngestedBatch.__table__.insert(), identities)
                counts["gpu_intervals"] += len(intervals)
                counts["ingested_batches"] += len(identities)
                intervals, identities = [], []
        hour0 = math.floor(start / 3600) * 3600
        hours, jobs, gpus = [], [], []
        for j in range(job_days):
            job_id = f"{CLUSTER}/{4_000_000 + j}"
            jobs.append({"job_id": job_id, "cluster": CLUSTER, "local_id": str(4_000_000 + j), "name": f"train-{j}",
                         "user": f"user{j % 300}", "account": f"acct{j % 40}", "state": ENDED,
                         "first_seen_s": hour0, "last_seen_s": hour0 + 86400, "ended_s": hour0 + 86400})
            for g in range(GPUS_PER_NODE):
                gpus.append({"job_id": job_id, "node": f"gpu-node-{j % 4096:05d}",
                             "gpu_uuid": f"GPU-{j % 4096:08x}-{g:04x}-4e2b-9a61-5c1b9e3a7f0d"})
            for h in range(24):
                gpu_s = 3600.0 * (1 + j % 8)
                hours.append({"job_id": job_id, "hour_s": hour0 + 3600 * h, "datacenter": DATACENTER,
                              "gpu_model": GPU_MODEL, "gpu_seconds": gpu_s, "busy_gpu_seconds": gpu_s * 0.91,
                              "energy_j": gpu_s * 612.345, "energy_counter_j": gpu_s * 612.345})
            if len(hours) >= 20_000 or j == job_days - 1:
                for table, rows in ((JobHour.__table__, hours), (Job.__table__, jobs), (JobGpu.__table__, gpus)):
                    conn.execute(table.insert(), rows)
                    counts[table.name] += len(rows)
                hours, jobs, gpus = [], [], []
    return counts


def run(quick: bool = False) -> Section:
    section = Section("storage")
    node_days, job_days = (0.25, 500) if quick else (1.0, 2000)
    for backend in backends():
        with temp_database(backend) as url:
            engine = new_engine(url)
            empty = table_bytes(engine)
            log(f"storage [{backend}]: {node_days:g} node-day(s) of raw intervals, {job_days:,} job-days of rollups ...")
            t = time.perf_counter()
            counts = fill(engine, node_days, job_days)
            full = table_bytes(engine)
            engine.dispose()
            log(f"storage [{backend}]: filled and measured in {time.perf_counter() - t:.1f} s")
        per_row = {t: (full[t] - empty[t]) / counts[t] for t in TABLES if counts[t]}
        raw_intervals = per_row["gpu_intervals"] * INTERVALS_PER_GPU_DAY
        raw_total = raw_intervals + per_row["ingested_batches"] * BATCHES_PER_GPU_DAY
        rollup = per_row["job_hours"] * 24
        section.add(f"raw bytes/GPU-day {backend}", f"{raw_total / 1e6:.2f} MB ({raw_intervals / 1e6:.2f} MB intervals "
                    f"+ {(raw_total - raw_intervals) / 1e6:.2f} MB batch ids; {per_row['gpu_intervals']:.0f} B/interval row)")
        section.add(f"rollup bytes/GPU-day {backend}", f"{rollup / 1e3:.1f} kB (1-GPU job; {per_row['job_hours']:.0f} B/"
                    f"job_hours row; raw/rollup {raw_total / rollup:,.0f}x)")
        section.note(f"{backend}: per job, once: jobs row {per_row['jobs']:.0f} B, job_gpus {per_row['job_gpus']:.0f} B "
                     f"per GPU; raw for {FLEET_GPUS:,} GPUs kept 30 days (default raw_days): "
                     f"{raw_total * FLEET_GPUS * 30 / 1e12:.2f} TB; rollups for the same fleet and month (1-GPU jobs, "
                     f"the worst case): {rollup * FLEET_GPUS * 30 / 1e9:.1f} GB")
    section.note("rows bulk-inserted, measured after VACUUM (PostgreSQL): no MVCC bloat from the ingest path's "
                 "job_hours upserts (every push updates its hour's row), which autovacuum reclaims for reuse only")
    return section


if __name__ == "__main__":
    from run import print_table

    print_table([run(quick="--quick" in sys.argv)])
