"""Reports price rollups pre-summed in SQL per period of constant rates; the figures are those
of pricing every hourly rollup one by one, whatever changes between the hours: a PUE schedule,
rate cards, an hourly intensity series that covers some hours of one region."""

import pytest
from sqlalchemy import insert

from api.accounting.pricing import price, price_grouped, rate_boundaries, regions
from api.accounting.rates import LedgerConfig
from api.queries import jobs as reads
from collector.models import GridIntensity, JobHour
from tests.conftest import BACKENDS

H0 = 3600 * 480_000  # an hour boundary
CONFIG = LedgerConfig.model_validate({
    "datacenters": {
        "east": {"region": "US-EAST", "pue": 1.4, "node_overhead_w": 800.0, "usd_per_kwh": 0.1,
                 "pue_schedule": [{"from": "2024-10-05T05:00:00Z", "pue": 1.2}]},
        "west": {"region": "US-WEST", "pue": 1.1},
    },
    "rate_cards": [{"model": "H100", "usd_per_gpu_hour": 2.5, "valid_from": "2024-10-04T12:00:00Z"}],
    "tco": {"A100": {"capex_usd": 20000.0, "lifetime_years": 4.0}},
    "intensity_g_per_kwh": {"US-EAST": 380.0, "US-WEST": 250.0},
})


def _store(engine, with_series: bool = True) -> None:
    hours = []
    for h in range(60):  # 60 hours across both rate changes (H0 is 2024-10-04T00:00Z)
        for dc, model, gpus in (("east", "NVIDIA H100 80GB HBM3", 16), ("west", "NVIDIA A100-SXM4-80GB", 8),
                                ("elsewhere", "NVIDIA H100 80GB HBM3", 1)):
            gpu_s = gpus * (3600.0 - 7 * (h % 5))
            hours.append({"job_id": "c/1", "hour_s": H0 + 3600 * h, "datacenter": dc, "gpu_model": model,
                          "gpu_seconds": gpu_s, "busy_gpu_seconds": gpu_s * 0.8, "energy_j": gpu_s * (500.0 + h),
                          "energy_counter_j": gpu_s * (500.0 + h) * (0.5 if h % 3 else 1.0)})
    grid = [{"region": "US-EAST", "hour_s": H0 + 3600 * h, "g_per_kwh": 300.0 + 5 * (h % 11), "source": "test",
             "estimated": False, "updated_at_s": 0.0} for h in range(10, 40)]
    grid += [{"region": "US-WEST", "hour_s": H0 + 3600 * h, "g_per_kwh": 200.0, "source": "test",
              "estimated": False, "updated_at_s": 0.0} for h in range(60)]  # one value, every hour
    with engine.begin() as conn:
        conn.execute(insert(JobHour.__table__), hours)
        if with_series:
            conn.execute(insert(GridIntensity.__table__), grid)


def _close(a, b) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            _close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-12)
    else:
        assert a == b


@BACKENDS
def test_grouped_pricing_equals_pricing_hour_by_hour(engine):
    _store(engine)
    rows = reads.usage(engine, ["c/1"])["c/1"]
    hourly = reads.hourly_intensity(engine, {"US-EAST", "US-WEST", "default"}, H0, H0 + 60 * 3600)
    groups = reads.usage_grouped(engine, ["c/1"], rate_boundaries(CONFIG), *regions(CONFIG))["c/1"]

    assert len(rows) == 180
    assert len(groups) == 3 * 3  # each (datacenter, model): before both changes, between, after
    expected = price(rows, CONFIG, "c", hourly)
    _close(price_grouped(groups, CONFIG, "c"), expected)
    assert expected["rates"]["grid_intensity_g_per_kwh"]["US-WEST"] == 200.0  # one series value: said as is
    assert 0 < expected["rates"]["intensity_hourly_fraction"]["US-EAST"] < 1


@BACKENDS
def test_grouped_pricing_without_any_hourly_series(engine):
    _store(engine, with_series=False)
    rows = reads.usage(engine, ["c/1"])["c/1"]
    groups = reads.usage_grouped(engine, ["c/1"], rate_boundaries(CONFIG), *regions(CONFIG))["c/1"]
    expected = price(rows, CONFIG, "c", {})
    _close(price_grouped(groups, CONFIG, "c"), expected)
    assert expected["rates"]["grid_intensity_g_per_kwh"] == {"US-EAST": 380.0, "US-WEST": 250.0, "default": 475.0}
