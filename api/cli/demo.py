"""``gpuledger demo``: a server on SQLite and four simulated agents, one process group."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import httpx

from agent.sim.node import BANNER
from agent.sim.spec import load_spec


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


TRAINING_JOB, STEPS_PER_S, TOTAL_STEPS = "demo/1001", 2.0, 7200.0  # a one-hour run reporting its steps


def _report_progress(url: str, epoch_s: float) -> None:
    """What a training loop would do: tell the ledger how far it is, for the forecast."""
    steps = min((time.time() - epoch_s) * STEPS_PER_S, TOTAL_STEPS)
    httpx.post(f"{url}/v1/progress/{TRAINING_JOB}", json={"steps_done": steps, "total_steps": TOTAL_STEPS}, timeout=5.0)


def _table(url: str) -> str:
    jobs = httpx.get(f"{url}/v1/jobs", timeout=5.0).json()["items"]
    lines = [f"{'job':<20} {'state':<8} {'gpus':>4} {'GPU-h':>9} {'kWh':>9} {'USD':>9} {'kgCO2e':>8}  forecast"]
    for j in jobs:
        budget = j["budget"]
        forecast = "" if budget["forecast_cost_usd"] is None else f"${budget['forecast_cost_usd']:.2f} ({budget['forecast_method']})"
        if budget["budget_usd"] is not None:
            forecast += f" of ${budget['budget_usd']:.0f} budget" + (" OVER" if budget["forecast_over_budget"] else "")
        lines.append(
            f"{j['job_id']:<20} {j['state']:<8} {j['gpus']:>4} {j['gpu_hours']:>9.3f} "
            f"{j['energy_kwh']:>9.3f} {j['cost_usd']:>9.2f} {j['co2e_kg']:>8.3f}  {forecast}"
        )
    return "\n".join(lines)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(port: int, workdir: Path, metrics_port: int = 9410) -> int:
    url = f"http://127.0.0.1:{port}"
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`demo &`)
    signal.signal(signal.SIGTERM, _interrupt)
    if not _port_free(port):
        print(f"gpuledger demo: error: port {port} is in use; try `gpuledger demo --port {port + 10}`", file=sys.stderr)
        return 2
    spec_path, config_path = files("api.cli") / "demo_cluster.toml", files("api.cli") / "demo_config.toml"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    cli = [sys.executable, "-m", "api.cli.main"]
    children = [subprocess.Popen([*cli, "server", "--db", f"sqlite:///{workdir / 'demo.db'}",
                                  "--config", str(config_path), "--port", str(port), "--log-level", "warning"])]
    try:
        if not _wait_healthy(url, children[0]):
            print("gpuledger demo: error: the server did not start; see its output above", file=sys.stderr)
            return 1
        epoch = f"{time.time():.0f}"
        nodes = load_spec(str(spec_path)).nodes
        agent_ports = [metrics_port + n if metrics_port else 0 for n in range(len(nodes))]
        for node, agent_port in zip(nodes, agent_ports, strict=True):
            children.append(subprocess.Popen(
                [*cli, "agent", "--simulate", str(spec_path), "--node", node.name, "--collector", url,
                 "--push-interval", "2", "--sim-epoch", epoch, "--log-level", "warning",
                 "--state-dir", str(workdir / f"agent-{node.name}"),
                 "--metrics-address", "127.0.0.1", "--metrics-port", str(agent_port)],
                stderr=subprocess.DEVNULL,
            ))
        print(f"\n{BANNER}\n")
        print(f"gpuledger demo is running ({len(children) - 1} simulated nodes; data in {workdir}/demo.db)")
        print(f"  Open {url}/ in a browser: the jobs, live; click one for its charts.")
        print(f"  jobs (API):  {url}/v1/jobs")
        print(f"  one job:     {url}/v1/jobs/demo/1001")
        print(f"  model card:  .venv/bin/gpuledger report demo/1001 --convention tdp --server {url}")
        print(f"  showback:    {url}/v1/usage?group_by=account")
        print(f"  API docs:    {url}/docs")
        print(f"  health:      {url}/healthz")
        print(f"  Prometheus:  {url}/metrics" + (f" and the agents' http://127.0.0.1:{agent_ports[0]}-{agent_ports[-1]}/metrics"
                                                  if metrics_port else ""))
        print(f"  in a shell:  .venv/bin/gpuledger report demo/1001 --server {url}")
        print("Ctrl-C stops everything.\n", flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(10)
            try:
                _report_progress(url, float(epoch))
                print(f"--- {time.strftime('%H:%M:%S')}\n{_table(url)}", flush=True)
            except (httpx.HTTPError, KeyError):
                pass
        print("gpuledger demo: a process stopped unexpectedly; shutting down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the demo…")
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
