from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.http.auth import NodeDep, authorize_ingest
from api.http.schemas import IngestAck
from collector.ingest import check
from collector.integrity import check_batch
from collector.schemas import BatchIn
from collector.stats import IngestStats
from collector.writer import GroupWriter

router = APIRouter(tags=["ingest"])


def get_writer(request: Request) -> GroupWriter:
    return request.app.state.writer


def get_stats(request: Request) -> IngestStats:
    return request.app.state.ingest_stats


@router.post("/v1/ingest", response_model=IngestAck, responses={
    409: {"description": "A conflicting replay, or GPU time already stored: final for this batch."}})
def ingest(
    batch: BatchIn,
    writer: Annotated[GroupWriter, Depends(get_writer)],
    stats: Annotated[IngestStats, Depends(get_stats)],
    principal: NodeDep,
) -> IngestAck:
    """Apply an agent's batch exactly once; a replay is acknowledged and changes nothing.

    409 (final: the agent drops the batch) for a replay whose content differs from the batch
    applied under that (node, boot_id, seq), and for GPU time the node has already stored
    (a second agent running under the same node name, or overlapping intervals)."""
    started = time.perf_counter()
    authorize_ingest(principal, batch.node)
    check(batch, time.time())
    checked = check_batch(writer.engine, batch)
    if checked.duplicate:
        stats.applied(False, len(batch.intervals), time.perf_counter() - started)
        return IngestAck(applied=False, intervals=len(batch.intervals))
    for conflict in checked.metadata_conflicts:
        stats.metadata_conflict(conflict.field)
    result = writer.submit(batch)
    stats.applied(result.applied, result.intervals, time.perf_counter() - started)
    return IngestAck(applied=result.applied, intervals=result.intervals)
