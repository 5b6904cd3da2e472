"""A job's energy priced at the grid's *marginal* emission rate (WattTime co2_moer): what the
same energy caused at the margin, hour by hour. For what-if and load shifting only; the
accounted CO2e (``co2e_kg``) uses the average rate. Hours without a marginal value are left
out and said so (``marginal_hourly_fraction``), never filled with an average.

    marginal_co2e_kg = Σ_h facility_energy_kwh(h) × moer(region, h) / 1000   over hours with a value
"""

from __future__ import annotations

from typing import Any

from api.accounting.pricing import Hourly, UsageRow, facility_kwh
from api.accounting.rates import LedgerConfig


def marginal_co2e(rows: list[UsageRow], config: LedgerConfig, marginal: Hourly) -> dict[str, Any]:
    """``marginal_co2e_kg`` (None when no hour has a marginal value) and the share of the
    facility energy it covers."""
    total_kwh = covered_kwh = kg = 0.0
    for row in rows:
        dc = config.datacenter(row.datacenter)
        kwh = facility_kwh(row, dc)
        total_kwh += kwh
        g_per_kwh = marginal.get((dc.region, row.hour_s))
        if g_per_kwh is not None:
            covered_kwh += kwh
            kg += kwh * g_per_kwh / 1000
    return {
        "marginal_co2e_kg": kg if covered_kwh > 0 else None,
        "marginal_hourly_fraction": covered_kwh / total_kwh if total_kwh > 0 else None,
    }
