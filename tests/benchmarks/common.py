"""Shared pieces of the benchmark suite (plain scripts, not collected by pytest).

Databases: every benchmark makes its own (``temp_database``) and drops it at the end.
Servers: ``start_server`` runs ``python -m api.cli.main server`` in a subprocess, as in
production, and waits for /healthz. CPU and memory come from /proc.
Batches: ``node_batch`` synthesises what an agent sends for one node, fast enough to
generate a 16,384-GPU fleet's traffic in a second.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("GPULEDGER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")
GPUS_PER_NODE = 8
GPU_MODEL = "NVIDIA H100 80GB HBM3"
CLUSTER = "bench"
DATACENTER = "dc-east"


# --------------------------------------------------------------------------- output

def log(message: str) -> None:
    """A progress line, flushed at once, with the time since the suite started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


_T0 = time.monotonic()


@dataclass
class Row:
    """One line of the final table."""

    what: str
    figure: str
    target: str = "-"
    verdict: str = "info"


@dataclass
class Section:
    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, figure: str, target: str = "-", verdict: str = "info") -> None:
        self.rows.append(Row(what, figure, target, verdict))
        log(f"  {what}: {figure}" + (f"   (target {target}: {verdict})" if target != "-" else ""))

    def note(self, text: str) -> None:
        self.notes.append(text)


def verdict_min(value: float, target: float) -> str:
    """For 'at least target' figures: the ratio value/target and PASS/MISS."""
    ratio = value / target if target else float("inf")
    return f"{'PASS' if value >= target else 'MISS'} ({ratio:.2f}x)"


def verdict_max(value: float, target: float) -> str:
    """For 'at most target' figures: the ratio value/target and PASS/MISS."""
    ratio = value / target if target else float("inf")
    return f"{'PASS' if value <= target else 'MISS'} ({ratio:.2f}x)"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# --------------------------------------------------------------------------- databases

def pg_admin():  # noqa: ANN201
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True, connect_timeout=3)


def pg_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        pg_admin().close()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def backends() -> list[str]:
    reason = pg_available()
    if reason is not None:
        log(f"PostgreSQL at {PG_ADMIN_URL} unavailable ({reason}); PostgreSQL benchmarks skipped")
        return ["sqlite"]
    return ["sqlite", "postgresql"]


@contextmanager
def temp_database(backend: str) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file in a temp dir, or gpuledger_bench_<random>."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="gpuledger_bench_") as tmp:
            yield f"sqlite:///{tmp}/ledger.db"
        return
    name = f"gpuledger_bench_{uuid.uuid4().hex[:12]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_engine(url: str):  # noqa: ANN201
    """The product's engine on ``url`` with the schema created through Alembic."""
    from collector.db import make_engine
    from collector.schema import upgrade

    engine = make_engine(url)
    upgrade(engine)
    return engine


# --------------------------------------------------------------------------- processes

