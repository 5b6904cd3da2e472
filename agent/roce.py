"""RDMA ports (InfiniBand / RoCE) read from sysfs, and the increase of their counters.

Parsing only: nothing here exports metrics. Layout, per ``/sys/class/infiniband/<dev>``:
``ports/<port>/{state,phys_state,rate,link_layer}``, ``ports/<port>/counters/`` (PMA
port counters), ``ports/<port>/hw_counters/`` (mlx5 congestion and q-counters) and
``ports/<port>/gid_attrs/ndevs/0`` (the netdev of a RoCE port). A counter that is missing,
unreadable or not an integer is ``None``, never 0. Data counters are raw 4-octet units in
a reading; ``port_deltas`` turns them into bytes after wrap and reset handling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

WRAP_32: Final = 2**32
OCTETS_PER_DATA_UNIT: Final = 4  # port_xmit_data / port_rcv_data count 4-octet words

DATA_COUNTERS: Final = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")
ERROR_COUNTERS: Final = ("tx_discards", "rx_errors", "symbol_errors", "link_downed")
WAIT_COUNTERS: Final = ("xmit_wait",)
PORT_COUNTERS: Final = DATA_COUNTERS + ERROR_COUNTERS + WAIT_COUNTERS
CONGESTION_COUNTERS: Final = ("np_cnp_sent", "np_ecn_marked_roce_packets", "rp_cnp_handled", "rp_cnp_ignored")
QUEUE_COUNTERS: Final = (
    "out_of_sequence",
    "packet_seq_err",
    "local_ack_timeout_err",
    "roce_adp_retrans",
    "roce_adp_retrans_to",
    "rx_write_requests",
    "rx_read_requests",
    "rx_atomic_requests",
    "out_of_buffer",
    "duplicate_request",
)
HW_COUNTERS: Final = CONGESTION_COUNTERS + QUEUE_COUNTERS
ETH_COUNTERS: Final = ("eth_tx_bytes", "eth_rx_bytes", "eth_tx_packets", "eth_rx_packets")
ALL_COUNTERS: Final = PORT_COUNTERS + HW_COUNTERS + ETH_COUNTERS
FOUR_OCTET_COUNTERS: Final = ("tx_bytes", "rx_bytes")
# A decrease of one of these, with a value that fits 32 bits, is a 32-bit wrap. The IB
# error counters (16/8-bit, saturating) are left out: for them a decrease is a clear.
WRAP_32_COUNTERS: Final = DATA_COUNTERS + WAIT_COUNTERS + QUEUE_COUNTERS

_Source = tuple[str, bool]  # (path relative to the port directory, known 64-bit)


def _wide_first(basename: str) -> tuple[_Source, ...]:
    return (
        (f"counters_ext/{basename}_64", True),
        (f"counters/{basename}_64", True),
        (f"counters/{basename}", False),
    )


PORT_SOURCES: Final[dict[str, tuple[_Source, ...]]] = {
    "tx_bytes": _wide_first("port_xmit_data"),
    "rx_bytes": _wide_first("port_rcv_data"),
    "tx_packets": _wide_first("port_xmit_packets"),
    "rx_packets": _wide_first("port_rcv_packets"),
    "tx_discards": (("counters/port_xmit_discards", False),),
    "rx_errors": (("counters/port_rcv_errors", False),),
    "symbol_errors": (("counters/symbol_error", False),),
    "link_downed": (("counters/link_downed", False),),
    "xmit_wait": (("counters/port_xmit_wait", False),),
}


@dataclass(frozen=True, slots=True)
class PortReading:
    device: str
    port: int
    netdev: str | None
    link_layer: str | None
    state: str | None
    phys_state: str | None
    rate_gbps: float | None
    raw: dict[str, int | None]
    wide: dict[str, bool]
    partial: bool


def _read_text(path: str) -> str | None:
    """The stripped content of a sysfs file; ``None`` when missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:  # e.g. EINVAL from gid_attrs of an unset GID, EIO from a PMA query
        return None
    finally:
        os.close(fd)
    return data.decode("ascii", "replace").strip()


def _read_int(path: str) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:  # "N/A (no PMA)" and the like
        return None


def parse_state(text: str | None) -> str | None:
    """``"4: ACTIVE"`` -> ``"ACTIVE"``; ``"5: LinkUp"`` -> ``"LinkUp"``."""
    if not text:
        return None
    head, colon, tail = text.partition(":")
    return (tail.strip() if colon else head.strip()) or None


