"""End to end, real ``gpuledger agent`` and ``gpuledger server`` processes on the simulator's
messy hardware: old and broken drivers, MIG, time-sliced GPUs, a counter reset while the agent
was down, a full state directory. Each prints a FAULT row; energy against the simulator's
physics within 1 %, GPU-seconds exact."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from agent.sim.node import gpus_of_node, shared_truth
from agent.sim.spec import parse_spec
from tests.conftest import free_port

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
NODE = 'model = "NVIDIA H100 80GB HBM3"\nidle_w = 70.0\nbusy_w = 650.0\ntdp_w = 700.0\n'


def start_agent(spec: Path, node: str, url: str, epoch: float, *extra: str, log: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "api.cli.main", "agent", "--simulate", str(spec), "--node", node, "--collector", url,
           "--interval", "0.5", "--push-interval", "1", "--sim-epoch", str(epoch), *extra]
    if "--metrics-port" not in extra:
        cmd += ["--metrics-port", "0"]
    out = log.open("a") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def stop(*agents: subprocess.Popen) -> None:
    for agent in agents:
        agent.send_signal(signal.SIGTERM)
    for agent in agents:
        assert agent.wait(timeout=30) == 0


def wait_for(url: str, job: str, gpu_s: float, timeout_s: float = 60.0) -> None:
    """Until the server has ``gpu_s`` GPU-seconds of ``job`` (the agent is up and pushing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/jobs/{job}", timeout=10)
        if response.status_code == 200 and response.json()["gpu_hours"] * 3600 >= gpu_s:
            return
        time.sleep(0.25)
    raise AssertionError(f"job {job} did not reach {gpu_s} GPU-seconds in {timeout_s} s")


def report(url: str, job: str) -> dict:
    response = httpx.get(f"{url}/v1/jobs/{job}", timeout=10)
    assert response.status_code == 200, (job, response.text)
    return response.json()


def window(rep: dict) -> tuple[float, float]:
    return datetime.fromisoformat(rep["started_at"]).timestamp(), datetime.fromisoformat(rep["last_seen_at"]).timestamp()


def tick(t: float, epoch: float) -> float:
    """What the counter (updated every 100 ms) can show at wall time ``t``, as a simulation offset."""
    return math.floor((t - epoch) * 10) / 10


def truth(spec_toml: str, node: str, job_id: str, start_s: float, end_s: float, epoch: float) -> tuple[float, float]:
    """(gpu_seconds, energy_j) of the job's true share over [start_s, end_s] (wall time)."""
    gpu_s = energy_j = 0.0
    for gpu in gpus_of_node(parse_spec(tomllib.loads(spec_toml)), node):
        for job in gpu.jobs:
            if job.id == job_id:
                seconds, _ = shared_truth(gpu, job, start_s - epoch, end_s - epoch)
                _, joules = shared_truth(gpu, job, tick(start_s, epoch), tick(end_s, epoch))
                gpu_s, energy_j = gpu_s + seconds, energy_j + joules
    return gpu_s, energy_j


def row(fault: str, reported_j: float, truth_j: float) -> None:
    print(f"\nFAULT | {fault} | injected 1 | energy lost {max(truth_j - reported_j, 0) / truth_j:.2e} "
          f"| counted twice {max(reported_j - truth_j, 0) / truth_j:.2e}")


def fake_proc(root: Path, pid: int, job_id: str) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "environ").write_bytes(f"GPULEDGER_JOB_ID={job_id}\0PATH=/usr/bin\0".encode())


def check(rep: dict, expected: tuple[float, float], rel_s: float = 0.0) -> None:
    gpu_s, energy_j = expected
    assert rep["gpu_hours"] * 3600 == pytest.approx(gpu_s, rel=rel_s, abs=1e-4)  # the report's times are to the us
    assert rep["energy_kwh"] * 3.6e6 == pytest.approx(energy_j, rel=0.01)


DRIVER_SPEC = """
seed = 21
cluster = "d"
[[nodes]]
name = "n0"
gpu_count = 2
{node}driver_version = "{driver}"
[[jobs]]
id = "7"
nodes = ["n0"]
gpus = [0, 1]
pids = [41001]
utilization = 0.8
"""


@SQLITE
@pytest.mark.parametrize("driver", ["470.82.01", "535.54.03"])
def test_old_and_broken_drivers_attribute_by_process(server, tmp_path, driver):
    """Before R510 the unversioned process call raised a plain Exception and the agent died; on
    535.43-535.86 the PIDs were garbage and attribution by process was lost."""
    spec_toml = DRIVER_SPEC.format(node=NODE, driver=driver)
    (tmp_path / "spec.toml").write_text(spec_toml)
    fake_proc(tmp_path / "proc", 41001, "p-7")  # the process names its job: attribution by process wins
    epoch = math.floor(time.time()) - 50
    agent = start_agent(tmp_path / "spec.toml", "n0", server.url, epoch, "--proc-root", str(tmp_path / "proc"),
                        log=tmp_path / "agent.log")
    wait_for(server.url, "d/p-7", 8.0)
    stop(agent)
    rep = report(server.url, "d/p-7")
    start_s, end_s = window(rep)
    expected = truth(spec_toml, "n0", "7", start_s, end_s, epoch)
    row(f"NVML driver {driver}", rep["energy_kwh"] * 3.6e6, expected[1])
    check(rep, expected)
    assert httpx.get(f"{server.url}/v1/jobs/d/7", timeout=10).status_code == 404  # nothing fell back to the simulator
    assert "reading process lists with nvmlDeviceGetComputeRunningProcesses_v2" in (tmp_path / "agent.log").read_text()


