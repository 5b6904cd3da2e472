from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.http.auth import NodeDep, authorize_ingest
from api.http.schemas import IngestAck
from collector.ingest import check
from collector.schemas import BatchIn
from collector.stats import IngestStats
from collector.writer import GroupWriter

router = APIRouter(tags=["ingest"])


def get_writer(request: Request) -> GroupWriter:
    return request.app.state.writer


def get_stats(request: Request) -> IngestStats:
    return request.app.state.ingest_stats


@router.post("/v1/ingest", response_model=IngestAck)
def ingest(
    batch: BatchIn,
    writer: Annotated[GroupWriter, Depends(get_writer)],
    stats: Annotated[IngestStats, Depends(get_stats)],
    principal: NodeDep,
) -> IngestAck:
    """Apply an agent's batch exactly once; a replay is acknowledged and changes nothing."""
    started = time.perf_counter()
    authorize_ingest(principal, batch.node)
    check(batch, time.time())
    result = writer.submit(batch)
    stats.applied(result.applied, result.intervals, time.perf_counter() - started)
    return IngestAck(applied=result.applied, intervals=result.intervals)
