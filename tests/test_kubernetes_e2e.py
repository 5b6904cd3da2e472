"""End to end on Kubernetes: two real `gpuledger agent --simulate` processes, each reading its
own kubelet stand-in (the real pod-resources gRPC API on a unix socket, and an API server
answering the pod list), push to a real server. A two-pod PyTorchJob across both nodes is one
job with its namespace, pods and account; the pod that ends frees its GPUs; node-b's socket is
absent when its agent starts, a warning, not a crash."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from agent.clock import WallClock
from agent.sim.node import SimulatedNode
from agent.sim.spec import parse_spec
from collector.db import make_engine
from collector.models import GpuKey, JobKey, Place, RawInterval
from tests.conftest import BACKENDS
from tests.kubelet_standin import PodListServer, PodResourcesServer, pytorchjob_pod

SPEC_TOML = """
seed = 19
cluster = "k8s"
datacenter = "dc-k"
[[nodes]]
name = "node-a"
gpu_count = 4
model = "NVIDIA H100 80GB HBM3"
idle_w = 70.0
busy_w = 650.0
[[nodes]]
name = "node-b"
gpu_count = 4
model = "NVIDIA H100 80GB HBM3"
idle_w = 70.0
busy_w = 650.0
"""
JOB = "k8s/team-nlp/llama-ft"
INTERVAL_S = 0.5
SLACK_S = 1.2


def uuids(node: str) -> list[str]:
    """The simulated GPUs' UUIDs, as the device plugin would hand them to the kubelet."""
    import tomllib

    sim = SimulatedNode(parse_spec(tomllib.loads(SPEC_TOML)), node, WallClock(), time.time())
    return [device.uuid for device in sim.devices]


