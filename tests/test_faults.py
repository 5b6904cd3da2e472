"""Faults: nothing lost, nothing counted twice. Each test prints one row of the fault table:
fault, times injected, energy lost, energy counted twice (relative to the ground truth)."""

import math
import os
import shutil
import signal
import subprocess
import threading
import time

import httpx
import pytest

from agent.attribution import Attributor
from agent.clock import ManualClock
from agent.loop import Agent, NodeLabels
from agent.nvml import NvmlSource
from agent.push import Pusher
from agent.sim.node import SimulatedNode, ground_truth
from agent.sim.spec import parse_spec
from tests.conftest import BACKENDS, CollectingPusher, free_port, start_server

NODE = {"gpu_count": 4, "model": "NVIDIA H100 80GB HBM3", "idle_w": 70.0, "busy_w": 650.0, "tdp_w": 700.0}
SPEC = parse_spec({
    "seed": 9, "cluster": "f",
    "nodes": [{"name": "n0", **NODE}, {"name": "n1", **NODE}],
    "jobs": [{"id": "1", "nodes": ["n0", "n1"], "gpus": [0, 1, 2, 3], "start_s": 0, "utilization": 0.9}],
    "events": [{"kind": "counter_reset", "node": "n0", "gpu": 2, "at_s": 400.5}],
})
RUN_S = 1200
KILLS = 5


def run_agents(epoch: float, pusher_for, until_s: float = RUN_S, clock_type=ManualClock) -> None:
    for node in ("n0", "n1"):
        clock = clock_type(epoch)
        sim = SimulatedNode(SPEC, node, clock, epoch)
        agent = Agent(NvmlSource(sim.nvml), Attributor([sim]), pusher_for(clock), NodeLabels(node, "f", "dc"), clock)
        agent.run(until_s=epoch + until_s)


def batch_totals(batches: list[dict]) -> tuple[float, float]:
    job = [i for b in batches for i in b["intervals"] if i["job"] == "1"]
    return sum(i["gpu_seconds"] for i in job), sum(i["energy_j"] for i in job)


def report_row(fault: str, injected: int, reported_j: float, truth_j: float) -> None:
    lost = max(truth_j - reported_j, 0.0) / truth_j
    twice = max(reported_j - truth_j, 0.0) / truth_j
    print(f"\nFAULT | {fault} | injected {injected} | energy lost {lost:.2e} | counted twice {twice:.2e}")


def job_report(url: str) -> dict:
    return httpx.get(f"{url}/v1/jobs/f/1", timeout=10).json()


def deliver(batches: list[dict], url: str, deadline_s: float = 240.0, released=None) -> Pusher:
    """Push ``batches`` until all are acknowledged; ``released()``, when given, says how many
    of them the agent has cut so far (the rest wait their turn)."""
    pusher, submitted = Pusher(url), 0
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        allowed = len(batches) if released is None else min(released(), len(batches))
        for batch in batches[submitted:allowed]:
            pusher.submit(batch)
        submitted = max(submitted, allowed)
        if pusher.flush() and submitted == len(batches):
            break
        time.sleep(0.05)
    assert not len(pusher.queue) and submitted == len(batches), f"{len(batches) - submitted + len(pusher.queue)} batches undelivered"
    return pusher


def simulated(epoch: float) -> list[dict]:
    collected: list[CollectingPusher] = []

    def pusher_for(_clock):
        collected.append(CollectingPusher())
        return collected[-1]

    run_agents(epoch, pusher_for)
    return [b for p in collected for b in p.sent]


@pytest.fixture
def epoch() -> float:
    return math.floor(time.time()) - 2 * RUN_S


@BACKENDS
def test_collector_sigkilled_repeatedly_under_load(db_url, tmp_path, epoch):
    batches = simulated(epoch)
    port = free_port()
    holder = {"server": start_server(db_url, None, tmp_path / "server.log", port)}
    kills, done = 0, threading.Event()

    def killer():
        nonlocal kills
        while kills < KILLS and not done.wait(0.3):
            holder["server"].process.send_signal(signal.SIGKILL)
            holder["server"].process.wait()
            kills += 1
            holder["server"] = start_server(db_url, None, tmp_path / "server.log", port)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        # a slice of the batches after each kill, so that every kill falls while batches flow
        pusher = deliver(batches, f"http://127.0.0.1:{port}", released=lambda: len(batches) * (kills + 1) // (KILLS + 1))
    finally:
        done.set()
        thread.join()
    report = job_report(f"http://127.0.0.1:{port}")
    holder["server"].process.terminate()
    holder["server"].process.wait(timeout=15)
    gpu_s, energy_j = batch_totals(batches)
    report_row("collector SIGKILL under load", kills, report["energy_kwh"] * 3.6e6, energy_j)
    assert kills == KILLS and pusher.failed_attempts >= 1
    assert report["gpu_hours"] == pytest.approx(gpu_s / 3600, rel=1e-12)
    assert report["energy_kwh"] * 3.6e6 == pytest.approx(energy_j, rel=1e-9)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_restarted_during_ingest(db_url, tmp_path, epoch):
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root")
    version = sorted(os.listdir("/etc/postgresql"))[0]
    batches = simulated(epoch)
    server = start_server(db_url, None, tmp_path / "server.log")

    def restart():
        time.sleep(0.5)
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
                       check=True, timeout=120)
    thread = threading.Thread(target=restart)
    thread.start()
    try:
        pusher = deliver(batches, server.url)
        thread.join()
        report = job_report(server.url)
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
    gpu_s, energy_j = batch_totals(batches)
    report_row("PostgreSQL restart during ingest", 1, report["energy_kwh"] * 3.6e6, energy_j)
    assert report["energy_kwh"] * 3.6e6 == pytest.approx(energy_j, rel=1e-9)
    assert report["gpu_hours"] == pytest.approx(gpu_s / 3600, rel=1e-12)
    assert pusher.rejected == 0 and pusher.failed_attempts > 0  # the collector did answer 503 / fail meanwhile


