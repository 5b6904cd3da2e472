"""Grid carbon-intensity clients: Electricity Maps v3 and the UK National Grid API (WattTime v3
in ``api.intensity.watttime``).

Each client returns ``IntensityPoint`` values in gCO2e/kWh over ``[start_s, end_s)``; storing
them is the caller's job. Requests retry connect errors, timeouts, 429 and 5xx with exponential
backoff and jitter (``retries`` extra tries after the first); other 4xx fail at once. Every
failure is an ``IntensityUnavailable`` naming the provider, the URL and the cause; a value that
is not a finite number >= 0 fails with the field and the value. A null value is a gap: the
point is skipped, never stored as 0.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import httpx

LB_PER_MWH_TO_G_PER_KWH = 0.45359237  # 1 lb = 453.59237 g, 1 MWh = 1000 kWh
HOUR_S, HALF_HOUR_S, FIVE_MINUTES_S = 3600.0, 1800.0, 300.0
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class IntensityPoint:
    region: str  # our region key (caller-chosen), not necessarily the provider's zone id
    start_s: float  # Unix seconds, start of the period the value covers
    end_s: float  # Unix seconds, end of that period
    g_per_kwh: float  # gCO2e per kWh
    source: str  # "electricitymaps", "watttime", "uk-national-grid", "csv"
    estimated: bool  # the provider said estimated / forecast


class IntensityUnavailable(RuntimeError):
    def __init__(self, provider: str, url: str, cause: str, status_code: int | None = None) -> None:
        super().__init__(f"{provider}: {url}: {cause}")
        self.provider, self.url, self.cause, self.status_code = provider, url, cause, status_code


def intensity_g_per_kwh(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} = {value!r}: expected a number of gCO2e/kWh")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{field} = {value!r}: expected a finite number >= 0")
    return float(value)


def timestamp_s(value: Any, field: str) -> float:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"{field} = {value!r}: expected an ISO 8601 time with a timezone")
    return parsed.timestamp()


def iso_utc(seconds: float, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime(fmt)


def member(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where or 'body'} = <{type(obj).__name__}>: expected a JSON object")
    if key not in obj:
        raise ValueError(f"{where + '.' if where else ''}{key} is missing")
    return obj[key]


class _Http:
    """GET with retries; owns its httpx.Client only when none was injected."""

    def __init__(self, provider: str, base_url: str, client: httpx.Client | None, timeout_s: float,
                 retries: int, sleep: Callable[[float], None], backoff_s: float, rng: random.Random | None) -> None:
        if retries < 0:
            raise ValueError(f"retries = {retries!r}: expected an integer >= 0")
        self.provider, self.base_url = provider, base_url.rstrip("/")
        self.owns_client, self.client = client is None, client or httpx.Client()
        self.timeout_s, self.retries, self.sleep, self.backoff_s = timeout_s, retries, sleep, backoff_s
        self.rng = rng or random.Random()

    def fail(self, url: str, cause: str, status_code: int | None = None) -> IntensityUnavailable:
        return IntensityUnavailable(self.provider, url, cause, status_code)

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        backoff_s = self.backoff_s * 2**attempt
        backoff_s += self.rng.uniform(0, backoff_s / 2)  # jitter: spread clients that failed together
        return min(MAX_BACKOFF_S, max(backoff_s, retry_after_s or 0.0))

    def get(self, path: str, *, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
            auth: httpx.Auth | None = None, pass_statuses: frozenset[int] = frozenset()) -> httpx.Response:
        """The response (status < 400 or in ``pass_statuses``), else IntensityUnavailable."""
        url = self.base_url + path
        shown = f"GET {httpx.URL(url, params=params)}"
        status_code, cause = None, ""
        for attempt in range(self.retries + 1):
            retry_after_s = None
            try:
                response = self.client.get(url, params=params, headers=headers, auth=auth, timeout=self.timeout_s)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                cause = f"{type(exc).__name__}: {str(exc) or 'no detail'}"
            except httpx.HTTPError as exc:
                raise self.fail(shown, f"{type(exc).__name__}: {exc}") from exc
            else:
                status_code = response.status_code
                if status_code < 400 or status_code in pass_statuses:
                    return response
                cause = f"HTTP {status_code}: {response.text[:200]!r}"
                if status_code != 429 and status_code < 500:
                    raise self.fail(shown, cause, status_code)
                retry_after_s = _retry_after_s(response)
            if attempt < self.retries:
                self.sleep(self.delay_s(attempt, retry_after_s))
        raise self.fail(shown, f"{cause} (gave up after {self.retries + 1} tries)", status_code)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.decode(self.get(path, **kwargs))

    def decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise self.fail(f"GET {response.url}", f"invalid JSON ({exc}): {response.text[:200]!r}") from exc


def _retry_after_s(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None  # absent, or an HTTP date: plain backoff


class _Source:
    source = ""

    def __init__(self, base_url: str, client: httpx.Client | None, timeout_s: float, retries: int,
                 sleep: Callable[[float], None], backoff_s: float, rng: random.Random | None) -> None:
        self._http = _Http(self.source, base_url, client, timeout_s, retries, sleep, backoff_s, rng)

    def close(self) -> None:
        if self._http.owns_client:
            self._http.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parse(self, url: str, parse: Callable[[], Iterable[IntensityPoint | None]]) -> list[IntensityPoint]:
        """The parsed points sorted by start (None = a gap, skipped); a ValueError names the URL too."""
        try:
            return sorted((p for p in parse() if p is not None), key=lambda p: p.start_s)
        except ValueError as exc:
            raise self._http.fail(url, f"bad response: {exc}") from exc


class ElectricityMaps(_Source):
    """Electricity Maps v3: hourly average intensity per zone (``auth-token`` header)."""

    source = "electricitymaps"

    def __init__(self, token: str, base_url: str = "https://api.electricitymaps.com", client: httpx.Client | None = None,
                 *, timeout_s: float = 10.0, retries: int = 3, sleep: Callable[[float], None] = time.sleep,
                 backoff_s: float = 0.5, rng: random.Random | None = None) -> None:
        super().__init__(base_url, client, timeout_s, retries, sleep, backoff_s, rng)
        self._token = token

    def latest(self, zone: str, region: str) -> list[IntensityPoint]:
        body = self._get("/v3/carbon-intensity/latest", zone)
        return self._parse(self._url("latest", zone), lambda: [self._point(body, region, "")])

    def history(self, zone: str, region: str) -> list[IntensityPoint]:
        body = self._get("/v3/carbon-intensity/history", zone)

        def points() -> Iterator[IntensityPoint | None]:
            entries = member(body, "history", "")
            if not isinstance(entries, list):
                raise ValueError(f"history = <{type(entries).__name__}>: expected a list")
            for i, entry in enumerate(entries):
                yield self._point(entry, region, f"history[{i}]")

        return self._parse(self._url("history", zone), points)

    def _url(self, kind: str, zone: str) -> str:
        return f"GET {httpx.URL(f'{self._http.base_url}/v3/carbon-intensity/{kind}', params={'zone': zone})}"

    def _get(self, path: str, zone: str) -> Any:
        return self._http.get_json(path, params={"zone": zone}, headers={"auth-token": self._token})

    def _point(self, entry: Any, region: str, where: str) -> IntensityPoint | None:
        prefix = f"{where}." if where else ""
        value = member(entry, "carbonIntensity", where)
        if value is None:
            return None
        start_s = timestamp_s(member(entry, "datetime", where), f"{prefix}datetime")
        g_per_kwh = intensity_g_per_kwh(value, f"{prefix}carbonIntensity")
        return IntensityPoint(region, start_s, start_s + HOUR_S, g_per_kwh, self.source, entry.get("isEstimated") is True)


class UkNationalGrid(_Source):
    """carbonintensity.org.uk (no key): half-hourly GB intensity; ``actual`` else ``forecast``."""

    source = "uk-national-grid"

    def __init__(self, base_url: str = "https://api.carbonintensity.org.uk", client: httpx.Client | None = None,
                 *, timeout_s: float = 10.0, retries: int = 3, sleep: Callable[[float], None] = time.sleep,
                 backoff_s: float = 0.5, rng: random.Random | None = None) -> None:
        super().__init__(base_url, client, timeout_s, retries, sleep, backoff_s, rng)

    def current(self, region: str) -> list[IntensityPoint]:
        return self._fetch("/intensity", region)

    def between(self, start_s: float, end_s: float, region: str) -> list[IntensityPoint]:
        if not end_s > start_s:
            raise ValueError(f"end_s = {end_s!r}: expected a time after start_s = {start_s!r}")
        minute = "%Y-%m-%dT%H:%MZ"
        return self._fetch(f"/intensity/{iso_utc(start_s, minute)}/{iso_utc(end_s, minute)}", region)

    def _fetch(self, path: str, region: str) -> list[IntensityPoint]:
        body = self._http.get_json(path)
        return self._parse(f"GET {self._http.base_url}{path}", lambda: self._points(body, region))

    def _points(self, body: Any, region: str) -> Iterator[IntensityPoint | None]:
        data = member(body, "data", "")
        if not isinstance(data, list):
            raise ValueError(f"data = <{type(data).__name__}>: expected a list")
        for i, entry in enumerate(data):
            where = f"data[{i}]"
            intensity = member(entry, "intensity", where)
            actual = member(intensity, "actual", f"{where}.intensity")
            forecast = member(intensity, "forecast", f"{where}.intensity")
            if actual is None and forecast is None:
                yield None
                continue
            field = "actual" if actual is not None else "forecast"
            g_per_kwh = intensity_g_per_kwh(intensity[field], f"{where}.intensity.{field}")
            start_s = timestamp_s(member(entry, "from", where), f"{where}.from")
            end_s = timestamp_s(member(entry, "to", where), f"{where}.to")
            if not end_s > start_s:
                raise ValueError(f"{where}.to = {entry['to']!r}: expected a time after from = {entry['from']!r}")
            yield IntensityPoint(region, start_s, end_s, g_per_kwh, self.source, field == "forecast")
