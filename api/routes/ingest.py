from __future__ import annotations

import time

from fastapi import APIRouter

from api.auth import NodeDep, authorize_ingest
from api.deps import EngineDep
from api.schemas import IngestAck
from collector.ingest import apply_batch
from collector.schemas import BatchIn

router = APIRouter(tags=["ingest"])


@router.post("/v1/ingest", response_model=IngestAck)
def ingest(batch: BatchIn, engine: EngineDep, principal: NodeDep) -> IngestAck:
    """Apply an agent's batch exactly once; a replay is acknowledged and changes nothing."""
    authorize_ingest(principal, batch.node)
    result = apply_batch(engine, batch, time.time())
    return IngestAck(applied=result.applied, intervals=result.intervals)
