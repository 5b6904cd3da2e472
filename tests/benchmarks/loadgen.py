"""HTTP load generator, run in its own process so that the server's CPU is its own.

    loadgen.py ingest URL --nodes N --pushes P --steps S --start T --boot B --concurrency C --max-seconds X
        POST /v1/ingest, closed loop: P rounds of one batch per node (S x 8 intervals each),
        requests serialised before the clock starts, C keep-alive connections on one asyncio
        loop (uvloop when installed), each sending its next batch when the last is answered.
    loadgen.py open URL ... --rate R --seconds D --concurrency C
        POST /v1/ingest, open loop: R batches/s for D s whatever the answers; latency counts
        from each request's due time. Both print the client's own CPU per request.
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
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from common import batch_set, percentile  # noqa: E402

HEADERS = {"content-type": "application/json"}


def _requests(args: argparse.Namespace) -> list[tuple[bytes, int]]:
    """Every batch as a whole HTTP/1.1 request (head and body), serialised before the clock starts."""
    batches = batch_set(args.nodes, args.pushes, args.steps, args.start, boot_id=args.boot)
    host = args.url.split("//", 1)[1].split("/", 1)[0]
    out = []
    for batch in batches:
        body = json.dumps(batch).encode()
        head = (f"POST /v1/ingest HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        out.append((head + body, len(batch["intervals"])))
    return out


class Conn:
    """One keep-alive HTTP/1.1 connection on asyncio streams: write a request, read one response.
    Far cheaper per request than a general client, so the server, not this process, is measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Conn:
        host, _, port = url.split("//", 1)[1].split("/", 1)[0].partition(":")
        reader, writer = await asyncio.open_connection(host, int(port or 80))
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        if b"connection: close" in head.lower():
            self.writer.close()
        return status, body

    def close(self) -> None:
        self.writer.close()


class Tally:
    def __init__(self) -> None:
        self.sent = self.intervals = self.applied = self.errors = 0
        self.first_error: str | None = None
        self.latencies: list[float] = []

    def record(self, status: int, body: bytes, intervals: int, latency_s: float) -> None:
        self.latencies.append(latency_s)
        if status == 200:
            self.sent += 1
            self.intervals += intervals
            self.applied += b'"applied":true' in body
        else:
            self.errors += 1
            self.first_error = self.first_error or f"{status} {body[:300]!r}"

    def result(self, wall_s: float, offered: int, cpu_s: float) -> dict:
        self.latencies.sort()
        done = max(self.sent + self.errors, 1)
        return {"sent": self.sent, "intervals": self.intervals, "applied": self.applied, "errors": self.errors,
                "first_error": self.first_error, "offered": offered, "wall_s": wall_s,
                "p50_ms": percentile(self.latencies, 0.5) * 1e3, "p99_ms": percentile(self.latencies, 0.99) * 1e3,
                "client_cpu_s": cpu_s, "client_us_per_request": cpu_s / done * 1e6}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _closed(args: argparse.Namespace, requests: list[tuple[bytes, int]]) -> dict:
    """``concurrency`` connections, each sending its next request as soon as the last is answered."""
    tally, queue = Tally(), iter(requests)
    conns = [await Conn.open(args.url) for _ in range(args.concurrency)]
    cpu0, start = _cpu_s(), time.perf_counter()
    deadline = start + args.max_seconds

    async def worker(conn: Conn) -> None:
        for request, intervals in queue:
            t = time.perf_counter()
            try:
                status, body = await conn.send(request)
            except (OSError, asyncio.IncompleteReadError) as exc:
                status, body, conn = 0, repr(exc).encode(), await Conn.open(args.url)
            tally.record(status, body, intervals, time.perf_counter() - t)
            if time.perf_counter() > deadline:
                return

    await asyncio.gather(*(worker(c) for c in conns))
    wall, cpu = time.perf_counter() - start, _cpu_s() - cpu0
    for conn in conns:
        conn.close()
    return tally.result(wall, len(requests), cpu)


async def _open(args: argparse.Namespace, requests: list[tuple[bytes, int]]) -> dict:
    """Open loop: request i is due at start + i / rate whatever the answers; its latency counts
    from when it was due (a request that waits for a free connection waits on the clock)."""
    tally, free = Tally(), asyncio.Queue()
    for _ in range(args.concurrency):
        free.put_nowait(await Conn.open(args.url))
    count = min(len(requests), int(args.rate * args.seconds))
    cpu0, start = _cpu_s(), time.perf_counter()
    tasks = []

    async def one(request: bytes, intervals: int, due: float) -> None:
        conn = await free.get()
        try:
            status, body = await conn.send(request)
        except (OSError, asyncio.IncompleteReadError) as exc:
            status, body, conn = 0, repr(exc).encode(), await Conn.open(args.url)
        tally.record(status, body, intervals, time.perf_counter() - due)
        free.put_nowait(conn)

    for i, (request, intervals) in enumerate(requests[:count]):
        due = start + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(request, intervals, due)))
    await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - start, _cpu_s() - cpu0
    while not free.empty():
        free.get_nowait().close()
    return {**tally.result(wall, count, cpu), "rate": args.rate, "late_s": max(wall - count / args.rate, 0.0)}


def ingest(args: argparse.Namespace) -> dict:
    requests = _requests(args)
    run = _open if args.cmd == "open" else _closed
    try:
        import uvloop

        return uvloop.run(run(args, requests))
    except ImportError:
        return asyncio.run(run(args, requests))


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
    for name in ("ingest", "open"):
        p = sub.add_parser(name)
        p.add_argument("url")
        p.add_argument("--nodes", type=int, required=True)
        p.add_argument("--pushes", type=int, required=True)
        p.add_argument("--steps", type=int, default=1)
        p.add_argument("--start", type=float, required=True)
        p.add_argument("--boot", default="boot-http")
        p.add_argument("--concurrency", type=int, default=4)
        p.add_argument("--max-seconds", type=float, default=600)
        p.add_argument("--rate", type=float, default=204.8, help="open: batches per second")
        p.add_argument("--seconds", type=float, default=10.0, help="open: how long")
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
    result = get(args) if args.cmd == "get" else ingest(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
