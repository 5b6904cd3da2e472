"""Scheduler lifecycle events (the Slurm prolog and epilog) and the job summary they append."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from api.http.auth import NodeOrAdminDep, Principal, ReaderDep
from api.http.deps import ConfigDep, EngineDep
from api.http.routes.jobs import id_wins, visible_job
from api.reports.summary import job_report, render_summary
from collector.ingest import BatchRejected
from collector.scheduler import SchedulerEventIn, check_event, record_event

router = APIRouter(tags=["scheduler"])


class SchedulerAck(BaseModel):
    job_id: str
    state: str
    ended_at: datetime | None
    summary: str | None = Field(default=None, description="With ?summary=true on an end event: the job's summary text.")


def page_url(request: Request, job_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/jobs/{job_id}"


def _authorize(principal: Principal, event: SchedulerEventIn) -> None:
    if principal.kind == "node" and principal.node != event.node:
        raise HTTPException(status_code=403, detail=(
            f"node token {principal.token_id} is for node {principal.node!r}; "
            f"it cannot send a scheduler event for node {event.node!r}"
        ))


@router.post("/v1/scheduler/events", response_model=SchedulerAck)
def scheduler_event(
    event: SchedulerEventIn, request: Request, engine: EngineDep, config: ConfigDep, principal: NodeOrAdminDep,
    summary: bool = False,
) -> SchedulerAck:
    """A job started (prolog) or ended (epilog): the scheduler's times and metadata win over
    what agents inferred. A node token may only send events for its own node."""
    _authorize(principal, event)
    try:
        check_event(event, time.time())
    except BatchRejected as exc:
        raise HTTPException(status_code=422, detail=f"event rejected: {exc}") from None
    row = record_event(engine, event)
    text = None
    if summary and event.event == "end":
        text = render_summary(job_report(engine, config, row), page_url(request, event.job_id))
    ended = row.get("ended_s")
    return SchedulerAck(job_id=event.job_id, state=row["state"], summary=text,
                        ended_at=None if ended is None else datetime.fromtimestamp(ended, UTC))


@router.get("/v1/summary.txt/{job_id:path}", response_class=PlainTextResponse)
def job_summary(job_id: str, request: Request, engine: EngineDep, config: ConfigDep, principal: ReaderDep) -> PlainTextResponse:
    """The job's summary as the Slurm epilog appends it to the job's output file."""
    job = visible_job(engine, job_id, principal)
    return PlainTextResponse(render_summary(job_report(engine, config, job), page_url(request, job_id)))


# The former path, after the job id: hidden; a job whose id ends in /summary.txt keeps its report.
router.add_api_route("/v1/jobs/{job_id:path}/summary.txt", id_wins("summary.txt", job_summary), methods=["GET"],
                     include_in_schema=False, response_model=None)
