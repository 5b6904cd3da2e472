"""InfiniBand / RoCE counter semantics on sysfs trees other projects recorded (prometheus/procfs
and node_exporter; tests/fixtures/sysfs/SOURCE): 64-bit data counters whose decrease is a
clear, saturated 32-bit PMA counters whose increase is unknown (a metric, and null in a job's
network totals), and the error counters exported under node_exporter's names."""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import sys
import time
import tomllib
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.attribution import Attributor
from agent.clock import ManualClock
from agent.exporter import agent_registry
from agent.ibcounters import counter_increase, saturation_value
from agent.loop import Agent, NodeLabels
from agent.network import NetworkCutter, node_step
from agent.nvml import NvmlSource
from agent.push import Pusher
from agent.roce import PortReading, PortTotals, RdmaPorts, port_deltas, saturated_counters, unknown_increases
from agent.sim.fakenvml import FakeDevice, FakeNvml
from agent.sim.nics import NodeTraffic
from agent.sim.spec import parse_spec
from api.accounting.network import network_report
from tests.conftest import wait_for_job

FIXTURES = Path(__file__).parent / "fixtures" / "sysfs"
PROCFS = FIXTURES / "procfs-mlx5"
NODE_EXPORTER = FIXTURES / "node-exporter-mlx4"
SATURATED = 2**32 - 1


def mlx4_port1() -> PortReading:
    return RdmaPorts(NODE_EXPORTER).read()[0]


def with_raw(reading: PortReading, **raw: int | None) -> PortReading:
    return dataclasses.replace(reading, raw={**reading.raw, **raw})


# -- reading the recorded trees ------------------------------------------------------------------


def test_procfs_mlx5_reads_the_error_and_hw_counters_procfs_reads() -> None:
    (port,) = RdmaPorts(PROCFS).read()
    assert (port.device, port.port, port.rate_gbps, port.link_layer) == ("mlx5_0", 1, 25.0, "InfiniBand")
    # sysfs/class_infiniband_test.go: the same values, by the files' names.
    expected = {
        "tx_bytes": 2880761508848, "rx_bytes": 18126345378, "tx_packets": 10907922116, "rx_packets": 541889824,
        "symbol_errors": 0, "link_downed": 0, "link_error_recovery": 0, "local_link_integrity_errors": 0,
        "excessive_buffer_overrun_errors": 0, "vl15_dropped": 0, "tx_discards": 0, "rx_errors": 0, "xmit_wait": 0,
        "rnr_nak_retry_err": 0, "req_cqe_error": 3481, "resp_cqe_error": 8109, "implied_nak_seq_err": 0,
        "roce_slow_restart": 0, "roce_slow_restart_cnps": 131, "roce_slow_restart_trans": 0,
        "roce_adp_retrans": 99, "roce_adp_retrans_to": 4, "duplicate_request": 41, "local_ack_timeout_err": 131,
    }
    assert {name: port.raw[name] for name in expected} == expected
    assert port.raw["rx_discards"] is None  # mlx5 has no port_rcv_discards file
    # counters/port_xmit_data past 2**32 - 1: the kernel shows the 64-bit value there.
    assert (port.raw["tx_bytes"] or 0) > SATURATED and not port.wide["tx_bytes"]
    assert saturated_counters(port) == frozenset()


def test_node_exporter_mlx4_has_a_saturated_xmit_wait() -> None:
    port = mlx4_port1()
    assert (port.raw["xmit_wait"], port.raw["rx_discards"], port.raw["tx_discards"]) == (SATURATED, 0, 5)
    assert port.raw["rx_packets"] == 6825908347  # counters/, not the stopped counters_ext/*_64 = 0
    assert saturated_counters(port) == frozenset({"xmit_wait"})
    # Read again with nothing changed: the increase of a saturated counter is unknown, not 0.
    deltas = port_deltas(port, port)
    assert deltas["xmit_wait"] is None and deltas["tx_discards"] == 0
    assert unknown_increases(port, port) == frozenset({"xmit_wait"})