MIG_SPEC = """
seed = 5
cluster = "m"
[[nodes]]
name = "mig"
gpu_count = 1
{node}mig = [3, 4]
[[nodes]]
name = "plain"
gpu_count = 1
{node}
[[nodes]]
name = "shared"
gpu_count = 1
{node}
[[jobs]]
id = "m1"
nodes = ["mig"]
gpus = [0]
gpu_instance = 1
utilization = 0.9
[[jobs]]
id = "m2"
nodes = ["mig"]
gpus = [0]
gpu_instance = 2
utilization = 0.4
[[jobs]]
id = "p"
nodes = ["plain"]
gpus = [0]
utilization = 0.7
[[jobs]]
id = "s1"
nodes = ["shared"]
gpus = [0]
pids = [51001]
utilization = 0.6
[[jobs]]
id = "s2"
nodes = ["shared"]
gpus = [0]
pids = [52001]
utilization = 0.2
"""


@SQLITE
def test_mig_instances_and_time_sliced_gpus(server, tmp_path):
    spec_toml = MIG_SPEC.format(node=NODE)
    (tmp_path / "spec.toml").write_text(spec_toml)
    mapping = tmp_path / "job-mapping"
    mapping.mkdir()
    (mapping / "0.1").write_text("map-1\n")  # instance 1 of GPU 0: applies on the MIG node only
    proc = tmp_path / "proc"
    fake_proc(proc, 51001, "s1")
    fake_proc(proc, 52001, "s2")
    epoch = math.floor(time.time()) - 30
    common = ("--job-mapping-dir", str(mapping), "--proc-root", str(proc))
    agents = [start_agent(tmp_path / "spec.toml", node, server.url, epoch, *common) for node in ("mig", "plain", "shared")]
    for job in ("m/map-1", "m/p", "m/s2"):
        wait_for(server.url, job, 1.5)
    time.sleep(3)
    stop(*agents)
    # MIG: instance 1 (3 of 7 slices) to the mapped job, instance 2 (4 slices) to m2, by slices.
    for job, spec_job, slices in (("map-1", "m1", 3), ("m2", "m2", 4)):
        rep = report(server.url, f"m/{job}")
        start_s, end_s = window(rep)
        expected = truth(spec_toml, "mig", spec_job, start_s, end_s, epoch)
        assert expected[0] == pytest.approx((end_s - start_s) * slices / 7)
        row(f"MIG instance of {slices}/7 slices", rep["energy_kwh"] * 3.6e6, expected[1])
        check(rep, expected)
        # The report says what share of which GPU was charged, and prices it as an H100's.
        (part,) = rep["breakdown"]
        assert part["gpu_model"] == f"NVIDIA H100 80GB HBM3 MIG {slices}/7 slices", part
        assert rep["rates"]["usd_per_gpu_hour"][part["gpu_model"]] == report(server.url, "m/p")["rates"]["usd_per_gpu_hour"][
            "NVIDIA H100 80GB HBM3"]
    assert httpx.get(f"{server.url}/v1/jobs/m/m1", timeout=10).status_code == 404  # the mapping file won
    # The same "0.1" file on a GPU without MIG does not apply: job p has its whole GPU.
    rep = report(server.url, "m/p")
    expected = truth(spec_toml, "plain", "p", *window(rep), epoch)
    check(rep, expected)
    # Time-sliced: by per-process SM utilisation (0.6 : 0.2), not equally.
    reps = {job: report(server.url, f"m/{job}") for job in ("s1", "s2")}
    both_s = sum(r["gpu_hours"] * 3600 for r in reps.values())
    start_s, end_s = window(reps["s1"])
    assert both_s == pytest.approx(end_s - start_s, abs=1e-4)
    for job, rep in reps.items():
        expected = truth(spec_toml, "shared", job, start_s, end_s, epoch)
        row(f"time-sliced GPU, job {job}", rep["energy_kwh"] * 3.6e6, expected[1])
        check(rep, expected, rel_s=0.01)
    assert reps["s1"]["energy_kwh"] > 2.5 * reps["s2"]["energy_kwh"]


