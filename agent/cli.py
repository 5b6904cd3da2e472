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
from agent.state import host_boot_id
from agent.statedir import FallbackStore, SafeCounterState, StateHealth, default_state_dir

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


def _state(state_dir: Path | None, spool_max_mb: float) -> tuple[Any, SafeCounterState | None, StateHealth | None]:
    """The spool and counter state in ``state_dir``; a directory that cannot be written degrades to memory."""
    if state_dir is None:
        return None, None, None
    health = StateHealth(state_dir)
    state = SafeCounterState(state_dir / "counters.json", health)
    try:
        return FallbackStore(Spool(state_dir / "spool", max_bytes=int(spool_max_mb * 1024**2)), health), state, health
    except OSError as exc:
        health.failed("open the spool", exc)
        return None, state, health


def _kubernetes(node: str, socket_path: Path, *options: Any) -> Any:
    """The pod-resources source; grpc is imported only here, when it is asked for."""
    from agent.kubernetes.setup import KubeConfigError, kubernetes_source

    try:
        return kubernetes_source(node, socket_path, *options)
    except KubeConfigError as exc:
        _fail(str(exc))


def _owner_sources(job_mapping_dir: Path | None, kube: OwnerSource | None, proc_root: Path | None) -> list[OwnerSource]:
    """DESIGN.md's order: the job-mapping dir, the kubelet's pod-resources, /proc; each optional."""
    sources: list[OwnerSource] = []
    if job_mapping_dir is not None:
        sources.append(JobMappingDir(job_mapping_dir))
    if kube is not None:
        sources.append(kube)
    if proc_root is not None:
        sources.append(ProcessOwners(proc_root))
    return sources