# -- increase semantics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "before", "after", "wide", "expected"),
    [
        ("tx_bytes", 3_000_000_000, 1000, False, 1000),  # a clear below 2**32: counted from 1000, not a wrap
        ("tx_bytes", 2**40, 7, True, 7),  # 64-bit: a reset
        ("tx_bytes", SATURATED - 5, SATURATED, False, None),  # reached its maximum: how far past it is unknown
        ("tx_bytes", SATURATED, SATURATED, False, None),  # stuck at it
        ("tx_bytes", SATURATED, 10, False, None),  # cleared after saturating: the time at the maximum is lost
        ("tx_bytes", SATURATED, SATURATED + 100, False, 100),  # 64-bit counter passing 2**32 - 1
        ("tx_bytes", SATURATED, SATURATED, True, 0),  # a *_64 file at that value is just a value
        ("xmit_wait", 100, SATURATED, False, None),
        ("symbol_errors", 65534, 65535, False, None),  # 16-bit PortCounters field
        ("symbol_errors", 120, 0, False, 0),  # a clear
        ("link_downed", 255, 255, False, None),  # 8-bit
        ("local_link_integrity_errors", 3, 15, False, None),  # 4-bit
        ("excessive_buffer_overrun_errors", 2, 14, False, 12),
        ("out_of_sequence", 2**32 - 3, 7, False, 10),  # mlx5 q-counters are 32-bit and wrap
        ("req_cqe_error", 4_000_000_000, 100, False, 2**32 - 4_000_000_000 + 100),
        ("np_cnp_sent", 500, 7, True, 7),
    ],
)
def test_counter_increase(name: str, before: int, after: int, wide: bool, expected: int | None) -> None:
    assert counter_increase(name, before, after, wide) == expected


def test_saturation_values_follow_the_portcounters_widths() -> None:
    assert [saturation_value(n, False) for n in ("tx_bytes", "xmit_wait", "symbol_errors", "link_downed",
                                                 "local_link_integrity_errors", "vl15_dropped")] == \
        [SATURATED, SATURATED, 65535, 255, 15, 65535]
    assert saturation_value("tx_bytes", True) is None and saturation_value("out_of_sequence", False) is None


def test_port_totals_count_unknown_increases() -> None:
    totals = PortTotals()
    port = mlx4_port1()
    totals.add([with_raw(port, xmit_wait=10, tx_bytes=1000)])
    totals.add([with_raw(port, xmit_wait=SATURATED, tx_bytes=1500)])
    totals.add([with_raw(port, xmit_wait=SATURATED, tx_bytes=1600)])
    key = ("mlx4_0", 1)
    assert totals.totals[key]["xmit_wait"] == 0  # nothing known was added
    assert totals.totals[key]["tx_bytes"] == 600 * 4
    assert totals.unknown_increases[key] == {"xmit_wait": 2}
    assert totals.saturated[key] == frozenset({"xmit_wait"})


# -- the job's network totals ---------------------------------------------------------------------


def test_saturated_data_counter_makes_the_span_unknown_not_zero() -> None:
    port = mlx4_port1()
    prev = with_raw(port, tx_bytes=SATURATED - 1000, rx_bytes=500)
    cur = with_raw(port, tx_bytes=SATURATED, rx_bytes=800)
    step = node_step([prev], [cur], 1.0)
    assert step.counters["tx_bytes"] is None and step.counters["rx_bytes"] == 1200
    cutter = NetworkCutter()
    known = node_step([cur], [with_raw(cur, rx_bytes=900)], 1.0)
    assert known.counters["tx_bytes"] is None  # still saturated
    cutter.add({"7": 1.0}, 100.0, step)
    cutter.add({"7": 1.0}, 101.0, known)
    (interval,) = cutter.cut()
    assert interval["counters"]["tx_bytes"] is None and interval["counters"]["rx_bytes"] == 1600
    assert interval["unknown_seconds"] == 2.0 and interval["seconds"] == 2.0


def test_interval_without_unknown_has_no_unknown_field() -> None:
    port = mlx4_port1()
    cutter = NetworkCutter()
    cutter.add({"7": 1.0}, 0.0, node_step([port], [with_raw(port, tx_bytes=(port.raw["tx_bytes"] or 0) + 10)], 1.0))
    (interval,) = cutter.cut()
    assert "unknown_seconds" not in interval and interval["counters"]["tx_bytes"] == 40


