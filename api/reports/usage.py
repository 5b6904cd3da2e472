"""Showback and finance exports: usage, cost and CO2e per group (and per month or day) over
whole hours, idle capacity as its own ``(unallocated)`` line."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from api.accounting.pricing import TOTALS, UsageRow, price
from api.accounting.rates import LedgerConfig
from api.queries import jobs as reads
from api.reports.job import intensity_for
from api.reports.render import csv_cell

GROUPS = ("account", "user", "cluster", "job_id", "release")
PERIODS = ("month", "day")
OPTIONAL = ("market_co2e_kg", "embodied_gpu_co2e_kg", "embodied_server_co2e_kg")
FRACTIONS = ("energy_measured_fraction", "energy_declared_fraction", "energy_tdp_estimated_fraction")
COLUMNS = ("group", "period", "gpu_hours", "busy_gpu_hours", "gpu_energy_kwh", "overhead_energy_kwh", "energy_kwh",
           "facility_energy_kwh", "cost_usd", "co2e_kg", "market_co2e_kg", "embodied_co2e_kg", "embodied_gpu_co2e_kg",
           "embodied_server_co2e_kg", *FRACTIONS)


def period_of(hour_s: int, period: str | None) -> str:
    if period is None:
        return ""
    stamp = datetime.fromtimestamp(hour_s, UTC)
    return stamp.strftime("%Y-%m") if period == "month" else stamp.strftime("%Y-%m-%d")


def _accumulate(into: dict[str, Any], priced: dict[str, Any]) -> None:
    for key in TOTALS:
        into[key] += priced[key]
    for key in OPTIONAL:
        if priced[key] is not None:
            into[key] = (into[key] or 0.0) + priced[key]
    for key in FRACTIONS:  # energy-weighted, so the parts add up
        into["_" + key] += (priced[key] or 0.0) * priced["gpu_energy_kwh"]


def _finish(values: dict[str, Any]) -> dict[str, Any]:
    energy = values["gpu_energy_kwh"]
    out = {k: v for k, v in values.items() if not k.startswith("_")}
    for key in FRACTIONS:
        out[key] = values["_" + key] / energy if energy else None
    return out


def _empty() -> dict[str, Any]:
    return dict.fromkeys(TOTALS, 0.0) | dict.fromkeys(OPTIONAL) | {"_" + k: 0.0 for k in FRACTIONS}


def build_usage(engine: Engine, config: LedgerConfig, group_by: str, from_s: float, to_s: float,
                period: str | None = None) -> dict[str, Any]:
    groups = reads.usage_by_group(engine, group_by, from_s, to_s)
    hourly = intensity_for(engine, [row for rows in groups.values() for row in rows], config)
    sums: dict[tuple[str, str], dict[str, Any]] = defaultdict(_empty)
    whole = _empty()
    for (name, cluster), rows in groups.items():
        by_period: dict[str, list[UsageRow]] = defaultdict(list)
        for row in rows:
            by_period[period_of(row.hour_s, period)].append(row)
        for when, part in by_period.items():
            priced = price(part, config, cluster, hourly)
            _accumulate(sums[(name, when)], priced)
            _accumulate(whole, priced)
    items = [{"group": name, "period": when or None, **_finish(values)} for (name, when), values in sums.items()]
    items.sort(key=lambda item: (item["period"] or "", -item["cost_usd"], item["group"]))
    return {
        "group_by": group_by, "period": period, "from": datetime.fromtimestamp(from_s // 3600 * 3600, UTC),
        "to": datetime.fromtimestamp(to_s, UTC), "items": items, "total": _finish(whole),
    }


def usage_csv(usage: dict[str, Any]) -> str:
    """One line per group (and period), then the total; empty cells where a figure is not stated."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([usage["group_by"] if c == "group" else c for c in COLUMNS])
    for item in [*usage["items"], {"group": "(total)", **usage["total"]}]:
        writer.writerow([csv_cell(item.get(c)) for c in COLUMNS])
    return out.getvalue()
