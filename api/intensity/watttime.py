"""WattTime v3 client: the average (co2_aoer) and marginal (co2_moer) emission rates, apart.

Response shape (WattTime's OpenAPI ``V3Response`` and its v2→v3 transition guide):
``{data: [{point_time, value, imputed_data_used?}], meta: {region, signal_type, units:
"lbs_co2_per_mwh", data_point_period_seconds, ...}}``; ``imputed_data_used`` comes with
``include_imputed_marker=true``. Login is HTTP Basic on ``/login`` for a bearer token.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from api.intensity.sources import (
    FIVE_MINUTES_S,
    LB_PER_MWH_TO_G_PER_KWH,
    IntensityPoint,
    _Source,
    intensity_g_per_kwh,
    iso_utc,
    member,
    timestamp_s,
)

AOER, MOER = "co2_aoer", "co2_moer"  # WattTime's average (accounting) and marginal (load-shifting) rates


class WattTime(_Source):
    """WattTime v3, lbs/MWh → g/kWh. ``historical`` is the *average* operating emissions rate
    (``co2_aoer``), the one to account a job's CO2e with; ``marginal`` the *marginal* rate
    (``co2_moer``), what one more kWh emits now, for what-if and load shifting: kept apart.
    Points WattTime made from imputed data (``imputed_data_used``) are marked estimated."""

    source = "watttime"

    def __init__(self, username: str, password: str, base_url: str = "https://api.watttime.org",
                 client: httpx.Client | None = None, *, timeout_s: float = 10.0, retries: int = 3,
                 sleep: Callable[[float], None] = time.sleep, backoff_s: float = 0.5,
                 rng: random.Random | None = None) -> None:
        super().__init__(base_url, client, timeout_s, retries, sleep, backoff_s, rng)
        self._auth = httpx.BasicAuth(username, password)
        self._token: str | None = None

    def historical(self, region_code: str, start_s: float, end_s: float, region: str) -> list[IntensityPoint]:
        """The average rate (co2_aoer) over [start_s, end_s]: for accounting."""
        return self._signal(AOER, region_code, start_s, end_s, region)

    def marginal(self, region_code: str, start_s: float, end_s: float, region: str) -> list[IntensityPoint]:
        """The marginal rate (co2_moer) over [start_s, end_s]: for what-if, never for accounting."""
        return self._signal(MOER, region_code, start_s, end_s, region)

    def _signal(self, signal_type: str, region_code: str, start_s: float, end_s: float, region: str) -> list[IntensityPoint]:
        if not end_s > start_s:
            raise ValueError(f"end_s = {end_s!r}: expected a time after start_s = {start_s!r}")
        params = {"region": region_code, "start": iso_utc(start_s), "end": iso_utc(end_s), "signal_type": signal_type,
                  "include_imputed_marker": "true"}
        body = self._get_authed("/v3/historical", params)
        url = f"GET {httpx.URL(self._http.base_url + '/v3/historical', params=params)}"
        return self._parse(url, lambda: self._points(body, region, signal_type))

    def _login(self) -> str:
        body = self._http.get_json("/login", auth=self._auth)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise self._http.fail(f"GET {self._http.base_url}/login", f"token = {token!r}: expected a non-empty string")
        return token

    def _get_authed(self, path: str, params: Mapping[str, str]) -> Any:
        """GET with the bearer token; a 401 (token expired) logs in again once."""
        if self._token is None:
            self._token = self._login()
        response = self._http.get(path, params=params, headers={"Authorization": f"Bearer {self._token}"},
                                  pass_statuses=frozenset({401}))
        if response.status_code == 401:
            self._token = self._login()
            response = self._http.get(path, params=params, headers={"Authorization": f"Bearer {self._token}"})
        return self._http.decode(response)

    def _points(self, body: Any, region: str, signal_type: str) -> Iterator[IntensityPoint | None]:
        meta = member(body, "meta", "")
        for key, expected in (("units", "lbs_co2_per_mwh"), ("signal_type", signal_type)):
            if member(meta, key, "meta") != expected:
                raise ValueError(f"meta.{key} = {meta[key]!r}: expected {expected!r}")
        period_s = meta.get("data_point_period_seconds", FIVE_MINUTES_S)
        if isinstance(period_s, bool) or not isinstance(period_s, (int, float)) or not 0 < period_s < math.inf:
            raise ValueError(f"meta.data_point_period_seconds = {period_s!r}: expected a number of seconds > 0")
        data = member(body, "data", "")
        if not isinstance(data, list):
            raise ValueError(f"data = <{type(data).__name__}>: expected a list")
        for i, entry in enumerate(data):
            value = member(entry, "value", f"data[{i}]")
            if value is None:
                yield None
                continue
            lbs_per_mwh = intensity_g_per_kwh(value, f"data[{i}].value")
            start_s = timestamp_s(member(entry, "point_time", f"data[{i}]"), f"data[{i}].point_time")
            imputed = entry.get("imputed_data_used", False)
            if not isinstance(imputed, bool) and imputed is not None:
                raise ValueError(f"data[{i}].imputed_data_used = {imputed!r}: expected true, false or null")
            yield IntensityPoint(region, start_s, start_s + period_s, lbs_per_mwh * LB_PER_MWH_TO_G_PER_KWH,
                                 self.source, imputed is True)
