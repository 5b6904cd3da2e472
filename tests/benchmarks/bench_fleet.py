"""Benchmark 2, fleet: a simulated 16,384-GPU fleet (2,048 nodes x 8 GPUs) at 10 s pushes.

The fleet needs 204.8 batches/s (8 GPU intervals each, with the jobs list, as real agents
send them). In one run, on each configuration (SQLite; PostgreSQL with one server process;
PostgreSQL with ``--workers 2``):

- sustained: rounds of the whole fleet's batches as fast as a client process with 32
  keep-alive connections gets them acknowledged (closed loop); headroom = rate / 204.8;
  zero loss and zero double counting checked in the database afterwards;
- acknowledgement latency, open loop: 1x and 5x the fleet's rate for 10 s each, latency
  counted from each request's due time; p50 and p99;
- the ceiling: the same server stack with an empty handler (``ceiling.py``), the same bodies,
  the same client; real / ceiling. And a bare ASGI app under the same uvicorn, for scale;
- the load generator's own CPU per request (it shares the machine's cores).

    python tests/benchmarks/bench_fleet.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_DIR,
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
    verdict_max,
    verdict_min,
)

NODES = 2048
PUSH_S = 10.0
NEEDED_BATCHES_PER_S = NODES / PUSH_S  # 204.8
TARGET_HEADROOM = 10.0
TARGET_CEILING = 0.3
P99_TARGET_MS = {1: 100.0, 5: 500.0}
CONCURRENCY = 32


def _closed(server: Server, pushes: int, boot: str, cap_s: float, start_s: float) -> dict:
    return run_client(["ingest", server.url, "--nodes", str(NODES), "--pushes", str(pushes), "--steps", "1",
                       "--start", str(start_s), "--boot", boot, "--concurrency", str(CONCURRENCY),
                       "--max-seconds", str(cap_s)])


def _open(server: Server, factor: int, seconds: float, boot: str, start_s: float) -> dict:
    rate = NEEDED_BATCHES_PER_S * factor
    pushes = int(rate * seconds / NODES) + 1
    return run_client(["open", server.url, "--nodes", str(NODES), "--pushes", str(pushes), "--steps", "1",
                       "--start", str(start_s), "--boot", boot, "--concurrency", str(CONCURRENCY * 4),
                       "--rate", str(rate), "--seconds", str(seconds)])


def _stored(url: str) -> tuple[int, float]:
    """(raw interval rows, sum of job_hours.gpu_seconds) in the database."""
    from sqlalchemy import func, select

    from collector.models import JobHour, RawInterval

    engine = new_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(RawInterval)).scalar_one()
        gpu_s = conn.execute(select(func.coalesce(func.sum(JobHour.__table__.c.gpu_seconds), 0.0))).scalar_one()
    engine.dispose()
    return rows, float(gpu_s)


def ceiling(section: Section, quick: bool, tmp: Path) -> dict[str, float]:
    """Batches/s of the empty-handler stack (and a bare ASGI app) with the fleet's bodies."""
    rates = {}
    for kind in ("app", "asgi"):
        with Server("", tmp / f"ceiling-{kind}.log", command=[str(BENCH_DIR / "ceiling.py"), kind]) as server:
            log(f"fleet: ceiling ({kind}) ...")
            cpu0 = server.cpu_s()
            res = _closed(server, 1 if quick else 3, f"ceiling-{kind}", 20.0, base_time(back_s=600))
            cpu = server.cpu_s() - cpu0
        rates[kind] = res["sent"] / res["wall_s"]
        rates[f"{kind}_cpu_ms"] = cpu / max(res["sent"], 1) * 1e3
        what = "empty handler, same app and stack" if kind == "app" else "bare ASGI app, same uvicorn"
        section.add(f"ceiling: {what}", f"{rates[kind]:,.0f} batches/s ({cpu / max(res['sent'], 1) * 1e3:.3f} ms "
                    f"server CPU/batch; client {res['client_us_per_request']:.0f} us/request)")
    return rates


