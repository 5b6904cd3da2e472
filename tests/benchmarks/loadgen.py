"""HTTP load generator, run in its own process so that the server's CPU is its own.

    loadgen.py ingest URL --nodes N --pushes P --steps S --start T --boot B --concurrency C --max-seconds X
        POST /v1/ingest: P rounds of one batch per node (S x 8 intervals each), bodies
        serialised before the clock starts, C threads each with a keep-alive httpx.Client.
    loadgen.py get URL PATH --concurrency C --seconds D
        GET URL+PATH in a closed loop: C=1 sequentially (httpx.Client), else C asyncio
        tasks sharing one httpx.AsyncClient with C connections.

Prints one JSON line at the end: counts, wall time, latencies (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

from common import batch_set, percentile  # noqa: E402

HEADERS = {"content-type": "application/json"}


def ingest(args: argparse.Namespace) -> dict:
    batches = batch_set(args.nodes, args.pushes, args.steps, args.start, boot_id=args.boot)
    bodies = [(json.dumps(b).encode(), len(b["intervals"])) for b in batches]
    del batches
    lock = threading.Lock()
    state = {"next": 0, "sent": 0, "intervals": 0, "errors": 0, "first_error": None, "applied": 0}
    latencies: list[float] = []
    deadline = time.monotonic() + args.max_seconds
    url = args.url.rstrip("/") + "/v1/ingest"

    def worker() -> None:
        mine: list[float] = []
        with httpx.Client(timeout=60.0) as client:
            while time.monotonic() < deadline:
                with lock:
                    n = state["next"]
                    if n >= len(bodies):
                        break
                    state["next"] = n + 1
                body, count = bodies[n]
                t = time.perf_counter()
                try:
                    response = client.post(url, content=body, headers=HEADERS)
                    ok = response.status_code == 200
                    error = None if ok else f"{response.status_code} {response.text[:300]}"
                    applied = ok and response.json().get("applied", False)
                except httpx.HTTPError as exc:
                    ok, error, applied = False, repr(exc), False
                mine.append(time.perf_counter() - t)
                with lock:
                    if ok:
                        state["sent"] += 1
                        state["intervals"] += count
                        state["applied"] += int(applied)
                    else:
                        state["errors"] += 1
                        state["first_error"] = state["first_error"] or error
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {**state, "offered": len(bodies), "wall_s": wall,
            "p50_ms": percentile(latencies, 0.5) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3}


def get_sequential(url: str, seconds: float) -> tuple[list[float], int, float]:
    latencies, errors = [], 0
    with httpx.Client(timeout=60.0) as client:
        for _ in range(20):  # warm-up: connection, caches
            client.get(url)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            response = client.get(url)
            latencies.append(time.perf_counter() - t)
            errors += response.status_code != 200
        return latencies, errors, time.perf_counter() - start


async def get_concurrent(url: str, concurrency: int, seconds: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:
        await asyncio.gather(*(client.get(url) for _ in range(concurrency)))  # open the connections
        start = time.perf_counter()
        deadline = start + seconds

        async def user() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - t)
                errors += response.status_code != 200

        await asyncio.gather(*(user() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


def get(args: argparse.Namespace) -> dict:
    url = args.url.rstrip("/") + args.path
    if args.concurrency == 1:
        latencies, errors, wall = get_sequential(url, args.seconds)
    else:
        latencies, errors, wall = asyncio.run(get_concurrent(url, args.concurrency, args.seconds))
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "wall_s": wall,
            "p50_ms": percentile(latencies, 0.5) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3,
            "mean_ms": sum(latencies) / max(len(latencies), 1) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ingest")
    p.add_argument("url")
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--pushes", type=int, required=True)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--start", type=float, required=True)
    p.add_argument("--boot", default="boot-http")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-seconds", type=float, default=600)
    g = sub.add_parser("get")
    g.add_argument("url")
    g.add_argument("path")
    g.add_argument("--concurrency", type=int, default=1)
    g.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    result = ingest(args) if args.cmd == "ingest" else get(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
