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

from agent.ibcounters import (
    ALL_COUNTERS,
    CONGESTION_COUNTERS,
    DATA_COUNTERS,
    ERROR_COUNTERS,
    ETH_COUNTERS,
    FAST_COUNTERS,
    FOUR_OCTET_COUNTERS,
    HW_COUNTERS,
    OCTETS_PER_DATA_UNIT,
    PMA_COUNTERS,
    PORT_COUNTERS,
    QUEUE_COUNTERS,
    WRAP_32,
    counter_increase,
    saturation_value,
)

__all__ = [  # the counter tables live in agent.ibcounters; re-exported for readers of this module
    "ALL_COUNTERS", "CONGESTION_COUNTERS", "DATA_COUNTERS", "ERROR_COUNTERS", "ETH_COUNTERS", "HW_COUNTERS",
    "PORT_COUNTERS", "QUEUE_COUNTERS", "WRAP_32", "PortReading", "PortTotals", "RdmaPorts", "counter_increase",
    "link_up", "parse_rate_gbps", "parse_state", "port_deltas", "read_net_statistics", "saturated_counters",
    "unknown_increases",
]

_Source = tuple[str, bool]  # (path relative to the port directory, known 64-bit)


def _data_sources(basename: str) -> tuple[_Source, ...]:
    """Since Linux 4.5 ``counters/`` shows the 64-bit PortCountersExtended values where the HCA
    has them; mlx4's older ``counters_ext/*_64`` files are read only when ``counters/`` lacks
    the counter (node_exporter's mlx4 recording has counters_ext/port_rcv_packets_64 = 0 next
    to counters/port_rcv_packets = 6825908347: the legacy file had stopped)."""
    return (
        (f"counters/{basename}_64", True),
        (f"counters/{basename}", False),
        (f"counters_ext/{basename}_64", True),
    )


PORT_SOURCES: Final[dict[str, tuple[_Source, ...]]] = {
    name: _data_sources(basename) if name in DATA_COUNTERS else ((f"counters/{basename}", False),)
    for name, (basename, _width) in PMA_COUNTERS.items()
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


_Counters = tuple[dict[str, int | None], dict[str, bool]]


def _read_counters(port_dir: str, netdev: str | None, net_dir: str, reuse: _Counters | None = None) -> _Counters:
    """Every counter of the port; with ``reuse``, only FAST_COUNTERS, the rest from ``reuse``."""
    raw: dict[str, int | None] = {} if reuse is None else dict(reuse[0])
    wide: dict[str, bool] = {} if reuse is None else dict(reuse[1])
    wanted = ALL_COUNTERS if reuse is None else FAST_COUNTERS
    for name in wanted:
        if name in PORT_SOURCES:
            raw[name], wide[name] = _read_port_counter(port_dir, PORT_SOURCES[name])
        elif name in HW_COUNTERS:
            raw[name], wide[name] = _read_int(f"{port_dir}/hw_counters/{name}"), name in CONGESTION_COUNTERS
        else:
            stat = name.removeprefix("eth_")
            raw[name] = None if netdev is None else _read_int(f"{net_dir}/{netdev}/statistics/{stat}")
            wide[name] = True
    return raw, wide


def _read_port(device: str, port: int, port_dir: str, net_dir: str, reuse: _Counters | None = None) -> PortReading:
    netdev = _read_text(f"{port_dir}/gid_attrs/ndevs/0") or None
    raw, wide = _read_counters(port_dir, netdev, net_dir, reuse)
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
    """Every port of every RDMA device under ``<sysfs_root>/class/infiniband``. The counters a
    job's network intervals need are read every time; the others (error counters, requests,
    netdev statistics: about two thirds of the files) every ``slow_every``-th read, their last
    values kept in between, so their increases arrive whole, a little later."""

    def __init__(self, sysfs_root: str | Path = "/sys", slow_every: int = 1) -> None:
        if slow_every < 1:
            raise ValueError(f"slow_every = {slow_every!r}: expected an integer >= 1")
        self._ib_dir = os.path.join(sysfs_root, "class", "infiniband")
        self._net_dir = os.path.join(sysfs_root, "class", "net")
        self.slow_every, self._reads = slow_every, 0
        self._last: dict[tuple[str, int], _Counters] = {}

    def read(self) -> list[PortReading]:
        try:
            devices = sorted(os.listdir(self._ib_dir))
        except OSError:  # no RDMA stack loaded
            return []
        full, self._reads = self._reads % self.slow_every == 0, self._reads + 1
        readings: list[PortReading] = []
        for device in devices:
            ports_dir = f"{self._ib_dir}/{device}/ports"
            for port in _sorted_ports(ports_dir):
                reuse = None if full else self._last.get((device, port))
                reading = _read_port(device, port, f"{ports_dir}/{port}", self._net_dir, reuse)
                self._last[(device, port)] = (reading.raw, reading.wide)
                readings.append(reading)
        return readings


def link_up(reading: PortReading) -> bool:
    return reading.state == "ACTIVE" and reading.phys_state == "LinkUp"


def _delta(name: str, prev: PortReading, cur: PortReading) -> int | None:
    before, after = prev.raw.get(name), cur.raw.get(name)
    if before is None or after is None:
        return None
    wide = cur.wide.get(name, False)
    if prev.wide.get(name, False) != wide:
        return None  # the source file changed width between readings: not comparable
    increase = counter_increase(name, before, after, wide)
    if increase is None:
        return None
    return increase * OCTETS_PER_DATA_UNIT if name in FOUR_OCTET_COUNTERS else increase


def saturated_counters(reading: PortReading) -> frozenset[str]:
    """The PMA counters of ``reading`` that sit at their maximum and so count no more."""
    return frozenset(
        name for name in PMA_COUNTERS
        if (raw := reading.raw.get(name)) is not None and raw == saturation_value(name, reading.wide.get(name, False))
    )


def _unknown(name: str, delta: int | None, prev: PortReading, cur: PortReading) -> bool:
    """A delta of None with both readings present and of one width: the increase is unknown."""
    return (delta is None and prev.raw.get(name) is not None and cur.raw.get(name) is not None
            and prev.wide.get(name, False) == cur.wide.get(name, False))


def unknown_increases(prev: PortReading, cur: PortReading, deltas: dict[str, int | None] | None = None) -> frozenset[str]:
    """Counters both readings have whose increase is unknown (saturated, or cleared after it)."""
    deltas = port_deltas(prev, cur) if deltas is None else deltas
    return frozenset(name for name, delta in deltas.items() if _unknown(name, delta, prev, cur))


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
    resets, from the agent's start. A counter a port never reported stays absent. An increase
    that cannot be known (a saturated PMA counter) adds nothing and is counted in
    ``unknown_increases``; ``saturated`` holds the counters at their maximum in the last reading."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, int], dict[str, int]] = {}
        self.unknown_increases: dict[tuple[str, int], dict[str, int]] = {}
        self.saturated: dict[tuple[str, int], frozenset[str]] = {}
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
                unknown = self.unknown_increases.setdefault(key, {})
                for name in unknown_increases(prev, cur, deltas):
                    unknown[name] = unknown.get(name, 0) + 1
            self.saturated[key] = saturated_counters(cur)
            for name, raw in cur.raw.items():
                if raw is not None:
                    totals.setdefault(name, 0)
            self._last[key] = cur
        return increases
