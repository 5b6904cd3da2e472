"""Per-job extras: progress and budget in, footprint conventions and what-if out."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import update

from api.accounting.conventions import CONVENTIONS, FootprintInput, footprint, model_card_markdown
from api.accounting.rates import LedgerConfig
from api.http.auth import AdminDep, NodeOrAdminDep, Principal, ReaderDep, authorize_progress, can_see
from api.http.deps import ConfigDep, EngineDep
from api.http.routes.jobs import id_wins
from api.http.schemas import BudgetIn, JobMetadataIn, ProgressIn
from api.queries import jobs as reads
from api.reports.job import build_reports
from collector.jobmeta import set_job_metadata
from collector.models import Job

router = APIRouter(tags=["jobs"])
jobs_t = Job.__table__


def _job(engine: Any, job_id: str, principal: Principal | None = None) -> dict[str, Any]:
    job = reads.get_job(engine, job_id)
    if job is None or (principal is not None and not can_see(principal, job)):
        raise HTTPException(status_code=404, detail=f"job_id {job_id!r} not found")
    return job


def _set(engine: Any, job_id: str, values: dict[str, Any]) -> None:
    _job(engine, job_id)
    with engine.begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(**values))


@router.post("/v1/progress/{job_id:path}")
def report_progress(job_id: str, body: ProgressIn, engine: EngineDep, principal: NodeOrAdminDep) -> dict[str, str]:
    """A training loop reports its steps (and/or expected end); the forecast extrapolates from it."""
    values: dict[str, Any] = {}
    if body.steps_done is not None:
        values.update(steps_done=body.steps_done, progress_at_s=time.time())
    if body.total_steps is not None:
        values["total_steps"] = body.total_steps
    if body.expected_end_at is not None:
        values["expected_end_s"] = body.expected_end_at.timestamp()
    if not values:
        raise HTTPException(status_code=422, detail="progress: give steps_done, total_steps or expected_end_at")
    authorize_progress(engine, principal, job_id)
    _set(engine, job_id, values)
    return {"status": "ok"}


@router.put("/v1/budget/{job_id:path}")
def set_budget(job_id: str, body: BudgetIn, engine: EngineDep, principal: AdminDep) -> dict[str, str]:
    """Set (or clear, with null) a job's budget in USD and/or kg CO2e."""
    _set(engine, job_id, {"budget_usd": body.usd, "budget_co2e_kg": body.co2e_kg})
    return {"status": "ok"}


@router.put("/v1/metadata/{job_id:path}")
def set_metadata(job_id: str, body: JobMetadataIn, engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """Set a job's name, user or account (an admin's word wins over what agents sent; they cannot change it back)."""
    values = body.model_dump(exclude_unset=True)
    before = set_job_metadata(engine, job_id, values, source="admin")
    if before is None:
        raise HTTPException(status_code=404, detail=f"job_id {job_id!r} not found")
    return {"status": "ok", "before": {k: before[k] for k in values}, "after": values}


def footprint_rows(report: dict[str, Any], config: LedgerConfig, convention: str) -> list[Any]:
    """One model-card row per GPU model, from the report's breakdown and effective rates."""
    by_model: dict[str, dict[str, float]] = {}
    for part in report["breakdown"]:
        acc = by_model.setdefault(part["gpu_model"], dict.fromkeys(("gpu_hours", "gpu_kwh", "energy", "facility", "co2e", "market", "embodied"), 0.0))
        acc["gpu_hours"] += part["gpu_hours"]
        acc["gpu_kwh"] += part["gpu_energy_kwh"]
        acc["energy"] += part["energy_kwh"]
        acc["facility"] += part["facility_energy_kwh"]
        acc["co2e"] += part["co2e_kg"]
        acc["market"] = None if part["market_co2e_kg"] is None or acc["market"] is None else acc["market"] + part["market_co2e_kg"]
        acc["embodied"] += part["embodied_co2e_kg"]
    rows = []
    for model, acc in sorted(by_model.items()):
        pue = acc["facility"] / acc["energy"] if acc["energy"] else 1.0
        intensity = acc["co2e"] * 1000 / acc["facility"] if acc["facility"] else 0.0
        market = None if acc["market"] is None or not acc["facility"] else acc["market"] * 1000 / acc["facility"]
        rows.append(footprint(FootprintInput(
            gpu_model=model, gpu_hours=acc["gpu_hours"], measured_energy_kwh=acc["gpu_kwh"], tdp_w=config.tdp(model),
            pue=pue, intensity_g_per_kwh=intensity, market_g_per_kwh=market, embodied_kg=acc["embodied"],
        ), convention))
    return rows


@router.get("/v1/footprint/{job_id:path}")
def get_footprint(
    job_id: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep, convention: Literal[CONVENTIONS] = "measured",  # type: ignore[valid-type]
) -> dict[str, Any]:
    """The job's footprint as a model card states it: measured energy, or GPU-hours × TDP."""
    (report,) = build_reports(engine, [_job(engine, job_id, principal)], config)
    rows = footprint_rows(report, config, convention)
    return {
        "job_id": job_id, "convention": convention, "rows": [_fields(row) for row in rows],
        "markdown": model_card_markdown(rows, f"{job_id} ({convention})") if rows else "",
    }


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


@router.get("/v1/whatif/{job_id:path}")
def what_if(
    job_id: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep,
    region: Annotated[str | None, Query(description="Grid region to price the energy in.")] = None,
    pue: Annotated[float | None, Query(ge=1.0, le=5.0, description="PUE to apply instead.")] = None,
) -> dict[str, Any]:
    """The same measured energy priced in another region and/or at another PUE."""
    job = _job(engine, job_id, principal)
    names = {row.datacenter for row in reads.usage(engine, [job_id]).get(job_id, [])}
    moved = {}
    for name in names:
        dc = config.datacenter(name)
        changes: dict[str, Any] = {"region": region or dc.region}
        if pue is not None:
            changes.update(pue=pue, pue_schedule=[])
        moved[name] = dc.model_copy(update=changes)
    alternative = config.model_copy(update={"datacenters": {**config.datacenters, **moved}})
    (actual,) = build_reports(engine, [job], config)
    (other,) = build_reports(engine, [job], alternative)
    keys = ("facility_energy_kwh", "co2e_kg", "market_co2e_kg", "cost_usd")
    return {
        "job_id": job_id, "region": region, "pue": pue,
        "actual": {k: actual[k] for k in keys} | {"rates": actual["rates"]},
        "whatif": {k: other[k] for k in keys} | {"rates": other["rates"]},
        "co2e_kg_change": other["co2e_kg"] - actual["co2e_kg"],
    }


# The former paths, after a job id: hidden, and a job whose id ends like them keeps its report.
router.add_api_route("/v1/jobs/{job_id:path}/progress", report_progress, methods=["POST"], include_in_schema=False)
router.add_api_route("/v1/jobs/{job_id:path}/budget", set_budget, methods=["PUT"], include_in_schema=False)
for _suffix, _handler in (("footprint", get_footprint), ("whatif", what_if)):
    router.add_api_route(f"/v1/jobs/{{job_id:path}}/{_suffix}", id_wins(_suffix, _handler), methods=["GET"],
                         include_in_schema=False, response_model=None)
