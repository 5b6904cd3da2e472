"""Spend rate, forecast at completion and budget status of a job.

The end of the job comes, in this order, from progress reported through the API (steps done
of total steps: the end is extrapolated from the time per step), from a declared end time,
or, for an ended job, from its end. Without any, the forecast stays open and the report says
when the budget runs out at the observed rate. Rates are the job's averages so far.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

# The last second a date can name (9999-12-31T23:59:59Z). A forecast beyond it is "never":
# null, not an exception (a budget of 1e15 dollars or 1e9 steps at one step so far gets there).
MAX_DATE_S = 253_402_300_799.0


def within_dates(seconds: float | None) -> float | None:
    """``seconds`` when it is a date (finite, 1970 to 9999), else None."""
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= MAX_DATE_S:
        return None
    return seconds


def _at(seconds: float | None) -> datetime | None:
    seconds = within_dates(seconds)
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _end(job: dict[str, Any]) -> tuple[str, float | None]:
    """How the end is forecast, and when (None: not known, or beyond the year 9999)."""
    started = job["first_seen_s"]
    if job.get("total_steps") and job.get("steps_done") and job.get("progress_at_s"):
        per_step_s = (job["progress_at_s"] - started) / job["steps_done"]
        return "steps", within_dates(started + job["total_steps"] * per_step_s)
    if job.get("expected_end_s"):
        return "declared_end", within_dates(job["expected_end_s"])
    if job["state"] == "ended":
        return "ended", job["last_seen_s"]
    return "observed_rate", None


def budget_status(job: dict[str, Any], priced: dict[str, Any], now_s: float) -> dict[str, Any]:
    elapsed_h = (job["last_seen_s"] - job["first_seen_s"]) / 3600
    usd_per_h = priced["cost_usd"] / elapsed_h if elapsed_h > 0 else None
    kg_per_h = priced["co2e_kg"] / elapsed_h if elapsed_h > 0 else None
    method, end_s = _end(job)
    cost_at_end = co2e_at_end = None
    if end_s is not None and usd_per_h is not None and kg_per_h is not None:
        remaining_h = max(end_s - job["last_seen_s"], 0.0) / 3600
        cost_at_end = _finite(priced["cost_usd"] + usd_per_h * remaining_h)
        co2e_at_end = _finite(priced["co2e_kg"] + kg_per_h * remaining_h)
    budget_usd, budget_kg = job.get("budget_usd"), job.get("budget_co2e_kg")
    exhausted_s = None
    if budget_usd is not None and usd_per_h and priced["cost_usd"] < budget_usd:
        exhausted_s = job["last_seen_s"] + (budget_usd - priced["cost_usd"]) / usd_per_h * 3600
    return {
        "budget_usd": budget_usd,
        "budget_co2e_kg": budget_kg,
        "spend_usd_per_hour": usd_per_h,
        "co2e_kg_per_hour": kg_per_h,
        "forecast_method": method,
        "forecast_end_at": _at(end_s),
        "forecast_cost_usd": cost_at_end,
        "forecast_co2e_kg": co2e_at_end,
        "over_budget": _over(priced["cost_usd"], budget_usd) or _over(priced["co2e_kg"], budget_kg),
        "forecast_over_budget": _over(cost_at_end, budget_usd) or _over(co2e_at_end, budget_kg),
        "budget_exhausted_at": _at(exhausted_s) if exhausted_s is None or exhausted_s > now_s else _at(now_s),
        "progress": None if job.get("total_steps") is None else {
            "steps_done": job.get("steps_done"), "total_steps": job.get("total_steps"), "reported_at": _at(job.get("progress_at_s")),
        },
    }


def _over(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit
