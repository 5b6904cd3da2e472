"""Turn stored physics (GPU-seconds, joules) into a report, hour by hour.

For each hourly rollup h of datacenter d and GPU model m:

    gpu_hours           = gpu_seconds / 3600
    energy_kwh          = energy_j / 3.6e6 + gpu_hours × node_overhead_w(d) / gpus_per_node(d) / 1000
    facility_energy_kwh = energy_kwh × PUE(d, h)
    co2e_kg             = facility_energy_kwh × intensity(region(d), h) / 1000      (location-based)
    market_co2e_kg      = facility_energy_kwh × market_g_per_kwh(d) / 1000           (if configured)
    cost_usd            = gpu_hours × usd_per_gpu_hour(m, cluster, h)                (rate card or list)
                        | gpu_hours × capex / (lifetime × 8760 × utilisation) + facility_energy_kwh × usd_per_kwh(d)   (TCO)
    embodied_co2e_kg    = gpu_hours × embodied_kg_per_gpu_hour(m)

intensity(region, h) is the hourly series where the database has that hour, else the
region's static figure; the report says which share of the energy each priced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from api.accounting.rates import BUILT_IN, Datacenter, LedgerConfig, Tco
from api.accounting.rates import HOURLY as HOURLY_SOURCE

TOTALS = ("gpu_hours", "busy_gpu_hours", "gpu_energy_kwh", "overhead_energy_kwh", "energy_kwh",
          "facility_energy_kwh", "cost_usd", "co2e_kg", "embodied_co2e_kg")
Hourly = Mapping[tuple[str, int], float]  # (region, hour_s) -> gCO2e/kWh
Applied = dict[tuple[str, str], set[float]]  # (kind, key) -> the rates applied


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A job's rollup for one hour, datacenter and GPU model."""

    hour_s: int
    datacenter: str
    gpu_model: str
    gpu_seconds: float
    busy_gpu_seconds: float
    energy_j: float
    energy_counter_j: float
    energy_declared_j: float = 0.0  # declared with imported usage (`gpuledger import`)
    energy_estimated_j: float = 0.0  # estimated at import from GPU-hours × TDP (or the declared power)


@dataclass(frozen=True, slots=True)
class GroupedUsage:
    """A job's hourly rollups of one (datacenter, GPU model) summed over a period in which every
    rate is constant (``rate_boundaries``), with the hourly intensity applied in the sums:
    ``*_g`` are sums of the quantity times the hour's stored gCO2e/kWh over the hours that have
    one; ``series_*`` the quantity over those hours."""

    hour_s: int  # the first hour of the period (where the rates are looked up)
    datacenter: str
    gpu_model: str
    gpu_seconds: float
    busy_gpu_seconds: float
    energy_j: float
    energy_counter_j: float
    energy_declared_j: float = 0.0
    energy_estimated_j: float = 0.0
    hours: int = 1
    series_gpu_seconds: float = 0.0
    series_energy_j: float = 0.0
    gpu_seconds_g: float = 0.0
    energy_j_g: float = 0.0
    series_hours: int = 0
    min_g: float | None = None
    max_g: float | None = None


