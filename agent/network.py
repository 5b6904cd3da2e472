"""Cut RoCE port deltas into per-job network intervals between two pushes.

The node's traffic (summed over its ports) is shared among the jobs on the node by their
share of its GPUs, the unallocated share going to nobody. A node wholly owned by one job
gives that job everything; on a shared node the bytes are apportioned, and marked so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from agent.attribution import Owners
from agent.roce import PortReading, link_up, port_deltas

# Wire name -> the port counters summed into it.
NETWORK_COUNTERS: dict[str, tuple[str, ...]] = {
    "tx_bytes": ("tx_bytes",),
    "rx_bytes": ("rx_bytes",),
    "tx_packets": ("tx_packets",),
    "rx_packets": ("rx_packets",),
    "cnp_sent": ("np_cnp_sent",),
    "cnp_handled": ("rp_cnp_handled",),
    "ecn_marked_packets": ("np_ecn_marked_roce_packets",),
    "retransmits": ("roce_adp_retrans",),
    "out_of_sequence": ("out_of_sequence",),
    "timeouts": ("local_ack_timeout_err",),
}


@dataclass(frozen=True, slots=True)
class NodeStep:
    """The node's fabric from one sample to the next."""

    seconds: float
    ports: int
    counters: dict[str, float]  # only counters some port reported
    peak_tx_gbps: float
    peak_rx_gbps: float
    peak_link_util_pct: float | None
    link_down_port_seconds: float


def node_step(
    prev: list[PortReading], cur: list[PortReading], seconds: float,
    increases: dict[tuple[str, int], dict[str, int | None]] | None = None,
) -> NodeStep:
    """The node's fabric from ``prev`` to ``cur``; ``increases``: the ports' counter increases
    when the caller has them already (``PortTotals.add``), else computed here."""
    before = {(p.device, p.port): p for p in prev}
    counters: dict[str, float] = {}
    tx_gbps = rx_gbps = 0.0
    util_pct: float | None = None
    down = 0
    for port in cur:
        old = before.get((port.device, port.port))
        if not link_up(port):
            down += 1
        if old is None:
            continue
        deltas = increases[(port.device, port.port)] if increases is not None else port_deltas(old, port)
        for wire, names in NETWORK_COUNTERS.items():
            values = [v for n in names if (v := deltas.get(n)) is not None]
            if values:
                counters[wire] = counters.get(wire, 0.0) + sum(values)
        port_tx = (deltas.get("tx_bytes") or 0) * 8 / seconds / 1e9
        port_rx = (deltas.get("rx_bytes") or 0) * 8 / seconds / 1e9
        tx_gbps, rx_gbps = tx_gbps + port_tx, rx_gbps + port_rx
        if port.rate_gbps:
            util_pct = max(util_pct or 0.0, 100 * max(port_tx, port_rx) / port.rate_gbps)
    return NodeStep(seconds, len(cur), counters, tx_gbps, rx_gbps, util_pct, down * seconds)


def job_shares(owners: dict[int, Owners], gpu_count: int) -> dict[str | None, float]:
    """Each job's share of the node's GPUs; ``None`` is the unallocated share."""
    shares: dict[str | None, float] = defaultdict(float)
    for index in range(gpu_count):
        jobs = owners.get(index, ())
        for job in jobs or (None,):
            shares[None if job is None else job.job_id] += 1 / len(jobs or (None,)) / gpu_count
    return dict(shares)


@dataclass(slots=True)
class NetworkInterval:
    job: str | None
    start_s: float
    end_s: float
    ports: int = 0
    seconds: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)
    apportioned_bytes: float = 0.0
    peak_tx_gbps: float = 0.0
    peak_rx_gbps: float = 0.0
    peak_link_util_pct: float | None = None
    link_down_port_seconds: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "job": self.job, "start_s": self.start_s, "end_s": self.end_s, "ports": self.ports,
            "seconds": self.seconds, "counters": self.counters, "apportioned_bytes": self.apportioned_bytes,
            "peak_tx_gbps": self.peak_tx_gbps, "peak_rx_gbps": self.peak_rx_gbps,
            "peak_link_util_pct": self.peak_link_util_pct, "link_down_port_seconds": self.link_down_port_seconds,
        }


@dataclass(slots=True)
class NetworkCutter:
    _open: dict[str | None, NetworkInterval] = field(default_factory=dict)

    def add(self, shares: dict[str | None, float], start_s: float, step: NodeStep) -> None:
        apportioned = len(shares) > 1
        for job, share in shares.items():
            interval = self._open.get(job)
            if interval is None:
                interval = self._open[job] = NetworkInterval(job, start_s, start_s)
            interval.end_s = start_s + step.seconds
            interval.ports = max(interval.ports, step.ports)
            interval.seconds += step.seconds
            for name, value in step.counters.items():
                interval.counters[name] = interval.counters.get(name, 0.0) + value * share
            if apportioned:
                interval.apportioned_bytes += (step.counters.get("tx_bytes", 0) + step.counters.get("rx_bytes", 0)) * share
            interval.peak_tx_gbps = max(interval.peak_tx_gbps, step.peak_tx_gbps)
            interval.peak_rx_gbps = max(interval.peak_rx_gbps, step.peak_rx_gbps)
            if step.peak_link_util_pct is not None:
                interval.peak_link_util_pct = max(interval.peak_link_util_pct or 0.0, step.peak_link_util_pct)
            interval.link_down_port_seconds += step.link_down_port_seconds

    def cut(self) -> list[dict[str, Any]]:
        intervals = [i.to_wire() for i in self._open.values() if i.seconds > 0]
        self._open.clear()
        return intervals
