"""Several stateless collectors in front of one database give exact totals."""

import math
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from agent.attribution import Attributor
from agent.clock import ManualClock
from agent.loop import Agent, NodeLabels
from agent.nvml import NvmlSource
from agent.sim.node import SimulatedNode
from agent.sim.spec import parse_spec
from collector.lease import SchedulerLease
from tests.conftest import BACKENDS, CollectingPusher, start_server

NODE = {"gpu_count": 4, "model": "NVIDIA H100 80GB HBM3", "idle_w": 70.0, "busy_w": 650.0, "tdp_w": 700.0}
SPEC = parse_spec({
    "seed": 5, "cluster": "cc",
    "nodes": [{"name": f"n{i}", **NODE} for i in range(3)],
    "jobs": [
        {"id": "1", "nodes": ["n0", "n1"], "gpus": [0, 1, 2, 3], "start_s": 0, "end_s": 1500, "utilization": 0.9},
        {"id": "2", "nodes": ["n1", "n2"], "gpus": [2, 3], "start_s": 300, "utilization": 0.5},
    ],
})


def simulated_batches(epoch: float, seconds: float) -> list[dict]:
    batches = []
    for node in SPEC.nodes:
        clock, pusher = ManualClock(epoch), CollectingPusher()
        sim = SimulatedNode(SPEC, node.name, clock, epoch)
        Agent(NvmlSource(sim.nvml), Attributor([sim]), pusher, NodeLabels(node.name, "cc", "dc"), clock).run(until_s=epoch + seconds)
        batches += pusher.sent
    return batches


def expected_totals(batches: list[dict]) -> dict[str, tuple[float, float]]:
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for batch in batches:
        for interval in batch["intervals"]:
            row = totals[f"cc/{interval['job'] or 'unallocated'}"]
            row[0] += interval["gpu_seconds"]
            row[1] += interval["energy_j"]
    return {job: (gpu_s, energy_j) for job, (gpu_s, energy_j) in totals.items()}


def deliver_twice(urls: list[str], batches: list[dict]) -> list[str]:
    """Every batch to ``urls[0]`` in order and to ``urls[-1]`` shuffled, at the same time; the errors."""
    errors: list[str] = []

    def deliver(url: str, order: list[dict]) -> None:
        with httpx.Client(timeout=30) as client:
            for batch in order:
                response = client.post(f"{url}/v1/ingest", json=batch)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text}")

    shuffled = batches[:]
    random.Random(1).shuffle(shuffled)
    threads = [threading.Thread(target=deliver, args=(urls[0], batches)),
               threading.Thread(target=deliver, args=(urls[-1], shuffled))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    return errors


def assert_exact(url: str, batches: list[dict]) -> None:
    reports = {job: httpx.get(f"{url}/v1/jobs/{job}", timeout=10).json() for job in expected_totals(batches)}
    for job, (gpu_s, energy_j) in expected_totals(batches).items():
        assert reports[job]["gpu_hours"] == pytest.approx(gpu_s / 3600, rel=1e-12), job
        assert reports[job]["energy_kwh"] == pytest.approx(energy_j / 3.6e6, rel=1e-9), job


@BACKENDS
def test_two_collectors_apply_the_same_batches_exactly_once(db_url: str, tmp_path: Path):
    epoch = math.floor(time.time()) - 4000
    batches = simulated_batches(epoch, 1800)
    servers = [start_server(db_url, None, tmp_path / f"server{i}.log") for i in range(2)]
    try:
        assert deliver_twice([s.url for s in servers], batches) == []
        assert_exact(servers[0].url, batches)
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(timeout=15)
    assert len(batches) == 3 * 180


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def counter(url: str, name: str) -> dict[str, float]:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if line.startswith(name)}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_workers_2_apply_the_same_batches_exactly_once_and_metrics_sum_both(db_url: str, tmp_path: Path):
    epoch = math.floor(time.time()) - 4000
    batches = simulated_batches(epoch, 1800)
    server = start_server(db_url, None, tmp_path / "server.log", None, "--workers", "2")
    try:
        assert len(children(server.process.pid)) >= 2  # the two workers (uvicorn's supervisor is the parent)
        assert deliver_twice([server.url], batches) == []
        assert_exact(server.url, batches)
        # Each batch was sent twice: applied once, acknowledged as a duplicate once, whichever worker took it.
        batches_total = counter(server.url, "gpuledger_collector_batches_total")
        assert batches_total == {'gpuledger_collector_batches_total{outcome="applied"}': len(batches),
                                 'gpuledger_collector_batches_total{outcome="duplicate"}': len(batches),
                                 'gpuledger_collector_batches_total{outcome="rejected"}': 0.0,
                                 'gpuledger_collector_batches_total{outcome="conflict"}': 0.0,
                                 'gpuledger_collector_batches_total{outcome="overlap"}': 0.0}
        intervals = sum(len(b["intervals"]) for b in batches)
        assert counter(server.url, "gpuledger_collector_intervals_total") == {"gpuledger_collector_intervals_total": intervals}
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)


def test_workers_need_postgresql(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "api.cli.main", "server", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                             "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("gpuledger server: error: --workers 2 needs PostgreSQL: SQLite allows one writing "
                                     "process; run one server process on it, or use --db postgresql+psycopg://…")
    assert not (tmp_path / "x.db").exists()  # refused before the database was touched


@BACKENDS
def test_one_process_holds_the_scheduler_lease_and_another_takes_it_over(engine):
    first, second = SchedulerLease(engine), SchedulerLease(engine)
    try:
        if engine.dialect.name == "sqlite":  # one server process: it always runs the periodic jobs
            assert first.held() and second.held()
            return
        assert first.held() and not second.held()
        assert first.held() and not second.held()  # kept while its session lives
        first.release()  # the process stops: its session, and the lock, go
        assert second.held() and not first.held()
    finally:
        first.release()
        second.release()
