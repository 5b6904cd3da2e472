"""``gpuledger agent``: the daemon on every GPU node. Imports nothing from the server side."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from prometheus_client import start_http_server

from agent.attribution import Attributor, JobMappingDir, OwnerSource, ProcessOwners
from agent.clock import WallClock
from agent.exporter import DEFAULT_PORT, agent_registry
from agent.gpu import GpuSource
from agent.loop import Agent, NodeLabels, PortSource
from agent.nvml import NvmlSource, NvmlUnavailable
from agent.push import Pusher
from agent.roce import RdmaPorts
from agent.sim.nics import SimulatedPorts
from agent.sim.spec import SpecError, load_spec
from agent.spool import Spool
from agent.state import CounterState, host_boot_id

log = logging.getLogger("gpuledger.agent")


def _fail(message: str) -> None:
    typer.echo(f"gpuledger agent: error: {message}", err=True)
    raise typer.Exit(2)


def _client(token: str | None) -> httpx.Client:
    return httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {token}"} if token else {})


def _serve_metrics(agent: Agent, address: str, port: int) -> Any:
    """Serve /metrics; a port in use costs the metrics, never the accounting."""
    try:
        server, _thread = start_http_server(port, address, registry=agent_registry(agent))
    except OSError as exc:
        log.error("--metrics-port %d: cannot listen on %s:%d (%s); running without /metrics "
                  "(pick a free port, or 0 to turn it off)", port, address, port, exc.strerror)
        return None
    log.info("Prometheus metrics on http://%s:%d/metrics", address, port)
    return server


def agent_command(
    collector: Annotated[str, typer.Option(envvar="GPULEDGER_COLLECTOR", help="Collector base URL.")] = "http://127.0.0.1:8080",
    token: Annotated[str | None, typer.Option(envvar="GPULEDGER_TOKEN", help="This node's token (`gpuledger token create --node NAME`).")] = None,
    node: Annotated[str | None, typer.Option(envvar="GPULEDGER_NODE", help="Node name \\[default: hostname].")] = None,
    cluster: Annotated[str | None, typer.Option(envvar="GPULEDGER_CLUSTER", help="Cluster label; job ids are cluster-scoped \\[default: 'default', or the spec's].")] = None,
    datacenter: Annotated[str | None, typer.Option(envvar="GPULEDGER_DATACENTER", help="Datacenter label, used for PUE and grid intensity \\[default: 'default', or the spec's].")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 1.0,
    push_interval: Annotated[float, typer.Option(help="Seconds between batches sent to the collector.")] = 10.0,
    job_mapping_dir: Annotated[Path | None, typer.Option(envvar="GPULEDGER_JOB_MAPPING_DIR", help="dcgm-exporter style job-mapping directory (one file per GPU index).")] = None,
    proc_root: Annotated[Path, typer.Option(help="Root of the host's /proc (the agent must see host PIDs).")] = Path("/proc"),
    sysfs_root: Annotated[Path, typer.Option(help="Root of the host's /sys, for RoCE/InfiniBand port counters.")] = Path("/sys"),
    state_dir: Annotated[Path | None, typer.Option(envvar="GPULEDGER_STATE_DIR", help="Disk spool of unacknowledged batches and the last counter readings (survives restarts); without it batches wait in memory only.")] = None,
    spool_max_mb: Annotated[float, typer.Option(help="Spool size at which its oldest batches are merged into coarser ones (nothing is dropped).")] = 256.0,
    simulate: Annotated[Path | None, typer.Option(help="Simulate the node from this TOML spec instead of reading NVML.")] = None,
    sim_epoch: Annotated[float | None, typer.Option(help="Unix time the simulation's offsets count from \\[default: now].")] = None,
    metrics_port: Annotated[int, typer.Option(envvar="GPULEDGER_METRICS_PORT", help="Port of the agent's Prometheus /metrics; 0 turns it off.")] = DEFAULT_PORT,
    metrics_address: Annotated[str, typer.Option(envvar="GPULEDGER_METRICS_ADDRESS", help="Address /metrics listens on.")] = "0.0.0.0",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Sample this node's GPUs and push per-job intervals to the collector."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per push is noise
    if interval <= 0:
        _fail(f"--interval {interval}: expected a number of seconds > 0")
    if push_interval < interval:
        _fail(f"--push-interval {push_interval}: expected >= --interval ({interval})")
    node = node or socket.gethostname()
    clock = WallClock()
    sources: list[OwnerSource] = []
    if job_mapping_dir is not None:
        sources.append(JobMappingDir(job_mapping_dir))
    sources.append(ProcessOwners(proc_root))
    source: GpuSource
    if simulate is not None:
        from agent.sim.node import SimulatedNode, announce

        try:
            spec = load_spec(simulate)
            follow = JobMappingDir(job_mapping_dir) if job_mapping_dir is not None else None  # run the scheduler's jobs
            sim = SimulatedNode(spec, node, clock, sim_epoch if sim_epoch is not None else time.time(), follow)
        except SpecError as exc:
            _fail(str(exc))
        announce()
        source = NvmlSource(sim.nvml)
        sources.append(sim)
        ports: PortSource = SimulatedPorts(spec, node, clock, sim.epoch_s)
        cluster, datacenter = cluster or spec.cluster, datacenter or spec.node(node).datacenter or spec.datacenter
    else:
        source = NvmlSource()
        ports = RdmaPorts(sysfs_root)
    labels = NodeLabels(node, cluster or "default", datacenter or "default")
    store, state = None, None
    if state_dir is not None:
        try:
            store = Spool(state_dir / "spool", max_bytes=int(spool_max_mb * 1024**2))
            state = CounterState(state_dir / "counters.json")
        except OSError as exc:
            _fail(f"--state-dir {str(state_dir)!r}: {exc}")
    try:
        agent = Agent(
            source, Attributor(sources), Pusher(collector, client=_client(token), store=store), labels, clock, interval, push_interval,
            simulated=simulate is not None, ports=ports, state=state, epoch=host_boot_id(proc_root),
        )
    except NvmlUnavailable as exc:
        _fail(str(exc))
    metrics_server = _serve_metrics(agent, metrics_address, metrics_port) if metrics_port else None
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop())
    log.info(
        "node %s (cluster %s, datacenter %s): %d GPUs, %d RDMA ports, sampling every %gs, pushing to %s every %gs",
        labels.node, labels.cluster, labels.datacenter, len(agent.gpus), len(ports.read()), interval, collector, push_interval,
    )
    try:
        agent.run()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        if isinstance(ports, SimulatedPorts):
            ports.close()  # its private sysfs tree
    sys.exit(0)
