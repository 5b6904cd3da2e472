"""Run the agent against the real NVML while a PyTorch job runs with GPULEDGER_JOB_ID set.

    python3 tests/gpu/real_gpu_check.py [--seconds 60] [--out DIR]

Starts `gpuledger server` (SQLite) and `gpuledger agent` (real NVML), runs
tests/gpu/matmul_job.py on GPU 0 as job `matmul-1`, then prints the energy the agent
attributed to the job beside the NVML counter deltas read independently, and the agent's
CPU time and peak RSS. Needs a machine with an NVIDIA GPU, PyTorch and the package's
dependencies on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pynvml

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def power_fields(handle) -> str:  # noqa: ANN001
    """NVML_FI_DEV_POWER_AVERAGE and _INSTANT as the agent reads them (mW), to compare with the getter."""
    values = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_AVERAGE, pynvml.NVML_FI_DEV_POWER_INSTANT])
    return ", ".join(f"{name} {v.value.uiVal if v.nvmlReturn == 0 else 'error ' + str(v.nvmlReturn)}"
                     for name, v in zip(("average", "instant"), values, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill-agent-after", type=float, default=0.0, help="SIGKILL the agent this many seconds into the job, restart it 5 s later.")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpuledger-gpu-check")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "api.cli.main"]
    url = "http://127.0.0.1:18080"
    server = subprocess.Popen([*cli, "server", "--db", f"sqlite:///{args.out}/ledger.db", "--port", "18080",
                               "--log-level", "warning"], stdout=(args.out / "server.log").open("w"), stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gpu_uuid = pynvml.nvmlDeviceGetUUID(handle)
    before_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    agent_cmd = [*cli, "agent", "--collector", url, "--cluster", "gpu", "--node", "gpu-node", "--push-interval", "5",
                 "--state-dir", "/tmp/gpuledger-agent-state"]
    agent_log = (args.out / "agent.log").open("a")
    agent = subprocess.Popen(agent_cmd, stdout=agent_log, stderr=subprocess.STDOUT)
    time.sleep(4)
    env = {**os.environ, "GPULEDGER_JOB_ID": "matmul-1", "GPULEDGER_JOB_NAME": "bf16-matmul", "GPULEDGER_JOB_ACCOUNT": "bench"}
    job_proc = subprocess.Popen([sys.executable, str(REPO / "tests/gpu/matmul_job.py"), "--seconds", str(args.seconds)],
                                env=env, stdout=subprocess.PIPE, text=True)
    if args.kill_agent_after > 0:  # the agent dies mid-job and comes back: the counters must bridge the gap
        time.sleep(args.kill_agent_after)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        time.sleep(5)
        agent = subprocess.Popen(agent_cmd, stdout=agent_log, stderr=subprocess.STDOUT)
    agent_started = time.monotonic()
    time.sleep(4)
    steady_from = (cpu_seconds(agent.pid), time.monotonic())
    job = json.loads(job_proc.communicate(timeout=args.seconds + 120)[0])
    time.sleep(4)
    agent_cpu_s, agent_rss_mb, agent_wall_s = cpu_seconds(agent.pid), peak_rss_mb(agent.pid), time.monotonic() - agent_started
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    after_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    time.sleep(1)
    jobs = httpx.get(f"{url}/v1/jobs", timeout=10).json()["items"]
    report = httpx.get(f"{url}/v1/jobs/gpu/matmul-1", timeout=10).json()
    server.terminate()
    server.wait(timeout=30)

    (args.out / "report.json").write_text(json.dumps({"job": job, "report": report, "jobs": jobs}, indent=2, default=str))
    agent_total_j = sum(j["energy_kwh"] for j in jobs) * 3.6e6
    counter_total_j = (after_mj - before_mj) / 1000
    job_j = report["energy_kwh"] * 3.6e6
    busy_s = job["end_s"] - job["start_s"]
    print(f"GPU 0: {pynvml.nvmlDeviceGetName(handle)} {gpu_uuid}, driver {pynvml.nvmlSystemGetDriverVersion()}")
    print(f"  power: nvmlDeviceGetPowerUsage {pynvml.nvmlDeviceGetPowerUsage(handle)} mW; field values (the agent's "
          f"read) {power_fields(handle)}")
    print(f"job matmul-1: {job['matmuls']} bf16 matmuls in {busy_s:.1f} s ({job['tflops']:.0f} TFLOP/s), pid {job['pid']}")
    print(f"  agent-attributed energy  {job_j:12.1f} J   {report['gpu_hours'] * 3600:8.1f} GPU-s   "
          f"method counter fraction {report['energy_measured_fraction']}")
    print(f"  NVML counter, job window {job['counter_delta_j']:12.1f} J   {busy_s:8.1f} s   "
          f"ratio {job_j / job['counter_delta_j']:.4f}")
    print(f"  all jobs + unallocated   {agent_total_j:12.1f} J  vs NVML counter over the agent's life "
          f"{counter_total_j:.1f} J, ratio {agent_total_j / counter_total_j:.4f}")
    print(f"  job report: user={report['user']} name={report['name']} account={report['account']} "
          f"cost_usd={report['cost_usd']:.4f} co2e_kg={report['co2e_kg']:.5f}")
    steady_pct = 100 * (agent_cpu_s - steady_from[0]) / (agent_started + agent_wall_s - steady_from[1])
    if args.kill_agent_after > 0:
        print(f"agent SIGKILLed {args.kill_agent_after:g} s into the job and restarted 5 s later (CPU below: the restarted agent)")
    print(f"agent: {agent_cpu_s:.2f} CPU-s over {agent_wall_s:.1f} s wall = {100 * agent_cpu_s / agent_wall_s:.2f} % "
          f"of one core with start-up, {steady_pct:.2f} % after it; peak RSS {agent_rss_mb:.1f} MB")


if __name__ == "__main__":
    main()