def run_config(section: Section, backend: str, workers: int, quick: bool, tmp: Path,
               ceilings: dict[str, float]) -> None:
    name = f"{backend}" + (f" --workers {workers}" if workers > 1 else "")
    pushes = 2 if quick else 6
    with temp_database(backend) as url:
        new_engine(url).dispose()
        with Server(url, tmp / f"server-{backend}-{workers}.log", workers=workers) as server:
            log(f"fleet [{name}]: {NODES * pushes:,} batches closed loop, {CONCURRENCY} connections ...")
            cpu0, pg0 = server.cpu_s(), postgres_cpu_s() if backend == "postgresql" else {}
            res = _closed(server, pushes, "fleet", 15.0 if quick else 60.0, base_time(back_s=3 * 3600))
            cpu = server.cpu_s() - cpu0
            pg_cpu = postgres_cpu_delta(pg0) if backend == "postgresql" else 0.0
            opened = {}
            for factor in (1, 5):
                log(f"fleet [{name}]: open loop at {factor}x the fleet's rate ...")
                opened[factor] = _open(server, factor, 4.0 if quick else 10.0, f"open-{factor}x",
                                       base_time(back_s=2 * 3600 - factor * 600))
        rows, gpu_s = _stored(url)
    rate = res["sent"] / res["wall_s"]
    section.add(f"fleet {name}: sustained", f"{rate:,.0f} batches/s = {rate / NEEDED_BATCHES_PER_S:.2f}x the 204.8/s "
                f"needed", f">= {TARGET_HEADROOM:g}x", verdict_min(rate / NEEDED_BATCHES_PER_S, TARGET_HEADROOM))
    cpu_ms = cpu / max(res["sent"], 1) * 1e3
    cpu_headroom = 1e3 / cpu_ms / NEEDED_BATCHES_PER_S  # the batches/s one core of server CPU takes, over the need
    section.add(f"fleet {name}: server CPU per batch", f"{cpu_ms:.3f} ms = {cpu_headroom:.2f}x the fleet per core"
                + (f" (postgres +{pg_cpu / max(res['sent'], 1) * 1e3:.3f} ms)" if backend == "postgresql" else ""),
                f">= {TARGET_HEADROOM:g}x", verdict_min(cpu_headroom, TARGET_HEADROOM))
    if workers == 1 and ceilings:
        ratio = rate / ceilings["app"]
        section.add(f"fleet {name}: real / empty-handler ceiling", f"{ratio:.2f} by rate, {ceilings['app_cpu_ms'] / cpu_ms:.2f} "
                    f"by CPU per batch (bare ASGI: {rate / ceilings['asgi']:.2f}, {ceilings['asgi_cpu_ms'] / cpu_ms:.2f})",
                    f">= {TARGET_CEILING}", verdict_min(ratio, TARGET_CEILING))
    for factor, r in opened.items():
        section.add(f"fleet {name}: ack at {factor}x, open loop", f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
                    f"({r['sent']:,} batches, {r['errors']} errors)", f"p99 <= {P99_TARGET_MS[factor]:g} ms",
                    verdict_max(r["p99_ms"], P99_TARGET_MS[factor]))
    sent = res["sent"] + sum(r["sent"] for r in opened.values())
    lost = sent * GPUS_PER_NODE - rows
    section.note(f"{name}: {res['sent']:,} batches in {res['wall_s']:.1f} s closed loop (request p50 {res['p50_ms']:.1f} ms, "
                 f"p99 {res['p99_ms']:.1f} ms); server CPU {cpu / max(res['sent'], 1) * 1e3:.2f} ms/batch"
                 + (f", postgres {pg_cpu / max(res['sent'], 1) * 1e3:.2f} ms/batch" if backend == "postgresql" else "")
                 + f"; client {res['client_us_per_request']:.0f} us CPU/request; "
                 f"stored {rows:,} interval rows for {sent:,} acknowledged batches: {lost} lost or doubled; "
                 f"job_hours hold {gpu_s / 3600:,.2f} GPU-hours for {sent * GPUS_PER_NODE * 10 / 3600:,.2f} sent "
                 "(each synthetic interval is 10 s +- 2 ms)")
    if res["errors"] or any(r["errors"] for r in opened.values()):
        first = res["first_error"] or next(r["first_error"] for r in opened.values() if r["first_error"])
        section.note(f"{name}: errors: {res['errors']} closed loop, first: {first}")


def run(quick: bool = False, ceilings_too: bool = True) -> Section:
    section = Section("fleet")
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp_s:
        tmp = Path(tmp_s)
        ceilings = ceiling(section, quick, tmp) if ceilings_too else {}
        for backend in backends():
            for workers in (1, 2) if backend == "postgresql" and _has_workers() else (1,):
                run_config(section, backend, workers, quick, tmp, ceilings)
    section.note("one machine (2 cores, shared with other work) holds the server, the client and PostgreSQL: "
                 "compare the ratios, measured in the same run, more than the absolute rates")
    return section


def _has_workers() -> bool:
    """Whether this tree's server has --workers (a benchmark run against an older tree has not)."""
    return Path(BENCH_DIR.parents[1], "api", "cli", "serve.py").exists()


if __name__ == "__main__":
    from run import print_table

    print_table([run(quick="--quick" in sys.argv, ceilings_too="--no-ceiling" not in sys.argv)])
