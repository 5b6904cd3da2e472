"""The simulated cluster's specification, read from TOML.

```toml
seed = 7
cluster = "demo"
datacenter = "dc-east"

[[nodes]]
name = "node-1"
gpu_count = 8
model = "NVIDIA H100 80GB HBM3"
idle_w = 70.0
busy_w = 650.0
tdp_w = 700.0
memory_gib = 80
energy_counter = true        # false: a GPU without NVML's energy counter
nics = 8                     # RoCE ports (ConnectX-7 style sysfs counters); 0: none
nic_rate_gbps = 400.0
mapped_utilization = 0.9     # with --job-mapping-dir: a GPU the scheduler's mapping names runs at this

[[jobs]]
id = "1001"
name = "llama-70b-pretrain"
user = "alice"
account = "nlp"
nodes = ["node-1", "node-2"]
gpus = [0, 1, 2, 3, 4, 5, 6, 7]   # GPU indices used on each of those nodes
start_s = 0                       # offsets from the simulation's epoch
end_s = 7200                      # omitted: runs until the simulation stops
utilization = 0.93
network_gbps = 120.0              # per node and direction, spread over the node's NICs
cnp_per_s = 40.0                  # congestion notifications per node and second
retrans_per_gb = 0.2              # RoCE retransmissions per GB sent
budget_usd = 500.0                # as GPULEDGER_BUDGET_USD in the job's environment

[[events]]                        # quirks of real hardware, on a schedule
kind = "counter_reset"            # GPU energy counter reset; or "gpu_lost" (with gpu)
node = "node-1"                   # or "link_down" (with nic, optional until_s)
gpu = 3
at_s = 600
```
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SpecError(ValueError):
    """The specification is invalid; the message names the field and the value."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    gpu_count: int
    model: str
    idle_w: float
    busy_w: float
    tdp_w: float
    memory_bytes: int
    energy_counter: bool = True
    datacenter: str | None = None
    nics: int = 0
    nic_rate_gbps: float = 400.0
    mapped_utilization: float = 0.9


@dataclass(frozen=True, slots=True)
class JobSpec:
    id: str
    nodes: tuple[str, ...]
    gpus: tuple[int, ...]
    start_s: float
    end_s: float  # math.inf: until the simulation stops
    utilization: float
    name: str | None = None
    user: str | None = None
    account: str | None = None
    network_gbps: float = 0.0
    cnp_per_s: float = 0.0
    retrans_per_gb: float = 0.0
    budget_usd: float | None = None
    release: str | None = None  # as GPULEDGER_RELEASE in the job's environment


@dataclass(frozen=True, slots=True)
class EventSpec:
    kind: str
    node: str
    gpu: int  # the GPU, or for link_down the NIC
    at_s: float
    until_s: float = math.inf


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    seed: int
    cluster: str
    datacenter: str
    nodes: tuple[NodeSpec, ...]
    jobs: tuple[JobSpec, ...] = ()
    events: tuple[EventSpec, ...] = field(default=())

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise SpecError(f"node {name!r} is not in the simulation spec (nodes: {known})")


