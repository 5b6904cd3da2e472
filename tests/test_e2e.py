"""End to end: two simulated agents push one 2-node job through the real HTTP server into
the database; the job's report must match the simulator's ground truth."""

import math
import time
from pathlib import Path

import httpx
import pytest

from agent.attribution import Attributor
from agent.clock import ManualClock
from agent.loop import Agent, NodeLabels
from agent.nvml import NvmlSource
from agent.push import Pusher
from agent.sim.node import SimulatedNode, ground_truth
from agent.sim.spec import parse_spec
from tests.conftest import BACKENDS, start_server

NODE = {"gpu_count": 4, "model": "NVIDIA H100 80GB HBM3", "idle_w": 70.0, "busy_w": 650.0, "tdp_w": 700.0}
SPEC = parse_spec({
    "seed": 11, "cluster": "e2e", "datacenter": "dc-x",
    "nodes": [{"name": "node-a", **NODE}, {"name": "node-b", **NODE}],
    "jobs": [
        {"id": "42", "name": "llm-pretrain", "user": "alice", "account": "nlp", "nodes": ["node-a", "node-b"],
         "gpus": [0, 1, 2], "start_s": 600, "end_s": 4800, "utilization": 0.9},
        {"id": "43", "name": "eval", "user": "bob", "account": "cv", "nodes": ["node-b"],
         "gpus": [3], "start_s": 0, "utilization": 0.4},
    ],
})
RATES = """
[usd_per_gpu_hour]
H100 = 5.5
[embodied_kg_per_gpu_hour]
default = 0.02
[datacenters.dc-x]
region = "grid-x"
pue = 1.25
[intensity_g_per_kwh]
grid-x = 420.0
"""
RUN_S = 5400


@BACKENDS
def test_two_agents_report_matches_ground_truth(db_url: str, tmp_path: Path):
    config = tmp_path / "rates.toml"
    config.write_text(RATES)
    server = start_server(db_url, config, tmp_path / "server.log")
    # Start half past an hour, in the past, so the job crosses hour boundaries.
    epoch = math.floor(time.time() / 3600) * 3600 - 3 * 3600 + 1800
    try:
        for node in ("node-a", "node-b"):
            clock = ManualClock(epoch)
            sim = SimulatedNode(SPEC, node, clock, epoch)
            pusher = Pusher(server.url)
            agent = Agent(NvmlSource(sim.nvml), Attributor([sim]), pusher, NodeLabels(node, "e2e", "dc-x"), clock, simulated=True)
            agent.run(until_s=epoch + RUN_S)
            assert not pusher.queue and pusher.rejected == 0
        report = httpx.get(f"{server.url}/v1/jobs/e2e/42", timeout=10).json()
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)

    truth_gpu_s, truth_energy_j = ground_truth(SPEC, "42", RUN_S)
    assert truth_gpu_s == 6 * 4200
    assert report["gpu_hours"] == truth_gpu_s / 3600  # exact
    energy_j = report["energy_kwh"] * 3.6e6
    rel_error = abs(energy_j - truth_energy_j) / truth_energy_j
    print(f"\njob e2e/42: {report['gpu_hours']} GPU-h (truth {truth_gpu_s / 3600}); "
          f"{energy_j:.1f} J vs truth {truth_energy_j:.1f} J, relative error {rel_error:.2e}")
    assert rel_error < 1e-3
    assert (report["name"], report["user"], report["account"]) == ("llm-pretrain", "alice", "nlp")
    assert (report["nodes"], report["gpus"], report["energy_measured_fraction"]) == (2, 6, 1.0)
    assert report["started_at"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch + 600)))

    rates = report["rates"]
    assert rates == {
        "usd_per_gpu_hour": {"NVIDIA H100 80GB HBM3": 5.5}, "cost_method": {"NVIDIA H100 80GB HBM3": "list"},
        "embodied_kg_per_gpu_hour": {"NVIDIA H100 80GB HBM3": 0.02}, "pue": {"dc-x": 1.25}, "region": {"dc-x": "grid-x"},
        "market_g_per_kwh": {"dc-x": None}, "node_overhead_w": {"dc-x": 0.0},
        "grid_intensity_g_per_kwh": {"grid-x": 420.0}, "intensity_hourly_fraction": {"grid-x": 0.0},
    }
    kwh = truth_energy_j / 3.6e6
    assert report["cost_usd"] == pytest.approx(truth_gpu_s / 3600 * 5.5, rel=1e-12)
    assert report["embodied_co2e_kg"] == pytest.approx(truth_gpu_s / 3600 * 0.02, rel=1e-12)
    assert report["facility_energy_kwh"] == pytest.approx(kwh * 1.25, rel=1e-3)
    assert report["co2e_kg"] == pytest.approx(kwh * 1.25 * 420 / 1000, rel=1e-3)
    # The same formulas with the reported rates give the reported figures exactly.
    assert report["co2e_kg"] == pytest.approx(report["energy_kwh"] * 1.25 * 420 / 1000, rel=1e-12)
