"""Jobs run by a real slurmctld and slurmd (tests/slurm/conftest.py), submitted with sbatch
and srun: for every job, gpuledger has Slurm's id, user, account and partition, Slurm's end
time, sacct's allocated GPU-hours, and the job's output file ends with the summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from api.reports.summary import FOOTER, HEADER
from tests.slurm.conftest import CLUSTER, INTERVAL_S, MAPPED_UTILIZATION, PUSH_INTERVAL_S, SlurmCluster

# Slurm's times are whole seconds: its Elapsed can be a second off the exact allocation.
SLURM_RESOLUTION_S = 1.0
KINDS = ("single-gpu", "whole-node", "array", "failing", "cancelled", "step")


@dataclass
class Ran:
    cluster: SlurmCluster
    ids: dict[str, str]  # kind -> the id sbatch printed
    sacct: list[dict]  # sacct --json's jobs (array tasks each their own)

    def jobs(self, kind: str) -> list[dict]:
        wanted = self.ids[kind]
        found = [j for j in self.sacct if str(j["job_id"]) == wanted or str(j["array"]["job_id"]) == wanted]
        assert found, f"sacct has no job for {kind} ({wanted})"
        return found


def _submit(cluster: SlurmCluster) -> dict[str, str]:
    out = cluster.out
    common = ("--time=5", f"--output={out}/%x-%j.out")
    ids = {
        "single-gpu": cluster.sbatch(*common, "-J", "single-gpu", "-A", "nlp", "--gres=gpu:1", "--wrap", "sleep 5"),
        "array": cluster.sbatch("--time=5", f"--output={out}/%x-%A_%a.out", "-J", "array", "-A", "vision",
                                "--gres=gpu:1", "--array=0-1", "--wrap", "sleep 5"),
        "failing": cluster.sbatch(*common, "-J", "failing", "-A", "nlp", "--gres=gpu:1", "--wrap", "sleep 4; exit 3"),
        "cancelled": cluster.sbatch(*common, "-J", "cancelled", "-A", "nlp", "--gres=gpu:2", "--wrap", "sleep 300"),
        "step": cluster.sbatch(*common, "-J", "step", "-A", "nlp", "--gres=gpu:2", "--wrap", "srun sleep 3; srun sleep 3"),
    }
    # All 8 GPUs: it waits until the jobs above have left the node.
    ids["whole-node"] = cluster.sbatch(*common, "-J", "whole-node", "-A", "vision", "--gres=gpu:8", "--exclusive",
                                       "--wrap", "sleep 5")
    return ids


@pytest.fixture(scope="module")
def ran(slurm_cluster: SlurmCluster) -> Ran:
    ids = _submit(slurm_cluster)
    deadline = time.monotonic() + 60
    while slurm_cluster.run("squeue", "-h", "-t", "R", "-j", ids["cancelled"], "-o", "%i").strip() == "":
        assert time.monotonic() < deadline, slurm_cluster.run("squeue")
        time.sleep(0.5)
    time.sleep(5)
    slurm_cluster.run("scancel", ids["cancelled"])
    slurm_cluster.wait_idle()
    time.sleep(2 * PUSH_INTERVAL_S + 1)  # the agent's last intervals
    sacct = slurm_cluster.sacct_json(*ids.values())["jobs"]
    return Ran(slurm_cluster, ids, sacct)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _alloc_gpus(job: dict) -> int:
    return sum(t["count"] for t in job["tres"]["allocated"] if t["type"] == "gres" and t["name"] == "gpu")


def _output(ran: Ran, kind: str, job: dict) -> Path:
    if kind == "array":
        return ran.cluster.out / f"array-{job['array']['job_id']}_{job['array']['task_id']}.out"
    return ran.cluster.out / f"{kind}-{job['job_id']}.out"


@pytest.mark.parametrize("kind", KINDS)
def test_gpuledger_agrees_with_slurm(ran: Ran, kind: str) -> None:
    for job in ran.jobs(kind):
        raw = str(job["job_id"])
        report = ran.cluster.report(raw)
        assert report is not None, f"{kind}: gpuledger has no job {CLUSTER}/{raw}\n{ran.cluster.log('slurmd.log')}"
        assert report["job_id"] == f"{CLUSTER}/{raw}"
        assert (report["user"], report["account"]) == (job["user"], job["account"])
        scheduler = report["scheduler"]
        assert (scheduler["name"], scheduler["partition"], scheduler["qos"]) == ("slurm", job["partition"], job["qos"])
        assert report["name"] == job["name"] == kind
        assert report["state"] == "ended"
        assert abs(_ts(report["ended_at"]) - job["time"]["end"]) <= INTERVAL_S
        assert abs(_ts(scheduler["started_at"]) - job["time"]["start"]) <= INTERVAL_S
        gpus = _alloc_gpus(job)
        assert scheduler["alloc_gpus"] == gpus == report["gpus"]
        expected_gpu_s = gpus * job["time"]["elapsed"]
        assert abs(report["gpu_hours"] * 3600 - expected_gpu_s) <= (INTERVAL_S + SLURM_RESOLUTION_S) * gpus, (
            f"{kind} {raw}: gpuledger {report['gpu_hours'] * 3600:.1f} GPU-s, sacct {expected_gpu_s} GPU-s")
        # The simulated GPUs run the job from the first whole second after its mapping appears.
        busy_share = report["busy_gpu_hours"] / report["gpu_hours"]
        assert MAPPED_UTILIZATION * 0.95 * (1 - 1.5 / job["time"]["elapsed"]) <= busy_share <= MAPPED_UTILIZATION * 1.05
        print(f"SLURM {kind:<10} {raw:>3}: {gpus} GPUs, sacct {expected_gpu_s:5.0f} GPU-s, gpuledger "
              f"{report['gpu_hours'] * 3600:7.1f} GPU-s, end {_ts(report['ended_at']) - job['time']['end']:+.1f} s, "
              f"data end {_ts(report['last_seen_at']) - job['time']['end']:+.1f} s, busy {busy_share:.0%}")
        text = _output(ran, kind, job).read_text()
        assert text.endswith(FOOTER + "\n"), text[-600:]
        block = text[text.rindex(HEADER):]
        assert f"Job:             {CLUSTER}/{raw} ({kind})" in block
        assert f"Report:          {ran.cluster.server.url}/jobs/{CLUSTER}/{raw}" in block


def test_array_tasks_carry_their_array_ids(ran: Ran) -> None:
    tasks = ran.jobs("array")
    assert sorted(j["array"]["task_id"] for j in tasks) == [0, 1]
    for job in tasks:
        scheduler = ran.cluster.report(str(job["job_id"]))["scheduler"]
        assert (scheduler["array_job_id"], scheduler["array_task_id"]) == (ran.ids["array"], str(job["array"]["task_id"]))


@pytest.mark.parametrize(("kind", "state", "exit_code"), [("failing", "FAILED", "3:0"), ("cancelled", "CANCELLED", "0:15"),
                                                           ("single-gpu", "COMPLETED", "0:0")])
def test_final_state_from_the_epilog(ran: Ran, kind: str, state: str, exit_code: str) -> None:
    (job,) = ran.jobs(kind)
    assert job["state"]["current"].startswith(state)  # sacct agrees
    scheduler = ran.cluster.report(str(job["job_id"]))["scheduler"]
    assert (scheduler["state"], scheduler["exit_code"]) == (state, exit_code)
    block = _output(ran, kind, job).read_text().rsplit(HEADER, 1)[1]
    assert f"State:           {state}, exit code {exit_code}" in block


def test_steps_are_one_job(ran: Ran) -> None:
    (job,) = ran.jobs("step")
    assert [s["step"]["name"] for s in job["steps"] if s["step"]["name"] == "sleep"] == ["sleep", "sleep"]
    listed = httpx.get(f"{ran.cluster.server.url}/v1/jobs", params={"limit": 500}, headers=ran.cluster.auth, timeout=10).json()
    assert not [item["job_id"] for item in listed["items"] if "." in item["job_id"].split("/", 1)[1]]  # no step is a job


def test_reconcile_with_sacct(ran: Ran, tmp_path: Path) -> None:
    ids = ",".join(ran.ids.values())
    sources = {
        "sacct.json": ran.cluster.run("sacct", "--json", "-j", ids),
        "sacct.txt": ran.cluster.run("sacct", "-P", "-X", "-j", ids, "--format=JobIDRaw,JobID,Cluster,User,Account,"
                                     "Partition,State,Start,End,ElapsedRaw,AllocTRES,NodeList")
        + f"999999|999999|{CLUSTER}|root|nlp|gpu|COMPLETED|2026-01-01T00:00:00|2026-01-01T01:00:00|3600|gres/gpu=4|gpunode1\n",
    }
    expected = {str(j["job_id"]): _alloc_gpus(j) * j["time"]["elapsed"] / 3600 for j in ran.sacct}
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
        result = subprocess.run(
            [sys.executable, "-m", "api.cli.main", "reconcile", "--sacct", str(tmp_path / name), "--server", ran.cluster.server.url,
             "--token", ran.cluster.admin_token, "--tolerance-s", str(INTERVAL_S + SLURM_RESOLUTION_S), "--format", "json"],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        rows = {row["job_id_raw"]: row for row in json.loads(result.stdout)}
        for raw, gpu_hours in expected.items():
            assert rows[raw]["sacct_gpu_hours"] == pytest.approx(gpu_hours)
            assert rows[raw]["gpuledger_gpu_hours"] == pytest.approx(ran.cluster.report(raw)["gpu_hours"])
            assert rows[raw]["cause"] == "ok", rows[raw]
        if name == "sacct.txt":
            assert rows["999999"]["gpuledger_gpu_hours"] is None
            assert rows["999999"]["cause"].startswith("outside gpuledger's records"), rows["999999"]
        else:
            assert set(rows) == set(expected)


def test_summary_command_prints_and_appends_the_final_figures(ran: Ran, tmp_path: Path) -> None:
    (job,) = ran.jobs("single-gpu")
    report = ran.cluster.report(str(job["job_id"]))
    target = tmp_path / "job.out"
    target.write_text("done\n")
    for extra in ((), ("--append", str(target))):
        result = subprocess.run(
            [sys.executable, "-m", "api.cli.main", "summary", f"{CLUSTER}/{job['job_id']}", "--server", ran.cluster.server.url,
             "--token", ran.cluster.admin_token, *extra], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        text = target.read_text().split("done\n\n", 1)[1] if extra else result.stdout
        assert text.startswith(HEADER) and text.endswith(FOOTER + "\n")
        assert f"GPU-hours:       {report['gpu_hours']:.4f}\n" in text
        assert f"Cost:            ${report['cost_usd']:.2f}\n" in text
    missing = subprocess.run([sys.executable, "-m", "api.cli.main", "summary", f"{CLUSTER}/999999", "--server",
                              ran.cluster.server.url, "--token", ran.cluster.admin_token], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2  # every CLI failure, as api.cli.client
    assert f"gpuledger summary: error: 404: job_id '{CLUSTER}/999999' not found" in missing.stderr
