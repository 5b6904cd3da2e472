"""Tokens end to end: a real server with --require-auth, tokens from the CLI, a real agent."""

import math
import subprocess
import sys
import time

import httpx
import pytest

from agent.attribution import Attributor
from agent.clock import ManualClock
from agent.loop import Agent, NodeLabels
from agent.nvml import NvmlSource
from agent.push import Pusher
from agent.sim.node import SimulatedNode
from tests.conftest import BACKENDS, start_server
from tests.test_faults import SPEC


def gpuledger(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True, timeout=60)


def run_agent(url: str, token: str, epoch: float) -> Pusher:
    clock = ManualClock(epoch)
    sim = SimulatedNode(SPEC, "n0", clock, epoch)
    client = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"})
    pusher = Pusher(url, client=client, clock=clock.now)
    Agent(NvmlSource(sim.nvml), Attributor([sim]), pusher, NodeLabels("n0", "f", "dc"), clock).run(until_s=epoch + 120)
    return pusher


@BACKENDS
def test_node_tokens_reader_tokens_and_refusals(db_url, tmp_path):
    server = start_server(db_url, None, tmp_path / "server.log", None, "--require-auth")
    try:
        tokens = {name: gpuledger("token", "create", *args, "--db", db_url).stdout.strip()
                  for name, args in {"n0": ["--node", "n0"], "n1": ["--node", "n1"], "reader": ["--role", "reader"]}.items()}
        assert all(t.startswith("glt_") for t in tokens.values()), tokens
        epoch = math.floor(time.time()) - 600
        refused = run_agent(server.url, tokens["n1"], epoch)  # node n0 pushing with n1's token
        # The collector's own 403: every batch set aside (kept, retried slowly), none dropped.
        aside = refused.queue.aside()
        assert len(aside) == len(refused.queue) > 0 and refused.set_aside_total == len(aside) and refused.rejected == 0
        assert httpx.post(f"{server.url}/v1/ingest", json=aside[0],
                          headers={"Authorization": f"Bearer {tokens['n1']}"}).status_code == 403
        accepted = run_agent(server.url, tokens["n0"], epoch)
        assert len(accepted.queue) == 0 and accepted.rejected == 0
        anonymous = gpuledger("report", "f/1", "--server", server.url)
        assert anonymous.returncode == 2 and "401" in anonymous.stderr
        report = gpuledger("report", "f/1", "--server", server.url, "--format", "json", "--token", tokens["reader"])
        assert report.returncode == 0 and '"gpu_hours": 0.1333' in report.stdout  # n0's 4 GPUs x 120 s
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # open by default
        assert httpx.put(f"{server.url}/v1/budget/f%2F1", json={"usd": 1},
                         headers={"Authorization": f"Bearer {tokens['reader']}"}).status_code == 403
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_open_paths_are_configurable(db_url, tmp_path):
    server = start_server(db_url, None, tmp_path / "server.log", None, "--require-auth", "--open-paths", "/healthz")
    try:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        closed = httpx.get(f"{server.url}/metrics")
        assert closed.status_code == 401 and closed.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