def rate_boundaries(config: LedgerConfig) -> list[int]:
    """Every time at which some rate changes (PUE schedules, rate cards); between two of them
    all rates but the hourly grid intensity are constant."""
    times = {change.start.timestamp() for dc in config.datacenters.values() for change in dc.pue_schedule}
    if not config.pricing.reprice_history:
        times |= {card.valid_from.timestamp() for card in config.rate_cards}
    return sorted(int(-(-t // 1)) for t in times)  # hour_s >= t  <=>  hour_s >= ceil(t), hours being integers


def regions(config: LedgerConfig) -> tuple[dict[str, str], str]:
    """Each configured datacenter's region, and the region of any other."""
    return {name: dc.region for name, dc in config.datacenters.items()}, config.datacenter("\0unconfigured").region


@dataclass(frozen=True, slots=True)
class _Fixed:
    """The rates of one (datacenter, GPU model) that do not change from hour to hour."""

    dc: Datacenter
    tco: Tco | None
    embodied_kg_per_gpu_hour: float
    static_intensity: float
    embodied_split: tuple[float, float] | None = None  # (GPU, server) kg per GPU-hour, where stated


def _fixed(config: LedgerConfig, datacenter: str, gpu_model: str) -> _Fixed:
    dc = config.datacenter(datacenter)
    return _Fixed(dc, config.tco_for(gpu_model), config.embodied_kg(gpu_model), config.intensity(dc.region),
                  config.embodied_split(gpu_model))


def overhead_kwh(row: UsageRow, dc: Datacenter) -> float:
    """The node overhead (CPU, memory, NICs) the row's GPU-hours carry."""
    return row.gpu_seconds / 3600 * dc.node_overhead_w / dc.gpus_per_node / 1000


def facility_kwh(row: UsageRow, dc: Datacenter) -> float:
    """The row's GPU and overhead energy at the facility meter (× PUE of its hour)."""
    return (row.energy_j / 3.6e6 + overhead_kwh(row, dc)) * dc.pue_at(row.hour_s)


def _hour(row: UsageRow, fixed: _Fixed, config: LedgerConfig, cluster: str, hourly: Hourly, applied: Applied) -> dict[str, Any]:
    dc, tco = fixed.dc, fixed.tco
    gpu_hours = row.gpu_seconds / 3600
    pue = dc.pue_at(row.hour_s)
    overhead = overhead_kwh(row, dc)
    facility = facility_kwh(row, dc)
    series = hourly.get((dc.region, row.hour_s))
    intensity = series if series is not None else fixed.static_intensity
    if tco is not None:
        usd_rate = tco.usd_per_gpu_hour
        cost = gpu_hours * usd_rate + facility * dc.usd_per_kwh
    else:
        usd_rate = config.price_usd_per_gpu_hour(row.gpu_model, cluster, row.hour_s)
        cost = gpu_hours * usd_rate
    applied[("usd", row.gpu_model)].add(usd_rate)
    applied[("pue", row.datacenter)].add(pue)
    applied[("intensity", dc.region)].add(intensity)
    return {
        "gpu_seconds": row.gpu_seconds, "busy_gpu_seconds": row.busy_gpu_seconds, "energy_j": row.energy_j,
        "energy_declared_j": row.energy_declared_j, "energy_estimated_j": row.energy_estimated_j,
        "overhead_energy_kwh": overhead,
        "facility_energy_kwh": facility, "cost_usd": cost, "co2e_kg": facility * intensity / 1000,
        "market_co2e_kg": None if dc.market_g_per_kwh is None else facility * dc.market_g_per_kwh / 1000,
        "embodied_co2e_kg": gpu_hours * fixed.embodied_kg_per_gpu_hour,
        "hourly_facility_kwh": facility if series is not None else 0.0,
        **_embodied_parts(gpu_hours, fixed.embodied_split),
    }


def _embodied_parts(gpu_hours: float, split: tuple[float, float] | None) -> dict[str, float | None]:
    if split is None:
        return {"embodied_gpu_co2e_kg": None, "embodied_server_co2e_kg": None}
    return {"embodied_gpu_co2e_kg": gpu_hours * split[0], "embodied_server_co2e_kg": gpu_hours * split[1]}


def _group(row: GroupedUsage, fixed: _Fixed, config: LedgerConfig, cluster: str, applied: Applied) -> dict[str, Any]:
    """``_hour`` for a period's sums: linear in seconds and joules, the intensity inside the sums."""
    dc = fixed.dc
    per_gpu_hour_kwh = dc.node_overhead_w / dc.gpus_per_node / 1000
    scratch: Applied = defaultdict(set)
    priced = _hour(UsageRow(row.hour_s, row.datacenter, row.gpu_model, row.gpu_seconds, row.busy_gpu_seconds,
                            row.energy_j, row.energy_counter_j, row.energy_declared_j, row.energy_estimated_j),
                   fixed, config, cluster, {}, scratch)
    for kind, key in (("usd", row.gpu_model), ("pue", row.datacenter)):
        applied[(kind, key)] |= scratch[(kind, key)]
    pue = dc.pue_at(row.hour_s)
    series_kwh = (row.series_energy_j / 3.6e6 + row.series_gpu_seconds / 3600 * per_gpu_hour_kwh) * pue
    weighted = (row.energy_j_g / 3.6e6 + row.gpu_seconds_g / 3600 * per_gpu_hour_kwh) * pue  # facility kWh x g/kWh
    static_kwh = priced["facility_energy_kwh"] - series_kwh
    intensities = applied[("intensity", dc.region)]
    if row.series_hours and row.min_g is not None and row.max_g is not None:
        intensities.update((row.min_g, row.max_g))
    if row.series_hours < row.hours:
        intensities.add(fixed.static_intensity)
    return priced | {"co2e_kg": (weighted + static_kwh * fixed.static_intensity) / 1000, "hourly_facility_kwh": series_kwh}


OPTIONAL = ("market_co2e_kg", "embodied_gpu_co2e_kg", "embodied_server_co2e_kg")  # None where not stated
SUMMED = ("gpu_seconds", "busy_gpu_seconds", "energy_j", "cost_usd", "co2e_kg", "embodied_co2e_kg")


def price_sums(
    rows: list[UsageRow], config: LedgerConfig, cluster: str, hourly: Hourly, fixed: dict[tuple[str, str], _Fixed]
) -> dict[str, float]:
    """Only the summed physics, cost and CO2e of ``rows`` (no breakdown, no rates): for /metrics.
    ``fixed`` caches each (datacenter, model)'s fixed rates across calls."""
    sums = dict.fromkeys(SUMMED, 0.0)
    applied: Applied = defaultdict(set)
    for row in rows:
        key = (row.datacenter, row.gpu_model)
        if key not in fixed:
            fixed[key] = _fixed(config, *key)
        hour = _hour(row, fixed[key], config, cluster, hourly, applied)
        for name in SUMMED:
            sums[name] += hour[name]
        if hour["market_co2e_kg"] is not None:  # present only where a contractual factor is configured
            sums["market_co2e_kg"] = sums.get("market_co2e_kg", 0.0) + hour["market_co2e_kg"]
    return sums


def _add(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if value is None:
            into.setdefault(key, None)
        else:
            into[key] = (into.get(key) or 0.0) + value


def _derive(part: dict[str, Any]) -> dict[str, Any]:
    """Hours and kWh from the summed seconds and joules: exact sums, one division."""
    gpu_kwh = part["energy_j"] / 3.6e6
    return part | {
        "gpu_hours": part["gpu_seconds"] / 3600, "busy_gpu_hours": part["busy_gpu_seconds"] / 3600,
        "gpu_energy_kwh": gpu_kwh, "energy_kwh": gpu_kwh + part["overhead_energy_kwh"],
    }


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _rate(applied: Applied, kind: str, key: str, num: float, den: float) -> float | None:
    """The one rate applied, or when it changed over the hours, the effective one (num / den)."""
    rates = applied.get((kind, key), set())
    return next(iter(rates)) if len(rates) == 1 else _ratio(num, den)


def price(rows: list[UsageRow], config: LedgerConfig, cluster: str = "", hourly: Hourly | None = None) -> dict[str, Any]:
    """Totals, the breakdown per (datacenter, model), and the effective rate of every kind applied."""
    hours = hourly or {}
    return _priced(rows, config, lambda row, fixed, applied: _hour(row, fixed, config, cluster, hours, applied))


def price_grouped(groups: list[GroupedUsage], config: LedgerConfig, cluster: str = "") -> dict[str, Any]:
    """``price`` from rollups pre-summed per period of constant rates: the same report, at a cost
    that depends on the number of rate periods, not on the job's length."""
    return _priced(groups, config, lambda group, fixed, applied: _group(group, fixed, config, cluster, applied))


def _priced(items: list[Any], config: LedgerConfig, part_of: Callable[[Any, _Fixed, Applied], dict[str, Any]]) -> dict[str, Any]:
    """Each item (an hour or a pre-summed group) priced with its (datacenter, model)'s fixed rates, then assembled."""
    parts: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    applied: Applied = defaultdict(set)
    counter_j = energy_j = declared_j = estimated_j = 0.0
    fixed: dict[tuple[str, str], _Fixed] = {}
    for item in items:
        key = (item.datacenter, item.gpu_model)
        if key not in fixed:
            fixed[key] = _fixed(config, *key)
        _add(parts[key], part_of(item, fixed[key], applied))
        counter_j += item.energy_counter_j
        energy_j += item.energy_j
        declared_j += item.energy_declared_j
        estimated_j += item.energy_estimated_j
    return _assemble(parts, applied, config, (counter_j, energy_j, declared_j, estimated_j))


def _assemble(parts: dict[tuple[str, str], dict[str, Any]], applied: Applied, config: LedgerConfig,
              energy: tuple[float, float, float, float]) -> dict[str, Any]:
    """Totals, breakdown and rates from the per-(datacenter, model) sums; ``energy`` is
    (counter, all, declared, estimated) joules."""
    counter_j, energy_j, declared_j, estimated_j = energy
    totals: dict[str, Any] = dict.fromkeys(TOTALS, 0.0)
    totals["market_co2e_kg"] = None
    totals["embodied_gpu_co2e_kg"] = totals["embodied_server_co2e_kg"] = None
    by_region: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # facility, co2e, hourly kWh
    rates: dict[str, dict[str, Any]] = {k: {} for k in (
        "usd_per_gpu_hour", "cost_method", "embodied_kg_per_gpu_hour", "pue", "region", "market_g_per_kwh",
        "node_overhead_w", "grid_intensity_g_per_kwh", "intensity_hourly_fraction")}
    breakdown = []
    raw = dict.fromkeys(("gpu_seconds", "busy_gpu_seconds", "energy_j", "overhead_energy_kwh"), 0.0)
    for (dc_name, model), part in sorted(parts.items()):
        part = _derive(part)
        _add(raw, {k: part[k] for k in raw})
        _add(totals, {k: part[k] for k in (*TOTALS, *OPTIONAL)})
        dc = config.datacenter(dc_name)
        region = by_region[dc.region]
        region[0] += part["facility_energy_kwh"]
        region[1] += part["co2e_kg"]
        region[2] += part["hourly_facility_kwh"]
        rates["usd_per_gpu_hour"][model] = _rate(applied, "usd", model, part["cost_usd"], part["gpu_hours"])
        rates["cost_method"][model] = "tco" if config.tco_for(model) else ("rate_card" if config.rate_cards else "list")
        rates["embodied_kg_per_gpu_hour"][model] = config.embodied_kg(model)
        rates["pue"][dc_name] = _rate(applied, "pue", dc_name, part["facility_energy_kwh"], part["energy_kwh"]) or dc.pue
        rates["region"][dc_name] = dc.region
        rates["market_g_per_kwh"][dc_name] = dc.market_g_per_kwh
        rates["node_overhead_w"][dc_name] = dc.node_overhead_w
        breakdown.append({"datacenter": dc_name, "gpu_model": model, **{k: part[k] for k in (*TOTALS, *OPTIONAL)},
                          "energy_declared_kwh": part["energy_declared_j"] / 3.6e6,
                          "energy_estimated_kwh": part["energy_estimated_j"] / 3.6e6})
    for name, (facility, co2e, hourly_kwh) in by_region.items():
        rates["grid_intensity_g_per_kwh"][name] = _rate(applied, "intensity", name, co2e * 1000, facility) or config.intensity(name)
        rates["intensity_hourly_fraction"][name] = _ratio(hourly_kwh, facility) or 0.0
    totals.update({k: v for k, v in _derive(raw).items() if k in TOTALS})  # exact: from summed seconds and joules
    totals["energy_measured_fraction"] = counter_j / energy_j if energy_j > 0 else None
    totals["energy_declared_fraction"] = declared_j / energy_j if energy_j > 0 else None
    totals["energy_tdp_estimated_fraction"] = estimated_j / energy_j if energy_j > 0 else None
    sources = rate_sources(rates, config)
    return {**totals, "rates": rates, "rate_sources": sources, "defaults_used": defaults_line(sources, rates),
            "breakdown": breakdown}


def rate_sources(rates: dict[str, dict[str, Any]], config: LedgerConfig) -> dict[str, dict[str, str]]:
    """Where each rate in ``rates`` came from: config, hourly series, static country figure, built-in default."""
    sources: dict[str, dict[str, str]] = {}
    for kind in ("usd_per_gpu_hour", "embodied_kg_per_gpu_hour", "pue", "market_g_per_kwh", "node_overhead_w"):
        sources[kind] = {key: config.source(kind, key) for key in rates[kind]}
    sources["grid_intensity_g_per_kwh"] = {}
    for region, share in rates["intensity_hourly_fraction"].items():
        static = config.source("grid_intensity_g_per_kwh", region)
        sources["grid_intensity_g_per_kwh"][region] = (
            HOURLY_SOURCE if share >= 1.0 else static if share <= 0.0 else f"{HOURLY_SOURCE} + {static}"
        )
    return sources


def defaults_line(sources: dict[str, dict[str, str]], rates: dict[str, dict[str, Any]]) -> list[str]:
    """One line per rate priced with a built-in default, for the report's ``defaults_used``."""
    return [
        f"{kind}[{key}] = {rates[kind][key]:g}: built-in default"
        for kind, table in sources.items() for key, source in table.items()
        if source.endswith(BUILT_IN) and isinstance(rates[kind].get(key), int | float)
    ]
