"""Static annual grid intensities by country (ISO 3166-1 alpha-2), the fallback for a region
that has neither an hourly series nor a figure in the configuration.

Source: Ember, yearly electricity data, as published by Our World in Data ("Carbon intensity
of electricity generation", lifecycle gCO2e per kWh generated, year 2023); Norway and the
world average from Ember's 2023 figures as charted by Statista (2024).
"""

from __future__ import annotations

SOURCE = "Ember 2023 (via Our World in Data; NO and world via Statista), lifecycle gCO2e/kWh"

ANNUAL_G_PER_KWH_2023: dict[str, float] = {
    "AR": 354.0, "AT": 111.0, "AU": 549.0, "BE": 138.0, "BG": 335.0, "BR": 98.0, "CA": 170.0,
    "CL": 291.0, "CN": 582.0, "CO": 260.0, "CR": 53.0, "CY": 534.0, "CZ": 450.0, "DE": 381.0,
    "DK": 152.0, "EC": 150.0, "EE": 417.0, "EG": 570.0, "FI": 79.0, "FR": 56.0, "GR": 337.0,
    "HR": 205.0, "HU": 204.0, "IE": 291.0, "IN": 713.0, "IR": 655.0, "NO": 30.0, "world": 481.0,
}
