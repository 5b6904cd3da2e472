"""Benchmark 4, storage: database bytes per GPU-day of each tier, and the steady-state size
of a 16,384-GPU fleet after 30 days at the default retention, on both backends.

A few simulated 8-GPU nodes push a batch every 10 s (``common.node_batch``: an 8-node
training job on GPUs 0-5, a one-node job on GPU 6, GPU 7 idle); the batches go through the
collector's own ``apply_batches`` (raw intervals with dimension keys, minute and hourly
rollups, jobs, batch identities), so every tier holds what production writes. Sizes:
SQLite through dbstat (pages of each table and its indexes), PostgreSQL with
pg_total_relation_size summed over each table's partitions after VACUUM FULL (live bytes:
the minute and hour rows are upserted several times per push, and the dead versions
are space autovacuum hands back for reuse, not growth).

Projection at defaults: raw and batch identities 2 days, minute rollups 35 days (so all 30
days), hourly rollups and jobs forever. Beside it, Prometheus for the same four signals
(utilisation, energy, memory, owner) per GPU at a 10 s scrape: 1.3-2 bytes per sample in its
compressed TSDB. Then one prune, to show what retention removes and how long it holds the lock.

    python tests/benchmarks/bench_storage.py [--quick]
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    GPUS_PER_NODE,
    Section,
    backends,
    base_time,
    log,
    new_engine,
    node_batch,
    temp_database,
    verdict_max,
)

FLEET_GPUS, DAYS = 16_384, 30
RAW_DAYS, MINUTE_DAYS = 2, 35
TARGET_GB, TARGET_KB_PER_GPU_DAY = 100.0, 200.0
PROMETHEUS_SERIES, PROMETHEUS_B_PER_SAMPLE = 4, (1.3, 2.0)
TIERS = {
    "raw": ("raw_intervals", "ingested_batches", "job_keys", "places", "gpu_keys"),
    "minute": ("job_minutes",),
    "hourly": ("job_hours", "jobs", "job_gpus"),
}
GROUP = 256  # batches per transaction, as the collector's group commit does under load


def table_bytes(engine) -> dict[str, int]:  # noqa: ANN001
    """Bytes of each table, its indexes (and on PostgreSQL its partitions) included."""
    from sqlalchemy import text

    tables = [t for names in TIERS.values() for t in names]
    sizes: dict[str, int] = {}
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            indexes = dict(conn.execute(text("SELECT name, tbl_name FROM sqlite_schema WHERE type='index'")).all())
            for name, size in conn.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")):
                owner = indexes.get(name, name)
                sizes[owner] = sizes.get(owner, 0) + int(size)
        return {t: sizes.get(t, 0) for t in tables}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM FULL"))
        for t in tables:
            sizes[t] = int(conn.execute(text(  # a plain table has no partition tree
                f"SELECT COALESCE((SELECT SUM(pg_total_relation_size(relid)) FROM pg_partition_tree('{t}')), "
                f"pg_total_relation_size('{t}'))")).scalar_one())
    return sizes


def fill(engine, nodes: int, node_days: float) -> tuple[int, float]:  # noqa: ANN001
    """``node_days`` of pushes from each of ``nodes`` nodes through the collector; (intervals, end time)."""
    from collector.ingest import apply_batches
    from collector.partitions import ensure_partitions
    from collector.schemas import BatchIn

    pushes = int(node_days * 8640)
    start = base_time(back_s=node_days * 86400 + 600)
    ensure_partitions(engine, start, ahead_days=int(node_days) + 2)
    boots = [str(uuid.uuid4()) for _ in range(nodes)]
    group, intervals = [], 0
    for seq in range(pushes):
        for node in range(nodes):
            group.append(BatchIn.model_validate(node_batch(node, seq, start + seq * 10.0, boot_id=boots[node])))
        if len(group) >= GROUP or seq == pushes - 1:
            apply_batches(engine, group, start + seq * 10.0 + 10.5)
            intervals += sum(len(b.intervals) for b in group)
            group = []
        if seq and seq % 2000 == 0:
            log(f"storage: {seq:,}/{pushes:,} pushes ...")
    return intervals, start + pushes * 10.0


def _measure(section: Section, backend: str, nodes: int, node_days: float) -> None:
    from collector.retention import prune

    with temp_database(backend) as url:
        engine = new_engine(url)
        empty = table_bytes(engine)
        t = time.perf_counter()
        intervals, end_s = fill(engine, nodes, node_days)
        log(f"storage [{backend}]: {intervals:,} intervals through apply_batches in {time.perf_counter() - t:.1f} s")
        full = table_bytes(engine)
        gpu_days = nodes * GPUS_PER_NODE * node_days
        per_tier = {tier: sum(full[t] - empty[t] for t in names) / gpu_days for tier, names in TIERS.items()}
        for tier, b in per_tier.items():
            detail = ", ".join(f"{t} {(full[t] - empty[t]) / gpu_days / 1e3:.1f}" for t in TIERS[tier])
            section.add(f"{tier} bytes/GPU-day {backend}", f"{b / 1e3:,.1f} kB ({detail} kB)")
        fleet = FLEET_GPUS * (per_tier["raw"] * RAW_DAYS + per_tier["minute"] * min(DAYS, MINUTE_DAYS)
                              + per_tier["hourly"] * DAYS)
        per_gpu_day_kb = fleet / FLEET_GPUS / DAYS / 1e3
        section.add(f"{FLEET_GPUS:,} GPUs after {DAYS} days {backend}", f"{fleet / 1e9:.1f} GB",
                    f"<= {TARGET_GB:g} GB", verdict_max(fleet / 1e9, TARGET_GB))
        section.add(f"per GPU-day of history {backend}", f"{per_gpu_day_kb:.0f} kB", f"<= {TARGET_KB_PER_GPU_DAY:g} kB",
                    verdict_max(per_gpu_day_kb, TARGET_KB_PER_GPU_DAY))
        samples = PROMETHEUS_SERIES * 8640 * DAYS * FLEET_GPUS
        lo, hi = (samples * b / 1e9 for b in PROMETHEUS_B_PER_SAMPLE)
        section.note(f"{backend}: the same fleet and month in Prometheus ({PROMETHEUS_SERIES} series per GPU at 10 s, "
                     f"{samples / 1e9:.1f} G samples at {PROMETHEUS_B_PER_SAMPLE[0]}-{PROMETHEUS_B_PER_SAMPLE[1]} B): "
                     f"{lo:.0f}-{hi:.0f} GB; gpuledger {fleet / 1e9:.1f} GB = {fleet / 1e9 / hi:.1f}-{fleet / 1e9 / lo:.1f}x")
        t = time.perf_counter()
        pruned = prune(engine, end_s + (RAW_DAYS + 1) * 86400, RAW_DAYS, MINUTE_DAYS)
        section.note(f"{backend}: prune of the whole raw tier: {pruned.intervals:,} interval rows deleted, "
                     f"{len(pruned.dropped)} partitions dropped, {pruned.batches:,} batch ids, in {pruned.chunks} chunks, "
                     f"longest {pruned.longest_chunk_s * 1e3:.1f} ms (budget 50 ms), {time.perf_counter() - t:.2f} s in all")
        engine.dispose()


def run(quick: bool = False) -> Section:
    section = Section("storage")
    nodes, node_days = (2, 0.1) if quick else (4, 0.5)
    for backend in backends():
        log(f"storage [{backend}]: {nodes} nodes x {node_days:g} day(s) of 10 s pushes ...")
        _measure(section, backend, nodes, node_days)
    section.note("the hourly tier is measured with a 1-node slice of an 8-node job (its rows are per job, not per GPU), "
                 "so it is an upper bound; raw and minute rows are per GPU and per (job, node)")
    return section


if __name__ == "__main__":
    from run import print_table

    print_table([run(quick="--quick" in sys.argv)])
