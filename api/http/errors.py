"""Rejections that name the field, the value and what was expected."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from collector.ingest import BatchRejected
from collector.integrity import BatchConflict

RETRY_AFTER_S = 5


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


MAX_VALUE_CHARS = 200


def printable(value: Any) -> Any:
    """``value`` as JSON can carry it: NaN and infinities as text, strings valid UTF-8 and short."""
    if isinstance(value, (dict, list)):
        return f"<{type(value).__name__}>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes that are not a JSON document>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": JSON has no such numbers
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate becomes "\\ud800"
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + f"... ({len(text)} characters)"


def describe(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    described = []
    for error in errors:
        message = printable(str(error["msg"]).removeprefix("Value error, "))
        field = printable(_field(tuple(error["loc"])))
        described.append({"field": field, "value": printable(error.get("input")), "message": message})
    return described


INGEST_PATH = "/v1/ingest"


def _count_rejected(request: Request, outcome: str = "rejected") -> None:
    if request.url.path == INGEST_PATH:
        request.app.state.ingest_stats.rejected(outcome)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count_rejected(request)
        errors = describe(list(exc.errors()))
        head = "; ".join(f"{e['field']} = {e['value']!r}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return JSONResponse(status_code=422, content={"detail": f"invalid request: {head}{more}", "errors": errors})

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_down(_request: Request, exc: DBAPIError) -> JSONResponse:
        # Restarting, unreachable or locked: nothing was stored, the agent keeps the batch and retries.
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return JSONResponse(status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
                            content={"detail": f"database unavailable, retry later: {cause}"})

    @app.exception_handler(BatchRejected)
    async def _rejected(request: Request, exc: BatchRejected) -> JSONResponse:
        _count_rejected(request)
        return JSONResponse(status_code=422, content={"detail": f"batch rejected: {exc}"})

    @app.exception_handler(BatchConflict)
    async def _conflict(request: Request, exc: BatchConflict) -> JSONResponse:
        # Final for the batch: the agent drops it and counts it (a retry would get the same answer).
        _count_rejected(request, exc.outcome)
        return JSONResponse(status_code=409, content={"detail": f"batch refused: {exc}", "outcome": exc.outcome})
