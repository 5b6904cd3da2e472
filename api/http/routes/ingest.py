"""POST /v1/ingest, the hot path: on the event loop from request to acknowledgement.

The endpoint below declares what the OpenAPI schema shows (a ``BatchIn`` body, a node
token); ``IngestRoute`` serves it with a lean handler instead of FastAPI's generic one: no
dependency solving in the threadpool, and the body decoded and validated in one pass
(``BatchIn.model_validate_json``) rather than parsed by ``json.loads`` and then validated.
The rejections are FastAPI's: the same ``RequestValidationError`` with ``body`` locations,
so the 422 messages name the same fields and values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from api.http.auth import NodeDep, authorize_ingest, ingest_principal
from api.http.schemas import IngestAck
from collector.ingest import check
from collector.integrity import check_batch
from collector.schemas import BatchIn
from collector.stats import IngestStats
from collector.writer import GroupWriter

NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"


def parse_batch(body: bytes, content_type: str | None) -> BatchIn:
    """The request body as a ``BatchIn``, decoded and validated at once; 422 as FastAPI words it."""
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        if _is_json(content_type):
            try:
                return BatchIn.model_validate_json(body)
            except ValidationError as exc:
                if not any(e["type"] == "json_invalid" for e in exc.errors()):
                    raise
                document = _python_json(body)  # e.g. a lone surrogate: name the field that holds it
                if document is None:
                    raise
                return BatchIn.model_validate(document)
        return BatchIn.model_validate(body)  # as FastAPI does: a body that is not JSON is its bytes
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            if error["type"] == "json_invalid":  # the input is the whole body: name its size instead
                error = {**error, "input": body}
            elif error["type"] in ("model_type", "model_attributes_type") and not error["loc"]:
                error = {**error, "msg": NOT_AN_OBJECT}  # pydantic's words for it when FastAPI validated
            errors.append({**error, "loc": ("body", *error["loc"])})
        raise RequestValidationError(errors) from None


def _python_json(body: bytes) -> Any:
    """The body as Python's json reads it (it takes what pydantic's strict parser refuses), or None."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _ack(applied: bool, intervals: int) -> Response:
    body = b'{"applied":%s,"intervals":%d}' % (b"true" if applied else b"false", intervals)
    return Response(body, media_type="application/json")


async def handle_ingest(request: Request) -> Response:
    """Apply an agent's batch exactly once; a replay is acknowledged and changes nothing."""
    started = time.perf_counter()
    principal = await ingest_principal(request)  # 401/403 before the body is looked at
    try:
        body = await request.body()
    except ClientDisconnect:  # the client went away (or stalled past the read deadline): nothing to answer
        return Response(status_code=400)
    batch = parse_batch(body, request.headers.get("content-type"))
    authorize_ingest(principal, batch.node)
    check(batch, time.time())
    writer: GroupWriter = request.app.state.writer
    stats: IngestStats = request.app.state.ingest_stats
    checked = await run_in_threadpool(check_batch, writer.engine, batch)  # 409 for a conflict or stored GPU time
    if checked.duplicate:
        stats.applied(False, len(batch.intervals), time.perf_counter() - started)
        return _ack(False, len(batch.intervals))
    for conflict in checked.metadata_conflicts:
        stats.metadata_conflict(conflict.field)
    result = await writer.submit(batch)
    stats.applied(result.applied, result.intervals, time.perf_counter() - started)
    return _ack(result.applied, result.intervals)


class IngestRoute(APIRoute):
    """An APIRoute whose requests go to ``handle_ingest``; its OpenAPI entry is the endpoint's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return handle_ingest


router = APIRouter(tags=["ingest"], route_class=IngestRoute)


@router.post("/v1/ingest", response_model=IngestAck, responses={
    409: {"description": "A conflicting replay, or GPU time already stored: final for this batch."}})
async def ingest(batch: BatchIn, principal: NodeDep) -> IngestAck:
    """Apply an agent's batch exactly once; a replay is acknowledged and changes nothing.

    409 (final: the agent drops the batch) for a replay whose content differs from the batch
    applied under that (node, boot_id, seq), and for GPU time the node has already stored
    (a second agent running under the same node name, or overlapping intervals).

    Served by ``handle_ingest`` (see ``IngestRoute``); this signature is what the schema shows."""
    raise NotImplementedError
