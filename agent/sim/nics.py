"""Simulated RoCE NICs: a ConnectX-7 style sysfs tree that the real reader (``RdmaPorts``)
reads, so the demo and tests run the same parsing path as a real node.

Per second k after the epoch, a node carries, in each direction, the sum over the jobs on it
of ``network_gbps`` × the job's share of the node's GPUs (±5 % seeded jitter), spread evenly
over the ports that are up. Congestion notifications and retransmissions follow each job's
``cnp_per_s`` and ``retrans_per_gb``. Counters advance at whole seconds.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.clock import Clock
from agent.roce import PortReading, RdmaPorts
from agent.sim.node import jitter
from agent.sim.spec import ClusterSpec, NodeSpec

MTU_BYTES = 4096
FILES = {  # our counter name -> sysfs file under ports/1/
    "tx_words": "counters/port_xmit_data",
    "rx_words": "counters/port_rcv_data",
    "tx_packets": "counters/port_xmit_packets",
    "rx_packets": "counters/port_rcv_packets",
    "cnp_sent": "hw_counters/np_cnp_sent",
    "ecn_marked": "hw_counters/np_ecn_marked_roce_packets",
    "cnp_handled": "hw_counters/rp_cnp_handled",
    "retrans": "hw_counters/roce_adp_retrans",
    "out_of_sequence": "hw_counters/out_of_sequence",
    "timeouts": "hw_counters/local_ack_timeout_err",
}

PMA_FILES = tuple(name for name, path in FILES.items() if path.startswith("counters/"))


@dataclass(frozen=True, slots=True)
class NodeTraffic:
    """The physics of one node's fabric, second by second."""

    spec: ClusterSpec
    node_name: str

    @property
    def node(self) -> NodeSpec:
        return self.spec.node(self.node_name)

    def _links_down(self, second: int) -> set[int]:
        return {e.gpu for e in self.spec.events
                if e.kind == "link_down" and e.node == self.node_name and e.at_s <= second < e.until_s}

    def down(self, nic: int, second: int) -> bool:
        return nic in self._links_down(second)

    def port_second(self, nic: int, second: int) -> dict[str, int]:
        """What port ``nic`` carries during [second, second + 1)."""
        node, down = self.node, self._links_down(second)
        if nic in down or node.nics == len(down):
            return dict.fromkeys(FILES, 0)
        up = node.nics - len(down)
        node_no = self.spec.nodes.index(node)
        gbps = cnp = retrans_per_gb = 0.0
        for job in self.spec.jobs:
            if self.node_name in job.nodes and job.start_s <= second < job.end_s:
                share = len(job.gpus) / node.gpu_count
                gbps += job.network_gbps * share
                cnp += job.cnp_per_s * share
                retrans_per_gb = max(retrans_per_gb, job.retrans_per_gb)
        seed = self.spec.seed
        tx_bytes = gbps * 1e9 / 8 / up * (1 + 0.05 * jitter(seed, node_no, 1000 + nic, second))
        rx_bytes = gbps * 1e9 / 8 / up * (1 + 0.05 * jitter(seed, node_no, 2000 + nic, second))
        retrans = round(retrans_per_gb * tx_bytes / 1e9)
        cnps = round(cnp / up)
        return {
            "tx_words": int(tx_bytes / 4), "rx_words": int(rx_bytes / 4),
            "tx_packets": math.ceil(tx_bytes / MTU_BYTES), "rx_packets": math.ceil(rx_bytes / MTU_BYTES),
            "cnp_sent": cnps, "ecn_marked": cnps, "cnp_handled": cnps,
            "retrans": retrans, "out_of_sequence": retrans, "timeouts": round(retrans / 10),
        }


class SimulatedPorts:
    """``nics`` ports of one node, written to a private sysfs tree and read back by ``RdmaPorts``."""

    def __init__(self, spec: ClusterSpec, node_name: str, clock: Clock, epoch_s: float) -> None:
        self.traffic = NodeTraffic(spec, node_name)
        self.clock, self.epoch_s = clock, epoch_s
        self.nics, self.rate_gbps = spec.node(node_name).nics, spec.node(node_name).nic_rate_gbps
        self.counter_bits = spec.node(node_name).nic_counter_bits
        shm = Path("/dev/shm")  # tmpfs, like sysfs: no disk writes every second
        self.root = Path(tempfile.mkdtemp(prefix="gpuledger-sim-sysfs-", dir=shm if shm.is_dir() else None))
        self._down: list[bool | None] = [None] * self.nics
        self._second = 0
        self._totals = [dict.fromkeys(FILES, 0) for _ in range(self.nics)]
        self._clears = {(e.gpu, math.ceil(e.at_s)) for e in spec.events if e.kind == "counter_clear" and e.node == node_name}
        self._reader = RdmaPorts(self.root)
        for nic in range(self.nics):
            port = self._port_dir(nic)
            for sub in ("counters", "hw_counters"):
                (port / sub).mkdir(parents=True)
            (port / "link_layer").write_text("Ethernet\n")
        self._write(0)

    def _port_dir(self, nic: int) -> Path:
        return self.root / "class" / "infiniband" / f"mlx5_{nic}" / "ports" / "1"

    def _write(self, second: int) -> None:
        for nic, totals in enumerate(self._totals):
            port = str(self._port_dir(nic))
            down = self.traffic.down(nic, second)
            if down != self._down[nic]:
                self._down[nic] = down
                _put(f"{port}/state", "1: DOWN" if down else "4: ACTIVE")
                _put(f"{port}/phys_state", "3: Disabled" if down else "5: LinkUp")
                _put(f"{port}/rate", f"{self.rate_gbps:g} Gb/sec (4X NDR)")
            for name, relpath in FILES.items():
                value = totals[name]
                if name in PMA_FILES and self.counter_bits == 32:
                    value = min(value, 2**32 - 1)  # a PMA counter saturates, never wraps
                _put(f"{port}/{relpath}", str(value))

    def read(self) -> list[PortReading]:
        whole = max(math.floor(self.clock.now() - self.epoch_s), 0)
        if whole > self._second:
            for second in range(self._second, whole):
                for nic, totals in enumerate(self._totals):
                    if (nic, second) in self._clears:  # the PMA counters (counters/) restart at 0
                        totals.update(dict.fromkeys(PMA_FILES, 0))
                    for name, amount in self.traffic.port_second(nic, second).items():
                        totals[name] += amount
            self._second = whole
            self._write(whole)
        return self._reader.read()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _put(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


def network_truth(spec: ClusterSpec, job_id: str, until_offset_s: float) -> dict[str, int]:
    """Bytes a job's nodes carried while it ran, for nodes the job holds whole."""
    job = next(j for j in spec.jobs if j.id == job_id)
    totals = {"tx_bytes": 0, "rx_bytes": 0}
    for node_name in job.nodes:
        traffic = NodeTraffic(spec, node_name)
        for second in range(math.ceil(job.start_s), math.ceil(min(job.end_s, until_offset_s))):
            for nic in range(spec.node(node_name).nics):
                carried = traffic.port_second(nic, second)
                totals["tx_bytes"] += 4 * carried["tx_words"]
                totals["rx_bytes"] += 4 * carried["rx_words"]
    return totals
