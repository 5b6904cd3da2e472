"""Release footprints: the jobs under one label (e.g. ``llama-2``) as a model card, one row per
job and a total, in both conventions, location- and market-based, embodied split."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse, Response

from api.accounting.conventions import ROUNDINGS
from api.http.auth import ReaderDep, account_scope
from api.http.deps import ConfigDep, EngineDep
from api.queries import jobs as reads
from api.reports.footprints import release_card, tdp_defaults
from api.reports.job import build_reports

router = APIRouter(tags=["releases"])


@router.get("/v1/releases")
def list_releases(engine: EngineDep, principal: ReaderDep) -> dict[str, Any]:
    """Release labels and how many jobs each groups."""
    return {"items": reads.releases(engine, account_scope(principal))}


@router.get("/v1/releases/{release}/footprint", response_model=None)
def release_footprint(
    release: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep,
    rounding: Annotated[Literal[ROUNDINGS], Query(  # type: ignore[valid-type]
        description="half_up, or truncate (how the Llama 2 paper states Table 2).")] = "half_up",
    unit: Annotated[Literal["auto", "t", "kg"], Query(
        description="CO2e unit of the tables; auto: kg when all below a tonne.")] = "auto",
    format: Annotated[Literal["json", "md", "csv"], Query(description="json (rows and tables), md or csv.")] = "json",
) -> dict[str, Any] | Response:
    """The release's model card: per job and total, measured and TDP conventions."""
    jobs = reads.release_jobs(engine, release, account_scope(principal))
    if not jobs:
        known = ", ".join(r["release"] for r in reads.releases(engine, account_scope(principal))) or "none yet"
        raise HTTPException(status_code=404, detail=(
            f"release {release!r} has no jobs (releases: {known}); label jobs with GPULEDGER_RELEASE, "
            "the release column of `gpuledger import`, or PUT /v1/release/{job_id}"))
    reports = build_reports(engine, jobs, config)
    card = release_card(reports, config, release, rounding=rounding, unit=None if unit == "auto" else unit)
    card["defaults_used"] = tdp_defaults(reports, config)
    if format == "md":
        return PlainTextResponse(card["markdown"], media_type="text/markdown; charset=utf-8")
    if format == "csv":
        return Response(card["csv"], media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{_safe(release)}-footprint.csv"'})
    return card


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100]
