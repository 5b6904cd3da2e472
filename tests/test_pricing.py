"""Pricing against hand-computed values: hourly intensity, market-based, embodied, TCO,
rate-card validity, PUE schedule, node overhead, and forecasts."""

from datetime import UTC, datetime

import pytest

from api.accounting.forecast import budget_status
from api.accounting.pricing import UsageRow, price
from api.accounting.rates import LedgerConfig

H0 = 3600 * 480_000  # an hour start
MODEL = "NVIDIA H100 80GB HBM3"


def row(hour: int, gpu_s: float = 3600.0, energy_j: float = 3.6e6, dc: str = "dc1", model: str = MODEL) -> UsageRow:
    return UsageRow(hour, dc, model, gpu_s, gpu_s / 2, energy_j, energy_j)


def config(**data) -> LedgerConfig:
    return LedgerConfig.model_validate(data)


def test_co2e_uses_each_hours_intensity_and_discloses_the_share():
    cfg = config(datacenters={"dc1": {"region": "r1", "pue": 1.5}}, intensity_g_per_kwh={"r1": 500.0})
    rows = [row(H0), row(H0 + 3600), row(H0 + 7200)]  # 1 kWh each hour
    priced = price(rows, cfg, "c", {("r1", H0): 100.0, ("r1", H0 + 3600): 300.0})
    # 1.5 kWh facility each hour: 1.5 × (100 + 300 + 500 static) / 1000
    assert priced["co2e_kg"] == pytest.approx(1.35)
    assert priced["rates"]["intensity_hourly_fraction"] == {"r1": pytest.approx(2 / 3)}
    assert priced["rates"]["grid_intensity_g_per_kwh"]["r1"] == pytest.approx(300.0)  # effective
    assert priced["facility_energy_kwh"] == pytest.approx(4.5)


def test_market_based_and_embodied_from_manufacturing():
    cfg = config(
        datacenters={"dc1": {"region": "r1", "pue": 1.2, "market_g_per_kwh": 0.0}},
        embodied={"H100": {"manufacturing_kg": 1752.4, "lifetime_years": 5, "utilization": 0.5,
                           "server_kg": 2800.0, "gpus_per_server": 8}},
    )
    priced = price([row(H0, gpu_s=36000.0, energy_j=3.6e7)], cfg, "c")  # 10 GPU-h, 10 kWh
    assert priced["market_co2e_kg"] == 0.0
    # (1752.4 + 2800 / 8) kg over 5 × 8760 × 0.5 h = 0.096 kg per GPU-hour
    assert priced["rates"]["embodied_kg_per_gpu_hour"][MODEL] == pytest.approx(0.096)
    assert priced["embodied_co2e_kg"] == pytest.approx(0.96)


def test_tco_prices_capex_and_facility_energy():
    cfg = config(datacenters={"dc1": {"pue": 1.25, "usd_per_kwh": 0.10}},
                 tco={"H100": {"capex_usd": 43800.0, "lifetime_years": 5, "utilization": 0.8}})
    priced = price([row(H0, gpu_s=36000.0, energy_j=3.6e7)], cfg, "c")
    # 43800 / (5 × 8760 × 0.8) = 1.25 $/GPU-h × 10 GPU-h + 12.5 facility kWh × $0.10
    assert priced["cost_usd"] == pytest.approx(12.5 + 1.25)
    assert priced["rates"]["cost_method"][MODEL] == "tco"


def test_rate_card_applies_from_its_date_unless_history_is_repriced():
    changed = datetime.fromtimestamp(H0 + 3600, UTC).isoformat()
    cards = [{"model": "H100", "usd_per_gpu_hour": 5.0, "valid_from": "2020-01-01T00:00:00Z"},
             {"model": "H100", "usd_per_gpu_hour": 3.0, "valid_from": changed},
             {"model": "H100", "cluster": "other", "usd_per_gpu_hour": 1.0, "valid_from": "2020-01-01T00:00:00Z"}]
    rows = [row(H0), row(H0 + 3600)]
    assert price(rows, config(rate_cards=cards), "c")["cost_usd"] == pytest.approx(5.0 + 3.0)
    assert price(rows, config(rate_cards=cards, pricing={"reprice_history": True}), "c")["cost_usd"] == pytest.approx(6.0)
    assert price(rows, config(rate_cards=cards), "other")["cost_usd"] == pytest.approx(2.0)
    assert price(rows, config(), "c")["rates"]["usd_per_gpu_hour"][MODEL] == 6.0  # list price


def test_pue_schedule_and_node_overhead():
    changed = datetime.fromtimestamp(H0 + 3600, UTC).isoformat()
    cfg = config(datacenters={"dc1": {"pue": 1.5, "pue_schedule": [{"from": changed, "pue": 1.1}],
                                      "node_overhead_w": 800.0, "gpus_per_node": 8}})
    priced = price([row(H0), row(H0 + 3600)], cfg, "c")
    # each hour: 1 kWh GPU + 1 GPU-h × 800 W / 8 = 0.1 kWh overhead
    assert priced["overhead_energy_kwh"] == pytest.approx(0.2)
    assert priced["facility_energy_kwh"] == pytest.approx(1.1 * 1.5 + 1.1 * 1.1)


def job(**kw) -> dict:
    base = {"first_seen_s": 0.0, "last_seen_s": 7200.0, "state": "running", "budget_usd": None, "budget_co2e_kg": None}
    return base | kw


def test_forecast_from_steps_from_declared_end_and_from_the_observed_rate():
    priced = {"cost_usd": 20.0, "co2e_kg": 4.0}  # over 2 h: $10/h, 2 kg/h
    steps = budget_status(job(steps_done=500, total_steps=2000, progress_at_s=3600.0, budget_usd=50.0), priced, 7200.0)
    # 500 steps in 1 h: 2000 steps end at 4 h; 2 h more at $10/h
    assert (steps["forecast_method"], steps["forecast_cost_usd"], steps["forecast_co2e_kg"]) == ("steps", 40.0, 8.0)
    assert steps["forecast_end_at"] == datetime.fromtimestamp(4 * 3600, UTC)
    assert (steps["over_budget"], steps["forecast_over_budget"]) == (False, False)
    declared = budget_status(job(expected_end_s=36000.0, budget_usd=50.0), priced, 7200.0)
    assert (declared["forecast_method"], declared["forecast_cost_usd"]) == ("declared_end", 100.0)
    assert declared["forecast_over_budget"] and not declared["over_budget"]
    open_ended = budget_status(job(budget_usd=50.0), priced, 7200.0)
    assert (open_ended["forecast_method"], open_ended["forecast_cost_usd"]) == ("observed_rate", None)
    assert open_ended["budget_exhausted_at"] == datetime.fromtimestamp(7200 + 3 * 3600, UTC)
    over = budget_status(job(budget_co2e_kg=3.0), priced, 7200.0)
    assert over["over_budget"] and over["spend_usd_per_hour"] == 10.0


def test_static_country_intensity_is_the_fallback_after_the_configured_figure():
    cfg = config(datacenters={"paris": {"region": "FR", "pue": 1.0}, "x": {"region": "nowhere", "pue": 1.0}},
                 intensity_g_per_kwh={"default": 475.0})
    assert cfg.intensity("FR") == 56.0 and cfg.intensity("nowhere") == 475.0
    priced = price([row(H0, dc="paris")], cfg, "c")  # 1 kWh in France, 2023 annual average
    assert priced["co2e_kg"] == pytest.approx(0.056)
    assert config(intensity_g_per_kwh={"FR": 30.0}).intensity("FR") == 30.0  # configured wins
