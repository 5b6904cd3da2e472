"""Fetch the configured intensity providers into the database (run by APScheduler)."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Engine

from api.accounting.rates import IntensityProvider
from api.intensity.sources import ElectricityMaps, IntensityPoint, IntensityUnavailable, UkNationalGrid
from api.intensity.store import marginal_t, store
from api.intensity.watttime import WattTime

log = logging.getLogger(__name__)
DAY_S = 86400.0
WATTTIME_URL = "https://api.watttime.org"


def fetch(provider: IntensityProvider, now_s: float) -> list[IntensityPoint]:
    """The last day of the provider's series for ``provider.region``."""
    base: dict[str, Any] = {"base_url": provider.base_url} if provider.base_url else {}
    if provider.kind == "electricitymaps":
        with ElectricityMaps(provider.token or "", **base) as client:
            return client.history(provider.zone, provider.region)
    if provider.kind == "watttime":
        with WattTime(provider.username or "", provider.password or "", **base) as client:
            return client.historical(provider.zone, now_s - DAY_S, now_s, provider.region)
    with UkNationalGrid(**base) as client:
        return client.between(now_s - DAY_S, now_s, provider.region)


def fetch_marginal(provider: IntensityProvider, now_s: float) -> list[IntensityPoint]:
    """The last day of the provider's marginal series (WattTime co2_moer); none for the others."""
    if provider.kind != "watttime":
        return []
    with WattTime(provider.username or "", provider.password or "", provider.base_url or WATTTIME_URL) as client:
        return client.marginal(provider.zone, now_s - DAY_S, now_s, provider.region)


def refresh(engine: Engine, provider: IntensityProvider) -> int:
    """Fetch and store; a provider that fails leaves the series as it was (reports fall back to
    the region's static figure for hours without data, and say so). WattTime's marginal series
    goes to its own table; its failure (a plan without co2_moer) costs only the what-if."""
    now_s = time.time()
    stored = 0
    for what, get, table in (("grid intensity", fetch, None), ("marginal intensity", fetch_marginal, marginal_t)):
        try:
            points = get(provider, now_s)
            stored += store(engine, points, now_s) if table is None else store(engine, points, now_s, table)
        except IntensityUnavailable as exc:
            log.warning("%s for region %s not refreshed: %s", what, provider.region, exc)
    return stored
