"""A job over time, for its charts: GPUs, power, utilisation, cost and CO2e, network by hour.

Hours before the last ``FINE_WINDOW_S`` of the job come from the hourly rollups; the last
hours come in buckets of ``step_s`` seconds from the finest tier that still covers them: the
raw intervals (kept ``[retention] raw_days``), else the per-minute rollups (``minute_days``)
(``api.queries.series``). Every bucket is priced as a
report prices an hour (``api.accounting.pricing.price_sums``), so the cumulative cost and CO2e end at the
report's totals. Rates are means over the part of the bucket the job spanned:
``power_w = gpu_energy_j / covered_s``, ``gpus = gpu_seconds / covered_s``, where
``covered_s`` is the bucket clipped to [first seen, last seen]. The newest buckets of a
running job, which not every node of the job has reported yet, have no power and GPU count
(null): they would dip only because a node's next batch is still on its way. The network
rollups are hourly only, so its series has one point per hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from api.accounting.network import verdict
from api.accounting.pricing import UsageRow, price_sums
from api.accounting.rates import LedgerConfig
from api.queries import jobs as reads
from api.queries import series as series_reads
from api.reports.job import intensity_for
from collector.models import RUNNING

STEPS_S: tuple[int, ...] = (5, 10, 30, 60, 300, 900)  # each divides an hour
MINUTE_STEPS_S: tuple[int, ...] = (60, 300, 900)  # the minute tier's: whole minutes
RAW, MINUTE = "raw", "minute"
FINE_WINDOW_S = 6 * 3600
MAX_FINE_POINTS = 480
LAGGING_NODE_S = 120.0  # a node this far behind the job's newest data has left it (or is down)
HOUR_S = 3600
GPU_FIELDS = ("start_s", "end_s", "resolution_s", "gpus", "power_w", "utilization_pct", "gpu_energy_kwh",
              "cost_usd", "co2e_kg", "cumulative_cost_usd", "cumulative_co2e_kg")
# job_*: the job's nodes together; node_peak_*: the busiest single node (the names say which).
NETWORK_FIELDS = ("start_s", "end_s", "job_tx_gbps", "job_rx_gbps", "node_peak_tx_gbps", "node_peak_rx_gbps",
                  "cnp_handled_per_s", "retransmits_per_gb", "congestion")


@dataclass(frozen=True, slots=True)
class Window:
    """Where the fine buckets start (a whole hour; None: hourly points only), their width, and
    the tier they come from: ``raw`` intervals or ``minute`` rollups."""

    fine_from_s: int | None
    step_s: int
    tier: str = RAW


def fine_window(job: dict[str, Any], now_s: float, raw_days: float, step_s: int | None = None,
                minute_days: float = 35.0) -> Window:
    """The last FINE_WINDOW_S of the job, from a whole hour, from the finest tier that still
    covers it: the raw intervals, else the minute rollups (as much of the window as they keep)."""
    first_s, last_s = job["first_seen_s"], job["last_seen_s"]
    wanted_s = max(math.floor((last_s - FINE_WINDOW_S) / HOUR_S) * HOUR_S, math.floor(first_s / HOUR_S) * HOUR_S)
    raw_from_s = math.ceil((now_s - raw_days * 86400) / HOUR_S) * HOUR_S
    tier, steps, from_s = RAW, STEPS_S, wanted_s
    if wanted_s < raw_from_s:
        tier, steps = MINUTE, MINUTE_STEPS_S
        from_s = max(wanted_s, math.ceil((now_s - minute_days * 86400) / HOUR_S) * HOUR_S)
    if from_s >= last_s:
        return Window(None, step_s or HOUR_S, tier)
    if step_s is None:
        span_s = last_s - max(from_s, first_s)
        step_s = next((s for s in steps if span_s / s <= MAX_FINE_POINTS), steps[-1])
    elif step_s not in steps:  # finer than the minute tier keeps
        step_s = next(s for s in steps if s >= step_s)
    return Window(from_s, step_s, tier)


def _buckets(engine: Engine, job: dict[str, Any], window: Window) -> list[tuple[int, int, list[UsageRow]]]:
    """(start, width, rollups) per hour before the fine window, then per fine bucket."""
    hours: dict[int, list[UsageRow]] = {}
    for row in reads.usage(engine, [job["job_id"]]).get(job["job_id"], []):
        if window.fine_from_s is None or row.hour_s < window.fine_from_s:
            hours.setdefault(row.hour_s, []).append(row)
    result = [(hour, HOUR_S, rows) for hour, rows in sorted(hours.items())]
    if window.fine_from_s is not None:
        read = series_reads.fine_usage if window.tier == RAW else series_reads.minute_usage
        fine = read(engine, job["job_id"], window.fine_from_s, window.step_s)
        result += [(start, window.step_s, rows) for start, rows in sorted(fine.items())]
    return result


def _covered(job: dict[str, Any], start_s: float, width_s: float) -> tuple[float, float]:
    """The bucket clipped to the job's span (the whole bucket if that leaves nothing)."""
    lo, hi = max(start_s, job["first_seen_s"]), min(start_s + width_s, job["last_seen_s"])
    return (lo, hi) if hi > lo else (start_s, start_s + width_s)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def complete_until_s(engine: Engine, job: dict[str, Any], window: Window) -> float:
    """Until when every node still sending the job's data has reported it (an ended job: all)."""
    if window.fine_from_s is None or job["state"] != RUNNING or window.tier != RAW:
        return job["last_seen_s"]
    latest = series_reads.nodes_latest_end(engine, job["job_id"], job["last_seen_s"] - LAGGING_NODE_S)
    return min(latest.values(), default=job["last_seen_s"])