def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (its own threads included, children not)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (VmHWM: peak RSS, VmRSS: current RSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def postgres_cpu_s() -> dict[int, float]:
    """CPU seconds of every running postgres process, by pid (the database server's work)."""
    out: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            out[int(entry)] = proc_cpu_s(int(entry))
        except OSError:
            continue
    return out


def postgres_cpu_delta(before: dict[int, float]) -> float:
    after = postgres_cpu_s()
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


class ForeignLoad:
    """CPU used on this machine by processes that are neither this suite (this process and
    its descendants) nor PostgreSQL nor kernel threads: other people's work that disturbs
    the figures. A thread scans /proc every second, so a process that exits in between loses
    at most its last second."""

    def __init__(self, interval_s: float = 1.0) -> None:
        import threading

        self.me = os.getpid()
        self.base: dict[int, float] = {}
        self.last: dict[int, tuple[float, bool]] = {}  # pid -> (CPU s, foreign?)
        self.started = time.monotonic()
        self._scan(initial=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), daemon=True)
        self._thread.start()

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self._scan()

    def _scan(self, initial: bool = False) -> None:
        procs: dict[int, tuple[str, int, float]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    head, _, tail = f.read().rpartition(")")
            except OSError:
                continue
            fields = tail.split()
            procs[int(entry)] = (head.partition("(")[2], int(fields[1]),
                                 (int(fields[11]) + int(fields[12])) / CLK_TCK)
        for pid, (comm, ppid, cpu) in procs.items():
            ours, parent, hops = pid == self.me, ppid, 0
            while not ours and parent > 1 and hops < 64:
                ours, parent, hops = parent == self.me, procs.get(parent, ("", 0, 0.0))[1], hops + 1
            kernel = pid == 2 or ppid == 2
            foreign = not (ours or kernel or comm == "postgres")
            if initial:
                self.base[pid] = cpu
            self.last[pid] = (cpu, foreign)

    def cores(self) -> float:
        """Average cores used by foreign processes since construction; stops the scanning."""
        self._stop.set()
        self._thread.join()
        self._scan()
        foreign = sum(cpu - self.base.get(pid, 0.0) for pid, (cpu, is_foreign) in self.last.items() if is_foreign)
        return max(foreign, 0.0) / max(time.monotonic() - self.started, 1e-9)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``gpuledger server`` in a subprocess."""

    def __init__(self, db_url: str, log_path: Path) -> None:
        try:
            self._start(db_url, log_path)
        except RuntimeError as exc:
            if "gpuledger db upgrade" not in str(exc):
                raise
            # The code changed under the suite (a new migration since the database was made):
            # upgrade the way production would, then start again.
            subprocess.run([PYTHON, "-m", "api.cli.main", "db", "upgrade", "--db", db_url], cwd=REPO, check=True,
                           capture_output=True)
            log(f"server: schema upgraded to the code's revision ({db_url.rsplit('/', 1)[-1]})")
            self._start(db_url, log_path)

    def _start(self, db_url: str, log_path: Path) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [PYTHON, "-m", "api.cli.main", "server", "--db", db_url, "--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(cmd, cwd=REPO, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.process.kill()
        raise RuntimeError(f"server did not become healthy: {log_path.read_text()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def run_client(args: list[str], timeout_s: float = 600) -> dict[str, Any]:
    """Run ``loadgen.py ARGS`` in its own process; returns the JSON it prints last."""
    cmd = [PYTHON, str(BENCH_DIR / "loadgen.py"), *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- batches

def base_time(now_s: float | None = None, back_s: float = 1800.0) -> float:
    """A start time in the recent past (the collector refuses data from the future)."""
    return round((now_s if now_s is not None else time.time()) - back_s, 3)


def node_name(node: int) -> str:
    return f"gpu-node-{node:05d}"


def node_owners(node: int) -> list[str | None]:
    """Who owns each of a node's 8 GPUs: GPUs 0-5 an 8-node training job, GPU 6 a
    single-node job, GPU 7 idle (the cluster's unallocated account)."""
    big, small = f"{100000 + node // 8}", f"{200000 + node}"
    return [big] * 6 + [small, None]


def node_jobs(node: int) -> list[dict[str, Any]]:
    big, small = f"{100000 + node // 8}", f"{200000 + node}"
    return [
        {"id": big, "name": f"llm-pretrain-{node // 8}", "user": f"user{node // 8 % 97}", "account": "nlp"},
        {"id": small, "name": f"eval-{node}", "user": f"user{node % 89}", "account": "vision"},
    ]


def batches_carry_network() -> bool:
    """Whether this tree's collector takes RoCE ``network`` entries in a batch (being added)."""
    try:
        from collector.schemas import BatchIn
    except ImportError:
        return False
    return "network" in BatchIn.model_fields


def node_network(node: int, start_s: float, end_s: float, rng: random.Random) -> list[dict[str, Any]]:
    """RoCE entries as the agent cuts them (agent/network.py): one per owner of the node's GPUs,
    its share of 8 ports' traffic over [start_s, end_s]."""
    seconds = end_s - start_s
    entries = []
    for job, share in ((f"{100000 + node // 8}", 6 / 8), (f"{200000 + node}", 1 / 8), (None, 1 / 8)):
        tx = 400e9 / 8 * 0.2 * seconds * share * (0.95 + 0.1 * rng.random())  # ~20 % of 400 Gb/s
        rx = tx * (0.98 + 0.04 * rng.random())
        entries.append({
            "job": job, "start_s": start_s, "end_s": end_s, "ports": 8, "seconds": seconds,
            "counters": {"tx_bytes": tx, "rx_bytes": rx, "tx_packets": tx / 4096, "rx_packets": rx / 4096,
                         "cnp_sent": 1128.0 * share * seconds, "cnp_handled": 1128.0 * share * seconds,
                         "ecn_marked_packets": 1128.0 * share * seconds, "retransmits": 29.5 * share * seconds,
                         "out_of_sequence": 29.5 * share * seconds, "timeouts": 0.0},
            "apportioned_bytes": tx + rx, "peak_tx_gbps": 612.2, "peak_rx_gbps": 607.2,
            "peak_link_util_pct": 19.7, "link_down_port_seconds": 0.0,
        })
    return entries


def node_batch(node: int, seq: int, start_s: float, steps: int = 1, step_s: float = 10.0,
               boot_id: str = "boot-bench", rng: random.Random | None = None, network: bool = False) -> dict[str, Any]:
    """One batch of node ``node``: ``steps`` consecutive push intervals of ``step_s`` for each of
    its 8 GPUs (steps=1: what a real agent sends every 10 s; steps=64: 512 intervals).
    ``network``: with the RoCE entries of an agent on a node with 8 ports (3 per step)."""
    rng = rng or random.Random(node * 1_000_003 + seq)
    owners = node_owners(node)
    intervals = []
    for step in range(steps):
        t = round(start_s + step * step_s, 3)
        for gpu in range(GPUS_PER_NODE):
            job = owners[gpu]
            util = 0.0 if job is None else 0.85 + 0.1 * rng.random()
            end = round(t + step_s + rng.uniform(-0.002, 0.002), 3)
            span = end - t
            intervals.append({
                "gpu_uuid": f"GPU-{node:08x}-{gpu:04x}-4e2b-9a61-5c1b9e3a7f0d",  # a UUID's length
                "gpu_index": gpu,
                "gpu_model": GPU_MODEL,
                "job": job,
                "start_s": t,
                "end_s": end,
                "gpu_seconds": span,
                "busy_gpu_seconds": span * util,
                "energy_j": span * (70.0 + 580.0 * util),
                "energy_method": "counter",
                "max_memory_used_bytes": None if job is None else 60_000_000_000 + rng.randrange(10_000_000_000),
            })
    owners_seen = {o for o in owners if o is not None}
    extra = {}
    if network:
        extra["network"] = [e for step in range(steps) for e in node_network(
            node, round(start_s + step * step_s, 3), round(start_s + (step + 1) * step_s, 3), rng)]
    return {
        "node": node_name(node), "cluster": CLUSTER, "datacenter": DATACENTER, "boot_id": boot_id,
        "seq": seq, "sent_at_s": start_s + steps * step_s, "agent_version": "0.1.0", "simulated": True,
        "jobs": [j for j in node_jobs(node) if j["id"] in owners_seen],
        "intervals": intervals,
        **extra,
    }


def interval_rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw_intervals rows the collector writes for ``batch`` (as collector.ingest does; the
    dimension keys stand in as small integers)."""
    from collector.dims import METHOD_CODE

    return [
        {"gpu_key": n, "job_key": hash(i["job"]) % 100_000, "start_s": i["start_s"], "end_s": i["end_s"],
         "gpu_seconds": i["gpu_seconds"], "busy_gpu_seconds": i["busy_gpu_seconds"], "energy_j": i["energy_j"],
         "method": METHOD_CODE[i["energy_method"]], "max_memory_used_bytes": i["max_memory_used_bytes"]}
        for n, i in enumerate(batch["intervals"])
    ]


def batch_set(nodes: int, pushes: int, steps: int, start_s: float, boot_id: str = "boot-bench",
              network: bool = False) -> list[dict[str, Any]]:
    """``pushes`` rounds of one batch per node, round after round as a fleet sends them."""
    span = steps * 10.0
    return [node_batch(node, push, start_s + push * span, steps, boot_id=boot_id, network=network)
            for push in range(pushes) for node in range(nodes)]