def test_network_report_nulls_bytes_of_nodes_with_unknown_spans() -> None:
    base = {"seconds": 10.0, "tx_packets": 5.0, "rx_packets": 5.0, "cnp_sent": 1.0, "cnp_handled": 2.0,
            "ecn_marked_packets": 1.0, "retransmits": 0.0, "out_of_sequence": 0.0, "timeouts": 0.0,
            "apportioned_bytes": 0.0, "link_down_port_seconds": 0.0, "ports": 1, "peak_tx_gbps": 1.0,
            "peak_rx_gbps": 1.0, "peak_link_util_pct": None}
    rows = [base | {"node": "a", "tx_bytes": 1e9, "rx_bytes": 1e9, "unknown_seconds": 0.0},
            base | {"node": "b", "tx_bytes": 4e9, "rx_bytes": 2e9, "unknown_seconds": 3.0}]
    report = network_report(rows)
    assert report is not None
    assert (report["tx_bytes"], report["rx_bytes"], report["tx_packets"]) == (None, None, None)
    assert report["unknown_seconds"] == 3.0 and report["cnp_handled"] == 4.0
    assert [n["mean_tx_gbps"] for n in report["per_node"]] == [0.8, None]
    clean = network_report([rows[0]])
    assert clean is not None and clean["tx_bytes"] == 1e9 and clean["unknown_seconds"] == 0.0


# -- /metrics with node_exporter's names ----------------------------------------------------------


def node_exporter_expected() -> dict[str, float]:
    expected = {}
    for line in (NODE_EXPORTER / "e2e-output-infiniband.txt").read_text().splitlines():
        name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
        expected[name.removeprefix("node_infiniband_")] = value
    return expected


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_exported_counters_match_node_exporter_names_and_values(tmp_path: Path) -> None:
    """A port cleared when the agent starts (every counter 0), then the recorded values: the
    agent's totals are the recorded counts, as node_exporter shows them, under its names."""
    sysfs = tmp_path / "sys"
    shutil.copytree(NODE_EXPORTER, sysfs)
    port_dir = sysfs / "class/infiniband/mlx4_0/ports/1"
    recorded = {p: p.read_text() for p in (port_dir / "counters").iterdir()}
    for path in recorded:
        path.write_text("0\n")
    clock = ManualClock(1_000_000.0)
    agent = Agent(NvmlSource(FakeNvml([FakeDevice("GPU-a")])), Attributor([]), Pusher("http://127.0.0.1:9", clock=clock.now),
                  NodeLabels("n1", "c", "dc"), clock, ports=RdmaPorts(sysfs))
    registry = agent_registry(agent)
    agent.tick()
    for path, text in recorded.items():
        path.write_text(text)
    clock.sleep(1.0)
    agent.tick()
    got = {name.removeprefix("gpuledger_infiniband_"): value for (name, labels), value in scrape(registry).items()
           if dict(labels).get("device") == "mlx4_0" and dict(labels).get("port") == "1" and "counter" not in dict(labels)}
    expected = node_exporter_expected()
    shared = {"port_data_transmitted_bytes_total", "port_data_received_bytes_total", "port_packets_transmitted_total",
              "port_packets_received_total", "port_discards_received_total", "port_discards_transmitted_total",
              "port_errors_received_total", "link_downed_total", "link_error_recovery_total"}
    assert shared <= set(got) and shared <= set(expected)
    assert {name: got[name] for name in shared} == {name: expected[name] for name in shared}
    assert got["rate_bytes_per_second"] == expected["rate_bytes_per_second"]
    # node_exporter shows the saturated port_xmit_wait as 4294967295 ticks; the agent adds nothing
    # it cannot know and says the counter is stuck.
    assert expected["port_transmit_wait_total"] == SATURATED and got["port_transmit_wait_total"] == 0
    labels = (("counter", "port_xmit_wait"), ("device", "mlx4_0"), ("node", "n1"), ("port", "1"))
    samples = scrape(registry)
    assert samples[("gpuledger_infiniband_counter_saturated", labels)] == 1
    assert samples[("gpuledger_infiniband_counter_unknown_increases_total", labels)] == 1
    other = (("counter", "port_xmit_discards"), ("device", "mlx4_0"), ("node", "n1"), ("port", "1"))
    assert samples[("gpuledger_infiniband_counter_saturated", other)] == 0