class OutageClock(ManualClock):
    """A manual clock that brings the collector up when simulated time reaches ``up_at_s``."""

    def __init__(self, start_s: float, up_at_s: float, bring_up) -> None:
        super().__init__(start_s)
        self.up_at_s, self.bring_up = up_at_s, bring_up

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.time_s >= self.up_at_s and self.bring_up is not None:
            self.bring_up()
            self.bring_up = None


@BACKENDS
def test_collector_unreachable_for_ten_minutes(db_url, tmp_path, epoch):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    servers = []

    def bring_up():
        if not servers:
            servers.append(start_server(db_url, None, tmp_path / "server.log", port))

    pushers: list[Pusher] = []

    def pusher_for(clock):
        pushers.append(Pusher(url, clock=clock.now))
        return pushers[-1]

    for node in ("n0", "n1"):
        clock = OutageClock(epoch, epoch + 600, bring_up)
        sim = SimulatedNode(SPEC, node, clock, epoch)
        Agent(NvmlSource(sim.nvml), Attributor([sim]), pusher_for(clock), NodeLabels(node, "f", "dc"), clock).run(until_s=epoch + RUN_S)
    try:
        report = job_report(url)
    finally:
        servers[0].process.terminate()
        servers[0].process.wait(timeout=15)
    truth_gpu_s, truth_j = ground_truth(SPEC, "1", RUN_S)
    report_row("collector unreachable 10 min", 1, report["energy_kwh"] * 3.6e6, truth_j)
    assert pushers[0].failures == 0 and not len(pushers[0].queue)  # all delivered at the end
    assert report["gpu_hours"] == truth_gpu_s / 3600
    assert report["energy_kwh"] * 3.6e6 == pytest.approx(truth_j, rel=1e-3)  # one step across the counter reset is estimated


@BACKENDS
def test_duplicates_and_out_of_order(server, epoch):
    batches = simulated(epoch)
    deliver(list(reversed(batches)) + batches[::2] + batches, server.url)
    report = job_report(server.url)
    gpu_s, energy_j = batch_totals(batches)
    report_row("same batch twice, out of order", len(batches) + len(batches[::2]), report["energy_kwh"] * 3.6e6, energy_j)
    assert report["energy_kwh"] * 3.6e6 == pytest.approx(energy_j, rel=1e-9)
    assert report["gpu_hours"] == pytest.approx(gpu_s / 3600, rel=1e-12)


@pytest.mark.parametrize("skew_s", [300.0, -300.0])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_agent_clock_five_minutes_off(server, skew_s):
    # The agent's clock (and so its intervals) runs skew_s ahead of the collector's.
    epoch = math.floor(time.time()) - RUN_S + skew_s
    run_agents(epoch, lambda clock: Pusher(server.url, clock=clock.now))
    report = job_report(server.url)
    truth_gpu_s, truth_j = ground_truth(SPEC, "1", RUN_S)
    report_row(f"agent clock {skew_s:+.0f} s", 1, report["energy_kwh"] * 3.6e6, truth_j)
    assert report["gpu_hours"] == truth_gpu_s / 3600
    assert report["energy_kwh"] * 3.6e6 == pytest.approx(truth_j, rel=1e-3)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_energy_counter_reset_is_bridged(server, epoch):
    run_agents(epoch, lambda clock: Pusher(server.url, clock=clock.now))
    report = job_report(server.url)
    truth_gpu_s, truth_j = ground_truth(SPEC, "1", RUN_S)
    reported_j = report["energy_kwh"] * 3.6e6
    report_row("GPU energy counter reset", 1, reported_j, truth_j)
    assert abs(reported_j - truth_j) / truth_j < 1e-3
    assert 0.99 < report["energy_measured_fraction"] < 1.0  # the reset step is estimated, and says so
