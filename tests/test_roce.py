"""RDMA port reader over recorded sysfs trees (tests/fixtures/sysfs/<nic>/class/...).

Fixtures are never changed in place: a test that mutates a tree copies it to tmp_path.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from agent.roce import (
    ALL_COUNTERS,
    CONGESTION_COUNTERS,
    DATA_COUNTERS,
    ERROR_COUNTERS,
    ETH_COUNTERS,
    HW_COUNTERS,
    PORT_COUNTERS,
    QUEUE_COUNTERS,
    WRAP_32,
    PortReading,
    RdmaPorts,
    link_up,
    parse_rate_gbps,
    parse_state,
    port_deltas,
    read_net_statistics,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sysfs"


def read_one(root: Path) -> PortReading:
    readings = RdmaPorts(root).read()
    assert len(readings) == 1, readings
    return readings[0]


def value(reading: PortReading, name: str) -> int:
    raw = reading.raw[name]
    assert raw is not None, f"{reading.device} port {reading.port}: {name} is absent"
    return raw


def with_raw(reading: PortReading, **raw: int | None) -> PortReading:
    return dataclasses.replace(reading, raw={**reading.raw, **raw})


@pytest.fixture
def cx6_copy(tmp_path: Path) -> Path:
    root = tmp_path / "cx6"
    shutil.copytree(FIXTURES / "cx6", root)
    return root


def port_dir(root: Path, device: str = "mlx5_0", port: int = 1) -> Path:
    return root / "class" / "infiniband" / device / "ports" / str(port)


def write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


# --- reading --------------------------------------------------------------------------


def test_cx6_reading() -> None:
    r = read_one(FIXTURES / "cx6")
    assert (r.device, r.port, r.netdev, r.link_layer) == ("mlx5_0", 1, "ens1f0np0", "Ethernet")
    assert (r.state, r.phys_state, r.rate_gbps) == ("ACTIVE", "LinkUp", 200.0)
    assert link_up(r) and not r.partial
    assert set(r.raw) == set(ALL_COUNTERS) == set(r.wide)
    # port_rcv_discards is no PortCounters field: mlx5 has no such file (procfs' mlx5 tree neither).
    assert r.raw["rx_discards"] is None
    assert all(isinstance(r.raw[name], int) for name in ALL_COUNTERS if name != "rx_discards")
    assert value(r, "tx_bytes") == 98765432101234 > WRAP_32  # kernel shows PortCountersExtended
    assert r.wide["tx_bytes"] is False  # counters/port_xmit_data: width not known from the name
    assert r.raw["symbol_errors"] == 0 and r.raw["link_downed"] == 1
    assert all(r.wide[name] for name in CONGESTION_COUNTERS)
    assert not any(r.wide[name] for name in QUEUE_COUNTERS)


def test_rate_parsing() -> None:
    assert read_one(FIXTURES / "cx6").rate_gbps == 200.0
    assert [p.rate_gbps for p in RdmaPorts(FIXTURES / "cx7").read()] == [400.0, 400.0]
    assert parse_rate_gbps("2.5 Gb/sec (1X SDR)\n".strip()) == 2.5
    assert parse_rate_gbps("53.125 Gb/sec (1X HDR)") == 53.125
    assert parse_rate_gbps("") is None and parse_rate_gbps("fast") is None
    assert parse_state("4: ACTIVE") == "ACTIVE" and parse_state("5: LinkUp") == "LinkUp"
    assert parse_state("ACTIVE") == "ACTIVE" and parse_state("") is None


def test_cx7_reads_counters_before_legacy_counters_ext() -> None:
    # Changed: counters_ext/*_64 used to win over counters/. Since Linux 4.5 counters/ holds the
    # 64-bit values; the legacy mlx4 files can stop (node_exporter's recording, test_ib_counters).
    first, second = RdmaPorts(FIXTURES / "cx7").read()
    assert [(p.device, p.port) for p in (first, second)] == [("mlx5_0", 1), ("mlx5_1", 1)]
    assert first.raw["tx_bytes"] == int((port_dir(FIXTURES / "cx7") / "counters" / "port_xmit_data").read_text())
    assert first.raw["tx_bytes"] != 212345678999999  # counters_ext/port_xmit_data_64
    assert not any(first.wide[name] for name in DATA_COUNTERS)
    assert second.raw["tx_bytes"] == 212345678901235  # counters/port_xmit_data
    assert not any(second.wide[name] for name in DATA_COUNTERS)


def test_counters_ext_read_when_counters_lacks_the_file(tmp_path: Path) -> None:
    root = tmp_path / "cx7"
    shutil.copytree(FIXTURES / "cx7", root)
    (port_dir(root) / "counters" / "port_xmit_data").unlink()
    first = RdmaPorts(root).read()[0]
    assert (first.raw["tx_bytes"], first.wide["tx_bytes"]) == (212345678999999, True)


def test_counters_64_preferred_over_basic(cx6_copy: Path) -> None:
    write(port_dir(cx6_copy) / "counters" / "port_xmit_data_64", 5 * WRAP_32)
    r = read_one(cx6_copy)
    assert (r.raw["tx_bytes"], r.wide["tx_bytes"]) == (5 * WRAP_32, True)
    assert r.wide["rx_bytes"] is False


def test_ib32_no_hw_counters() -> None:
    r = read_one(FIXTURES / "ib32")
    assert (r.device, r.link_layer, r.rate_gbps, r.netdev) == ("mlx4_0", "InfiniBand", 40.0, None)
    assert all(isinstance(r.raw[name], int) for name in PORT_COUNTERS if name != "rx_discards")
    assert all(r.raw[name] is None for name in HW_COUNTERS + ETH_COUNTERS)
    assert not r.partial and value(r, "tx_bytes") < WRAP_32


def test_bnxt_partial() -> None:
    r = read_one(FIXTURES / "bnxt")
    assert r.partial and r.device == "bnxt_re0" and r.rate_gbps == 100.0
    assert all(r.raw[name] is None for name in PORT_COUNTERS + HW_COUNTERS)  # bnxt names ignored
    assert r.netdev == "ens2f0np0" and r.raw["eth_tx_bytes"] == 45678901234
    deltas = port_deltas(r, r)
    assert all(deltas[name] is None for name in PORT_COUNTERS + HW_COUNTERS)
    assert deltas["eth_tx_bytes"] == 0


def test_link_down_fixture() -> None:
    r = read_one(FIXTURES / "down")
    assert (r.device, r.state, r.phys_state, r.rate_gbps) == ("mlx5_2", "DOWN", "Disabled", 40.0)
    assert not link_up(r)


def test_link_going_down_between_readings(cx6_copy: Path) -> None:
    ports = RdmaPorts(cx6_copy)
    (before,) = ports.read()
    pd = port_dir(cx6_copy)
    write(pd / "state", "1: DOWN")
    write(pd / "phys_state", "3: Disabled")
    write(pd / "counters" / "link_downed", value(before, "link_downed") + 1)
    write(pd / "counters" / "port_xmit_data", value(before, "tx_bytes") + 250)
    (after,) = ports.read()
    assert link_up(before) and not link_up(after)
    deltas = port_deltas(before, after)
    assert deltas["link_downed"] == 1 and deltas["tx_bytes"] == 1000 and deltas["rx_bytes"] == 0


def test_netdev_and_eth_statistics() -> None:
    stats = read_net_statistics(FIXTURES / "cx6", "ens1f0np0")
    assert len(stats) == 24 and stats["tx_bytes"] == 123456789012 and stats["rx_dropped"] == 0
    r = read_one(FIXTURES / "cx6")
    assert r.raw["eth_tx_bytes"] == stats["tx_bytes"] and r.raw["eth_rx_packets"] == stats["rx_packets"]
    assert all(r.wide[name] for name in ETH_COUNTERS)
    assert read_net_statistics(FIXTURES / "cx6", "nosuch0") == {}


# --- absent is not zero ---------------------------------------------------------------


def test_missing_counter_is_none_in_reading_and_delta(cx6_copy: Path) -> None:
    prev = read_one(cx6_copy)
    pd = port_dir(cx6_copy)
    (pd / "hw_counters" / "out_of_buffer").unlink()
    write(pd / "counters" / "symbol_error", "N/A (no PMA)")
    (pd / "gid_attrs" / "ndevs" / "0").unlink()
    cur = read_one(cx6_copy)
    assert prev.raw["out_of_buffer"] == 0 and cur.raw["out_of_buffer"] is None
    assert cur.raw["symbol_errors"] is None
    assert cur.netdev is None and all(cur.raw[name] is None for name in ETH_COUNTERS)
    deltas = port_deltas(prev, cur)
    assert deltas["out_of_buffer"] is None and deltas["symbol_errors"] is None
    assert deltas["eth_tx_bytes"] is None and deltas["tx_bytes"] == 0
    assert port_deltas(cur, prev)["out_of_buffer"] is None


def test_no_infiniband_class(tmp_path: Path) -> None:
    assert RdmaPorts(tmp_path).read() == []
    assert RdmaPorts(tmp_path / "missing").read() == []


# --- deltas ---------------------------------------------------------------------------


def test_data_unit_is_four_octets() -> None:
    prev = read_one(FIXTURES / "cx6")
    cur = with_raw(prev, tx_bytes=value(prev, "tx_bytes") + 1000, tx_packets=value(prev, "tx_packets") + 1000)
    deltas = port_deltas(prev, cur)
    assert deltas["tx_bytes"] == 4000 and deltas["tx_packets"] == 1000


def test_data_counter_going_down_is_a_clear_never_a_wrap() -> None:
    # Replaces a test that counted 2**32 - 10 -> 5 as a 32-bit wrap. PMA counters never wrap
    # (they saturate), and counters/port_*_data are 64-bit since Linux 4.5: a decrease is a
    # clear (subnet manager, perfquery -R), counted from the new value. The case:
    # 3e9 -> 1000 words is 4000 bytes, not the 5.2 GB a wrap would add.
    prev = with_raw(read_one(FIXTURES / "ib32"), tx_bytes=3_000_000_000, rx_bytes=WRAP_32 - 10)
    cur = with_raw(prev, tx_bytes=1000, rx_bytes=5)
    deltas = port_deltas(prev, cur)
    assert deltas["tx_bytes"] == 4000 and deltas["rx_bytes"] == 20


def test_32_bit_wrap_queue_counter() -> None:
    prev = with_raw(read_one(FIXTURES / "cx6"), out_of_sequence=WRAP_32 - 3, rx_write_requests=4_000_000_000)
    cur = with_raw(prev, out_of_sequence=7, rx_write_requests=100)
    deltas = port_deltas(prev, cur)
    assert deltas["out_of_sequence"] == 10
    assert deltas["rx_write_requests"] == WRAP_32 - 4_000_000_000 + 100


def test_64_bit_counter_going_down_is_reset() -> None:
    wide_prev = RdmaPorts(FIXTURES / "cx7").read()[0]
    wide_cur = with_raw(wide_prev, tx_bytes=100, np_cnp_sent=7, eth_rx_bytes=500)
    deltas = port_deltas(wide_prev, wide_cur)
    assert deltas["tx_bytes"] == 400 and deltas["np_cnp_sent"] == 7 and deltas["eth_rx_bytes"] == 500
    # Not known 64-bit, but the previous value did not fit 32 bits: a reset, not a wrap.
    narrow_prev = read_one(FIXTURES / "cx6")
    deltas = port_deltas(narrow_prev, with_raw(narrow_prev, tx_bytes=25))
    assert value(narrow_prev, "tx_bytes") > WRAP_32 and deltas["tx_bytes"] == 100


def test_error_counter_going_down_is_clear_not_wrap() -> None:
    prev = with_raw(read_one(FIXTURES / "ib32"), symbol_errors=120, link_downed=3)
    deltas = port_deltas(prev, with_raw(prev, symbol_errors=0, link_downed=1))
    assert (deltas["symbol_errors"], deltas["link_downed"]) == (0, 1)
    assert set(ERROR_COUNTERS) <= set(deltas)


def test_source_width_change_is_unknown(cx6_copy: Path) -> None:
    prev = read_one(cx6_copy)
    write(port_dir(cx6_copy) / "counters" / "port_xmit_data_64", value(prev, "tx_bytes") + 10)
    cur = read_one(cx6_copy)
    assert cur.wide["tx_bytes"] and port_deltas(prev, cur)["tx_bytes"] is None


def test_deltas_of_different_ports_rejected() -> None:
    first, second = RdmaPorts(FIXTURES / "cx7").read()
    with pytest.raises(ValueError, match="mlx5_1 port 1.*mlx5_0 port 1"):
        port_deltas(first, second)


def test_fixtures_unchanged_by_tests() -> None:
    pd = port_dir(FIXTURES / "cx6")
    assert (pd / "state").read_text() == "4: ACTIVE\n"
    assert (pd / "counters" / "symbol_error").read_text() == "0\n"
    assert (pd / "hw_counters" / "out_of_buffer").is_file()
    assert not (pd / "counters" / "port_xmit_data_64").exists()


# --- this machine ---------------------------------------------------------------------


def test_real_sysfs_loopback() -> None:
    if not Path("/sys/class/net/lo/statistics").is_dir():
        pytest.skip("no /sys/class/net/lo on this machine")
    stats = read_net_statistics("/sys", "lo")
    assert isinstance(stats["tx_bytes"], int) and isinstance(stats["rx_bytes"], int)


def test_real_sysfs_rdma_ports_do_not_raise() -> None:
    readings = RdmaPorts("/sys").read()
    assert isinstance(readings, list)
    assert readings == sorted(readings, key=lambda r: (r.device, r.port))
