"""Benchmark 2, fleet: a simulated 16,384-GPU fleet (2,048 nodes x 8 GPUs) at 10 s pushes.

60 s of fleet traffic (6 rounds x 2,048 batches of 8 intervals plus the jobs list, as real
agents send them) goes to one ``gpuledger server`` as fast as a separate client process
with 8 keep-alive connections can send it. The fleet needs 204.8 batches/s; headroom is
what the collector sustained over that (wall), and 1 / (collector CPU-seconds per second
of fleet traffic) (CPU: one Python process uses at most about one core). Target >= 10x.

    python tests/benchmarks/bench_fleet.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    GPUS_PER_NODE,
    Section,
    Server,
    backends,
    base_time,
    log,
    new_engine,
    postgres_cpu_delta,
    postgres_cpu_s,
    run_client,
    temp_database,
    verdict_min,
)

NODES = 2048
PUSH_S = 10.0
NEEDED_BATCHES_PER_S = NODES / PUSH_S  # 204.8
TARGET_HEADROOM = 10.0
CONCURRENCY = 8


def run(quick: bool = False) -> Section:
    from sqlalchemy import func, select

    from collector.models import RawInterval

    section = Section("fleet")
    pushes = 1 if quick else 6  # quick: 10 s of fleet traffic (2,048 batches)
    traffic_s = pushes * PUSH_S
    cap_s = 8.0 if quick else 110.0  # bound the suite's runtime; the figures use what was sent
    for backend in backends():
        with temp_database(backend) as url, tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp:
            new_engine(url).dispose()
            with Server(url, Path(tmp) / "server.log") as server:
                log(f"fleet [{backend}]: {NODES * pushes:,} batches ({traffic_s:g} s of a {NODES * GPUS_PER_NODE:,}-GPU "
                    f"fleet), {CONCURRENCY} connections ...")
                cpu0 = server.cpu_s()
                pg0 = postgres_cpu_s() if backend == "postgresql" else {}
                res = run_client(["ingest", server.url, "--nodes", str(NODES), "--pushes", str(pushes), "--steps", "1",
                                  "--start", str(base_time(back_s=traffic_s + 120)), "--boot", "fleet",
                                  "--concurrency", str(CONCURRENCY), "--max-seconds", str(cap_s)])
                cpu = server.cpu_s() - cpu0
                pg_cpu = postgres_cpu_delta(pg0) if backend == "postgresql" else 0.0
            engine = new_engine(url)
            with engine.connect() as conn:
                stored = conn.execute(select(func.count()).select_from(RawInterval)).scalar_one()
            engine.dispose()
        sent = res["sent"]
        sent_traffic_s = sent / NEEDED_BATCHES_PER_S  # seconds of fleet traffic actually delivered
        rate = sent / res["wall_s"]
        headroom_wall = rate / NEEDED_BATCHES_PER_S
        cpu_per_traffic_s = cpu / sent_traffic_s
        headroom_cpu = 1.0 / cpu_per_traffic_s
        section.add(f"fleet {backend}: sustained", f"{rate:,.0f} batches/s = {headroom_wall:.2f}x the 204.8/s needed",
                    f">= {TARGET_HEADROOM:g}x", verdict_min(headroom_wall, TARGET_HEADROOM))
        section.add(f"fleet {backend}: collector CPU", f"{cpu_per_traffic_s:.3f} CPU-s per s of traffic = "
                    f"{headroom_cpu:.2f}x headroom", f">= {TARGET_HEADROOM:g}x", verdict_min(headroom_cpu, TARGET_HEADROOM))
        partial = "" if sent == res["offered"] else f" (cut at {cap_s:g} s: {sent} of {res['offered']} sent)"
        section.note(f"{backend}: {sent:,} batches ({sent * GPUS_PER_NODE:,} intervals, {sent_traffic_s:.1f} s of fleet "
                     f"traffic) in {res['wall_s']:.1f} s{partial}; collector CPU {cpu:.1f} s = "
                     f"{cpu / max(sent, 1) * 1e3:.2f} ms/batch; request p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms; "
                     f"{res['errors']} errors; raw_intervals rows stored {stored:,}" +
                     (f"; postgres CPU {pg_cpu / sent_traffic_s:.3f} CPU-s per s of traffic "
                      f"({pg_cpu / max(sent, 1) * 1e3:.2f} ms/batch)" if backend == "postgresql" else ""))
        if res["errors"]:
            section.note(f"{backend}: first error: {res['first_error']}")
        if stored != sent * GPUS_PER_NODE:
            section.note(f"{backend}: WARNING stored {stored} intervals, expected {sent * GPUS_PER_NODE}")
    section.note("the whole machine has 2 cores shared by the collector, the client process and (PostgreSQL) the "
                 "database server; wall headroom is therefore lower than CPU headroom")
    return section


if __name__ == "__main__":
    from run import print_table

    print_table([run(quick="--quick" in sys.argv)])
