"""Benchmark 1, ingest: GPU-intervals per second into SQLite and PostgreSQL.

(a) ``collector.ingest.apply_batch`` with BatchIn objects validated beforehand;
(b) the real HTTP endpoint POST /v1/ingest (one uvicorn process, client in another);
(c) the raw bulk-insert rate of the same interval rows into a fresh copy of the
    gpu_intervals table in the same database, one transaction per same-sized chunk.
Batches of 8 intervals (a node's real 10 s push) and of 512 (8 GPUs x 64 steps).
Where this tree's batches carry RoCE ``network`` entries, (a) also runs on 8-interval
batches with the 3 entries an agent on a node with 8 ports adds (one per owner).
Targets: >= 100,000 intervals/s per collector process, and (a) >= 0.5 x (c).

    python tests/benchmarks/bench_ingest.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Section,
    Server,
    backends,
    base_time,
    batch_set,
    batches_carry_network,
    fmt_rate,
    interval_rows,
    log,
    new_engine,
    postgres_cpu_delta,
    postgres_cpu_s,
    run_client,
    temp_database,
    verdict_min,
)

TARGET_RATE = 100_000
TARGET_RATIO = 0.5
SIZES = {8: 1, 512: 64}  # intervals per batch -> push steps per batch (8 GPUs each)


def _raw_table(engine):  # noqa: ANN001, ANN202
    """A fresh, empty copy of raw_intervals (same columns, same secondary index; not partitioned)."""
    from sqlalchemy import Index, MetaData, Table

    from collector.models import RawInterval

    name = f"bench_raw_intervals_{int(time.time() * 1000) % 10**9}"
    table = Table(name, MetaData(), *[c._copy() for c in RawInterval.columns],
                  Index(f"ix_{name}_job_key_end_s", "job_key", "end_s"))
    table.create(engine)
    return table


def time_apply(engine, batches, budget_s: float) -> tuple[int, int, float]:  # noqa: ANN001
    """apply_batch over pre-validated batches until done or ``budget_s``: (batches, intervals, s)."""
    from collector.ingest import apply_batch

    now_s = time.time()
    done = intervals = 0
    start = time.perf_counter()
    for batch in batches:
        result = apply_batch(engine, batch, now_s)
        assert result.applied
        done += 1
        intervals += result.intervals
        if time.perf_counter() - start > budget_s:
            break
    return done, intervals, time.perf_counter() - start


def time_raw(engine, chunks: list[list[dict]]) -> tuple[int, float]:  # noqa: ANN001
    """Core bulk insert of each chunk in its own transaction: (rows, s)."""
    table = _raw_table(engine)
    stmt = table.insert()
    rows = 0
    start = time.perf_counter()
    for chunk in chunks:
        with engine.begin() as conn:
            conn.execute(stmt, chunk)
        rows += len(chunk)
    elapsed = time.perf_counter() - start
    table.drop(engine)
    return rows, elapsed


def _network_variant(section: Section, engine, backend: str, budget_s: float, count: int,  # noqa: ANN001
                     plain_rate: float) -> None:
    """apply_batch on agent batches that also carry RoCE entries (3 per batch: one per owner)."""
    from pydantic import ValidationError

    from collector.schemas import BatchIn

    raw = batch_set(1000, -(-count // 1000), 1, base_time(back_s=7200), boot_id="fn-8-net", network=True)[:count]
    try:
        validated = [BatchIn.model_validate(b) for b in raw]
    except ValidationError as exc:
        section.note(f"'+ RoCE' variant skipped: this tree's schema rejects the synthesised network entries: "
                     f"{str(exc).splitlines()[0:3]}")
        return
    log(f"ingest [{backend}] (a) apply_batch, 8 intervals + 3 RoCE entries/batch, up to {budget_s:g} s ...")
    done, intervals, elapsed = time_apply(engine, validated, budget_s)
    rate = intervals / elapsed
    section.add(f"ingest fn {backend}, 8/batch + RoCE", f"{fmt_rate(rate)} intervals/s ({done / elapsed:,.0f} batches/s; "
                f"{rate / plain_rate:.2f}x without RoCE)", f">= {TARGET_RATE:,}/s", verdict_min(rate, TARGET_RATE))


def run(quick: bool = False) -> Section:
    from collector.schemas import BatchIn

    section = Section("ingest")
    budget_s = 1.0 if quick else 4.0
    http_budget_s = 2.0 if quick else 6.0
    for backend in backends():
        with temp_database(backend) as url, tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
            log(f"ingest [{backend}]: database ready")
            engine = new_engine(url)
            fn_rates: dict[int, float] = {}
            for size, steps in SIZES.items():
                # Enough batches for the time budget at a generous rate; the loop stops early.
                count = (2500 if quick else 8000) if size == 8 else (60 if quick else 220)
                nodes = min(count, 1000)
                raw_batches = batch_set(nodes, -(-count // nodes), steps, base_time(back_s=7200), boot_id=f"fn-{size}")[:count]
                validated = [BatchIn.model_validate(b) for b in raw_batches]
                log(f"ingest [{backend}] (a) apply_batch, {size} intervals/batch, up to {budget_s:g} s ...")
                pg_before = postgres_cpu_s() if backend == "postgresql" else {}
                done, intervals, elapsed = time_apply(engine, validated, budget_s)
                pg_fn = postgres_cpu_delta(pg_before) if backend == "postgresql" else 0.0
                fn_rate = intervals / elapsed
                fn_rates[size] = fn_rate
                section.add(f"ingest fn {backend}, {size}/batch", f"{fmt_rate(fn_rate)} intervals/s "
                            f"({done / elapsed:,.0f} batches/s)", f">= {TARGET_RATE:,}/s", verdict_min(fn_rate, TARGET_RATE))
                chunks = [interval_rows(b) for b in raw_batches[:done]]
                log(f"ingest [{backend}] (c) raw bulk insert, {len(chunks)} chunks of {size} rows ...")
                pg_before = postgres_cpu_s() if backend == "postgresql" else {}
                rows, raw_elapsed = time_raw(engine, chunks)
                pg_raw = postgres_cpu_delta(pg_before) if backend == "postgresql" else 0.0
                raw_rate = rows / raw_elapsed
                section.add(f"raw bulk insert {backend}, {size}-row txns", f"{fmt_rate(raw_rate)} rows/s")
                section.add(f"ingest fn / raw {backend}, {size}/batch", f"{fn_rate / raw_rate:.2f}",
                            f">= {TARGET_RATIO}", verdict_min(fn_rate / raw_rate, TARGET_RATIO))
                if backend == "postgresql":
                    section.note(f"{backend} {size}/batch: postgres server CPU {pg_fn / intervals * 1e6:.1f} us/interval "
                                 f"under apply_batch, {pg_raw / rows * 1e6:.1f} us/row under raw insert")
            if batches_carry_network():
                _network_variant(section, engine, backend, budget_s, 2500 if quick else 8000, fn_rates[8])
            else:
                section.note("this tree's batches carry no RoCE network entries; the '+ RoCE' variant is skipped")
            engine.dispose()

            log(f"ingest [{backend}] (b) HTTP: starting server ...")
            with Server(url, Path(tmp) / "server.log") as server:
                for size, steps in SIZES.items():
                    nodes = 1000 if size == 8 else 100
                    pushes = (3 if quick else 8) if size == 8 else (2 if quick else 6)
                    log(f"ingest [{backend}] (b) POST /v1/ingest, {size} intervals/batch, 4 connections, "
                        f"up to {http_budget_s:g} s ...")
                    cpu0 = server.cpu_s()
                    pg_before = postgres_cpu_s() if backend == "postgresql" else {}
                    res = run_client(["ingest", server.url, "--nodes", str(nodes), "--pushes", str(pushes),
                                      "--steps", str(steps), "--start", str(base_time(back_s=7200 - 3000)),
                                      "--boot", f"http-{size}", "--concurrency", "4",
                                      "--max-seconds", str(http_budget_s)])
                    cpu = server.cpu_s() - cpu0
                    pg_cpu = postgres_cpu_delta(pg_before) if backend == "postgresql" else 0.0
                    if res["errors"]:
                        section.note(f"HTTP {backend} {size}/batch: {res['errors']} errors, first: {res['first_error']}")
                    rate = res["intervals"] / res["wall_s"]
                    per_cpu = res["intervals"] / cpu if cpu > 0 else float("nan")
                    section.add(f"ingest HTTP {backend}, {size}/batch",
                                f"{fmt_rate(rate)} intervals/s ({res['sent'] / res['wall_s']:,.0f} batches/s; "
                                f"{fmt_rate(per_cpu)}/server-CPU-s)", f">= {TARGET_RATE:,}/s", verdict_min(rate, TARGET_RATE))
                    section.note(f"HTTP {backend} {size}/batch: {res['sent']} batches in {res['wall_s']:.1f} s, "
                                 f"server CPU {cpu:.1f} s ({cpu / res['wall_s'] * 100:.0f} % of a core), "
                                 f"{cpu / max(res['sent'], 1) * 1e3:.2f} ms/batch; request p50 {res['p50_ms']:.1f} ms, "
                                 f"p99 {res['p99_ms']:.1f} ms" +
                                 (f"; postgres CPU {pg_cpu / max(res['sent'], 1) * 1e3:.2f} ms/batch" if backend == "postgresql" else ""))
                    if fn_rates.get(size):
                        section.note(f"HTTP/fn {backend} {size}/batch: {rate / fn_rates[size]:.2f} "
                                     "(the HTTP layer's share: JSON parse, pydantic validation, uvicorn/h11, threadpool)")
    return section


if __name__ == "__main__":
    from run import print_table

    print_table([run(quick="--quick" in sys.argv)])
