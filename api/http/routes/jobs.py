from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from api.accounting.network import congestion, network_report
from api.accounting.rates import LedgerConfig
from api.http.auth import Principal, ReaderDep, can_see, scoped_account
from api.http.deps import ConfigDep, EngineDep
from api.http.etag import NOT_MODIFIED, json_or_not_modified
from api.http.schemas import JobPage, JobReport
from api.queries import jobs as reads
from api.reports.job import build_reports, now
from collector.schemas import TEXT_PATTERN

router = APIRouter(tags=["jobs"])
QUERY_TEXT = TEXT_PATTERN  # no NUL or control characters: PostgreSQL refuses NUL in a text parameter
MAX_OFFSET = 2**31


@router.get("/v1/jobs", response_model=JobPage, responses=NOT_MODIFIED)
def list_jobs(
    request: Request,
    engine: EngineDep,
    config: ConfigDep,
    principal: ReaderDep,
    state: Literal["running", "ended"] | None = None,
    user: Annotated[str | None, Query(max_length=256, pattern=QUERY_TEXT)] = None,
    account: Annotated[str | None, Query(max_length=256, pattern=QUERY_TEXT)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """Jobs, newest first, with live totals. Send the last answer's ETag in If-None-Match to get 304 when unchanged."""
    jobs, total = reads.list_jobs(engine, state=state, user=user, account=scoped_account(principal, account), limit=limit, offset=offset)
    items = build_reports(engine, jobs, config)
    networks = reads.network_by_job(engine, [job["job_id"] for job in jobs])
    for item in items:
        item["network_congestion"] = congestion(networks.get(item["job_id"], []))
    return json_or_not_modified(request, JobPage(items=items, total=total, limit=limit, offset=offset, as_of=now()))


def visible_job(engine: Engine, job_id: str, principal: Principal) -> dict[str, Any]:
    """The job's row, or a 404 when it does not exist or the principal may not see it."""
    job = reads.get_job(engine, job_id)
    if job is None or not can_see(principal, job):
        hint = "" if "/" in job_id else "; job ids are cluster-scoped: <cluster>/<job id>"
        raise HTTPException(status_code=404, detail=f"job_id {job_id!r} not found{hint}")
    return job


def job_report(engine: Engine, config: LedgerConfig, job_id: str, principal: Principal) -> JobReport:
    job = visible_job(engine, job_id, principal)
    (report,) = build_reports(engine, [job], config)
    network = network_report(reads.network(engine, job_id))
    return JobReport(**report, as_of=now(), network=network, network_congestion=None if network is None else network["congestion"])


@router.get("/v1/jobs/{job_id:path}", response_model=JobReport, responses=NOT_MODIFIED)
def get_job(request: Request, job_id: str, engine: EngineDep, config: ConfigDep, principal: ReaderDep) -> Response:
    """One job's report, with every rate applied so the arithmetic can be checked. Send the id
    percent-encoded as one segment (`/v1/jobs/demo%2F1001`) or as is (`/v1/jobs/demo/1001`):
    either way every id reaches its own report, whatever it looks like (`series`,
    `j1/series`, `../x`). A job's other resources are on paths no id can take:
    `/v1/series/{job_id}`, `/v1/footprint/{job_id}`, … Send the last answer's ETag in
    If-None-Match to get 304 when nothing changed."""
    return json_or_not_modified(request, job_report(engine, config, job_id, principal))


def id_wins(suffix: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    """The former route ``/v1/jobs/{job_id}/<suffix>`` for ``handler``, kept for old clients,
    where a job whose id is the whole path (``<job_id>/<suffix>``) gets its own report (with
    its ETag, as from ``get_job``)."""
    signature = inspect.signature(handler)
    takes_request = "request" in signature.parameters

    @functools.wraps(handler)
    def alias(request: Request, **kwargs: Any) -> Any:
        whole = f"{kwargs['job_id']}/{suffix}"
        if reads.get_job(kwargs["engine"], whole) is not None:
            return get_job(request, whole, kwargs["engine"], kwargs["config"], kwargs["principal"])
        return handler(request=request, **kwargs) if takes_request else handler(**kwargs)

    if not takes_request:
        request_param = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
        alias.__signature__ = signature.replace(parameters=[request_param, *signature.parameters.values()])  # type: ignore[attr-defined]
    return alias
