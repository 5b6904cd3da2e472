"""A job's time series (for the web page's charts) and its downloads as CSV."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from api.accounting.rates import LedgerConfig
from api.http.auth import Principal, ReaderDep
from api.http.deps import ConfigDep, EngineDep
from api.http.etag import NOT_MODIFIED, json_or_not_modified
from api.http.routes.jobs import id_wins, job_report, visible_job
from api.http.schemas import JobSeries
from api.reports import series
from api.reports.job import build_reports, now
from api.reports.render import csv_cell, render

router = APIRouter(tags=["jobs"])
STEP_HELP = f"Width of the fine buckets in seconds, one of {', '.join(map(str, series.STEPS_S))}; default: chosen for at most {series.MAX_FINE_POINTS} points."


def _checked_step(step_s: int | None) -> int | None:
    if step_s is not None and step_s not in series.STEPS_S:
        raise HTTPException(status_code=422, detail=f"step_s = {step_s}: expected one of {', '.join(map(str, series.STEPS_S))}")
    return step_s


def _series(job_id: str, engine: Engine, config: LedgerConfig, principal: Principal, step_s: int | None) -> JobSeries:
    job = visible_job(engine, job_id, principal)
    window = series.fine_window(job, time.time(), config.retention.raw_days, _checked_step(step_s),
                                config.retention.minute_days)
    (report,) = build_reports(engine, [job], config)
    return JobSeries(
        job_id=job_id, as_of=now(), step_s=window.step_s, fine_from_s=window.fine_from_s, fine_tier=window.tier,
        budget_usd=job["budget_usd"], budget_co2e_kg=job["budget_co2e_kg"], forecast=series.forecast(report),
        gpu=series.gpu_series(engine, config, job, window), network=series.network_series(engine, job),
    )


@router.get("/v1/series/{job_id:path}", response_model=JobSeries, responses=NOT_MODIFIED)
def job_series(
    request: Request, job_id: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep,
    step_s: Annotated[int | None, Query(description=STEP_HELP)] = None,
) -> Response:
    """The job over time: GPUs, power, utilisation, cumulative cost and CO2e, the forecast, network by hour.
    Send the last answer's ETag in If-None-Match to get 304 when nothing changed."""
    return json_or_not_modified(request, _series(job_id, engine, config, principal, step_s))


def _filename(job_id: str, what: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', job_id)}-{what}.csv"


def _csv(body: str, filename: str) -> Response:
    return Response(content=body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@router.get("/v1/series.csv/{job_id:path}", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "One row per bucket."}})
def job_series_csv(
    job_id: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep,
    step_s: Annotated[int | None, Query(description=STEP_HELP)] = None,
) -> Response:
    """The job's GPU series as CSV, one row per bucket (times in ISO 8601, UTC)."""
    columns = _series(job_id, engine, config, principal, step_s).gpu.model_dump()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["start_at", "end_at", *series.GPU_FIELDS[2:]], lineterminator="\n")
    writer.writeheader()
    for row in series.as_rows(columns):
        row = {"start_at": _iso(row.pop("start_s")), "end_at": _iso(row.pop("end_s")), **row}
        writer.writerow({name: csv_cell(value) for name, value in row.items()})
    return _csv(out.getvalue(), _filename(job_id, "series"))


@router.get("/v1/report.csv/{job_id:path}", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "A header and one row."}})
def job_report_csv(job_id: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep) -> Response:
    """The job's report as CSV: the columns of `gpuledger report --format csv`."""
    report = job_report(engine, config, job_id, principal)
    return _csv(render(report.model_dump(mode="json"), "csv") + "\n", _filename(job_id, "report"))


# The former paths, after a job id: hidden, and a job whose id ends like them keeps its report.
for _suffix, _handler in (("series", job_series), ("series.csv", job_series_csv), ("report.csv", job_report_csv)):
    router.add_api_route(f"/v1/jobs/{{job_id:path}}/{_suffix}", id_wins(_suffix, _handler), methods=["GET"],
                         include_in_schema=False, response_model=None)