def gpu_series(engine: Engine, config: LedgerConfig, job: dict[str, Any], window: Window) -> dict[str, list[Any]]:
    """Columns (GPU_FIELDS) of one point per bucket, oldest first."""
    buckets = _buckets(engine, job, window)
    hourly = intensity_for(engine, [row for _, _, rows in buckets for row in rows], config)
    columns: dict[str, list[Any]] = {name: [] for name in GPU_FIELDS}
    cost_usd = co2e_kg = 0.0
    complete_s = complete_until_s(engine, job, window)
    fixed: dict = {}  # each (datacenter, model)'s fixed rates, looked up once
    for start_s, width_s, rows in buckets:
        lo, hi = _covered(job, start_s, width_s)
        partial = hi > complete_s
        priced = price_sums(rows, config, job["cluster"], hourly, fixed)
        gpu_seconds, busy_s, energy_j = priced["gpu_seconds"], priced["busy_gpu_seconds"], priced["energy_j"]
        cost_usd += priced["cost_usd"]
        co2e_kg += priced["co2e_kg"]
        point = {
            "start_s": lo, "end_s": hi, "resolution_s": width_s,
            "gpus": None if partial else gpu_seconds / (hi - lo), "power_w": None if partial else energy_j / (hi - lo),
            "utilization_pct": _ratio(100 * busy_s, gpu_seconds),
            "gpu_energy_kwh": energy_j / 3.6e6, "cost_usd": priced["cost_usd"], "co2e_kg": priced["co2e_kg"],
            "cumulative_cost_usd": cost_usd, "cumulative_co2e_kg": co2e_kg,
        }
        for name in GPU_FIELDS:
            columns[name].append(point[name])
    return columns


def network_series(engine: Engine, job: dict[str, Any]) -> dict[str, list[Any]]:
    """Columns (NETWORK_FIELDS) of one point per hour with RoCE data, oldest first."""
    columns: dict[str, list[Any]] = {name: [] for name in NETWORK_FIELDS}
    for hour in series_reads.network_hours(engine, job["job_id"]):
        lo, hi = _covered(job, hour["hour_s"], HOUR_S)
        wall_s = hour["wall_seconds"] or (hi - lo)
        sent_gb = None if hour["tx_bytes"] is None else hour["tx_bytes"] / 1e9
        cnp_per_s = _ratio(hour["cnp_handled"], hour["node_seconds"])
        retrans_per_gb = _ratio(hour["retransmits"], sent_gb)
        point = {
            "start_s": lo, "end_s": hi,
            "job_tx_gbps": _ratio(None if sent_gb is None else sent_gb * 8, wall_s),
            "job_rx_gbps": _ratio(None if hour["rx_bytes"] is None else hour["rx_bytes"] * 8 / 1e9, wall_s),
            "node_peak_tx_gbps": hour["peak_tx_gbps"], "node_peak_rx_gbps": hour["peak_rx_gbps"],
            "cnp_handled_per_s": cnp_per_s, "retransmits_per_gb": retrans_per_gb,
            "congestion": verdict(cnp_per_s, retrans_per_gb)[0],
        }
        for name in NETWORK_FIELDS:
            columns[name].append(point[name])
    return columns


def forecast(report: dict[str, Any]) -> dict[str, Any] | None:
    """Where the report's forecast puts the job at its end, for the line from its last point."""
    budget = report["budget"]
    if budget["forecast_end_at"] is None or budget["forecast_cost_usd"] is None:
        return None
    return {"method": budget["forecast_method"], "end_s": budget["forecast_end_at"].timestamp(),
            "cost_usd": budget["forecast_cost_usd"], "co2e_kg": budget["forecast_co2e_kg"]}


def as_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Columns to one dict per point (for CSV)."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*(columns[n] for n in names), strict=True)]
