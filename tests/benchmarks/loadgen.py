"""HTTP load generator, run in its own process so that the server's CPU is its own.

    loadgen.py ingest URL --nodes N --pushes P --steps S --start T --boot B --concurrency C --max-seconds X
        POST /v1/ingest: P rounds of one batch per node (S x 8 intervals each), bodies
        serialised before the clock starts, C threads each with a keep-alive httpx.Client.
    loadgen.py get URL PATH --concurrency C --seconds D [--alt-path P2 --alt-every N] [--rate R]
        GET URL+PATH in a closed loop: C=1 sequentially (httpx.Client), else C asyncio
        tasks sharing one httpx.AsyncClient with C connections; every N-th request gets P2
        instead. With --rate: open loop, R requests/s, latency from each one's scheduled time.

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


class Errors:
    """Failed requests (a status other than 200, or a transport error): counted, first kept."""

    def __init__(self) -> None:
        self.count, self.first = 0, None

    def add(self, what: str) -> None:
        self.count += 1
        self.first = self.first or what


def get_sequential(url: str, seconds: float, errors: Errors) -> tuple[list[float], float]:
    latencies = []
    with httpx.Client(timeout=60.0) as client:
        for _ in range(20):  # warm-up: connection, caches
            client.get(url)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                errors.add(repr(exc))
                continue
            latencies.append(time.perf_counter() - t)
            if response.status_code != 200:
                errors.add(f"{response.status_code} {response.text[:200]}")
        return latencies, time.perf_counter() - start


class Paths:
    """Which URL each request gets: every ``every``-th the alternative one (a mix), else the main one."""

    def __init__(self, url: str, alt_url: str | None, every: int) -> None:
        self.url, self.alt_url, self.every, self.n = url, alt_url, every, 0

    def next(self) -> str:
        self.n += 1
        return self.alt_url if self.alt_url and self.n % self.every == 0 else self.url


async def get_open_loop(paths: Paths, rate: float, connections: int, seconds: float, errors: Errors) -> tuple[list[float], float]:
    """Requests at a fixed ``rate`` whatever the answers' pace; latency from each one's scheduled time."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:
        await asyncio.gather(*(client.get(paths.url) for _ in range(min(connections, 20))), return_exceptions=True)
        start = time.perf_counter()

        async def one(at: float, url: str) -> None:
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                errors.add(repr(exc))
                return
            latencies.append(time.perf_counter() - at)
            if response.status_code != 200:
                errors.add(f"{response.status_code} {response.text[:200]}")

        tasks, n = [], 0
        while (at := start + n / rate) < start + seconds:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(at, paths.next())))
            n += 1
        await asyncio.gather(*tasks)
        return latencies, time.perf_counter() - start


async def get_concurrent(url: str, concurrency: int, seconds: float, errors: Errors,
                         paths: Paths | None = None) -> tuple[list[float], float]:
    paths = paths or Paths(url, None, 1)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:
        await asyncio.gather(*(client.get(url) for _ in range(concurrency)), return_exceptions=True)  # connect
        start = time.perf_counter()
        deadline = start + seconds

        async def user() -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    response = await client.get(paths.next())
                except httpx.HTTPError as exc:  # e.g. a keep-alive connection the server closed
                    errors.add(repr(exc))
                    continue
                latencies.append(time.perf_counter() - t)
                if response.status_code != 200:
                    errors.add(f"{response.status_code} {response.text[:200]}")

        await asyncio.gather(*(user() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def get(args: argparse.Namespace) -> dict:
    url = args.url.rstrip("/") + args.path
    errors = Errors()
    paths = Paths(url, args.url.rstrip("/") + args.alt_path if args.alt_path else None, args.alt_every)
    if args.rate:
        latencies, wall = asyncio.run(get_open_loop(paths, args.rate, args.concurrency, args.seconds, errors))
    elif args.concurrency == 1:
        latencies, wall = get_sequential(url, args.seconds, errors)
    else:
        latencies, wall = asyncio.run(get_concurrent(url, args.concurrency, args.seconds, errors, paths))
    latencies.sort()
    return {"requests": len(latencies), "errors": errors.count, "first_error": errors.first, "wall_s": wall,
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
    g.add_argument("--alt-path", help="a second path, asked every --alt-every-th request (a mix)")
    g.add_argument("--alt-every", type=int, default=10)
    g.add_argument("--rate", type=float, help="open loop: requests per second, whatever the answers' pace "
                   "(--concurrency then caps the connections)")
    args = parser.parse_args()
    result = ingest(args) if args.cmd == "ingest" else get(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
