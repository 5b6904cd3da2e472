"""RoCE accounting: node steps, shares, apportioning, link down, and exact bytes through the server."""

import math
import shutil
import time
from pathlib import Path

import httpx
import pytest

from agent.attribution import Attributor, JobRef
from agent.clock import ManualClock
from agent.loop import Agent, NodeLabels
from agent.network import NetworkCutter, job_shares, node_step
from agent.nvml import NvmlSource
from agent.push import Pusher
from agent.roce import RdmaPorts
from agent.sim.nics import NodeTraffic, SimulatedPorts, network_truth
from agent.sim.node import SimulatedNode
from agent.sim.spec import parse_spec
from api.accounting.network import verdict
from tests.conftest import BACKENDS, CollectingPusher, start_server

FIXTURES = Path(__file__).parent / "fixtures" / "sysfs"
NODE = {"gpu_count": 4, "model": "NVIDIA H100 80GB HBM3", "idle_w": 70.0, "busy_w": 650.0, "tdp_w": 700.0,
        "nics": 2, "nic_rate_gbps": 400.0}
SPEC = parse_spec({
    "seed": 3, "cluster": "net",
    "nodes": [{"name": "a", **NODE}, {"name": "b", **NODE}, {"name": "shared", **NODE}],
    "jobs": [
        {"id": "train", "nodes": ["a", "b"], "gpus": [0, 1, 2, 3], "start_s": 0, "utilization": 0.9,
         "network_gbps": 300.0, "cnp_per_s": 120.0, "retrans_per_gb": 0.5},
        {"id": "big", "nodes": ["shared"], "gpus": [0, 1, 2], "start_s": 0, "utilization": 0.9, "network_gbps": 80.0},
        {"id": "small", "nodes": ["shared"], "gpus": [3], "start_s": 0, "utilization": 0.5, "network_gbps": 40.0},
    ],
    "events": [{"kind": "link_down", "node": "b", "nic": 1, "at_s": 100, "until_s": 160}],
})


def test_job_shares_follow_gpus_with_unallocated_as_none():
    owners = {0: (JobRef("x"),), 1: (JobRef("x"),), 2: (JobRef("x"), JobRef("y"))}
    assert job_shares(owners, 4) == {"x": 0.625, "y": 0.125, None: 0.25}
    assert job_shares({i: (JobRef("x"),) for i in range(8)}, 8) == {"x": 1.0}


def test_node_step_sums_ports_and_finds_peaks(tmp_path):
    root = tmp_path / "cx7"
    shutil.copytree(FIXTURES / "cx7", root)
    before = RdmaPorts(root).read()
    for port in ("mlx5_0", "mlx5_1"):
        counters = root / "class/infiniband" / port / "ports/1/counters"
        for name in ("port_xmit_data", "port_rcv_data"):
            path = counters / name
            path.write_text(f"{int(path.read_text()) + 25_000_000_000 // 4}\n")  # 25 GB more each way
    ext = root / "class/infiniband/mlx5_0/ports/1/counters_ext"
    for name in ("port_xmit_data_64", "port_rcv_data_64"):
        path = ext / name
        path.write_text(f"{int(path.read_text()) + 25_000_000_000 // 4}\n")
    step = node_step(before, RdmaPorts(root).read(), 1.0)
    assert step.counters["tx_bytes"] == step.counters["rx_bytes"] == 50_000_000_000
    assert step.peak_tx_gbps == pytest.approx(400.0)  # 2 ports x 25 GB/s x 8 bits
    assert step.peak_link_util_pct == pytest.approx(50.0)  # 200 Gb/s on a 400 Gb/s port
    assert (step.ports, step.link_down_port_seconds) == (2, 0.0)