def start_agent(spec: Path, node: str, server_url: str, socket_path: Path, api_url: str, token: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "agent", "--simulate", str(spec), "--node", node, "--collector", server_url,
         "--interval", str(INTERVAL_S), "--push-interval", "1", "--metrics-port", "0",
         "--pod-resources-socket", str(socket_path), "--kube-pods", f"apiserver={api_url}", "--kube-token-file", str(token),
         "--kube-account", "label:billing.example.com/account", "--kube-pods-refresh", "1", "--no-proc-attribution"],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Agents take seconds to start on a loaded machine: wait for what they log."""
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in {log.read_text()}"
        time.sleep(0.1)


def gpu_seconds(db_url: str) -> dict[tuple[str, str, str | None], tuple[float, float, float]]:
    """(node, gpu uuid, job) -> (gpu_seconds, first start, last end), from the raw intervals."""
    engine = make_engine(db_url)
    result: dict = {}
    with engine.connect() as conn:
        raw, gpus, places, jobs = RawInterval, GpuKey.__table__, Place.__table__, JobKey.__table__
        query = (select(places.c.node, gpus.c.gpu_uuid, jobs.c.job_id, raw.c.start_s, raw.c.end_s, raw.c.gpu_seconds)
                 .select_from(raw.join(gpus, gpus.c.id == raw.c.gpu_key).join(places, places.c.id == gpus.c.place_id)
                              .join(jobs, jobs.c.id == raw.c.job_key)))
        for node, uuid, job, start_s, end_s, seconds in conn.execute(query):
            total, first, last = result.get((node, uuid, job), (0.0, float("inf"), 0.0))
            result[(node, uuid, job)] = (total + seconds, min(first, start_s), max(last, end_s))
    engine.dispose()
    return result


@BACKENDS
def test_two_pod_pytorchjob_on_two_nodes_is_one_job(server, db_url, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC_TOML)
    token = tmp_path / "token"
    token.write_text("agent-sa-token")
    gpus = {node: uuids(node) for node in ("node-a", "node-b")}
    api = PodListServer(token="agent-sa-token").start()
    api.pods = [pytorchjob_pod("team-nlp", "llama-ft", "master", 0, "node-a", {"billing.example.com/account": "nlp-research"}),
                pytorchjob_pod("team-nlp", "llama-ft", "worker", 0, "node-b", {"billing.example.com/account": "nlp-research"})]
    kubelet_a = PodResourcesServer(tmp_path / "a.sock")
    kubelet_a.set_pod("team-nlp", "llama-ft-master-0", {"nvidia.com/gpu": gpus["node-a"][:2]})
    kubelet_a.start()
    kubelet_b = PodResourcesServer(tmp_path / "b.sock")  # not serving yet: node-b's socket is absent
    kubelet_b.set_pod("team-nlp", "llama-ft-worker-0", {"nvidia.com/gpu": gpus["node-b"][:2]})
    agents = {node: start_agent(spec, node, server.url, tmp_path / sock, api.url, token, tmp_path / f"{node}.log")
              for node, sock in (("node-a", "a.sock"), ("node-b", "b.sock"))}
    try:
        absent = f"pod-resources socket {str(tmp_path / 'b.sock')!r} does not exist; GPUs are attributed by the other sources"
        wait_for_line(tmp_path / "node-b.log", absent, agents["node-b"])
        time.sleep(2)
        assert all(agent.poll() is None for agent in agents.values()), "an absent socket must not stop the agent"
        kubelet_b.start()
        socket_up_s = time.time()
        time.sleep(3)
        api.set_phase("llama-ft-worker-0", "Succeeded")  # the worker finishes;
        kubelet_b.remove_pod("team-nlp", "llama-ft-worker-0")  # the kubelet releases its devices
        worker_end_s = time.time()
        time.sleep(3)
    finally:
        for agent in agents.values():
            agent.send_signal(signal.SIGTERM)
        codes = [agent.wait(timeout=30) for agent in agents.values()]
        kubelet_a.stop()
        kubelet_b.stop()
        api.stop()
    assert codes == [0, 0]
    log_b = (tmp_path / "node-b.log").read_text()
    assert log_b.count(absent) == 1 and "pod-resources socket answers again" in log_b

    report = httpx.get(f"{server.url}/v1/jobs/{JOB}", timeout=10).json()
    assert (report["namespace"], report["name"], report["account"], report["pods"]) == (
        "team-nlp", "llama-ft", "nlp-research", ["llama-ft-master-0", "llama-ft-worker-0"])
    assert (report["nodes"], report["gpus"]) == (2, 4)
    jobs = httpx.get(f"{server.url}/v1/jobs", timeout=10).json()
    job_ids = sorted(j["job_id"] for j in jobs["items"])
    assert job_ids == ["k8s/team-nlp/llama-ft", "k8s/unallocated"], "one job for both pods"

    seconds = gpu_seconds(db_url)
    span = {node: (min(v[1] for k, v in seconds.items() if k[0] == node), max(v[2] for k, v in seconds.items() if k[0] == node))
            for node in ("node-a", "node-b")}
    on_a = [seconds[("node-a", uuid, JOB)][0] for uuid in gpus["node-a"][:2]]
    on_b = [seconds[("node-b", uuid, JOB)][0] for uuid in gpus["node-b"][:2]]
    # node-a's pod held its 2 GPUs from the agent's first sample to its last
    assert on_a == [pytest.approx(span["node-a"][1] - span["node-a"][0], abs=1e-6)] * 2
    # node-b's pod from when its socket answered (next sample) until it ended (next sample); the
    # slack is for a sample late on a loaded machine, far less than the 2 s before or 3 s after
    for held_s in on_b:
        assert worker_end_s - socket_up_s - INTERVAL_S - SLACK_S <= held_s <= worker_end_s - socket_up_s + INTERVAL_S + SLACK_S
    # the freed GPUs went to the idle account, and every GPU-second of node-b is accounted once
    for uuid in gpus["node-b"]:
        total = sum(v[0] for k, v in seconds.items() if k[:2] == ("node-b", uuid))
        assert total == pytest.approx(span["node-b"][1] - span["node-b"][0], abs=1e-6)
    assert seconds[("node-b", gpus["node-b"][0], "k8s/unallocated")][2] == pytest.approx(span["node-b"][1], abs=1e-6)
    assert report["gpu_hours"] * 3600 == pytest.approx(sum(on_a) + sum(on_b), rel=1e-9)
    print(f"\nk8s job {JOB}: {report['gpu_hours'] * 3600:.2f} GPU-s = node-a {sum(on_a):.2f} + node-b {sum(on_b):.2f}; "
          f"node-b held {on_b[0]:.2f} s of {worker_end_s - socket_up_s:.2f} s between socket up and pod end")

    shown = subprocess.run([sys.executable, "-m", "api.cli.main", "report", JOB, "--server", server.url],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in shown.stdout.splitlines() if len(line.split(None, 1)) == 2}
    assert (lines["namespace"], lines["pods"], lines["account"]) == ("team-nlp", "llama-ft-master-0, llama-ft-worker-0", "nlp-research")
