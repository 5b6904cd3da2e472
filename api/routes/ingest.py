from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.auth import NodeDep, authorize_ingest
from api.schemas import IngestAck
from collector.ingest import check
from collector.schemas import BatchIn
from collector.writer import GroupWriter

router = APIRouter(tags=["ingest"])


def get_writer(request: Request) -> GroupWriter:
    return request.app.state.writer


@router.post("/v1/ingest", response_model=IngestAck)
def ingest(batch: BatchIn, writer: Annotated[GroupWriter, Depends(get_writer)], principal: NodeDep) -> IngestAck:
    """Apply an agent's batch exactly once; a replay is acknowledged and changes nothing."""
    authorize_ingest(principal, batch.node)
    check(batch, time.time())
    result = writer.submit(batch)
    return IngestAck(applied=result.applied, intervals=result.intervals)
