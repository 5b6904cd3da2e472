"""Per-job extras: progress and budget in, footprint conventions and what-if out."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import update

from api.accounting.conventions import CONVENTIONS, card_unit, model_card_markdown
from api.accounting.country_intensity import ANNUAL_G_PER_KWH_2023
from api.accounting.marginal import marginal_co2e
from api.accounting.rates import LedgerConfig
from api.http.auth import AdminDep, NodeOrAdminDep, Principal, ReaderDep, authorize_progress, can_see
from api.http.deps import ConfigDep, EngineDep
from api.http.routes.jobs import id_wins
from api.http.schemas import BudgetIn, JobMetadataIn, ProgressIn, ReleaseIn
from api.queries import jobs as reads
from api.reports.footprints import fields, model_rows, tdp_defaults
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


@router.get("/v1/footprint/{job_id:path}")
def get_footprint(
    job_id: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep, convention: Literal[CONVENTIONS] = "measured",  # type: ignore[valid-type]
) -> dict[str, Any]:
    """The job's footprint as a model card states it: measured energy, or GPU-hours × TDP, at the
    configured PUE. CO2e in the table is in kg when every figure is below a tonne."""
    (report,) = build_reports(engine, [_job(engine, job_id, principal)], config)
    rows = model_rows(report, config, convention)
    return {
        "job_id": job_id, "convention": convention, "rows": [fields(row) for row in rows],
        "unit": card_unit(rows) if rows else "t",
        "markdown": model_card_markdown(rows, f"{job_id} ({convention})") if rows else "",
        "energy_measured_fraction": report["energy_measured_fraction"],
        "energy_declared_fraction": report["energy_declared_fraction"],
        "energy_tdp_estimated_fraction": report["energy_tdp_estimated_fraction"],
        "tdp_w": {row.gpu_model: config.tdp(row.gpu_model) for row in rows},
        "defaults_used": tdp_defaults([report], config),
    }


@router.put("/v1/release/{job_id:path}")
def set_release(job_id: str, body: ReleaseIn, engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """Put the job under a release label (its model card groups the release's jobs), or clear it with null."""
    _set(engine, job_id, {"release": body.release})
    return {"status": "ok", "job_id": job_id, "release": body.release}


@router.get("/v1/whatif/{job_id:path}")
def what_if(
    job_id: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep,
    region: Annotated[str | None, Query(description="Grid region to price the energy in.")] = None,
    pue: Annotated[float | None, Query(ge=1.0, le=5.0, description="PUE to apply instead.")] = None,
) -> dict[str, Any]:
    """The same measured energy priced in another region and/or at another PUE. A region must be
    known: configured, fed by a provider, stored as an hourly series, or an ISO country code.
    Besides the accounted CO2e (average grid rate), ``marginal_co2e_kg`` prices it at the
    marginal rate (WattTime co2_moer) where that series is stored, with the share of energy it covers."""
    job = _job(engine, job_id, principal)
    if region is not None:
        _check_region(engine, config, region)
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
    margins = [_marginal(engine, job_id, c) for c in (config, alternative)]
    keys = ("facility_energy_kwh", "co2e_kg", "market_co2e_kg", "cost_usd")
    return {
        "job_id": job_id, "region": region, "pue": pue,
        "actual": {k: actual[k] for k in keys} | margins[0] | {"rates": actual["rates"]},
        "whatif": {k: other[k] for k in keys} | margins[1] | {"rates": other["rates"]},
        "co2e_kg_change": other["co2e_kg"] - actual["co2e_kg"],
        "marginal_co2e_kg_change": None if None in (margins[0]["marginal_co2e_kg"], margins[1]["marginal_co2e_kg"])
        else margins[1]["marginal_co2e_kg"] - margins[0]["marginal_co2e_kg"],
    }


def _marginal(engine: Any, job_id: str, config: LedgerConfig) -> dict[str, Any]:
    """The job's energy at the marginal rate (WattTime co2_moer) of each hour's region."""
    rows = reads.usage(engine, [job_id]).get(job_id, [])
    if not rows:
        return marginal_co2e([], config, {})
    regions = {config.datacenter(row.datacenter).region for row in rows}
    series = reads.hourly_marginal_intensity(engine, regions, min(r.hour_s for r in rows), max(r.hour_s for r in rows))
    return marginal_co2e(rows, config, series)


def _check_region(engine: Any, config: Any, region: str) -> None:
    known = sorted(set(config.known_regions()) | set(reads.series_regions(engine)))
    if region in known or region in ANNUAL_G_PER_KWH_2023:
        return
    raise HTTPException(status_code=422, detail=(
        f"region = {region!r} is unknown: expected one of {', '.join(known) or '(none configured)'}, "
        f"or an ISO country code with a static figure (e.g. {', '.join(sorted(ANNUAL_G_PER_KWH_2023)[:5])}); "
        "add it under [intensity_g_per_kwh] in the server's config"))


# The former paths, after a job id: hidden, and a job whose id ends like them keeps its report.
router.add_api_route("/v1/jobs/{job_id:path}/progress", report_progress, methods=["POST"], include_in_schema=False)
router.add_api_route("/v1/jobs/{job_id:path}/budget", set_budget, methods=["PUT"], include_in_schema=False)
router.add_api_route("/v1/jobs/{job_id:path}/release", set_release, methods=["PUT"], include_in_schema=False)
for _suffix, _handler in (("footprint", get_footprint), ("whatif", what_if)):
    router.add_api_route(f"/v1/jobs/{{job_id:path}}/{_suffix}", id_wins(_suffix, _handler), methods=["GET"],
                         include_in_schema=False, response_model=None)
