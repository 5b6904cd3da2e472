"""``gpuledger report JOB``: one job's report from a running server, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from urllib.parse import quote

import httpx

FIELDS = (
    "job_id", "name", "user", "account", "namespace", "pods", "state", "started_at", "last_seen_at", "ended_at", "nodes", "gpus",
    "gpu_hours", "busy_gpu_hours", "energy_kwh", "facility_energy_kwh", "cost_usd", "co2e_kg",
    "embodied_co2e_kg", "energy_measured_fraction", "as_of",
)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ReportError(RuntimeError):
    pass


def csv_cell(value: Any) -> Any:
    """A value safe to open in a spreadsheet: text that starts like a formula gets a leading
    apostrophe (OWASP's CSV-injection advice), so ``=HYPERLINK(...)`` stays text. Numbers pass
    unchanged (a negative number is a number, not a formula)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def fetch(server: str, job_id: str, token: str | None = None, resource: str = "jobs", query: str = "") -> dict[str, Any]:
    """``GET /v1/<resource>/<job id>`` (the id percent-encoded whole, so no id is read as a path)."""
    url = f"{server.rstrip('/')}/v1/{resource}/{quote(job_id, safe='')}{query}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=10.0, headers=headers) as http:
            response = http.get(url)
    except httpx.HTTPError as exc:
        raise ReportError(f"cannot reach the server at {server} ({exc}); is `gpuledger server` running?") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ReportError(f"{response.status_code}: {detail}")
    return response.json()


def _fmt(value: Any) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.2f}"
    return str(value)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return " ".join(map(str, value)) if isinstance(value, list) else value


def _rate(value: Any) -> str:
    """A rate to its precision (4 significant digits): 0.010352314441758438 is 0.01035."""
    return repr(float(f"{value:.4g}")) if isinstance(value, float) else str(value)


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        writer.writerow([csv_cell(_csv_value(report.get(f))) for f in FIELDS])
        return out.getvalue().rstrip("\n")
    width = max(len(f) for f in FIELDS)
    lines = [f"{f:<{width}}  {_fmt(report.get(f))}" for f in FIELDS]
    budget = report.get("budget") or {}
    if budget:
        lines.append(f"{'spend_usd_per_hour':<{width}}  {_fmt(budget.get('spend_usd_per_hour'))}")
        lines.append(f"{'forecast (' + str(budget.get('forecast_method')) + ')':<{width}}  "
                     f"{_fmt(budget.get('forecast_cost_usd'))} USD, {_fmt(budget.get('forecast_co2e_kg'))} kg CO2e"
                     f" at {_fmt(budget.get('forecast_end_at'))}")
        if budget.get("budget_usd") is not None or budget.get("budget_co2e_kg") is not None:
            state = "OVER BUDGET" if budget.get("over_budget") else ("forecast over budget" if budget.get("forecast_over_budget") else "within budget")
            lines.append(f"{'budget':<{width}}  {_fmt(budget.get('budget_usd'))} USD, {_fmt(budget.get('budget_co2e_kg'))} kg CO2e: {state}")
    rates, sources = report.get("rates", {}), report.get("rate_sources", {})
    lines.append("rates applied:")
    for kind, table in rates.items():
        for key, value in table.items():
            source = sources.get(kind, {}).get(key)
            lines.append(f"  {kind}[{key}] = {_rate(value)}" + (f" ({source})" if source else ""))
    lines.extend(f"built-in default: {line}" for line in report.get("defaults_used", []))
    return "\n".join(lines)
