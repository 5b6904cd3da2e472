"""Benchmark: one agent cycle over 8 ConnectX-7 RoCE ports (a plain script, not a test).

Builds a sysfs tree in a temp dir (mlx5_0..7, port 1: counters/, hw_counters/, netdev
statistics), then times ``RdmaPorts(root).read()`` plus ``port_deltas`` for every port.
Usage: python tests/benchmarks/bench_roce.py [cycles] [slow_every]; slow_every (default 10,
as the agent at --interval 1 --push-interval 10) reads error and request counters every
N-th cycle, 1 reads every counter every cycle. Files live in the page cache or
tmpfs here, so this measures the Python side; on real mlx5 every counters/ read is a
firmware MAD query, which costs more than the parsing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent import roce

DEVICES = 8
PMA_FILES = (
    "port_xmit_data", "port_rcv_data", "port_xmit_packets", "port_rcv_packets",
    "unicast_xmit_packets", "unicast_rcv_packets", "multicast_xmit_packets",
    "multicast_rcv_packets", "port_xmit_discards", "port_rcv_errors", "symbol_error",
    "link_downed", "port_xmit_wait", "link_error_recovery", "local_link_integrity_errors",
    "excessive_buffer_overrun_errors", "port_rcv_remote_physical_errors",
    "port_rcv_switch_relay_errors", "port_xmit_constraint_errors",
    "port_rcv_constraint_errors", "VL15_dropped",
)
HW_EXTRA = ("lifespan", "implied_nak_seq_err", "rnr_nak_retry_err", "req_cqe_error", "resp_cqe_error")
NET_STATS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors", "rx_dropped",
             "tx_dropped", "multicast", "collisions", "rx_crc_errors", "rx_missed_errors")


def write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def build_port(root: Path, index: int) -> None:
    netdev = f"ens{index + 1}np0"
    port_dir = root / "class" / "infiniband" / f"mlx5_{index}" / "ports" / "1"
    for name, text in (("state", "4: ACTIVE"), ("phys_state", "5: LinkUp"),
                       ("rate", "400 Gb/sec (4X NDR)"), ("link_layer", "Ethernet")):
        write(port_dir / name, text)
    write(port_dir / "gid_attrs" / "ndevs" / "0", netdev)
    for n, name in enumerate(PMA_FILES):
        write(port_dir / "counters" / name, 212345678901234 + 1000 * n + index)
    for n, name in enumerate(roce.HW_COUNTERS + HW_EXTRA):
        write(port_dir / "hw_counters" / name, 100000 * n + index)
    for n, name in enumerate(NET_STATS):
        write(root / "class" / "net" / netdev / "statistics" / name, 5432109876 + n)


def one_cycle(ports: roce.RdmaPorts, prev: list[roce.PortReading]) -> list[roce.PortReading]:
    cur = ports.read()
    for before, after in zip(prev, cur, strict=True):
        roce.port_deltas(before, after)
    return cur


def count_files(ports: roce.RdmaPorts, prev: list[roce.PortReading]) -> tuple[int, int]:
    """(open attempts, files read) in one cycle, by wrapping the module's one reader."""
    original: Callable[[str], str | None] = roce._read_text
    results: list[bool] = []

    def counting(path: str) -> str | None:
        text = original(path)
        results.append(text is not None)
        return text

    roce._read_text = counting
    try:
        one_cycle(ports, prev)
    finally:
        roce._read_text = original
    return len(results), sum(results)


def main(cycles: int, slow_every: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_roce_") as tmp:
        root = Path(tmp)
        for index in range(DEVICES):
            build_port(root, index)
        ports = roce.RdmaPorts(root, slow_every=slow_every)
        prev = ports.read()
        assert len(prev) == DEVICES and all(roce.link_up(p) for p in prev)
        for _ in range(50):  # warm up
            prev = one_cycle(ports, prev)
        times_us: list[float] = []
        for _ in range(cycles):
            start_ns = time.perf_counter_ns()
            prev = one_cycle(ports, prev)
            times_us.append((time.perf_counter_ns() - start_ns) / 1000)
        opens, reads = count_files(ports, prev)
    times_us.sort()
    p99_us = times_us[min(len(times_us) - 1, int(0.99 * len(times_us)))]
    print(f"ports: {DEVICES}, cycles: {cycles}, slow_every: {slow_every}, python {sys.version.split()[0]}")
    print(f"per cycle (read + port_deltas): median {statistics.median(times_us):.0f} us, p99 {p99_us:.0f} us")
    print(f"per port: median {statistics.median(times_us) / DEVICES:.1f} us")
    print(f"files in the last cycle: {opens} open attempts, {reads} read, {opens - reads} absent (64-bit probes)")
    print(f"mean per cycle: {statistics.fmean(times_us):.0f} us (the slow counters' cycles included)")
    print(f"share of one core at 1 Hz: {statistics.fmean(times_us) / 1e6 * 100:.3f} % (mean)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, int(sys.argv[2]) if len(sys.argv) > 2 else 10)
