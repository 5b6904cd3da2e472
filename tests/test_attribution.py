"""Job attribution: the job-mapping directory, process environments and cgroups (through a
real ``/proc`` and a fake proc root), and the precedence between sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.attribution import (
    Attributor,
    JobMappingDir,
    JobRef,
    ProcessOwners,
    job_from_cgroup,
    job_from_environ,
    parse_environ,
)
from agent.gpu import GpuSample, MigInstance, MigLayout

# Above PID_MAX_LIMIT (4 * 1024 * 1024): no process can ever have this PID on Linux.
IMPOSSIBLE_PID = 4 * 1024 * 1024 + 1


def sample(index: int, pids: tuple[int, ...] = ()) -> GpuSample:
    return GpuSample(
        index=index, time_s=0.0, energy_mj=None, power_mw=None, util_gpu_pct=None, memory_used_bytes=None, pids=pids
    )


def mig_sample(index: int, instances: tuple[int, ...], pids: tuple[int, ...] = (),
               pid_instances: tuple[int | None, ...] = ()) -> GpuSample:
    layout = MigLayout(7, tuple(MigInstance(gi, 1) for gi in instances))
    return GpuSample(index, 0.0, None, None, None, None, pids, pid_instances=pid_instances, mig=layout)


def fake_proc(root: Path, pid: int, environ: dict[str, str] | None = None, cgroup: str | None = None) -> None:
    """A ``<root>/<pid>`` directory laid out like ``/proc/<pid>``; None leaves a file out."""
    base = root / str(pid)
    base.mkdir(parents=True, exist_ok=True)
    if environ is not None:
        (base / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items()))
    if cgroup is not None:
        (base / "cgroup").write_text(cgroup)


# -- JobMappingDir ------------------------------------------------------------------------


def test_mapping_dir_reads_gpu_and_mig_files_and_skips_junk(tmp_path: Path) -> None:
    (tmp_path / "0").write_text("1001\n")
    (tmp_path / "1").write_text("2002\n3003\n")  # two jobs share GPU 1, in file order
    (tmp_path / "2.1").write_text("4004\n")  # MIG instance 1 of GPU 2, which has no MIG: ignored
    (tmp_path / "4.1").write_text("5005\n")  # MIG instance 1 of GPU 4, MIG-enabled
    (tmp_path / "README").write_text("9999\n")
    (tmp_path / "x3").write_text("8888\n")
    (tmp_path / "3").write_text("")  # the epilog emptied it: nobody
    samples = [sample(i) for i in range(4)] + [mig_sample(4, (1, 2))]
    owners = JobMappingDir(tmp_path).owners(samples)
    assert owners == {
        0: (JobRef("1001"),),
        1: (JobRef("2002"), JobRef("3003")),
        4: (JobRef("5005", gpu_instance=1),),
    }


def test_mapping_dir_multi_line_file_keeps_order(tmp_path: Path) -> None:
    (tmp_path / "0").write_text("30\n10\n20\n")
    assert JobMappingDir(tmp_path).owners([sample(0)]) == {0: (JobRef("30"), JobRef("10"), JobRef("20"))}


def test_mapping_dir_mig_instances_of_one_gpu_merge_without_duplicates(tmp_path: Path) -> None:
    (tmp_path / "2.0").write_text("7\n")
    (tmp_path / "2.1").write_text("8\n7\n")
    (tmp_path / "5").write_text("9\n9\n")
    owners = JobMappingDir(tmp_path).owners([mig_sample(2, (0, 1))])
    assert owners == {2: (JobRef("7", gpu_instance=0), JobRef("8", gpu_instance=1), JobRef("7", gpu_instance=1)),
                      5: (JobRef("9"),)}


def test_mapping_dir_missing_directory_gives_nothing(tmp_path: Path) -> None:
    assert JobMappingDir(tmp_path / "absent").owners([sample(0)]) == {}
    (tmp_path / "a-file").write_text("0")
    assert JobMappingDir(tmp_path / "a-file").owners([sample(0)]) == {}


def test_mapping_dir_empty_file_gives_no_owner(tmp_path: Path) -> None:
    (tmp_path / "0").write_text("")
    (tmp_path / "1").write_text("\n  \n")
    assert JobMappingDir(tmp_path).owners([sample(0), sample(1)]) == {}


def test_mapping_dir_is_reread_every_time(tmp_path: Path) -> None:
    source = JobMappingDir(tmp_path)
    (tmp_path / "0").write_text("1\n")
    assert source.owners([sample(0)]) == {0: (JobRef("1"),)}
    (tmp_path / "0").write_text("2\n")
    assert source.owners([sample(0)]) == {0: (JobRef("2"),)}
    (tmp_path / "0").unlink()
    assert source.owners([sample(0)]) == {}


# -- environment ----------------------------------------------------------------------------


def test_environ_gpuledger_job_id_wins_over_slurm() -> None:
    env = {
        "GPULEDGER_JOB_ID": "g-1",
        "GPULEDGER_JOB_NAME": "sweep-3",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NAME": "alloc",
        "TORCHELASTIC_RUN_ID": "run-x",
    }
    job = job_from_environ(env)
    assert job is not None
    assert job.job_id == "g-1"
    assert job.name == "sweep-3"


def test_environ_slurm_job_with_metadata() -> None:
    env = {
        "SLURM_JOB_ID": "1234",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_USER": "alice",
        "SLURM_JOB_ACCOUNT": "nlp",
        "USER": "root",  # SLURM_JOB_USER beats the login user
    }
    assert job_from_environ(env) == JobRef("1234", "train", "alice", "nlp")


def test_environ_empty_gpuledger_id_falls_through_to_slurm() -> None:
    assert job_from_environ({"GPULEDGER_JOB_ID": "", "SLURM_JOB_ID": "5"}) == JobRef("5")


def test_environ_torchelastic_fallback() -> None:
    assert job_from_environ({"TORCHELASTIC_RUN_ID": "run-9", "PATH": "/bin"}) == JobRef("run-9")
    assert job_from_environ({"TORCHELASTIC_RUN_ID": "run-9", "USER": "bob"}) == JobRef("run-9", user="bob")


def test_environ_without_job_is_none() -> None:
    assert job_from_environ({}) is None
    assert job_from_environ({"PATH": "/usr/bin", "USER": "bob", "SLURM_JOB_NAME": "orphan"}) is None


def test_parse_environ_raw_bytes() -> None:
    raw = b"PATH=/usr/bin\0OPTS=--lr=3e-4 --bs=8\0EMPTY=\0NOEQUALS\0\0SLURM_JOB_ID=77\0"
    assert parse_environ(raw) == {
        "PATH": "/usr/bin",
        "OPTS": "--lr=3e-4 --bs=8",  # split at the first '=' only
        "EMPTY": "",
        "SLURM_JOB_ID": "77",
    }
    assert parse_environ(b"") == {}


# -- cgroup ---------------------------------------------------------------------------------


def test_cgroup_v2_slurm() -> None:
    assert job_from_cgroup("0::/system.slice/slurmstepd.scope/job_1234/step_0/user/task_0\n") == JobRef("1234")


def test_cgroup_v1_slurm() -> None:
    text = "12:pids:/slurm/uid_1000/job_1234/step_0\n4:memory:/slurm/uid_1000/job_1234/step_0\n1:name=systemd:/\n"
    assert job_from_cgroup(text) == JobRef("1234")
    assert job_from_cgroup("4:memory:/slurm/uid_1000/job_1234/step_0") == JobRef("1234")


def test_cgroup_kubernetes_pod_systemd_driver() -> None:
    text = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-pod1b2c3d4e_1111_2222_3333_444455556666.slice/cri-containerd-abc.scope\n"
    )
    assert job_from_cgroup(text) == JobRef("pod-1b2c3d4e-1111-2222-3333-444455556666")


def test_cgroup_kubernetes_pod_cgroupfs_driver() -> None:
    text = "0::/kubepods/besteffort/pod1b2c3d4e-1111-2222-3333-444455556666/0123abcd\n"
    assert job_from_cgroup(text) == JobRef("pod-1b2c3d4e-1111-2222-3333-444455556666")


@pytest.mark.parametrize(
    "text",
    [
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/job_5.scope\n",
        "0::/system.slice/docker-0123abcd.scope\n",
        "",
    ],
)
def test_cgroup_without_job_is_none(text: str) -> None:
    assert job_from_cgroup(text) is None


# -- ProcessOwners --------------------------------------------------------------------------


def test_process_owners_with_the_real_proc() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GPULEDGER_JOB_", "SLURM_")) and k != "TORCHELASTIC_RUN_ID"
    }
    env.update({"SLURM_JOB_ID": "777", "SLURM_JOB_NAME": "train", "SLURM_JOB_USER": "alice", "SLURM_JOB_ACCOUNT": "nlp"})
    ready = "import time; print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", ready], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"  # exec'd: /proc shows its own environment
        samples = [sample(0, (child.pid,)), sample(1, ())]
        owners = ProcessOwners().owners(samples)
        assert owners == {0: (JobRef("777", "train", "alice", "nlp"),)}
    finally:
        child.kill()
        child.wait(timeout=10)


def test_process_owners_pid_that_does_not_exist() -> None:
    assert not Path(f"/proc/{IMPOSSIBLE_PID}").exists()
    source = ProcessOwners()
    assert source.job_of_pid(IMPOSSIBLE_PID) is None
    assert source.owners([sample(0, (IMPOSSIBLE_PID,))]) == {}


def test_process_owners_falls_back_to_cgroup(tmp_path: Path) -> None:
    fake_proc(
        tmp_path,
        4242,
        environ={"PATH": "/usr/bin", "HOME": "/home/alice", "USER": "alice"},
        cgroup="0::/system.slice/slurmstepd.scope/job_555/step_0/user/task_0\n",
    )
    fake_proc(tmp_path, 4343, environ=None, cgroup="4:memory:/slurm/uid_1000/job_556/step_0\n")  # environ unreadable
    owners = ProcessOwners(tmp_path).owners([sample(0, (4242,)), sample(1, (4343,)), sample(2, (4444,))])
    assert owners == {0: (JobRef("555"),), 1: (JobRef("556"),)}


def test_process_owners_environ_beats_cgroup(tmp_path: Path) -> None:
    fake_proc(
        tmp_path,
        10,
        environ={"SLURM_JOB_ID": "1", "SLURM_JOB_NAME": "a"},
        cgroup="0::/system.slice/slurmstepd.scope/job_2/step_0\n",
    )
    assert ProcessOwners(tmp_path).owners([sample(0, (10,))]) == {0: (JobRef("1", "a"),)}


def test_process_owners_several_processes_share_a_gpu(tmp_path: Path) -> None:
    fake_proc(tmp_path, 1, environ={"SLURM_JOB_ID": "30"})
    fake_proc(tmp_path, 2, environ={"SLURM_JOB_ID": "10"})
    fake_proc(tmp_path, 3, environ={"SLURM_JOB_ID": "30"})  # two ranks of job 30: one owner
    assert ProcessOwners(tmp_path).owners([sample(0, (1, 2, 3))]) == {0: (JobRef("10"), JobRef("30"))}


def test_process_owners_forgets_a_pid_that_left(tmp_path: Path) -> None:
    fake_proc(tmp_path, 50, environ={"SLURM_JOB_ID": "1"})
    source = ProcessOwners(tmp_path)
    assert source.owners([sample(0, (50,))]) == {0: (JobRef("1"),)}
    fake_proc(tmp_path, 50, environ={"SLURM_JOB_ID": "2"})  # reused by another job...
    assert source.owners([sample(0, (50,))]) == {0: (JobRef("1"),)}  # ...unseen while it stays
    assert source.owners([sample(0, ())]) == {}  # it left the GPU
    assert source.owners([sample(0, (50,))]) == {0: (JobRef("2"),)}  # read afresh


# -- Attributor -----------------------------------------------------------------------------


def test_attributor_mapping_wins_and_is_enriched_by_processes(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping"
    mapping.mkdir()
    (mapping / "0").write_text("5\n")
    proc = tmp_path / "proc"
    fake_proc(proc, 100, environ={"SLURM_JOB_ID": "9", "SLURM_JOB_NAME": "other"})
    fake_proc(
        proc,
        101,
        environ={"SLURM_JOB_ID": "5", "SLURM_JOB_NAME": "n", "SLURM_JOB_USER": "u", "SLURM_JOB_ACCOUNT": "a"},
    )
    samples = [sample(0, (100,)), sample(1, (101,)), sample(2, ())]
    processes = ProcessOwners(proc)
    # The sources on their own, so the precedence below is not an accident of the fixtures.
    assert JobMappingDir(mapping).owners(samples) == {0: (JobRef("5"),)}
    assert processes.owners(samples) == {0: (JobRef("9", "other"),), 1: (JobRef("5", "n", "u", "a"),)}

    owners = Attributor([JobMappingDir(mapping), processes]).owners(samples)
    assert owners == {0: (JobRef("5", "n", "u", "a"),), 1: (JobRef("5", "n", "u", "a"),)}


def test_attributor_without_any_source_is_empty(tmp_path: Path) -> None:
    samples = [sample(0, (IMPOSSIBLE_PID,))]
    assert Attributor([JobMappingDir(tmp_path / "absent"), ProcessOwners(tmp_path)]).owners(samples) == {}