RESET_SPEC = """
seed = 4
cluster = "r"
[[nodes]]
name = "n0"
gpu_count = 2
{node}
[[jobs]]
id = "7"
nodes = ["n0"]
gpus = [0, 1]
utilization = 0.8
[[events]]
kind = "counter_reset"
node = "n0"
gpu = 1
at_s = {reset_s}
"""


@SQLITE
def test_counter_reset_while_the_agent_is_down(server, tmp_path):
    """The driver reloads between kill and restart: GPU-seconds exact, energy = counter since the
    reset (measured) + the stretch before it from power (power_gap), never dropped."""
    epoch = math.floor(time.time()) - 100
    down_s = 8.0
    spec = tmp_path / "spec.toml"
    spec.write_text(RESET_SPEC.format(node=NODE, reset_s=1e6))  # no reset yet
    state = ("--state-dir", str(tmp_path / "state"))
    first = start_agent(spec, "n0", server.url, epoch, *state)
    wait_for(server.url, "r/7", 8.0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    # The driver reloads on GPU 1 in the middle of the outage.
    spec_toml = RESET_SPEC.format(node=NODE, reset_s=round(time.time() - epoch + down_s / 2, 1))
    spec.write_text(spec_toml)
    time.sleep(down_s)
    second = start_agent(spec, "n0", server.url, epoch, *state, log=tmp_path / "agent.log")
    before_s = report(server.url, "r/7")["gpu_hours"] * 3600
    wait_for(server.url, "r/7", before_s + 2 * down_s + 8.0)
    stop(second)
    rep = report(server.url, "r/7")
    start_s, end_s = window(rep)
    expected = truth(spec_toml, "n0", "7", start_s, end_s, epoch)
    row("counter reset while the agent was down", rep["energy_kwh"] * 3.6e6, expected[1])
    assert rep["gpu_hours"] * 3600 == pytest.approx(2 * (end_s - start_s), abs=1e-4)  # the gap's seconds too
    check(rep, expected)
    assert rep["energy_measured_fraction"] < 1.0  # the estimated stretch is said
    assert "the energy counter reset during the" in (tmp_path / "agent.log").read_text()


@SQLITE
@pytest.mark.parametrize("fault", ["full", "full, freed before the restart", "read-only"])
def test_full_state_dir_keeps_running_and_never_counts_twice(server, tmp_path, fault):
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    state = tmp_path / "state"
    state.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(state)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    started: list[subprocess.Popen] = []
    try:
        spec_toml = RESET_SPEC.split("[[events]]")[0].format(node=NODE)
        (tmp_path / "spec.toml").write_text(spec_toml)
        epoch = math.floor(time.time()) - 100
        port = free_port()
        args = ("--state-dir", str(state), "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
        first = start_agent(tmp_path / "spec.toml", "n0", server.url, epoch, *args, log=tmp_path / "agent.log")
        started.append(first)
        wait_for(server.url, "r/7", 4.0)
        if fault == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        else:
            _fill(state)
        before_s = report(server.url, "r/7")["gpu_hours"] * 3600
        wait_for(server.url, "r/7", before_s + 6.0)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        first.send_signal(signal.SIGKILL)
        first.wait()
        if fault == "full, freed before the restart":  # the stale readings must still not be used
            (state / "filler").unlink()
        time.sleep(3)
        second = start_agent(tmp_path / "spec.toml", "n0", server.url, epoch, *args, log=tmp_path / "agent.log")
        started.append(second)
        before_s = report(server.url, "r/7")["gpu_hours"] * 3600
        wait_for(server.url, "r/7", before_s + 6.0)
        stop(second)
    finally:
        for agent in started:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert re.search(r'^gpuledger_agent_state_degraded\{node="n0"\} 1\.0$', metrics, re.M), metrics[-3000:]
    assert re.search(r'^gpuledger_agent_state_write_failures_total\{node="n0"\} [1-9]', metrics, re.M)
    log = (tmp_path / "agent.log").read_text()
    assert log.count("running from memory") == (1 if "freed" in fault else 2)  # once per agent run that met it
    if fault == "read-only":  # the readings could not be kept current: not used at the restart
        assert "is not writable: its saved counter readings may be stale" in log, log[-3000:]
    rep = report(server.url, "r/7")
    start_s, end_s = window(rep)
    gpu_s, truth_j = truth(spec_toml, "n0", "7", start_s, end_s, epoch)
    reported_j = rep["energy_kwh"] * 3.6e6
    row(f"state dir {fault}, agent SIGKILLed", min(reported_j, truth_j), truth_j)
    assert reported_j <= truth_j * (1 + 1e-4)  # never twice: at most the truth over the whole window
    if fault == "read-only":
        assert reported_j >= truth_j * 0.3  # it kept running (wait_for saw it push); the downtime itself is lost
    else:  # the readings were rewritten in place: the downtime is bridged; what was in memory at the kill is lost
        assert reported_j >= truth_j * 0.9


def _fill(directory: Path) -> None:
    """Fill a tmpfs to the last byte."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
