"""Carbon-intensity clients against a local server replaying the providers' documented
response shapes, and the CSV importer."""

from __future__ import annotations

import base64
import math
import random
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from api.intensity import (
    LB_PER_MWH_TO_G_PER_KWH,
    ElectricityMaps,
    IntensityPoint,
    IntensityUnavailable,
    UkNationalGrid,
    WattTime,
    read_csv,
)
from tests.replay_server import RecordedRequest, ReplayServer, Reply

LATEST = "/v3/carbon-intensity/latest"
HISTORY = "/v3/carbon-intensity/history"
T0 = datetime(2026, 11, 26, 10, tzinfo=UTC).timestamp()


def utc_s(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def em_entry(hour: int, value: object = 312, estimated: bool = False) -> dict[str, object]:
    return {"zone": "DE", "carbonIntensity": value, "datetime": f"2026-11-26T{hour:02d}:00:00.000Z",
            "updatedAt": "2026-11-26T10:47:13.523Z", "emissionFactorType": "lifecycle", "isEstimated": estimated}


def wt_body(values: list[object], units: str = "lbs_co2_per_mwh", signal_type: str = "co2_aoer") -> dict[str, object]:
    data = [{"point_time": f"2026-11-26T10:{5 * i:02d}:00+00:00", "value": v} for i, v in enumerate(values)]
    return {"data": data, "meta": {"region": "CAISO_NORTH", "signal_type": signal_type, "units": units}}


def uk_entry(start: str, end: str, forecast: object, actual: object) -> dict[str, object]:
    return {"from": start, "to": end, "intensity": {"forecast": forecast, "actual": actual, "index": "moderate"}}


@pytest.fixture
def serve() -> Iterator[Callable[[dict], ReplayServer]]:
    started: list[ReplayServer] = []

    def start(routes: dict) -> ReplayServer:
        started.append(ReplayServer(routes).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def em(server: ReplayServer, sleeps: list[float], **kwargs: object) -> ElectricityMaps:
    return ElectricityMaps("em-token", base_url=server.url, sleep=sleeps.append, rng=random.Random(7), **kwargs)


# --- Electricity Maps -------------------------------------------------------------------------

def test_electricitymaps_latest_parses_hour_and_sends_token_and_zone(serve, sleeps) -> None:
    server = serve({("GET", LATEST): (200, em_entry(10, 312))})
    with em(server, sleeps) as client:
        points = client.latest("DE", "eu-central")
    assert points == [IntensityPoint("eu-central", T0, T0 + 3600, 312.0, "electricitymaps", False)]
    request = server.last("GET", LATEST)
    assert request.headers["auth-token"] == "em-token"
    assert request.query == {"zone": ["DE"]}
    assert sleeps == []


def test_electricitymaps_history_gives_24_sorted_hours_and_estimated_flags(serve, sleeps) -> None:
    entries = [em_entry(h, 200 + h, estimated=h >= 22) for h in range(24)]
    server = serve({("GET", HISTORY): (200, {"zone": "FR", "history": list(reversed(entries))})})
    points = em(server, sleeps).history("FR", "paris")
    day_s = datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    assert [p.start_s for p in points] == [day_s + 3600 * h for h in range(24)]
    assert all(p.end_s - p.start_s == 3600 for p in points)
    assert [p.g_per_kwh for p in points] == [200.0 + h for h in range(24)]
    assert [p.estimated for p in points] == [False] * 22 + [True] * 2
    assert {p.region for p in points} == {"paris"}
    assert server.last("GET", HISTORY).query == {"zone": ["FR"]}


def test_electricitymaps_null_value_is_a_gap_not_zero(serve, sleeps) -> None:
    history = [em_entry(0, 100), em_entry(1, None), em_entry(2, 120)]
    server = serve({("GET", HISTORY): (200, {"zone": "DE", "history": history})})
    points = em(server, sleeps).history("DE", "de")
    assert [p.g_per_kwh for p in points] == [100.0, 120.0]


def test_retry_after_503_then_success(serve, sleeps) -> None:
    server = serve({("GET", LATEST): [(503, {"error": "busy"}), (200, em_entry(10, 250))]})
    points = em(server, sleeps).latest("DE", "de")
    assert [p.g_per_kwh for p in points] == [250.0]
    assert server.calls("GET", LATEST) == 2
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.75


def test_retry_honours_retry_after_on_429(serve, sleeps) -> None:
    server = serve({("GET", LATEST): [(429, {"error": "slow down"}, {"Retry-After": "7"}), (200, em_entry(10))]})
    assert len(em(server, sleeps).latest("DE", "de")) == 1
    assert sleeps == [7.0]


def test_5xx_gives_up_after_retries_with_exponential_backoff(serve, sleeps) -> None:
    server = serve({("GET", LATEST): (502, {"error": "bad gateway"})})
    with pytest.raises(IntensityUnavailable) as caught:
        em(server, sleeps, retries=3).latest("DE", "de")
    assert server.calls("GET", LATEST) == 4
    assert len(sleeps) == 3
    for attempt, delay_s in enumerate(sleeps):
        assert 0.5 * 2**attempt <= delay_s <= 0.75 * 2**attempt
    message = str(caught.value)
    assert "electricitymaps" in message and f"{server.url}{LATEST}?zone=DE" in message
    assert "HTTP 502" in message and "4 tries" in message
    assert caught.value.status_code == 502


def test_no_retry_on_400(serve, sleeps) -> None:
    server = serve({("GET", LATEST): (400, {"error": "unknown zone XX"})})
    with pytest.raises(IntensityUnavailable, match="HTTP 400.*unknown zone XX") as caught:
        em(server, sleeps).latest("XX", "xx")
    assert server.calls("GET", LATEST) == 1
    assert sleeps == []
    assert caught.value.provider == "electricitymaps" and "zone=XX" in caught.value.url


def test_timeout_is_retried_then_unavailable(serve, sleeps) -> None:
    server = serve({("GET", LATEST): Reply(200, em_entry(10), delay_s=1.0)})
    began = time.monotonic()
    with pytest.raises(IntensityUnavailable, match="ReadTimeout.*2 tries"):
        em(server, sleeps, timeout_s=0.2, retries=1).latest("DE", "de")
    assert time.monotonic() - began < 0.9  # two 0.2 s timeouts, not the server's 1 s
    assert len(sleeps) == 1
    deadline = time.monotonic() + 2
    while server.calls("GET", LATEST) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.calls("GET", LATEST) == 2


def test_connect_error_is_retried_then_unavailable(sleeps) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ElectricityMaps("t", base_url=f"http://127.0.0.1:{port}", sleep=sleeps.append, retries=2)
    with pytest.raises(IntensityUnavailable, match=f"127.0.0.1:{port}.*ConnectError.*3 tries"):
        client.latest("DE", "de")
    assert len(sleeps) == 2


@pytest.mark.parametrize(("raw_value", "shown"), [("-5", "-5"), ("NaN", "nan"), ("Infinity", "inf"),
                                                  ('"high"', "'high'"), ("true", "True")])
def test_bad_value_names_field_and_value(serve, sleeps, raw_value, shown) -> None:
    body = ('{"zone": "DE", "history": [{"carbonIntensity": 300, "datetime": "2026-11-26T09:00:00Z"},'
            f' {{"carbonIntensity": {raw_value}, "datetime": "2026-11-26T10:00:00Z"}}]}}')
    server = serve({("GET", HISTORY): (200, body)})
    with pytest.raises(IntensityUnavailable) as caught:
        em(server, sleeps).history("DE", "de")
    assert f"history[1].carbonIntensity = {shown}:" in str(caught.value)
    assert f"{server.url}{HISTORY}?zone=DE" in str(caught.value)
    assert server.calls("GET", HISTORY) == 1  # a bad answer is not retried


def test_missing_field_and_naive_time_are_named(serve, sleeps) -> None:
    server = serve({("GET", LATEST): (200, {"zone": "DE", "carbonIntensity": 5}),
                    ("GET", HISTORY): (200, {"zone": "DE", "history": [em_entry(3) | {"datetime": "2026-11-26T03:00"}]})})
    with pytest.raises(IntensityUnavailable, match=r"datetime is missing"):
        em(server, sleeps).latest("DE", "de")
    with pytest.raises(IntensityUnavailable, match=r"history\[0\]\.datetime = '2026-11-26T03:00': expected .*timezone"):
        em(server, sleeps).history("DE", "de")


def test_invalid_json_is_unavailable_without_retry(serve, sleeps) -> None:
    server = serve({("GET", LATEST): (200, "<html>maintenance</html>")})
    with pytest.raises(IntensityUnavailable, match="invalid JSON.*maintenance"):
        em(server, sleeps).latest("DE", "de")
    assert server.calls("GET", LATEST) == 1


def test_injected_client_is_used_and_not_closed(serve, sleeps) -> None:
    server = serve({("GET", LATEST): (200, em_entry(10))})
    seen: list[str] = []
    with httpx.Client(event_hooks={"request": [lambda r: seen.append(str(r.url))]}) as http:
        with ElectricityMaps("t", base_url=server.url + "/", client=http, sleep=sleeps.append) as client:
            client.latest("DE", "de")
        assert not http.is_closed
    assert seen == [f"{server.url}{LATEST}?zone=DE"]


# --- WattTime ---------------------------------------------------------------------------------

def watttime(server: ReplayServer, sleeps: list[float]) -> WattTime:
    return WattTime("ada", "s3cret:pw", base_url=server.url, sleep=sleeps.append)


def login_route(tokens: list[str]) -> Callable[[RecordedRequest], tuple[int, dict]]:
    expected = "Basic " + base64.b64encode(b"ada:s3cret:pw").decode()

    def login(request: RecordedRequest) -> tuple[int, dict]:
        if request.headers.get("authorization") != expected:
            return 403, {"error": "bad credentials"}
        tokens.append(f"token-{len(tokens) + 1}")
        return 200, {"token": tokens[-1]}

    return login


def test_watttime_login_bearer_params_and_lbs_to_grams(serve, sleeps) -> None:
    tokens: list[str] = []
    server = serve({("GET", "/login"): login_route(tokens),
                    ("GET", "/v3/historical"): (200, wt_body([1000, 0, 882.5]))})
    client = watttime(server, sleeps)
    points = client.historical("CAISO_NORTH", T0, T0 + 900, "us-west")
    assert [p.g_per_kwh for p in points] == pytest.approx([453.59237, 0.0, 882.5 * 0.45359237], rel=1e-12)
    assert points[0].g_per_kwh == pytest.approx(1000 * LB_PER_MWH_TO_G_PER_KWH)
    assert [p.start_s for p in points] == [T0, T0 + 300, T0 + 600]
    assert all(p.end_s == p.start_s + 300 and not p.estimated for p in points)
    assert {(p.region, p.source) for p in points} == {("us-west", "watttime")}
    request = server.last("GET", "/v3/historical")
    assert request.headers["authorization"] == "Bearer token-1"
    # The accounting series is the average rate, co2_aoer (this test asked for co2_moer before:
    # the marginal rate, which WattTime offers for load shifting, not for accounting).
    assert request.query == {"region": ["CAISO_NORTH"], "start": ["2026-11-26T10:00:00Z"],
                             "end": ["2026-11-26T10:15:00Z"], "signal_type": ["co2_aoer"],
                             "include_imputed_marker": ["true"]}
    client.historical("CAISO_NORTH", T0, T0 + 900, "us-west")
    assert server.calls("GET", "/login") == 1  # the token is reused


def test_watttime_relogs_in_once_on_401(serve, sleeps) -> None:
    tokens: list[str] = []
    server = serve({("GET", "/login"): login_route(tokens),
                    ("GET", "/v3/historical"): [(401, {"error": "expired"}), (200, wt_body([100]))]})
    points = watttime(server, sleeps).historical("CAISO_NORTH", T0, T0 + 300, "us-west")
    assert [p.g_per_kwh for p in points] == pytest.approx([45.359237])
    assert server.calls("GET", "/login") == 2
    assert [r.headers["authorization"] for r in server.log("GET", "/v3/historical")] == \
        ["Bearer token-1", "Bearer token-2"]
    assert sleeps == []


def test_watttime_second_401_is_unavailable(serve, sleeps) -> None:
    server = serve({("GET", "/login"): login_route([]), ("GET", "/v3/historical"): (401, {"error": "no"})})
    with pytest.raises(IntensityUnavailable, match="watttime: GET .*/v3/historical.*HTTP 401"):
        watttime(server, sleeps).historical("CAISO_NORTH", T0, T0 + 300, "us-west")
    assert server.calls("GET", "/login") == 2 and server.calls("GET", "/v3/historical") == 2


def test_watttime_bad_credentials_fail_at_login_without_retry(serve, sleeps) -> None:
    server = serve({("GET", "/login"): login_route([])})
    client = WattTime("ada", "wrong", base_url=server.url, sleep=sleeps.append)
    with pytest.raises(IntensityUnavailable, match=r"/login: HTTP 403") as caught:
        client.historical("CAISO_NORTH", T0, T0 + 300, "us-west")
    assert "wrong" not in str(caught.value)
    assert server.calls("GET", "/login") == 1 and server.calls("GET", "/v3/historical") == 0


@pytest.mark.parametrize("units", ["g_co2_per_kwh", "kg_co2_per_mwh"])
def test_watttime_unexpected_units_are_refused(serve, sleeps, units) -> None:
    server = serve({("GET", "/login"): login_route([]), ("GET", "/v3/historical"): (200, wt_body([1000], units))})
    with pytest.raises(IntensityUnavailable, match=f"meta.units = '{units}': expected 'lbs_co2_per_mwh'"):
        watttime(server, sleeps).historical("CAISO_NORTH", T0, T0 + 300, "us-west")


def test_watttime_negative_value_names_field(serve, sleeps) -> None:
    server = serve({("GET", "/login"): login_route([]), ("GET", "/v3/historical"): (200, wt_body([10, -3.5]))})
    with pytest.raises(IntensityUnavailable, match=r"data\[1\]\.value = -3\.5: expected a finite number >= 0"):
        watttime(server, sleeps).historical("CAISO_NORTH", T0, T0 + 600, "us-west")


WATTTIME_DOCS = Path(__file__).parent / "fixtures" / "watttime"  # WattTime's documented bodies (SOURCE there)


def documented(name: str) -> dict:
    import json

    return json.loads((WATTTIME_DOCS / name).read_text())


def test_watttime_documented_aoer_body_marks_imputed_points_estimated(serve, sleeps) -> None:
    server = serve({("GET", "/login"): login_route([]), ("GET", "/v3/historical"): (200, documented("historical-co2_aoer.json"))})
    points = watttime(server, sleeps).historical("CAISO_NORTH", utc_s("2023-10-26T14:00:00+00:00"),
                                                utc_s("2023-10-26T15:00:00+00:00"), "caiso")
    start = utc_s("2023-10-26T14:00:00+00:00")
    g_per_kwh = 1267.717268507 * 0.45359237
    assert points == [IntensityPoint("caiso", start, start + 3600, pytest.approx(g_per_kwh, rel=1e-12), "watttime", False),
                      IntensityPoint("caiso", start, start + 3600, pytest.approx(g_per_kwh, rel=1e-12), "watttime", True)]
    assert server.last("GET", "/v3/historical").query["signal_type"] == ["co2_aoer"]


def test_watttime_documented_moer_body_is_the_marginal_series(serve, sleeps) -> None:
    server = serve({("GET", "/login"): login_route([]), ("GET", "/v3/historical"): (200, documented("historical-co2_moer.json"))})
    client = watttime(server, sleeps)
    start = utc_s("2022-07-15T00:00:00+00:00")
    points = client.marginal("CAISO_NORTH", start, start + 600, "caiso")
    assert [(p.start_s, p.end_s, p.estimated) for p in points] == [(start, start + 300, True), (start + 300, start + 600, True)]
    assert [p.g_per_kwh for p in points] == pytest.approx([870 * 0.45359237, 860 * 0.45359237], rel=1e-12)
    assert server.last("GET", "/v3/historical").query["signal_type"] == ["co2_moer"]
    # The same marginal body where the average was asked for is refused, never stored as accounting data.
    with pytest.raises(IntensityUnavailable, match=r"meta.signal_type = 'co2_moer': expected 'co2_aoer'"):
        client.historical("CAISO_NORTH", start, start + 600, "caiso")


@pytest.mark.parametrize("marker", ["yes", 1, {"x": 1}])
def test_watttime_bad_imputed_marker_names_field(serve, sleeps, marker) -> None:
    body = wt_body([10])
    body["data"][0]["imputed_data_used"] = marker  # type: ignore[index]
    server = serve({("GET", "/login"): login_route([]), ("GET", "/v3/historical"): (200, body)})
    with pytest.raises(IntensityUnavailable, match=r"data\[0\]\.imputed_data_used = .*: expected true, false or null"):
        watttime(server, sleeps).historical("CAISO_NORTH", T0, T0 + 300, "us-west")


# --- UK National Grid -------------------------------------------------------------------------

def test_uk_current_uses_forecast_when_actual_is_null(serve, sleeps) -> None:
    body = {"data": [uk_entry("2026-11-26T10:00Z", "2026-11-26T10:30Z", forecast=186, actual=None)]}
    server = serve({("GET", "/intensity"): (200, body)})
    points = UkNationalGrid(base_url=server.url, sleep=sleeps.append).current("gb")
    assert points == [IntensityPoint("gb", T0, T0 + 1800, 186.0, "uk-national-grid", True)]
    assert server.last("GET", "/intensity").headers.get("authorization") is None


def test_uk_range_prefers_actual_and_skips_empty_periods(serve, sleeps) -> None:
    path = "/intensity/2026-11-26T10:00Z/2026-11-26T11:30Z"
    body = {"data": [uk_entry("2026-11-26T10:00Z", "2026-11-26T10:30Z", forecast=190, actual=201),
                     uk_entry("2026-11-26T10:30Z", "2026-11-26T11:00Z", forecast=None, actual=None),
                     uk_entry("2026-11-26T11:00Z", "2026-11-26T11:30Z", forecast=175, actual=None)]}
    server = serve({("GET", path): [(500, {"error": "oops"}), (200, body)]})
    points = UkNationalGrid(base_url=server.url, sleep=sleeps.append).between(T0, T0 + 5400, "gb")
    assert [(p.start_s, p.end_s, p.g_per_kwh, p.estimated) for p in points] == \
        [(T0, T0 + 1800, 201.0, False), (T0 + 3600, T0 + 5400, 175.0, True)]
    assert server.calls("GET", path) == 2 and len(sleeps) == 1


def test_uk_bad_actual_names_field(serve, sleeps) -> None:
    body = {"data": [uk_entry("2026-11-26T10:00Z", "2026-11-26T10:30Z", forecast=190, actual=-1)]}
    server = serve({("GET", "/intensity"): (200, body)})
    with pytest.raises(IntensityUnavailable, match=r"uk-national-grid: .*data\[0\]\.intensity\.actual = -1:"):
        UkNationalGrid(base_url=server.url, sleep=sleeps.append).current("gb")


# --- CSV --------------------------------------------------------------------------------------

def test_csv_reads_points_with_timezones_and_default_end() -> None:
    text = ("region,start,end,g_per_kwh\n"
            "de,2026-11-26T10:00:00Z,2026-11-26T10:30:00Z,312.5\n"
            "\n"
            "fr,2026-11-26T11:00:00+01:00,,56\n")
    assert read_csv(text) == [
        IntensityPoint("de", T0, T0 + 1800, 312.5, "csv", False),
        IntensityPoint("fr", T0, T0 + 3600, 56.0, "csv", False),
    ]


def test_csv_reads_a_path_without_end_column(tmp_path: Path) -> None:
    path = tmp_path / "intensity.csv"
    path.write_text("\ufeffstart,region,g_per_kwh\n2026-11-26T10:00:00Z,pl,680\n", encoding="utf-8")
    for source in (path, str(path)):
        assert read_csv(source) == [IntensityPoint("pl", T0, T0 + 3600, 680.0, "csv", False)]


@pytest.mark.parametrize(("row", "message"), [
    ("de,2026-11-26T10:00Z,,-5", "line 3: g_per_kwh = '-5': expected a number >= 0"),
    ("de,2026-11-26T10:00Z,,lots", "line 3: g_per_kwh = 'lots': expected a number >= 0"),
    ("de,2026-11-26T10:00Z,,nan", "line 3: g_per_kwh = 'nan': expected a number >= 0"),
    ("de,2026-11-26T10:00,,5", "line 3: start = '2026-11-26T10:00': expected an ISO 8601 time with a timezone"),
    ("de,yesterday,,5", "line 3: start = 'yesterday': expected an ISO 8601 time"),
    ("de,2026-11-26T10:00Z,2026-11-26T09:00Z,5", "line 3: end = '2026-11-26T09:00Z': expected a time after start"),
    ("de,2026-11-26T10:00Z,soon,5", "line 3: end = 'soon': expected an ISO 8601 time"),
    (",2026-11-26T10:00Z,,5", "line 3: region = '': expected a non-empty region key"),
    ("de,2026-11-26T10:00Z,5", "line 3: 3 fields"),
])
def test_csv_errors_name_line_column_and_value(row: str, message: str) -> None:
    text = f"region,start,end,g_per_kwh\nde,2026-11-26T09:00Z,,1\n{row}\n"
    with pytest.raises(ValueError) as caught:
        read_csv(text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_csv_header_must_name_the_columns() -> None:
    with pytest.raises(ValueError, match=r"line 1: header = 'region,begin,kwh': expected region,start,end,g_per_kwh"):
        read_csv("region,begin,kwh\nde,2026-11-26T10:00Z,5\n")


def test_conversion_constant_is_the_exact_pound() -> None:
    assert LB_PER_MWH_TO_G_PER_KWH == 453.59237 / 1000
    assert math.isclose(1000 * LB_PER_MWH_TO_G_PER_KWH, 453.59237)
