"""The agent SIGKILLed and restarted: the spool keeps its batches, the saved counters bridge
the downtime, and the job's energy matches the simulator's physics over the whole window."""

import math
import signal
import subprocess
import sys
import time
import tomllib
from datetime import datetime

import httpx
import pytest

from agent.sim.node import gpus_of_node
from agent.sim.spec import parse_spec
from tests.conftest import BACKENDS

SPEC_TOML = """
seed = 4
cluster = "r"
[[nodes]]
name = "n0"
gpu_count = 2
model = "NVIDIA H100 80GB HBM3"
idle_w = 70.0
busy_w = 650.0
tdp_w = 700.0
[[jobs]]
id = "7"
nodes = ["n0"]
gpus = [0, 1]
start_s = 0
utilization = 0.8
"""


def agent(spec, url, epoch, state_dir) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "agent", "--simulate", str(spec), "--node", "n0", "--collector", url,
         "--interval", "0.5", "--push-interval", "1", "--sim-epoch", str(epoch), "--state-dir", str(state_dir), "--metrics-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@BACKENDS
def test_agent_sigkilled_and_restarted_loses_nothing(server, tmp_path):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC_TOML)
    epoch = math.floor(time.time()) - 100  # the job has been running for a while
    first = agent(spec_path, server.url, epoch, tmp_path / "state")
    time.sleep(6)
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(4)  # the agent is down: only the counters see this energy
    second = agent(spec_path, server.url, epoch, tmp_path / "state")
    time.sleep(6)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    report = httpx.get(f"{server.url}/v1/jobs/r/7", timeout=10).json()
    start_s = datetime.fromisoformat(report["started_at"]).timestamp()
    end_s = datetime.fromisoformat(report["last_seen_at"]).timestamp()
    gpus = gpus_of_node(parse_spec(tomllib.loads(SPEC_TOML)), "n0")
    def tick(t: float) -> float:  # the counter updates every 100 ms: what it can show at t
        return math.floor((t - epoch) * 10) / 10

    truth_j = sum(gpu.energy_j(tick(start_s), tick(end_s)) for gpu in gpus)
    reported_j = report["energy_kwh"] * 3.6e6
    print(f"\nFAULT | agent SIGKILL + restart | injected 1 | energy lost {max(truth_j - reported_j, 0) / truth_j:.2e} "
          f"| counted twice {max(reported_j - truth_j, 0) / truth_j:.2e}")
    assert report["gpu_hours"] * 3600 / 2 == pytest.approx(end_s - start_s)  # the 4 s downtime is in the job's time too
    assert reported_j == pytest.approx(truth_j, rel=1e-4)