def _get(table: dict[str, Any], where: str, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise SpecError(f"{where}.{key} is missing")
        return default
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SpecError(f"{where}.{key} = {value!r}: expected {getattr(kind, '__name__', kind)}")
    return value


def _number(table: dict[str, Any], where: str, key: str, default: Any = ..., low: float = 0.0) -> float:
    value = float(_get(table, where, key, (int, float), default))
    if not math.isfinite(value) or value < low:
        raise SpecError(f"{where}.{key} = {value!r}: expected a finite number >= {low}")
    return value


def _fraction(table: dict[str, Any], where: str, key: str, default: float) -> float:
    value = _number(table, where, key, default)
    if value > 1:
        raise SpecError(f"{where}.{key} = {value}: expected a fraction between 0 and 1")
    return value


def _node(table: dict[str, Any], where: str) -> NodeSpec:
    idle_w = _number(table, where, "idle_w")
    busy_w = _number(table, where, "busy_w")
    if busy_w < idle_w:
        raise SpecError(f"{where}.busy_w = {busy_w}: expected >= idle_w ({idle_w})")
    return NodeSpec(
        name=_get(table, where, "name", str),
        gpu_count=int(_number(table, where, "gpu_count", low=1)),
        model=_get(table, where, "model", str),
        idle_w=idle_w,
        busy_w=busy_w,
        tdp_w=_number(table, where, "tdp_w", busy_w),
        memory_bytes=int(_number(table, where, "memory_gib", 80) * 1024**3),
        energy_counter=_get(table, where, "energy_counter", bool, True),
        datacenter=_get(table, where, "datacenter", str, None),
        nics=int(_number(table, where, "nics", 0)),
        nic_rate_gbps=_number(table, where, "nic_rate_gbps", 400.0),
        mapped_utilization=_fraction(table, where, "mapped_utilization", 0.9),
    )


def _job(table: dict[str, Any], where: str, nodes: dict[str, NodeSpec]) -> JobSpec:
    job_nodes = tuple(_get(table, where, "nodes", list))
    gpus = tuple(_get(table, where, "gpus", list))
    for name in job_nodes:
        if name not in nodes:
            raise SpecError(f"{where}.nodes: {name!r} is not a node of the spec")
        for gpu in gpus:
            if not isinstance(gpu, int) or not 0 <= gpu < nodes[name].gpu_count:
                raise SpecError(f"{where}.gpus: {gpu!r} is not a GPU index of node {name!r}")
    start_s = _number(table, where, "start_s", 0.0)
    end_s = _number(table, where, "end_s") if "end_s" in table else math.inf
    if end_s <= start_s:
        raise SpecError(f"{where}.end_s = {end_s}: expected > start_s ({start_s})")
    utilization = _fraction(table, where, "utilization", 0.9)
    return JobSpec(
        id=str(_get(table, where, "id", (str, int))),
        nodes=job_nodes,
        gpus=gpus,
        start_s=start_s,
        end_s=end_s,
        utilization=utilization,
        name=_get(table, where, "name", str, None),
        user=_get(table, where, "user", str, None),
        account=_get(table, where, "account", str, None),
        network_gbps=_number(table, where, "network_gbps", 0.0),
        cnp_per_s=_number(table, where, "cnp_per_s", 0.0),
        retrans_per_gb=_number(table, where, "retrans_per_gb", 0.0),
        budget_usd=_number(table, where, "budget_usd") if "budget_usd" in table else None,
        release=_get(table, where, "release", str, None),
    )


def _event(table: dict[str, Any], where: str, nodes: dict[str, NodeSpec]) -> EventSpec:
    kind = _get(table, where, "kind", str)
    if kind not in ("counter_reset", "gpu_lost", "link_down"):
        raise SpecError(f"{where}.kind = {kind!r}: expected 'counter_reset', 'gpu_lost' or 'link_down'")
    node = _get(table, where, "node", str)
    if node not in nodes:
        raise SpecError(f"{where}.node: {node!r} is not a node of the spec")
    field, count = ("nic", nodes[node].nics) if kind == "link_down" else ("gpu", nodes[node].gpu_count)
    index = _get(table, where, field, int)
    if not 0 <= index < count:
        raise SpecError(f"{where}.{field} = {index}: not a {field.upper()} index of node {node!r}")
    at_s = _number(table, where, "at_s")
    until_s = _number(table, where, "until_s") if "until_s" in table else math.inf
    if until_s <= at_s:
        raise SpecError(f"{where}.until_s = {until_s}: expected > at_s ({at_s})")
    return EventSpec(kind, node, index, at_s, until_s)


def parse_spec(data: dict[str, Any]) -> ClusterSpec:
    raw_nodes = _get(data, "spec", "nodes", list)
    nodes = {}
    for i, table in enumerate(raw_nodes):
        node = _node(table, f"nodes[{i}]")
        if node.name in nodes:
            raise SpecError(f"nodes[{i}].name = {node.name!r}: duplicate node name")
        nodes[node.name] = node
    jobs = tuple(_job(t, f"jobs[{i}]", nodes) for i, t in enumerate(_get(data, "spec", "jobs", list, [])))
    events = tuple(_event(t, f"events[{i}]", nodes) for i, t in enumerate(_get(data, "spec", "events", list, [])))
    return ClusterSpec(
        seed=int(_get(data, "spec", "seed", int, 0)),
        cluster=_get(data, "spec", "cluster", str, "sim"),
        datacenter=_get(data, "spec", "datacenter", str, "default"),
        nodes=tuple(nodes.values()),
        jobs=jobs,
        events=events,
    )


def load_spec(path: str | Path) -> ClusterSpec:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise SpecError(f"simulation spec {str(path)!r} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"simulation spec {str(path)!r} is not valid TOML: {exc}") from exc
    return parse_spec(data)
