"""Where the collector's time goes: profiles behind the ingest, fleet and reads figures.

Not part of run.py (the suite's figures do not need it). Needs pyinstrument and py-spy in
the venv (``.venv/bin/pip install pyinstrument py-spy``; py-spy must be allowed to ptrace).

    python tests/benchmarks/profile_ingest.py fn   [--backend sqlite|postgresql] [--size 8|512] [--network]
        pyinstrument around apply_batch with pre-validated batches (in this process)
    python tests/benchmarks/profile_ingest.py http [--backend ...] [--size 8|512]
        py-spy on the ``gpuledger server`` process while loadgen POSTs /v1/ingest
    python tests/benchmarks/profile_ingest.py get  [--backend ...] [--job long|short]
        py-spy on the server while loadgen GETs a job report (1 client; bench_reads' data)

The py-spy summaries (--gil: samples of the thread holding the GIL, i.e. Python CPU; native
code that releases the GIL, SQLite or libpq waits, is left out): share of samples by the package of the
innermost frame ("self"), and the functions with the largest inclusive share.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PYTHON,
    Server,
    base_time,
    batch_set,
    new_engine,
    run_client,
    temp_database,
)

PACKAGES = ("sqlalchemy", "pydantic_core", "pydantic", "fastapi", "starlette", "uvicorn", "h11", "anyio", "httpx",
            "psycopg", "sqlite3", "json", "asyncio", "threading", "concurrent", "apscheduler", "sqlmodel", "typing",
            "collector", "api", "agent", "encodings", "email", "logging", "re", "enum", "dataclasses", "datetime")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def package_of(path: str) -> str:
    parts = Path(path).parts
    for part in reversed(parts):
        stem = part[:-3] if part.endswith(".py") else part
        if stem in PACKAGES:
            # the outermost known package of the path wins (sqlalchemy/engine/base.py -> sqlalchemy)
            for outer in parts:
                o = outer[:-3] if outer.endswith(".py") else outer
                if o in PACKAGES:
                    return o
    return Path(path).name or "?"


def summarize(raw: Path, top: int = 60) -> str:
    self_pkg: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        seen = set()
        for frame in frames:
            m = FRAME.match(frame)
            key = f"{m['func']} ({Path(m['file']).parent.name}/{Path(m['file']).name})" if m else frame
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
        m = FRAME.match(frames[-1])
        self_pkg[package_of(m["file"]) if m else frames[-1]] += count
    out = [f"samples: {total}", "self time by package of the innermost frame:"]
    out += [f"  {n / total * 100:5.1f} %  {pkg}" for pkg, n in self_pkg.most_common(18)]
    out.append(f"top {top} functions by inclusive share:")
    wrappers = ("typer/", "_click/", "runpy", "api/cli/main.py", "uvicorn/main.py", "uvicorn/server.py", "asyncio/runners",
                "uvicorn/_compat", "/threading.py)")
    shown = [(k, n) for k, n in inclusive.most_common() if not any(w in k for w in wrappers)][:top]
    out += [f"  {n / total * 100:5.1f} %  {key}" for key, n in shown]
    return "\n".join(out)


def profile_fn(backend: str, size: int, network: bool = False) -> None:
    from pyinstrument import Profiler

    from collector.ingest import apply_batch
    from collector.schemas import BatchIn

    steps = size // 8
    with temp_database(backend) as url:
        engine = new_engine(url)
        count = 3000 if size == 8 else 120
        batches = [BatchIn.model_validate(b) for b in batch_set(min(count, 1000), -(-count // 1000), steps,
                                                                base_time(back_s=7200), "prof", network)[:count]]
        for b in batches[:50]:  # warm the statement cache
            apply_batch(engine, b, time.time())
        profiler = Profiler(interval=0.0002)
        profiler.start()
        t = time.perf_counter()
        for b in batches[50:]:
            apply_batch(engine, b, time.time())
        elapsed = time.perf_counter() - t
        profiler.stop()
        engine.dispose()
    print(f"apply_batch {backend} {size}/batch: {(len(batches) - 50) * size / elapsed:,.0f} intervals/s under the profiler")
    print(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False))


def _spy(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    return subprocess.Popen([str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(pid), "-d", str(seconds),
                             "-r", "250", "-f", "raw", "-o", str(out), "--nonblocking", "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_http(backend: str, size: int, get: str | None) -> None:
    with temp_database(backend) as url, tempfile.TemporaryDirectory(prefix="prof_") as tmp:
        engine = new_engine(url)
        get_job = None
        if get:  # bench_reads' data: 2,000 short jobs and the 2,048-GPU x 35-day one
            from bench_reads import LONG_JOB, populate

            short_job, _ = populate(engine, 2000)
            get_job = LONG_JOB if get == "long" else short_job
        engine.dispose()
        with Server(url, Path(tmp) / "server.log") as server:
            if get:
                args = ["get", server.url, f"/v1/jobs/{get_job}", "--concurrency", "1", "--seconds", "8"]
            else:
                args = ["ingest", server.url, "--nodes", "1000" if size == 8 else "100",
                        "--pushes", "8" if size == 8 else "6", "--steps", str(size // 8),
                        "--start", str(base_time(back_s=7200)), "--concurrency", "4", "--max-seconds", "8"]
            raw = Path(tmp) / "spy.txt"
            result: dict = {}
            client = threading.Thread(target=lambda: result.update(run_client(args)))
            client.start()
            time.sleep(1.5)  # let the client generate its bodies and start sending
            spy = _spy(server.pid, 6, raw)
            spy.wait()
            client.join()
            if not raw.exists():
                print(f"py-spy failed: {spy.stderr.read().decode()[-2000:] if spy.stderr else ''}")
                return
            what = f"GET /v1/jobs/{get_job}" if get else f"POST /v1/ingest {size}/batch"
            print(f"server {backend}, {what}; client result: {result}")
            print(summarize(raw))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("fn", "http", "get"))
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--size", type=int, default=8, choices=(8, 512))
    parser.add_argument("--network", action="store_true", help="fn: batches with RoCE entries")
    parser.add_argument("--job", default="long", choices=("long", "short"), help="get: which job's report")
    args = parser.parse_args()
    if args.what == "fn":
        profile_fn(args.backend, args.size, args.network)
    else:
        profile_http(args.backend, args.size, get=args.job if args.what == "get" else None)


if __name__ == "__main__":
    main()
