"""``/proc/<pid>/cgroup`` parsing per line, against files other projects recorded on real
Slurm and Kubernetes nodes (tests/fixtures/cgroup, sources in its SOURCE file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.attribution import JobRef, ProcessOwners, job_from_cgroup
from agent.cgroup import (
    CgroupLine,
    kube_pod_uid,
    parse_cgroup,
    parse_cgroup_line,
    pod_uid_in_path,
    slurm_job_id,
    slurm_job_in_path,
)
from agent.gpu import GpuSample
from tests.conftest import wait_for_job

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"


def recorded(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("slurm-v1-ceems", JobRef("4824887")),
        ("slurm-v2-ceems", JobRef("1320003")),
        ("k8s-cgroupfs-v1-docker", JobRef("pod-74c13223-5a00-11e9-b385-42010a80018d")),
        ("k8s-cgroupfs-v1-containerd", JobRef("pod-a36d0c1d-0b26-4451-8d80-9c195e004afa")),
        ("k8s-cgroupfs-v1-shared-controllers", JobRef("pod-1fe19bf5-e8ef-11e8-900c-52daee5a874d")),
        ("k8s-cgroupfs-v2-guaranteed", JobRef("pod-51b64565-2b17-4d46-83ac-22e398f2f7fb")),
        ("k8s-systemd-hybrid-bottlerocket", JobRef("pod-dd1bf9d1-241d-47f5-8e25-12de83135812")),
        ("k8s-systemd-v1-crio-static-pod", JobRef("pod-487a0dc6dccaeefbcfedba7a7ce1ca18")),
        ("k8s-systemd-v1-containerd-colon-line", JobRef("pod-0043435f-1854-4327-b76b-730f681a781d")),
        ("k8s-systemd-v2-cgroupns-docker", JobRef("pod-fd698699-eabf-4c23-92ef-cf0bbdb78261")),
        ("k8s-systemd-v2-guaranteed-crio", JobRef("pod-7922aa99-d4aa-4885-a953-82976860b23a")),
        ("k8s-systemd-v2-kind-nested", JobRef("pod-eab5a334-93fe-48a8-b139-9e8079c1f163")),
        ("podman-rootless-v2", None),
        ("host-v1-root", None),
        ("host-v1-user-session", None),
    ],
)
def test_recorded_cgroup_files(name: str, expected: JobRef | None) -> None:
    assert job_from_cgroup(recorded(name)) == expected


def test_every_fixture_is_covered_and_sourced() -> None:
    names = {p.name for p in FIXTURES.iterdir()} - {"SOURCE"}
    source = recorded("SOURCE")
    assert len(names) == 15
    assert all(name in source for name in names)


def test_slurm_v1_job_is_on_the_first_line_not_the_last() -> None:
    """The v1 file that lost jobs: job_N on the freezer line, then 11 more lines, the last a session."""
    text = recorded("slurm-v1-ceems")
    lines = parse_cgroup(text)
    assert len(lines) == 12
    assert lines[0] == CgroupLine(12, ("freezer",), "/slurm/uid_1000/job_4824887")
    assert lines[-1] == CgroupLine(1, ("name=systemd",), "/user.slice/user-118.slice/session-18.scope")
    assert not text.rstrip().endswith("job_4824887")
    assert slurm_job_id(lines) == "4824887"


def test_line_format_after_procfs() -> None:
    # The cases of prometheus/procfs proc_cgroup_test.go TestParseCgroupString.
    assert parse_cgroup_line("10:rdma:/") == CgroupLine(10, ("rdma",), "/")
    assert parse_cgroup_line("3:cpu,cpuacct:/user.slice/user-1000.slice/session-10.scope") == CgroupLine(
        3, ("cpu", "cpuacct"), "/user.slice/user-1000.slice/session-10.scope"
    )
    assert parse_cgroup_line("0::/user.slice/user-1000.slice/user@1000.service/gnome-terminal-server.service") == \
        CgroupLine(0, (), "/user.slice/user-1000.slice/user@1000.service/gnome-terminal-server.service")
    assert parse_cgroup_line("0::/some/long/path:foobar") == CgroupLine(0, (), "/some/long/path:foobar")
    with pytest.raises(ValueError, match=r"cgroup line 'a:cpu:/': hierarchy ID 'a' is not a number"):
        parse_cgroup_line("a:cpu:/")
    with pytest.raises(ValueError, match=r"cgroup line '/slurm/job_1': expected 'hierarchy-ID:controller-list:path'"):
        parse_cgroup_line("/slurm/job_1")


def test_malformed_lines_are_skipped_not_fatal() -> None:
    text = "garbage\na:cpu:/slurm/uid_1/job_9\n\n  4:memory:/slurm/uid_1000/job_77/step_0  \n"
    assert parse_cgroup(text) == [CgroupLine(4, ("memory",), "/slurm/uid_1000/job_77/step_0")]
    assert job_from_cgroup(text) == JobRef("77")
    assert job_from_cgroup("\0\xff:::") is None


def test_freezer_wins_when_hierarchies_disagree() -> None:
    # A process moved by hand in one hierarchy: proctrack's freezer says which job tracks it.
    text = "7:devices:/slurm/uid_1000/job_2\n5:freezer:/slurm/uid_1000/job_1/step_0\n0::/system.slice/slurmstepd.scope/job_3\n"
    assert slurm_job_id(parse_cgroup(text)) == "1"
    # Without freezer, the v1 controllers before the v2 line of a hybrid node.
    assert slurm_job_id(parse_cgroup("0::/system.slice/slurmstepd.scope/job_3\n7:devices:/slurm/job_2\n")) == "2"


def test_path_matchers() -> None:
    assert slurm_job_in_path("/slurm_node01/uid_1000/job_12/step_batch/task_0") == "12"
    assert slurm_job_in_path("/system.slice/node01_slurmstepd.scope/job_5/step_extern") == "5"
    assert slurm_job_in_path("/../job_44/step_0") == "44"  # read through a cgroup namespace
    assert slurm_job_in_path("/user.slice/user@1000.service/app.slice/job_5.scope") is None
    assert slurm_job_in_path("/slurm/uid_1000/job_12x") is None
    assert pod_uid_in_path("/kubepods/burstable/pod1b2c3d4e-1111-2222-3333-444455556666/abc") == \
        "1b2c3d4e-1111-2222-3333-444455556666"
    assert pod_uid_in_path("/machine.slice/libpod-pod1b2c3d4e-1111-2222-3333-444455556666.scope") is None  # no kubepods
    assert pod_uid_in_path("/kubepods.slice/kubepods-besteffort.slice") is None
    assert kube_pod_uid(parse_cgroup(recorded("k8s-systemd-hybrid-bottlerocket"))) == "dd1bf9d1-241d-47f5-8e25-12de83135812"


def test_process_owners_reads_a_recorded_v1_slurm_file(tmp_path: Path) -> None:
    """Through ProcessOwners: environ unreadable (another user's process), the v1 cgroup file names the job."""
    base = tmp_path / "46231"
    base.mkdir()
    (base / "cgroup").write_text(recorded("slurm-v1-ceems"))
    sample = GpuSample(index=3, time_s=0.0, energy_mj=None, power_mw=None, util_gpu_pct=None,
                       memory_used_bytes=None, pids=(46231,))
    assert ProcessOwners(tmp_path).owners([sample]) == {3: (JobRef("4824887"),)}


# -- end to end: a real `gpuledger agent --simulate` and `gpuledger server` ------------------

E2E_SPEC = """
seed = 5
cluster = "v1"
[[nodes]]
name = "n0"
gpu_count = 2
model = "NVIDIA H100 80GB HBM3"
idle_w = 70.0
busy_w = 650.0
tdp_w = 700.0
[[jobs]]
id = "4824887"      # the simulator's physics only: the agent learns the id from /proc/46231/cgroup
nodes = ["n0"]
gpus = [0, 1]
start_s = 0
utilization = 0.8
pid = 46231
"""


def test_e2e_v1_cgroup_job_is_attributed(server, tmp_path: Path) -> None:
    import math
    import subprocess
    import sys
    import time
    import tomllib
    from datetime import datetime

    import httpx

    from agent.sim.node import gpus_of_node
    from agent.sim.spec import parse_spec

    proc = tmp_path / "proc"
    (proc / "46231").mkdir(parents=True)  # no environ: another user's process, unreadable
    (proc / "46231" / "cgroup").write_text(recorded("slurm-v1-ceems"))
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(E2E_SPEC)
    epoch = math.floor(time.time()) - 30
    agent = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "agent", "--simulate", str(spec_path), "--node", "n0",
         "--collector", server.url, "--interval", "0.5", "--push-interval", "1", "--sim-epoch", str(epoch),
         "--proc-root", str(proc), "--metrics-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_job(server.url, "v1/4824887")
    time.sleep(3)
    agent.terminate()
    assert agent.wait(timeout=30) == 0
    jobs = httpx.get(f"{server.url}/v1/jobs", timeout=10).json()
    ids = {job["job_id"] for job in jobs["items"]}
    assert "v1/4824887" in ids and "v1/unallocated" not in ids
    report = httpx.get(f"{server.url}/v1/jobs/v1/4824887", timeout=10).json()
    start_s = datetime.fromisoformat(report["started_at"]).timestamp()
    end_s = datetime.fromisoformat(report["last_seen_at"]).timestamp()

    def tick(t: float) -> float:  # the simulated counter updates every 100 ms
        return math.floor((t - epoch) * 10) / 10

    truth_j = sum(g.energy_j(tick(start_s), tick(end_s)) for g in gpus_of_node(parse_spec(tomllib.loads(E2E_SPEC)), "n0"))
    assert report["gpus"] == 2
    assert report["gpu_hours"] * 3600 == pytest.approx(2 * (end_s - start_s), abs=1e-5)  # times shown to the µs
    assert report["energy_kwh"] * 3.6e6 == pytest.approx(truth_j, rel=1e-2)