def test_new_error_counters_are_exported_under_node_exporter_names(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    shutil.copytree(PROCFS, sysfs)
    hw = sysfs / "class/infiniband/mlx5_0/ports/1/hw_counters"
    clock = ManualClock(1_000_000.0)
    agent = Agent(NvmlSource(FakeNvml([FakeDevice("GPU-a")])), Attributor([]), Pusher("http://127.0.0.1:9", clock=clock.now),
                  NodeLabels("n1", "c", "dc"), clock, ports=RdmaPorts(sysfs))
    registry = agent_registry(agent)
    agent.tick()
    for name, add in (("req_cqe_error", 3), ("resp_cqe_error", 4), ("rnr_nak_retry_err", 5), ("implied_nak_seq_err", 6),
                      ("roce_slow_restart", 7), ("roce_slow_restart_cnps", 8), ("roce_slow_restart_trans", 9)):
        (hw / name).write_text(f"{int((hw / name).read_text()) + add}\n")
    clock.sleep(1.0)
    agent.tick()
    got = {name: value for (name, labels), value in scrape(registry).items() if dict(labels).get("device") == "mlx5_0"}
    assert {name: got[f"gpuledger_infiniband_{name}"] for name in (
        "req_cqes_errors_total", "resp_cqes_errors_total", "rnr_nak_retry_packets_received_total",
        "implied_nak_seq_errors_total", "roce_slow_restart_used_total", "roce_slow_restart_cnps_total",
        "roce_slow_restart_total")} == {
        "req_cqes_errors_total": 3, "resp_cqes_errors_total": 4, "rnr_nak_retry_packets_received_total": 5,
        "implied_nak_seq_errors_total": 6, "roce_slow_restart_used_total": 7, "roce_slow_restart_cnps_total": 8,
        "roce_slow_restart_total": 9}
    for name in ("vl15_dropped_total", "local_link_integrity_errors_total", "excessive_buffer_overrun_errors_total",
                 "symbol_error_total", "link_error_recovery_total"):
        assert got[f"gpuledger_infiniband_{name}"] == 0, name
    assert "gpuledger_infiniband_port_discards_received_total" not in got  # mlx5: no such file, no series


# -- end to end: a counter clear through `gpuledger agent --simulate` and `gpuledger server` --------

CLEAR_SPEC = """
seed = 9
cluster = "ib"
[[nodes]]
name = "n0"
gpu_count = 2
model = "NVIDIA H100 80GB HBM3"
idle_w = 70.0
busy_w = 650.0
tdp_w = 700.0
nics = 2
nic_rate_gbps = 400.0
[[jobs]]
id = "9"
nodes = ["n0"]
gpus = [0, 1]
start_s = 0
utilization = 0.9
network_gbps = 2.0
[[events]]
kind = "counter_clear"   # perfquery -R on NIC 0 while the job runs
node = "n0"
nic = 0
at_s = 24
"""


def test_e2e_counter_clear_does_not_inflate_the_jobs_bytes(server, tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(CLEAR_SPEC)
    epoch = math.floor(time.time()) - 10  # the agent starts well before the clear at 24 s
    agent = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "agent", "--simulate", str(spec_path), "--node", "n0",
         "--collector", server.url, "--interval", "0.5", "--push-interval", "1", "--sim-epoch", str(epoch),
         "--metrics-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    first = wait_for_job(server.url, "ib/9")
    time.sleep(max(0.0, epoch + 28 - time.time()))  # past the clear, and a few seconds after it
    agent.terminate()
    assert agent.wait(timeout=30) == 0
    report = httpx.get(f"{server.url}/v1/jobs/ib/9", timeout=10).json()
    assert datetime.fromisoformat(first["started_at"]).timestamp() < epoch + 23  # it saw the counters before the clear
    network = report["network"]
    traffic = NodeTraffic(parse_spec(tomllib.loads(CLEAR_SPEC)), "n0")

    before_clear = 4 * sum(traffic.port_second(0, k)["tx_words"] for k in range(24))
    wrap_error = 4 * 2**32 - before_clear  # what reading the clear as a 32-bit wrap would add
    assert wrap_error > 10e9
    # The agent's bytes are the traffic of the seconds it watched, give or take one second at each
    # end (where its first and last readings fell), never the wrap's extra 10+ GB.
    per_second = sum(4 * traffic.port_second(nic, 20)["tx_words"] for nic in range(2))
    seconds = network["node_seconds"]
    assert seconds >= 5
    assert network["unknown_seconds"] == 0
    assert abs(network["tx_bytes"] - per_second * seconds) <= 2 * per_second
    assert network["tx_bytes"] < wrap_error  # with the wrap it would be more than that extra alone


SATURATE_SPEC = CLEAR_SPEC.split("[[events]]")[0].replace("nic_rate_gbps = 400.0", "nic_rate_gbps = 400.0\nnic_counter_bits = 32")


def test_e2e_saturated_counter_gives_null_bytes_not_a_lower_bound(server, tmp_path: Path) -> None:
    """A 32-bit HCA: counters/ stops at 2**32 - 1 while the job runs. The job's bytes are
    reported null with the unknown node-seconds, not the part counted before it stopped."""
    spec = parse_spec(tomllib.loads(SATURATE_SPEC))
    traffic = NodeTraffic(spec, "n0")
    words, full_s = 0, 0
    while words < SATURATED:  # the second at which NIC 0's transmit counter stops
        words += traffic.port_second(0, full_s)["tx_words"]
        full_s += 1
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SATURATE_SPEC)
    epoch = math.floor(time.time()) - (full_s - 12)  # it stops about 12 s after the agent starts
    agent = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "agent", "--simulate", str(spec_path), "--node", "n0",
         "--collector", server.url, "--interval", "0.5", "--push-interval", "1", "--sim-epoch", str(epoch),
         "--metrics-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    first = wait_for_job(server.url, "ib/9")
    assert datetime.fromisoformat(first["started_at"]).timestamp() < epoch + full_s - 2  # counting before it stopped
    time.sleep(max(0.0, epoch + full_s + 3 - time.time()))
    agent.terminate()
    assert agent.wait(timeout=30) == 0
    network = httpx.get(f"{server.url}/v1/jobs/ib/9", timeout=10).json()["network"]
    assert network["tx_bytes"] is None and network["tx_packets"] is None and network["rx_bytes"] is None
    assert network["unknown_seconds"] >= 2 and network["per_node"][0]["mean_tx_gbps"] is None
    assert network["cnp_handled"] is not None  # hw_counters are 64-bit or wrap: still known


# -- collector and reports: a span whose bytes are unknown is null, never a lower bound ------------

HOUR_S = 3600 * 490_000


def net_batch(seq: int, start_s: float, counters: dict, unknown_s: float = 0.0) -> dict:
    record = {"job": "1", "start_s": start_s, "end_s": start_s + 10, "ports": 2, "seconds": 10.0, "counters": counters,
              "apportioned_bytes": 0.0, "peak_tx_gbps": 1.0, "peak_rx_gbps": 1.0, "peak_link_util_pct": None,
              "link_down_port_seconds": 0.0}
    if unknown_s:
        record["unknown_seconds"] = unknown_s
    interval = {"gpu_uuid": "GPU-0", "gpu_index": 0, "gpu_model": "NVIDIA H100 80GB HBM3", "job": "1",
                "start_s": start_s, "end_s": start_s + 10, "gpu_seconds": 10.0, "busy_gpu_seconds": 5.0,
                "energy_j": 3000.0, "energy_method": "counter", "max_memory_used_bytes": 1 << 34}
    return {"node": "node-a", "cluster": "c1", "datacenter": "dc1", "boot_id": "b", "seq": seq, "sent_at_s": start_s + 10,
            "jobs": [{"id": "1"}], "intervals": [interval], "network": [record]}


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_unknown_span_is_null_in_the_jobs_network_totals_and_its_hour(engine) -> None:
    from api.queries import jobs as reads
    from api.reports.series import network_series
    from collector.ingest import apply_batch
    from collector.schemas import BatchIn

    known = {"tx_bytes": 1e9, "rx_bytes": 2e9, "tx_packets": 10.0, "rx_packets": 20.0, "cnp_handled": 5.0}
    unknown = {"tx_bytes": None, "rx_bytes": 3e9, "tx_packets": None, "rx_packets": 30.0, "cnp_handled": 7.0}
    apply_batch(engine, BatchIn.model_validate(net_batch(0, HOUR_S - 100, known)), HOUR_S)
    apply_batch(engine, BatchIn.model_validate(net_batch(1, HOUR_S + 100, unknown, unknown_s=4.0)), HOUR_S + 200)
    report = network_report(reads.network(engine, "c1/1"))
    assert report is not None
    assert (report["tx_bytes"], report["rx_bytes"], report["tx_packets"], report["rx_packets"]) == (None, None, None, None)
    assert report["unknown_seconds"] == 4.0 and report["cnp_handled"] == 12.0 and report["node_seconds"] == 20.0
    columns = network_series(engine, {"job_id": "c1/1", "first_seen_s": HOUR_S - 100, "last_seen_s": HOUR_S + 110,
                                      "ended_s": None})
    assert columns["job_tx_gbps"][0] == pytest.approx(1e9 * 8 / 1e9 / 10) and columns["job_tx_gbps"][1] is None
    assert columns["job_rx_gbps"][1] is None  # the hour's received bytes are partly unknown too (one flag per span)


def test_unknown_seconds_beyond_the_interval_is_refused() -> None:
    from pydantic import ValidationError

    from collector.schemas import BatchIn

    with pytest.raises(ValidationError, match=r"unknown_seconds = 11.0: expected at most seconds = 10.0"):
        BatchIn.model_validate(net_batch(0, HOUR_S, {"tx_bytes": None}, unknown_s=11.0))


# -- reading rates ---------------------------------------------------------------------------------


def test_network_intervals_use_only_counters_read_every_cycle() -> None:
    from agent.ibcounters import FAST_COUNTERS
    from agent.network import NETWORK_COUNTERS

    assert {n for names in NETWORK_COUNTERS.values() for n in names} <= set(FAST_COUNTERS)


def test_slow_counters_are_read_every_nth_time_and_arrive_whole(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    shutil.copytree(PROCFS, sysfs)
    port_dir = sysfs / "class/infiniband/mlx5_0/ports/1"
    ports, totals = RdmaPorts(sysfs, slow_every=3), PortTotals()
    for n in range(1, 7):  # each read: 10 more CQE errors (slow) and 100 more words sent (fast)
        totals.add(ports.read())
        (port_dir / "hw_counters/req_cqe_error").write_text(f"{3481 + 10 * n}\n")
        (port_dir / "counters/port_xmit_data").write_text(f"{2880761508848 + 100 * n}\n")
        key = ("mlx5_0", 1)
        assert totals.totals[key]["tx_bytes"] == 4 * 100 * (n - 1)  # every read
        assert totals.totals[key]["req_cqe_error"] == 10 * 3 * ((n - 1) // 3)  # reads 0 and 3 only
    with pytest.raises(ValueError, match="slow_every = 0: expected an integer >= 1"):
        RdmaPorts(sysfs, slow_every=0)


def test_spool_merge_keeps_an_unknown_counter_unknown() -> None:
    from agent.spool import merge_batches

    older = net_batch(0, HOUR_S, {"tx_bytes": 100.0, "rx_bytes": 5.0})
    newer = net_batch(1, HOUR_S + 10, {"tx_bytes": None, "rx_bytes": 7.0}, unknown_s=4.0)
    merged, count = merge_batches(older, newer)
    (record,) = merged["network"]
    assert count >= 1 and record["counters"] == {"tx_bytes": None, "rx_bytes": 12.0}
    assert record["unknown_seconds"] == 4.0 and record["seconds"] == 20.0
    clean, _ = merge_batches(older, net_batch(1, HOUR_S + 10, {"tx_bytes": 1.0}))
    assert "unknown_seconds" not in clean["network"][0]


def test_spec_counter_bits_and_clear_event_are_checked() -> None:
    from agent.sim.spec import SpecError

    node = {"name": "n", "gpu_count": 1, "model": "m", "idle_w": 1.0, "busy_w": 2.0, "nics": 2}
    with pytest.raises(SpecError, match=r"nodes\[0\]\.nic_counter_bits = 16: expected 32 or 64"):
        parse_spec({"nodes": [node | {"nic_counter_bits": 16}]})
    with pytest.raises(SpecError, match=r"events\[0\]\.nic = 2: not a NIC index of node 'n'"):
        parse_spec({"nodes": [node], "events": [{"kind": "counter_clear", "node": "n", "nic": 2, "at_s": 1}]})
    assert parse_spec({"nodes": [node | {"nic_counter_bits": 32}]}).nodes[0].nic_counter_bits == 32
