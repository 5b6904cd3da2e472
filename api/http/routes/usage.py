"""Showback and finance exports: usage and cost per account, user, cluster, job or release."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import AwareDatetime

from api.accounting.forecast import within_dates
from api.http.auth import UnscopedReaderDep
from api.http.deps import ConfigDep, EngineDep
from api.reports.usage import build_usage, usage_csv

router = APIRouter(tags=["usage"])
GroupBy = Literal["account", "user", "cluster", "job_id", "job", "release"]
Period = Literal["month", "day"]
DAY_S = 86400


def _usage(engine: Any, config: Any, group_by: str, start: AwareDatetime | None, end: AwareDatetime | None,
           period: str | None) -> dict[str, Any]:
    to_s = end.timestamp() if end else time.time()
    from_s = start.timestamp() if start else to_s - 30 * DAY_S
    for name, value_s in (("from", from_s), ("to", to_s)):
        if within_dates(value_s) is None:
            raise HTTPException(status_code=422, detail=f"{name} = {value_s:.0f} s since 1970 (UTC): "
                                                        "expected a time from 1970-01-01 to 9999-12-31")
    if from_s >= to_s:
        raise HTTPException(status_code=422, detail=f"from = {start} is not before to = {end}")
    return build_usage(engine, config, "job_id" if group_by == "job" else group_by, from_s, to_s, period)


FromQ = Annotated[AwareDatetime | None, Query(alias="from", description="Start (ISO 8601); default: 30 days before `to`.")]
ToQ = Annotated[AwareDatetime | None, Query(alias="to", description="End, exclusive; default: now.")]
GroupQ = Annotated[GroupBy, Query(description="account, user, cluster, job (= job_id) or release.")]
PeriodQ = Annotated[Period | None, Query(description="month or day (UTC): one line per group and period; default: none.")]


@router.get("/v1/usage")
def usage(engine: EngineDep, config: ConfigDep, principal: UnscopedReaderDep, group_by: GroupQ = "account",
          start: FromQ = None, end: ToQ = None, period: PeriodQ = None) -> dict[str, Any]:
    """GPU-hours, energy, cost, location- and market-based and embodied CO2e per group over whole
    hours in [from, to), idle capacity included as `(unallocated)`, jobs without the field as `(none)`."""
    return _usage(engine, config, group_by, start, end, period)


@router.get("/v1/usage.csv", response_class=Response)
def usage_csv_export(engine: EngineDep, config: ConfigDep, principal: UnscopedReaderDep, group_by: GroupQ = "account",
                     start: FromQ = None, end: ToQ = None, period: PeriodQ = None) -> Response:
    """The same as /v1/usage, as CSV for finance: one line per group (and period), then `(total)`."""
    body = usage_csv(_usage(engine, config, group_by, start, end, period))
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="gpuledger-usage.csv"'})
