"""Declared usage over the API (admins): the same rows as `gpuledger import FILE`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from api.http.auth import AdminDep
from api.http.deps import ConfigDep, EngineDep
from collector.declared import COLUMNS, DeclaredError, check_rows, validate
from collector.declared_store import MeasuredJobConflict, store_declared

router = APIRouter(tags=["usage"])
MAX_ROWS = 5000


class DeclaredIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROWS, description=(
        f"Declared rows with the keys {', '.join(COLUMNS)} (see `gpuledger import --help`); "
        "times ISO 8601 with a zone, numbers as JSON numbers."))


@router.post("/v1/usage/declared")
def import_declared(body: DeclaredIn, engine: EngineDep, config: ConfigDep, principal: AdminDep) -> dict[str, Any]:
    """Store declared usage: GPU-hours (or GPUs × start/end), optional energy. Idempotent: a row
    with the same (cluster, job, datacenter, gpu_model, start, end) replaces the stored one.
    Without energy_kwh the energy is GPU-hours × TDP (or power_w), marked tdp_estimate."""
    try:
        rows = validate(body.rows)
        check_rows(rows, time.time())
        result = store_declared(engine, rows, config.tdp, time.time())
    except DeclaredError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except MeasuredJobConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return {**vars(result), "defaults_used": config.defaults_used([r.gpu_model for r in rows])}
