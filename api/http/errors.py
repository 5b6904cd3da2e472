"""Rejections that name the field, the value and what was expected."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from collector.ingest import BatchRejected

RETRY_AFTER_S = 5


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


def describe(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    described = []
    for error in errors:
        value = error.get("input")
        if isinstance(value, (dict, list)):
            value = f"<{type(value).__name__}>"
        elif isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes that are not a JSON document>"
        elif isinstance(value, float) and not math.isfinite(value):
            value = repr(value)  # NaN and infinities have no JSON form
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)
        message = error["msg"].removeprefix("Value error, ")
        described.append({"field": _field(tuple(error["loc"])), "value": value, "message": message})
    return described


INGEST_PATH = "/v1/ingest"


def _count_rejected(request: Request) -> None:
    if request.url.path == INGEST_PATH:
        request.app.state.ingest_stats.rejected()


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