def parse_rate_gbps(text: str | None) -> float | None:
    """``"200 Gb/sec (4X HDR)"`` -> 200.0; ``"2.5 Gb/sec (1X SDR)"`` -> 2.5."""
    if not text:
        return None
    value, _, unit = text.partition(" ")
    if not unit.startswith("Gb/sec"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_net_statistics(sysfs_root: str | Path, iface: str) -> dict[str, int | None]:
    """Every file of ``/sys/class/net/<iface>/statistics`` as an int (``None`` if unreadable)."""
    directory = os.path.join(sysfs_root, "class", "net", iface, "statistics")
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return {}
    return {name: _read_int(os.path.join(directory, name)) for name in names}


def _read_port_counter(port_dir: str, sources: tuple[_Source, ...]) -> tuple[int | None, bool]:
    for relpath, wide in sources:
        value = _read_int(f"{port_dir}/{relpath}")
        if value is not None:
            return value, wide
    return None, False


def _read_counters(port_dir: str, netdev: str | None, net_dir: str) -> tuple[dict[str, int | None], dict[str, bool]]:
    raw: dict[str, int | None] = {}
    wide: dict[str, bool] = {}
    for name, sources in PORT_SOURCES.items():
        raw[name], wide[name] = _read_port_counter(port_dir, sources)
    for name in HW_COUNTERS:
        raw[name] = _read_int(f"{port_dir}/hw_counters/{name}")
        wide[name] = name in CONGESTION_COUNTERS
    for name in ETH_COUNTERS:
        stat = name.removeprefix("eth_")
        raw[name] = None if netdev is None else _read_int(f"{net_dir}/{netdev}/statistics/{stat}")
        wide[name] = True
    return raw, wide


def _read_port(device: str, port: int, port_dir: str, net_dir: str) -> PortReading:
    netdev = _read_text(f"{port_dir}/gid_attrs/ndevs/0") or None
    raw, wide = _read_counters(port_dir, netdev, net_dir)
    return PortReading(
        device=device,
        port=port,
        netdev=netdev,
        link_layer=_read_text(f"{port_dir}/link_layer") or None,
        state=parse_state(_read_text(f"{port_dir}/state")),
        phys_state=parse_state(_read_text(f"{port_dir}/phys_state")),
        rate_gbps=parse_rate_gbps(_read_text(f"{port_dir}/rate")),
        raw=raw,
        wide=wide,
        partial=not os.path.isdir(f"{port_dir}/counters"),
    )


def _sorted_ports(ports_dir: str) -> list[int]:
    try:
        names = os.listdir(ports_dir)
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


class RdmaPorts:
    """Every port of every RDMA device under ``<sysfs_root>/class/infiniband``."""

    def __init__(self, sysfs_root: str | Path = "/sys") -> None:
        self._ib_dir = os.path.join(sysfs_root, "class", "infiniband")
        self._net_dir = os.path.join(sysfs_root, "class", "net")

    def read(self) -> list[PortReading]:
        try:
            devices = sorted(os.listdir(self._ib_dir))
        except OSError:  # no RDMA stack loaded
            return []
        readings: list[PortReading] = []
        for device in devices:
            ports_dir = f"{self._ib_dir}/{device}/ports"
            for port in _sorted_ports(ports_dir):
                readings.append(_read_port(device, port, f"{ports_dir}/{port}", self._net_dir))
        return readings


def link_up(reading: PortReading) -> bool:
    return reading.state == "ACTIVE" and reading.phys_state == "LinkUp"


def _may_wrap_32(name: str, wide: bool) -> bool:
    return name in QUEUE_COUNTERS or (name in WRAP_32_COUNTERS and not wide)


def counter_increase(name: str, before: int, after: int, wide: bool) -> int:
    """Raw increase of one counter: plain, across a 32-bit wrap, or since a reset."""
    if after >= before:
        return after - before
    if _may_wrap_32(name, wide) and before < WRAP_32:
        return after + WRAP_32 - before
    return after  # a 64-bit (or saturating) counter went down: reset, counted since then


def _delta(name: str, prev: PortReading, cur: PortReading) -> int | None:
    before, after = prev.raw.get(name), cur.raw.get(name)
    if before is None or after is None:
        return None
    wide = cur.wide.get(name, False)
    if prev.wide.get(name, False) != wide:
        return None  # the source file changed width between readings: not comparable
    increase = counter_increase(name, before, after, wide)
    return increase * OCTETS_PER_DATA_UNIT if name in FOUR_OCTET_COUNTERS else increase


def port_deltas(prev: PortReading, cur: PortReading) -> dict[str, int | None]:
    """Per canonical name, the increase from ``prev`` to ``cur`` in bytes or counts."""
    if (prev.device, prev.port) != (cur.device, cur.port):
        raise ValueError(
            f"port_deltas: cur is {cur.device} port {cur.port}, expected the port of prev "
            f"({prev.device} port {prev.port})"
        )
    return {name: _delta(name, prev, cur) for name in ALL_COUNTERS}


class PortTotals:
    """Each port's counters summed over the readings fed to it: monotonic across wraps and
    resets, from the agent's start. A counter a port never reported stays absent."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, int], dict[str, int]] = {}
        self._last: dict[tuple[str, int], PortReading] = {}

    def add(self, readings: list[PortReading]) -> dict[tuple[str, int], dict[str, int | None]]:
        """Add the increase since each port's previous reading; return those increases."""
        increases = {}
        for cur in readings:
            key = (cur.device, cur.port)
            prev = self._last.get(key)
            totals = self.totals.setdefault(key, {})
            if prev is not None:
                increases[key] = deltas = port_deltas(prev, cur)
                for name, delta in deltas.items():
                    if delta is not None:
                        totals[name] = totals.get(name, 0) + delta
            for name, raw in cur.raw.items():
                if raw is not None:
                    totals.setdefault(name, 0)
            self._last[key] = cur
        return increases
