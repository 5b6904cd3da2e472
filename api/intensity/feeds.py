"""Fetch the configured intensity providers into the database (run by APScheduler)."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Engine

from api.accounting.rates import IntensityProvider
from api.intensity.sources import ElectricityMaps, IntensityPoint, IntensityUnavailable, UkNationalGrid, WattTime
from api.intensity.store import store

log = logging.getLogger(__name__)
DAY_S = 86400.0


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


def refresh(engine: Engine, provider: IntensityProvider) -> int:
    """Fetch and store; a provider that fails leaves the series as it was (reports fall back to
    the region's static figure for hours without data, and say so)."""
    now_s = time.time()
    try:
        return store(engine, fetch(provider, now_s), now_s)
    except IntensityUnavailable as exc:
        log.warning("grid intensity for region %s not refreshed: %s", provider.region, exc)
        return 0