def test_shared_node_is_apportioned_by_gpu_share_and_marked():
    cutter = NetworkCutter()
    step = node_step([], [], 1.0)
    step = type(step)(10.0, 2, {"tx_bytes": 4000.0, "rx_bytes": 8000.0}, 1.0, 2.0, 5.0, 0.0)
    cutter.add({"big": 0.75, "small": 0.25}, 0.0, step)
    cutter.add({"big": 0.75, "small": 0.25}, 10.0, step)
    by_job = {i["job"]: i for i in cutter.cut()}
    assert by_job["big"]["counters"] == {"tx_bytes": 6000.0, "rx_bytes": 12000.0}
    assert by_job["small"]["counters"] == {"tx_bytes": 2000.0, "rx_bytes": 4000.0}
    assert by_job["big"]["apportioned_bytes"] == 18000.0 and by_job["small"]["seconds"] == 20.0
    whole = NetworkCutter()
    whole.add({"train": 1.0}, 0.0, step)
    assert whole.cut()[0]["apportioned_bytes"] == 0.0


def test_verdict_thresholds():
    assert verdict(None, None)[0] == "unknown"
    assert verdict(10.0, 0.1)[0] == "none"
    assert verdict(50.0, 0.0) == ("moderate", "50 CNPs handled per node-second (>= 50)")
    assert verdict(0.0, 12.0) == ("heavy", "12.00 retransmissions per GB sent (>= 10)")


def run_node(node: str, epoch: float, seconds: float, pusher) -> None:
    clock = ManualClock(epoch)
    sim = SimulatedNode(SPEC, node, clock, epoch)
    ports = SimulatedPorts(SPEC, node, clock, epoch)
    try:
        Agent(NvmlSource(sim.nvml), Attributor([sim]), pusher, NodeLabels(node, "net", "dc"), clock,
              ports=ports).run(until_s=epoch + seconds)
    finally:
        ports.close()


def test_link_down_mid_job_moves_traffic_and_is_counted():
    pusher = CollectingPusher()
    run_node("b", 1_000_000.0, 300, pusher)
    network = [n for batch in pusher.sent for n in batch["network"]]
    assert sum(n["link_down_port_seconds"] for n in network) == 60.0
    tx = sum(n["counters"]["tx_bytes"] for n in network)
    truth = sum(4 * NodeTraffic(SPEC, "b").port_second(nic, k)["tx_words"] for k in range(300) for nic in range(2))
    assert tx == truth
    assert NodeTraffic(SPEC, "b").port_second(1, 120)["tx_words"] == 0
    assert NodeTraffic(SPEC, "b").port_second(0, 120)["tx_words"] > 1.8 * NodeTraffic(SPEC, "b").port_second(0, 90)["tx_words"]


@BACKENDS
def test_exact_bytes_and_verdict_through_the_server(db_url, tmp_path):
    server = start_server(db_url, None, tmp_path / "server.log")
    epoch = math.floor(time.time()) - 2 * 3600 + 1000  # crosses an hour boundary, all in the past
    try:
        for node in ("a", "b", "shared"):
            pusher = Pusher(server.url)
            run_node(node, epoch, 1800, pusher)
            assert not pusher.queue and pusher.rejected == 0
        reports = {job: httpx.get(f"{server.url}/v1/jobs/net/{job}", timeout=10).json()["network"]
                   for job in ("train", "big", "small")}
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
    train, truth = reports["train"], network_truth(SPEC, "train", 1800)
    assert (train["tx_bytes"], train["rx_bytes"]) == (truth["tx_bytes"], truth["rx_bytes"])
    assert train["apportioned_fraction"] == 0.0 and train["link_down_port_seconds"] == 60.0
    assert [n["node"] for n in train["per_node"]] == ["a", "b"]
    assert train["per_node"][0]["mean_tx_gbps"] == pytest.approx(300.0, rel=0.01)
    assert train["peak_link_utilization_pct"] == pytest.approx(300.0 / 2 / 400 * 100 * 2, rel=0.06)  # one port carries all
    assert train["cnp_handled_per_s"] == pytest.approx(120.0, rel=0.01)
    assert train["congestion"] == "moderate"
    shared_total = sum(4 * NodeTraffic(SPEC, "shared").port_second(nic, k)["tx_words"] for k in range(1800) for nic in range(2))
    assert reports["big"]["tx_bytes"] == pytest.approx(shared_total * 0.75, rel=1e-12)
    assert reports["small"]["tx_bytes"] == pytest.approx(shared_total * 0.25, rel=1e-12)
    assert reports["big"]["apportioned_fraction"] == pytest.approx(1.0)
    assert reports["small"]["congestion"] == "none"
