"""Answers to polled reads with an ``ETag``: a client that sends it back in ``If-None-Match``
gets ``304 Not Modified`` and no body when the answer is the same as the one it has.

The tag is a digest of the answer without its ``as_of`` time, so a poll of a job that has had
no new data, rate or state since the last one is answered with headers only. The body is
serialised once from the model (no second validation by the route's response model).
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the answer is the one whose ETag was sent in If-None-Match."}}
HEADERS = {"Cache-Control": "no-cache"}  # a cache may keep it, and must ask again each time


def etag_of(model: BaseModel) -> str:
    stable = model.model_dump_json(exclude={"as_of"}).encode()
    return '"' + hashlib.blake2b(stable, digest_size=16).hexdigest() + '"'


def _matches(header: str | None, tag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return tag in {t.strip().removeprefix("W/") for t in header.split(",")}


def json_or_not_modified(request: Request, model: BaseModel) -> Response:
    """The model as JSON with its ETag, or 304 when the request's If-None-Match names that tag."""
    tag = etag_of(model)
    headers = {"ETag": tag, **HEADERS}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(model.model_dump_json(), media_type="application/json", headers=headers)
