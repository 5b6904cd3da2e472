"""Turn stored physics (GPU-seconds, joules) into a report: GPU-hours, kWh, USD, CO2e.

    gpu_hours           = Σ gpu_seconds / 3600
    energy_kwh          = Σ energy_j / 3.6e6
    facility_energy_kwh = Σ_datacenter energy_kwh × PUE(datacenter)
    co2e_kg             = Σ_datacenter facility_energy_kwh × intensity(region) / 1000
    cost_usd            = Σ_model gpu_hours × usd_per_gpu_hour(model)
    embodied_co2e_kg    = Σ_model gpu_hours × embodied_kg_per_gpu_hour(model)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.rates import LedgerConfig


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A job's rollups summed per (datacenter, GPU model)."""

    datacenter: str
    gpu_model: str
    gpu_seconds: float
    busy_gpu_seconds: float
    energy_j: float
    energy_counter_j: float


def price(rows: list[UsageRow], config: LedgerConfig) -> dict[str, Any]:
    """Totals, the breakdown per (datacenter, model), and every rate applied."""
    totals = dict.fromkeys(
        ("gpu_hours", "busy_gpu_hours", "energy_kwh", "facility_energy_kwh", "cost_usd", "co2e_kg", "embodied_co2e_kg"), 0.0
    )
    rates: dict[str, dict[str, Any]] = {
        "usd_per_gpu_hour": {}, "embodied_kg_per_gpu_hour": {}, "pue": {}, "region": {}, "grid_intensity_g_per_kwh": {},
    }
    breakdown = []
    counter_j = energy_j = 0.0
    for row in sorted(rows, key=lambda r: (r.datacenter, r.gpu_model)):
        dc = config.datacenter(row.datacenter)
        usd, embodied, intensity = config.price_usd_per_gpu_hour(row.gpu_model), config.embodied(row.gpu_model), config.intensity(dc.region)
        gpu_hours, kwh = row.gpu_seconds / 3600, row.energy_j / 3.6e6
        part = {
            "datacenter": row.datacenter, "gpu_model": row.gpu_model,
            "gpu_hours": gpu_hours, "busy_gpu_hours": row.busy_gpu_seconds / 3600,
            "energy_kwh": kwh, "facility_energy_kwh": kwh * dc.pue,
            "cost_usd": gpu_hours * usd, "co2e_kg": kwh * dc.pue * intensity / 1000,
            "embodied_co2e_kg": gpu_hours * embodied,
        }
        breakdown.append(part)
        for key in totals:
            totals[key] += part[key]
        counter_j += row.energy_counter_j
        energy_j += row.energy_j
        rates["usd_per_gpu_hour"][row.gpu_model] = usd
        rates["embodied_kg_per_gpu_hour"][row.gpu_model] = embodied
        rates["pue"][row.datacenter] = dc.pue
        rates["region"][row.datacenter] = dc.region
        rates["grid_intensity_g_per_kwh"][dc.region] = intensity
    totals["energy_measured_fraction"] = counter_j / energy_j if energy_j > 0 else None
    return {**totals, "rates": rates, "breakdown": breakdown}
