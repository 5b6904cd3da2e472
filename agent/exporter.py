"""The agent's ``/metrics`` (default port 9410): the last cycle's readings and the agent's health.

Exporting only: the readings come from the agent's last ``Snapshot`` and its counters, parsed
elsewhere. Base units at this boundary (watts, joules, bytes, ratio 0-1, seconds). A reading
the hardware does not give is absent, never 0. Job attribution is one info series per owned
GPU (``gpuledger_gpu_job_info``), joined in PromQL, not a label on every series.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pynvml
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.ibcounters import PMA_COUNTERS
from agent.roce import link_up

if TYPE_CHECKING:
    from agent.loop import Agent

GPU_LABELS = ["node", "gpu", "uuid", "model"]
PORT_LABELS = ["node", "device", "port"]
DEFAULT_PORT = 9410

# NVML clocks-event (throttle) reason bits, as dcgm-exporter and nvidia-smi name them.
CLOCKS_EVENT_REASONS = {
    "gpu_idle": pynvml.nvmlClocksEventReasonGpuIdle,
    "applications_clocks_setting": pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
    "sw_power_cap": pynvml.nvmlClocksEventReasonSwPowerCap,
    "hw_slowdown": pynvml.nvmlClocksEventReasonHwSlowdown,
    "sync_boost": pynvml.nvmlClocksEventReasonSyncBoost,
    "sw_thermal_slowdown": pynvml.nvmlClocksEventReasonSwThermalSlowdown,
    "hw_thermal_slowdown": pynvml.nvmlClocksEventReasonHwThermalSlowdown,
    "hw_power_brake_slowdown": pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
    "display_clock_setting": pynvml.nvmlClocksEventReasonDisplayClockSetting,
}

# Port counter (canonical name in agent.roce) -> metric name, after node_exporter's infiniband collector.
PORT_COUNTER_METRICS = {
    "tx_bytes": ("gpuledger_infiniband_port_data_transmitted_bytes_total", "Bytes sent on the port"),
    "rx_bytes": ("gpuledger_infiniband_port_data_received_bytes_total", "Bytes received on the port"),
    "tx_packets": ("gpuledger_infiniband_port_packets_transmitted_total", "Packets sent on the port"),
    "rx_packets": ("gpuledger_infiniband_port_packets_received_total", "Packets received on the port"),
    "xmit_wait": ("gpuledger_infiniband_port_transmit_wait_total", "Ticks the port had data to send but no credits"),
    "link_downed": ("gpuledger_infiniband_link_downed_total", "Times the link went down"),
    "np_cnp_sent": ("gpuledger_infiniband_np_cnp_sent_total", "Congestion notification packets sent (notification point)"),
    "rp_cnp_handled": ("gpuledger_infiniband_rp_cnp_handled_total", "Congestion notification packets handled: this sender was slowed"),
    "np_ecn_marked_roce_packets": ("gpuledger_infiniband_np_ecn_marked_roce_packets_total", "RoCE packets received with an ECN mark"),
    "roce_adp_retrans": ("gpuledger_infiniband_roce_adp_retrans_total", "RoCE adaptive retransmissions"),
    "local_ack_timeout_err": ("gpuledger_infiniband_local_ack_timeout_err_total", "Local ACK timeouts"),
    "out_of_sequence": ("gpuledger_infiniband_out_of_sequence_total", "Packets received out of sequence"),
    # Named exactly as node_exporter's infiniband collector names them (gpuledger_ for node_).
    "tx_discards": ("gpuledger_infiniband_port_discards_transmitted_total", "Outbound packets discarded (down or congested)"),
    "rx_discards": ("gpuledger_infiniband_port_discards_received_total", "Inbound packets discarded (port down or congested)"),
    "rx_errors": ("gpuledger_infiniband_port_errors_received_total", "Packets received with an error"),
    "symbol_errors": ("gpuledger_infiniband_symbol_error_total", "Minor link errors on one or more physical lanes"),
    "link_error_recovery": ("gpuledger_infiniband_link_error_recovery_total", "Times the link recovered from an error state"),
    "local_link_integrity_errors": ("gpuledger_infiniband_local_link_integrity_errors_total",
                                    "Times local physical errors exceeded the LocalPhyErrors threshold"),
    "excessive_buffer_overrun_errors": ("gpuledger_infiniband_excessive_buffer_overrun_errors_total",
                                        "Flow-control update periods in a row with a buffer overrun"),
    "vl15_dropped": ("gpuledger_infiniband_vl15_dropped_total", "Incoming VL15 (subnet management) packets dropped"),
    "rnr_nak_retry_err": ("gpuledger_infiniband_rnr_nak_retry_packets_received_total", "RNR NAK packets received"),
    "req_cqe_error": ("gpuledger_infiniband_req_cqes_errors_total", "Requester completions with an error"),
    "resp_cqe_error": ("gpuledger_infiniband_resp_cqes_errors_total", "Responder completions with an error"),
    "implied_nak_seq_err": ("gpuledger_infiniband_implied_nak_seq_errors_total", "ACKs with a PSN beyond the expected one"),
    "roce_slow_restart": ("gpuledger_infiniband_roce_slow_restart_used_total", "Times RoCE slow restart was used"),
    "roce_slow_restart_cnps": ("gpuledger_infiniband_roce_slow_restart_cnps_total", "CNPs generated by RoCE slow restart"),
    "roce_slow_restart_trans": ("gpuledger_infiniband_roce_slow_restart_total", "Times RoCE changed state to slow restart"),
}


class AgentCollector(Collector):
    """Reads ``agent.snapshot`` and the agent's counters at scrape time."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        yield from self._gpus()
        yield from self._ports()
        yield from self._health()

    def _gpus(self) -> Iterator[Metric]:
        agent, node = self.agent, self.agent.labels.node
        snap = agent.snapshot
        families = {name: GaugeMetricFamily(f"gpuledger_gpu_{name}", text, labels=GPU_LABELS) for name, text in (
            ("power_watts", "Board power draw (W)"),
            ("utilization_ratio", "Share of the last sample period a kernel ran (0-1)"),
            ("memory_used_bytes", "GPU memory in use"),
            ("memory_total_bytes", "GPU memory installed"),
            ("temperature_celsius", "GPU core temperature"),
            ("power_limit_watts", "Enforced power limit (W)"),
        )}
        energy = CounterMetricFamily("gpuledger_gpu_energy_joules", "Energy since the driver loaded (NVML counter)", labels=GPU_LABELS)
        reasons = GaugeMetricFamily("gpuledger_gpu_throttle_reason", "1 while this reason holds the clocks down",
                                    labels=[*GPU_LABELS, "reason"])
        job_info = GaugeMetricFamily("gpuledger_gpu_job_info", "The job that owns the GPU (always 1)",
                                     labels=["node", "gpu", "uuid", "job_id"])
        for sample in snap.samples:
            info = agent.gpus[sample.index]
            labels = [node, str(sample.index), info.uuid, info.name]
            for name, value in (
                ("power_watts", None if sample.power_mw is None else sample.power_mw / 1000),
                ("utilization_ratio", None if sample.util_gpu_pct is None else sample.util_gpu_pct / 100),
                ("memory_used_bytes", sample.memory_used_bytes),
                ("memory_total_bytes", info.memory_total_bytes),
                ("temperature_celsius", sample.temperature_c),
                ("power_limit_watts", info.power_limit_w),
            ):
                if value is not None:
                    families[name].add_metric(labels, value)
            if sample.energy_mj is not None:
                energy.add_metric(labels, sample.energy_mj / 1000)
            if sample.clocks_event_reasons is not None:
                for reason, bit in CLOCKS_EVENT_REASONS.items():
                    reasons.add_metric([*labels, reason], float(bool(sample.clocks_event_reasons & bit)))
            for job_id in dict.fromkeys(job.job_id for job in snap.owners.get(sample.index, ())):  # once per GPU, MIG or not
                job_info.add_metric([node, str(sample.index), info.uuid, f"{agent.labels.cluster}/{job_id}"], 1)
        yield from (*families.values(), energy, reasons, job_info)

    def _ports(self) -> Iterator[Metric]:
        node, snap, totals = self.agent.labels.node, self.agent.snapshot, self.agent.port_totals.totals
        counters = {name: CounterMetricFamily(metric.removesuffix("_total"), text, labels=PORT_LABELS)
                    for name, (metric, text) in PORT_COUNTER_METRICS.items()}
        up = GaugeMetricFamily("gpuledger_infiniband_port_up", "1 when the port is ACTIVE and LinkUp", labels=PORT_LABELS)
        rate = GaugeMetricFamily("gpuledger_infiniband_rate_bytes_per_second", "Link rate", labels=PORT_LABELS)
        for reading in snap.ports:
            labels = [node, reading.device, str(reading.port)]
            up.add_metric(labels, float(link_up(reading)))
            if reading.rate_gbps is not None:
                rate.add_metric(labels, reading.rate_gbps * 1e9 / 8)
            for name, value in totals.get((reading.device, reading.port), {}).copy().items():  # the agent's thread adds to it
                if name in counters:
                    counters[name].add_metric(labels, value)
        yield from (*counters.values(), up, rate)
        yield from self._saturation()

    def _saturation(self) -> Iterator[Metric]:
        """PMA counters stop at their maximum: say which do, and how many increases were unknown."""
        node, snap, port_totals = self.agent.labels.node, self.agent.snapshot, self.agent.port_totals
        labels = [*PORT_LABELS, "counter"]
        saturated = GaugeMetricFamily("gpuledger_infiniband_counter_saturated",
                                      "1 while the port counter sits at its maximum and counts no more", labels=labels)
        unknown = CounterMetricFamily("gpuledger_infiniband_counter_unknown_increases",
                                      "Readings whose increase was unknown (a saturated or cleared-after-saturation counter)",
                                      labels=labels)
        for reading in snap.ports:
            key = (reading.device, reading.port)
            stopped, unknowns = port_totals.saturated.get(key, frozenset()), port_totals.unknown_increases.get(key, {})
            for name, (basename, _width) in PMA_COUNTERS.items():
                if reading.raw.get(name) is None or reading.wide.get(name, False):
                    continue
                series = [node, reading.device, str(reading.port), basename]
                saturated.add_metric(series, float(name in stopped))
                unknown.add_metric(series, unknowns.get(name, 0))
        yield from (saturated, unknown)

    def _health(self) -> Iterator[Metric]:
        agent = self.agent
        node, pusher, queue = agent.labels.node, agent.pusher, agent.pusher.queue
        info = GaugeMetricFamily("gpuledger_agent_info", "The agent (always 1)",
                                 labels=["node", "cluster", "datacenter", "version", "simulated"])
        info.add_metric([node, agent.labels.cluster, agent.labels.datacenter, __version__, str(agent.simulated).lower()], 1)
        yield info
        resets = CounterMetricFamily("gpuledger_agent_energy_counter_resets", "Times a GPU's energy counter went down (driver reload)",
                                     labels=["node", "gpu"])
        for index in sorted(agent.gpus):
            resets.add_metric([node, str(index)], agent.counter_resets[index])
        yield resets
        errors = getattr(agent.source, "errors", None)
        if errors is not None:
            yield _one(CounterMetricFamily, "gpuledger_agent_nvml_errors", "NVML calls that failed", node, errors)
        health = getattr(agent, "state_health", None)
        if health is not None:
            yield _one(GaugeMetricFamily, "gpuledger_agent_state_degraded", "1 while the state directory cannot be "
                       "written (full or read-only): batches wait in memory", node, float(health.degraded))
            yield _one(CounterMetricFamily, "gpuledger_agent_state_write_failures", "Writes to the state directory that "
                       "failed", node, health.write_failures)
        yield _one(GaugeMetricFamily, "gpuledger_agent_gpus_lost", "GPUs fallen off the bus", node, agent.snapshot.gpus_lost)
        yield _one(GaugeMetricFamily, "gpuledger_agent_spool_batches", "Batches waiting for the collector", node, len(queue))
        spool_bytes = getattr(queue, "bytes", None)
        if spool_bytes is not None:
            yield _one(GaugeMetricFamily, "gpuledger_agent_spool_bytes", "Size of the disk spool", node, spool_bytes())
        yield _one(CounterMetricFamily, "gpuledger_agent_push_failures", "Pushes that failed and will be retried", node,
                   pusher.failed_attempts)
        yield _one(CounterMetricFamily, "gpuledger_agent_batches_rejected", "Batches the collector refused for good", node,
                   pusher.rejected)
        yield _one(CounterMetricFamily, "gpuledger_agent_batches_conflict",
                   "Batches the collector refused with 409 (a conflicting replay, or GPU time already stored)", node,
                   pusher.conflicts)
        yield _one(GaugeMetricFamily, "gpuledger_agent_spool_set_aside_batches",
                   "Batches set aside after repeated server errors, retried on a long backoff", node,
                   getattr(queue, "aside_count", lambda: len(queue.aside()))())
        if pusher.last_success_s is not None:
            yield _one(GaugeMetricFamily, "gpuledger_agent_last_push_success_timestamp_seconds",
                       "When the collector last acknowledged a batch", node, pusher.last_success_s)


def _one(kind: type, name: str, text: str, node: str, value: float) -> Metric:
    family = kind(name, text, labels=["node"])
    family.add_metric([node], value)
    return family


def agent_registry(agent: Agent) -> CollectorRegistry:
    """A registry of its own (no process-wide default) with the agent's metrics and cycle timing."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    cycle = Histogram("gpuledger_agent_cycle_seconds", "Time of one sampling cycle (NVML, sysfs, attribution)",
                      ["node"], registry=registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    agent.on_cycle = cycle.labels(agent.labels.node).observe
    return registry
