"""Showback: usage and cost per account, user, cluster or job over a time range."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime

from api.accounting.forecast import within_dates
from api.accounting.pricing import TOTALS, price
from api.http.auth import UnscopedReaderDep
from api.http.deps import ConfigDep, EngineDep
from api.queries import jobs as reads
from api.reports.job import intensity_for

router = APIRouter(tags=["usage"])


@router.get("/v1/usage")
def usage(
    engine: EngineDep,
    config: ConfigDep,
    principal: UnscopedReaderDep,
    group_by: Literal["account", "user", "cluster", "job_id"] = "account",
    start: Annotated[AwareDatetime | None, Query(alias="from", description="Start (ISO 8601); default: 30 days ago.")] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to", description="End, exclusive; default: now.")] = None,
) -> dict[str, Any]:
    """GPU-hours, energy, cost and CO2e per group over whole hours in [from, to), idle capacity included."""
    to_s = end.timestamp() if end else time.time()
    from_s = start.timestamp() if start else to_s - 30 * 86400
    for name, value_s in (("from", from_s), ("to", to_s)):
        if within_dates(value_s) is None:
            raise HTTPException(status_code=422, detail=f"{name} = {value_s:.0f} s since 1970 (UTC): "
                                                        "expected a time from 1970-01-01 to 9999-12-31")
    if from_s >= to_s:
        raise HTTPException(status_code=422, detail=f"from = {start} is not before to = {end}")
    groups = reads.usage_by_group(engine, group_by, from_s, to_s)
    hourly = intensity_for(engine, [row for rows in groups.values() for row in rows], config)
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(TOTALS, 0.0))
    for (name, cluster), rows in groups.items():
        priced = price(rows, config, cluster, hourly)
        for key in TOTALS:
            totals[name][key] += priced[key]
    items = [{"group": name, **values} for name, values in sorted(totals.items(), key=lambda kv: -kv[1]["cost_usd"])]
    return {
        "group_by": group_by, "from": datetime.fromtimestamp(from_s // 3600 * 3600, UTC),
        "to": datetime.fromtimestamp(to_s, UTC), "items": items,
        "total": {key: sum(item[key] for item in items) for key in TOTALS},
    }