def agent_command(
    collector: Annotated[str, typer.Option(envvar="GPULEDGER_COLLECTOR", help="Collector base URL.")] = "http://127.0.0.1:8080",
    token: Annotated[str | None, typer.Option(envvar="GPULEDGER_TOKEN", help="This node's token (`gpuledger token create --node NAME`).")] = None,
    node: Annotated[str | None, typer.Option(envvar="GPULEDGER_NODE", help="Node name \\[default: hostname].")] = None,
    cluster: Annotated[str | None, typer.Option(envvar="GPULEDGER_CLUSTER", help="Cluster label; job ids are cluster-scoped \\[default: 'default', or the spec's].")] = None,
    datacenter: Annotated[str | None, typer.Option(envvar="GPULEDGER_DATACENTER", help="Datacenter label, used for PUE and grid intensity \\[default: 'default', or the spec's].")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 1.0,
    push_interval: Annotated[float, typer.Option(help="Seconds between batches sent to the collector.")] = 10.0,
    job_mapping_dir: Annotated[Path | None, typer.Option(envvar="GPULEDGER_JOB_MAPPING_DIR", help="dcgm-exporter style job-mapping directory (one file per GPU index).")] = None,
    pod_resources_socket: Annotated[Path | None, typer.Option(
        envvar="GPULEDGER_POD_RESOURCES_SOCKET",
        help="Kubernetes: the kubelet's pod-resources socket (/var/lib/kubelet/pod-resources/kubelet.sock): GPUs to pods, "
             "asked after the job-mapping dir and before /proc. Needs gpuledger[kubernetes].")] = None,
    kube_pods: Annotated[str, typer.Option(
        envvar="GPULEDGER_KUBE_PODS",
        help="Where pod labels are read: 'apiserver' (in-cluster service account), 'apiserver=URL', "
             "the kubelet's /pods URL (read-only port), or 'none'.")] = "apiserver",
    kube_owner_label: Annotated[list[str] | None, typer.Option(
        envvar="GPULEDGER_KUBE_OWNER_LABEL",
        help="Pod label naming the training job, in order (repeat the option) [default: training.kubeflow.org/job-name, "
             "jobset.sigs.k8s.io/jobset-name, ray.io/cluster]; then the owning Job, then the pod itself.")] = None,
    kube_account: Annotated[str, typer.Option(
        envvar="GPULEDGER_KUBE_ACCOUNT",
        help="A Kubernetes job's account: 'namespace', 'label:KEY' (pod label) or 'namespace-label:KEY'; "
             "a missing label falls back to the namespace.")] = "namespace",
    kube_pods_refresh: Annotated[float, typer.Option(
        envvar="GPULEDGER_KUBE_PODS_REFRESH",
        help="Seconds between pod-list reads (a pod not yet known is looked up sooner).")] = 10.0,
    kube_token_file: Annotated[Path | None, typer.Option(
        envvar="GPULEDGER_KUBE_TOKEN_FILE",
        help="Bearer token for --kube-pods apiserver=URL or an authenticated kubelet.")] = None,
    proc_attribution: Annotated[bool, typer.Option(
        help="Attribute GPUs through the processes on them (/proc environ and cgroup).")] = True,
    proc_root: Annotated[Path, typer.Option(help="Root of the host's /proc (the agent must see host PIDs).")] = Path("/proc"),
    sysfs_root: Annotated[Path, typer.Option(help="Root of the host's /sys, for RoCE/InfiniBand port counters.")] = Path("/sys"),
    state_dir: Annotated[Path | None, typer.Option(envvar="GPULEDGER_STATE_DIR", help="Disk spool of unacknowledged batches and the last counter readings (survives restarts) [default: /var/lib/gpuledger-agent when writable, else $XDG_STATE_HOME/gpuledger-agent; with --simulate: none, memory only].")] = None,
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
    kube = None
    if pod_resources_socket is not None:
        kube = _kubernetes(node, pod_resources_socket, kube_pods, kube_owner_label or (), kube_account,
                           kube_pods_refresh, kube_token_file)
    sources = _owner_sources(job_mapping_dir, kube, proc_root if proc_attribution else None)
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
        ports: PortSource
        if not spec.node(node).nics and sysfs_root != Path("/sys"):  # simulated GPUs, a given (e.g. recorded) port tree
            ports = RdmaPorts(sysfs_root)
        else:
            ports = SimulatedPorts(spec, node, clock, sim.epoch_s)
        cluster, datacenter = cluster or spec.cluster, datacenter or spec.node(node).datacenter or spec.datacenter
    else:
        source = NvmlSource()
        ports = RdmaPorts(sysfs_root, slow_every=max(1, round(push_interval / interval)))  # error counters once a push
    labels = NodeLabels(node, cluster or "default", datacenter or "default")
    try:
        source.open()  # NVML first: a node without it gets one line, and no state directory
    except NvmlUnavailable as exc:
        _fail(str(exc))
    if state_dir is None and simulate is None:
        state_dir = default_state_dir()
    store, state, health = _state(state_dir, spool_max_mb)
    try:
        agent = Agent(
            source, Attributor(sources), Pusher(collector, client=_client(token), store=store), labels, clock, interval, push_interval,
            simulated=simulate is not None, ports=ports, state=state, epoch=host_boot_id(proc_root), state_health=health,
        )
    except NvmlUnavailable as exc:
        _fail(str(exc))
    if kube is not None:
        kube.bind(agent.gpus)  # device ids in pod-resources are GPU UUIDs
    metrics_server = _serve_metrics(agent, metrics_address, metrics_port) if metrics_port else None
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop())
    log.info(
        "node %s (cluster %s, datacenter %s): %d GPUs, %d RDMA ports, sampling every %gs, pushing to %s every %gs, state in %s",
        labels.node, labels.cluster, labels.datacenter, len(agent.gpus), len(ports.read()), interval, collector, push_interval,
        state_dir or "memory only",
    )
    try:
        agent.run()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        if isinstance(ports, SimulatedPorts):
            ports.close()  # its private sysfs tree
    sys.exit(0)
